"""What the ``edge-sdk`` commands share: options declared once, thread settings, job reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from edge_sdk.console import EXIT_BAD_INPUT, handle_errors
from edge_sdk.crafting.config import PRESETS, CrafterConfig
from edge_sdk.jobs import FolderJobResult

__all__ = [
    "EXIT_BAD_INPUT",
    "AlignOption",
    "AllFacesOption",
    "DeviceOption",
    "EncoderOnnxOption",
    "FolderArgument",
    "KitOption",
    "LatentNoiseOption",
    "OutOption",
    "PresetOption",
    "ThreadsOption",
    "crafter_config",
    "handle_errors",
    "report_job",
    "use_threads",
]


# The options the folder commands share, declared once.
FolderArgument = Annotated[
    Path,
    typer.Argument(
        help="Folder of pictures (PNG, JPEG, PGM/PPM, BMP, WebP, TIFF, GIF/MPO first frame; searched recursively)."
    ),
]
AlignOption = Annotated[
    bool,
    typer.Option(
        "--align/--no-align",
        help="Find each picture's face and align it to the kit's crop; --no-align takes the centre square, "
        "for pictures that are already aligned face crops.",
    ),
]
AllFacesOption = Annotated[
    bool,
    typer.Option(
        "--all-faces",
        help="Use every face of a picture (rows name file and face index, 0 the largest); default: the largest.",
    ),
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output .npz (features, files, config).")]
KitOption = Annotated[Path | None, typer.Option(help="Kit folder; the bundled default kit if omitted.")]
ApiKeyOption = Annotated[
    str | None, typer.Option(help="API key for --upload.", envvar="EDGE_SDK_API_KEY", show_envvar=True)
]


def require_api_key(*, upload: str | None, api_key: str | None) -> None:
    """Refuse ``--upload`` without a key before any work is done."""
    if upload is not None and not api_key:
        raise typer.BadParameter("--upload needs --api-key or EDGE_SDK_API_KEY", param_hint="--api-key")


EncoderOnnxOption = Annotated[
    Path | None, typer.Option(help="Exported encoder (.onnx) to run under onnxruntime instead of torch.")
]
PresetOption = Annotated[
    str,
    typer.Option(
        help="'default' (Crafter-z keeping the kit head's answers: the measured choice, resists decoder "
        "attacks), 'feature' (feature-space Crafter, features within ~15% of the raw ones), 'paper' "
        "(the paper's Alg. 1 settings), 'answer-only' (the kit head's answer alone, shaped as a feature) or "
        "'intrapersonal' (Crafter-z keeping pose, expression and light for new heads; not the head's answers)."
    ),
]
LatentNoiseOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Crafter-z's start: share of fresh prior noise in the starting latent (default preset 1: a "
        "fresh face keeping only the head's answers; 0: the attacker's inversion, as the paper's App. F).",
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="CPU threads of torch (default: torch's choice, usually one per core). Floating-point sums depend "
        "on it: the same seed gives bit-identical features at the same thread count, on the same machine and "
        "torch version.",
    ),
]


DeviceOption = Annotated[
    str,
    typer.Option(
        help="Where torch runs: 'cpu' or 'cuda[:N]' (a CUDA build of torch and a GPU). Seeds give the same "
        "random draws on every device; a GPU's arithmetic crafts other features from them, as another machine would.",
    ),
]


def use_threads(threads: int | None) -> None:
    """Set torch's intra-op threads when the user chose a number (``None``: leave torch's default)."""
    if threads is not None:
        torch.set_num_threads(threads)


def crafter_config(preset: str, **overrides: Any) -> CrafterConfig:
    """A preset's crafting configuration with the options the user gave (``None``: keep the preset's)."""
    if preset not in PRESETS:
        raise typer.BadParameter(f"choose one of {', '.join(PRESETS)}", param_hint="--preset")
    try:
        return PRESETS[preset](**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def report_job(result: FolderJobResult, *, verb: str, feature_shape: tuple[int, ...]) -> None:
    """Print what a folder job wrote and which files it skipped."""
    shape = "x".join(map(str, (result.images, *feature_shape)))
    resumed = f", {result.resumed_batches} batch(es) resumed" if result.resumed_batches else ""
    typer.echo(f"{verb} {result.images} faces -> {result.out} (features {shape}{resumed})")
    typer.echo(f"diagnostics: {result.diagnostics_path}")
    for s in result.skipped:
        typer.secho(f"skipped {s['file']}: {s['reason']}", fg=typer.colors.YELLOW, err=True)
