"""``edge-sdk encode DIR --out FILE``: raw encoder features of a folder of images."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import typer

from edge_sdk.cli._common import (
    AlignOption,
    AllFacesOption,
    EncoderOnnxOption,
    FolderArgument,
    KitOption,
    OutOption,
    ThreadsOption,
    handle_errors,
    report_job,
    use_threads,
)
from edge_sdk.data.folder import FolderImages
from edge_sdk.data.images import FacePolicy
from edge_sdk.jobs import run_folder_job
from edge_sdk.kit import load_kit
from edge_sdk.runtime import load_encoder

__all__ = ["encode"]


@handle_errors
def encode(
    folder: FolderArgument,
    out: OutOption,
    kit: KitOption = None,
    encoder_onnx: EncoderOnnxOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images encoded at a time.")] = 32,
    restart: Annotated[bool, typer.Option(help="Discard unfinished work of an interrupted run.")] = False,
    threads: ThreadsOption = None,
    align: AlignOption = True,
    all_faces: AllFacesOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Encode every image of FOLDER with the kit's encoder, without crafting.

    These are the raw features: an attacker can invert them; release crafted ones
    (`edge-sdk craft`). Bad image files are skipped and listed in FILE's
    diagnostics (FILE with suffix .json).
    """
    use_threads(threads)
    loaded = load_kit(kit)
    runtime = load_encoder(loaded, encoder_onnx)

    def transform(batch: FolderImages) -> tuple[np.ndarray, dict[str, Any]]:
        return runtime.encode(batch.images).numpy(), {"images": len(batch.files)}

    config = {
        "command": "encode",
        "kit": loaded.manifest.name,
        "kit_path": str(loaded.path),
        "crafted": False,
        "encoder_backend": runtime.backend,
        "encoder_onnx": str(encoder_onnx) if encoder_onnx else None,
    }
    result = run_folder_job(
        folder,
        out,
        spec=loaded.spec,
        policy=FacePolicy(align=align, all_faces=all_faces),
        transform=transform,
        batch_size=batch_size,
        config=config,
        restart=restart,
        progress=not quiet,
        desc="encode",
    )
    report_job(result, verb="encoded", feature_shape=loaded.feature_shape)
