"""``edge-sdk craft DIR --out FILE``: crafted features of a folder of images, ready to release."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from edge_sdk.cli._common import handle_errors, report_job
from edge_sdk.crafting.cache import RepeatCache
from edge_sdk.crafting.crafter import Crafter, CrafterConfig
from edge_sdk.data.folder import FolderImages
from edge_sdk.jobs import run_folder_job
from edge_sdk.kit import load_kit
from edge_sdk.runtime import load_encoder

__all__ = ["craft"]

_PRESETS: dict[str, Callable[[], CrafterConfig]] = {"default": CrafterConfig, "paper": CrafterConfig.paper}


@handle_errors
def craft(
    folder: Annotated[Path, typer.Argument(help="Folder of .png/.jpg/.jpeg/.pgm face images (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz (features, files, config).")],
    kit: Annotated[Path | None, typer.Option(help="Kit folder; the bundled default kit if omitted.")] = None,
    encoder_onnx: Annotated[
        Path | None, typer.Option(help="Exported encoder (.onnx) to run under onnxruntime instead of torch.")
    ] = None,
    preset: Annotated[
        str, typer.Option(help="'default' (fast, measured) or 'paper' (the paper's settings).")
    ] = "default",
    beta: Annotated[float | None, typer.Option(help="Utility weight; larger keeps features closer to raw.")] = None,
    steps: Annotated[int | None, typer.Option(min=0, help="Feature updates per batch.")] = None,
    solver: Annotated[str | None, typer.Option(help="Inverse-Hessian solver: cg, neumann or dense.")] = None,
    seed: Annotated[int, typer.Option(help="Seed; same images and seed give the same features.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images crafted together.")] = 32,
    cache: Annotated[
        Path | None, typer.Option(help="SQLite repeat cache: an image seen before gets its first release again.")
    ] = None,
    restart: Annotated[bool, typer.Option(help="Discard unfinished work of an interrupted run.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Craft every image of FOLDER so that a white-box inversion attacker sees an average face.

    Batches are written as they finish; if the run stops, the same command resumes
    without crafting finished batches again, and FILE appears only when complete.
    Diagnostics (utility loss, distortion, epsilon-PII per batch, skipped files) go
    to FILE with suffix .json.
    """
    if preset not in _PRESETS:
        raise typer.BadParameter(f"choose one of {', '.join(_PRESETS)}", param_hint="--preset")
    overrides: dict[str, Any] = {"seed": seed}
    for name, value in (("beta", beta), ("steps", steps), ("solver", solver)):
        if value is not None:
            overrides[name] = value
    try:
        config = replace(_PRESETS[preset](), **overrides)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    loaded = load_kit(kit)
    runtime = load_encoder(loaded, encoder_onnx)
    crafter = Crafter(loaded, config, encoder=runtime)
    if cache is not None:
        crafter.cache = RepeatCache(cache, scope=crafter.scope)

    def transform(batch: FolderImages) -> tuple[np.ndarray, dict[str, Any]]:
        result = crafter.craft(images=batch.images)
        return result.features.numpy(), result.diagnostics

    job_config = {"command": "craft", "kit": loaded.manifest.name, "kit_path": str(loaded.path),
                  "crafted": True, "crafter": asdict(config), "encoder_backend": runtime.backend,
                  "encoder_onnx": str(encoder_onnx) if encoder_onnx else None}  # fmt: skip
    result = run_folder_job(
        folder, out, spec=loaded.spec, transform=transform, batch_size=batch_size, config=job_config,
        restart=restart, progress=not quiet, desc="craft",
    )  # fmt: skip
    report_job(result, verb="crafted", feature_shape=loaded.feature_shape)
