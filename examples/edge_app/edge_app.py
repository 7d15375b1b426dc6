"""An edge app: read camera frames, encode and craft them on the device, ask the cloud for predictions.

    .venv/bin/python examples/edge_app/edge_app.py --quick

Without ``--server`` it starts a local cloud stub (SQLite in a temporary folder) and
issues itself a key, so it runs anywhere. Frames are the ORL private-test faces
written to a folder, read one at a time as a camera loop would. The encoder runs
under onnxruntime (the kit's encoder exported to ONNX) and the crafter keeps a repeat
cache, so a frame sent twice releases the same crafted feature both times.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from cloud_stub import Store
from cloud_stub.local import local_server
from edge_sdk.client import CloudClient
from edge_sdk.crafting import Crafter, CrafterConfig, RepeatCache
from edge_sdk.data.folder import list_images
from edge_sdk.data.images import NoFaceError, face_crops, load_image, read_picture
from edge_sdk.data.orl import orl_keys, orl_root
from edge_sdk.errors import CloudRequestError, CloudUnavailableError
from edge_sdk.kit import load_kit
from edge_sdk.runtime import OnnxEncoder
from exporters.onnx_export import export_component


def camera(folder: Path, limit: int) -> Iterator[Path]:
    """Frames as a camera loop would deliver them: one file at a time."""
    for name in list_images(folder)[:limit]:
        yield folder / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", help="Cloud stub URL (default: start one locally).")
    parser.add_argument("--api-key", help="Key for --server.")
    parser.add_argument("--frames", type=int, default=8, help="Frames to process.")
    parser.add_argument("--quick", action="store_true", help="3 frames, short crafting (for CI).")
    args = parser.parse_args()
    frames = 3 if args.quick else args.frames
    config = CrafterConfig(steps=3, inversion_steps=5, final_inversion_steps=10) if args.quick else CrafterConfig()
    torch.set_num_threads(2)

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder = work / "camera"
        folder.mkdir()
        for subject, image in orl_keys("private-test")[:frames]:
            shutil.copyfile(orl_root() / f"s{subject}" / f"{image}.pgm", folder / f"s{subject:02d}_{image:02d}.pgm")
        if args.server:
            base, key = args.server, args.api_key or ""
        else:
            url = f"sqlite:///{work / 'cloud.db'}"
            key = Store(url).create_api_key("edge-app")
            base = stack.enter_context(local_server(url, log=work / "server.log"))
            print(f"started a local cloud stub at {base}")

        kit = load_kit()
        encoder = OnnxEncoder(export_component(kit, "encoder", work / "encoder.onnx").path, kit)
        crafter = Crafter(kit, config, encoder=encoder)
        crafter.cache = RepeatCache(work / "repeat-cache.db", scope=crafter.scope)
        client = stack.enter_context(CloudClient(base, api_key=key, timeout=30, retries=2, backoff=0.2))
        print(f"encoder: {encoder.backend}; cloud head {client.version()['active_head_id']}")

        released: dict[str, np.ndarray] = {}
        for path in camera(folder, frames):
            picture = read_picture(path)  # a camera frame: (H, W, 3) float RGB in [0, 1]
            try:
                frame = face_crops(picture, kit.spec)[0][None]  # largest face, aligned: (1, 1, 64, 64)
            except NoFaceError:
                print(f"{path.name}: no face in the frame, nothing sent")
                continue
            start = time.perf_counter()
            crafted = crafter.craft(images=frame).features
            crafted_at = time.perf_counter()
            answer = client.predict(crafted)
            released[path.name] = crafted.numpy()
            print(
                f"{path.name}: crafted in {crafted_at - start:.2f} s, answered in "
                f"{time.perf_counter() - crafted_at:.3f} s -> pose class {int(answer.labels[0])} "
                f"(p = {float(answer.probabilities[0].max()):.2f})"
            )

        # The same frame again: the repeat cache releases the first crafting, so an
        # observer cannot average several craftings of one face.
        first = next(iter(released))
        crafted_again = crafter.craft(images=load_image(folder / first, kit.spec)[None])
        same = np.array_equal(crafted_again.features.numpy(), released[first])
        print(f"{first} sent again: identical crafted feature = {same}")

        # What an app does when the cloud refuses or is gone: retry, then a clear message.
        refusing = CloudClient(base, api_key="esk_revoked-or-wrong", retries=1, backoff=0.1)
        try:
            refusing.predict(crafted)
        except CloudRequestError as exc:
            print(f"refused upload handled: {exc}")
        gone = CloudClient("http://127.0.0.1:9", api_key=key, timeout=0.5, retries=2, backoff=0.1)
        try:
            gone.predict(crafted)
        except CloudUnavailableError as exc:
            print(f"unreachable server handled: {exc}")
        if not same:
            raise SystemExit("the repeat cache did not return the first crafting")


if __name__ == "__main__":
    main()
