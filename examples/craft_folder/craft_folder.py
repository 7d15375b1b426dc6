"""Craft a folder of faces with the CLI and with the library, read the result back, resume a stopped run.

    .venv/bin/python examples/craft_folder/craft_folder.py --quick

1. ``edge-sdk data orl-faces`` writes the private-test faces into a folder.
2. ``edge-sdk craft`` crafts them into ``cli.npz``; ``run_folder_job`` with a
   ``Crafter`` does the same from Python into ``library.npz``. Same kit, settings and
   seed: the two files hold the same features.
3. ``read_features`` reads a file back (features, file names, settings).
4. A run stopped after its first batch leaves ``OUT.parts/`` and no ``OUT``; running
   the same command again resumes it without crafting the finished batch again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_sdk.crafting import Crafter, CrafterConfig
from edge_sdk.data.folder import FolderImages
from edge_sdk.fileio import read_features
from edge_sdk.jobs import run_folder_job
from edge_sdk.kit import load_kit
from edge_sdk.runtime import TorchEncoder


def edge_sdk(*args: str) -> str:
    """Run the ``edge-sdk`` command line and return what it printed."""
    done = subprocess.run([sys.executable, "-m", "edge_sdk", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 faces and 3 crafting steps (for CI).")
    parser.add_argument("--out", type=Path, help="Keep the outputs here instead of a temporary folder.")
    args = parser.parse_args()
    steps, batch = (3, 4) if args.quick else (30, 32)
    threads = 2  # the CLI gets the same number: floating-point sums, and so features, depend on it
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        faces = work / "faces"
        print(edge_sdk("data", "orl-faces", "--split", "private-test", "--out", str(faces)))
        if args.quick:
            for extra in sorted(faces.glob("*.pgm"))[8:]:
                extra.unlink()

        # 1. The command line.
        print(
            edge_sdk(
                "craft",
                str(faces),
                "--out",
                str(work / "cli.npz"),
                "--steps",
                str(steps),
                "--batch-size",
                str(batch),
                "--seed",
                "0",
                "--threads",
                str(threads),
                "--quiet",
            )
        )

        # 2. The library: the same job from Python.
        kit = load_kit()
        config = replace(CrafterConfig(), steps=steps, seed=0)
        crafter = Crafter(kit, config, encoder=TorchEncoder(kit))

        def transform(chunk: FolderImages) -> tuple[np.ndarray, dict[str, Any]]:
            result = crafter.craft(images=chunk.images)
            return result.features.numpy(), result.diagnostics

        job_config = {"command": "craft", "kit": kit.manifest.name, "crafter": asdict(config)}
        result = run_folder_job(
            faces,
            work / "library.npz",
            spec=kit.spec,
            transform=transform,
            batch_size=batch,
            config=job_config,
            progress=False,
        )
        print(f"library: crafted {result.images} images -> {result.out}")

        # 3. Reading the files back.
        cli, library = read_features(work / "cli.npz"), read_features(work / "library.npz")
        print(
            f"cli.npz: features {cli.features.shape}, first file {cli.files[0]}, beta {cli.config['crafter']['beta']}"
        )
        same = cli.files == library.files and np.array_equal(cli.features, library.features)
        print(f"CLI and library give the same features: {same}")

        # 4. A stopped run, resumed.
        stopped = work / "resumed.npz"
        calls = {"n": 0}

        def stops_after_one_batch(chunk: FolderImages) -> tuple[np.ndarray, dict[str, Any]]:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # the user pressed Ctrl-C during the second batch
            return transform(chunk)

        try:
            run_folder_job(
                faces,
                stopped,
                spec=kit.spec,
                transform=stops_after_one_batch,
                batch_size=batch,
                config=job_config,
                progress=False,
            )
        except KeyboardInterrupt:
            print(
                f"stopped: {stopped.name} exists = {stopped.exists()}, finished batches kept in {stopped.name}.parts/"
            )
        resumed = run_folder_job(
            faces, stopped, spec=kit.spec, transform=transform, batch_size=batch, config=job_config, progress=False
        )
        unchanged = np.array_equal(read_features(stopped).features, library.features)
        print(
            f"resumed: {resumed.resumed_batches} batch(es) reused, {resumed.images} images, "
            f"same features as the uninterrupted run = {unchanged}"
        )
        if not same or not unchanged:
            raise SystemExit("crafting was not reproducible")


if __name__ == "__main__":
    main()
