"""``edge-sdk explain DIR --out FILE``: the kit head's answer for each face, and a map of why."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
import typer
from tqdm.auto import tqdm

from edge_sdk.cli._common import (
    AlignOption,
    AllFacesOption,
    ApiKeyOption,
    FolderArgument,
    KitOption,
    ThreadsOption,
    handle_errors,
    require_api_key,
    use_threads,
)
from edge_sdk.client import CloudClient
from edge_sdk.data.folder import iter_folder_batches, list_images
from edge_sdk.data.images import FacePolicy, ImageSpec, to_unit_range
from edge_sdk.errors import EmptyInputError
from edge_sdk.extras import require_extra
from edge_sdk.fileio import atomic_write
from edge_sdk.kit import Kit, load_kit

if TYPE_CHECKING:
    from edge_sdk.explanations import Explanation

__all__ = ["explain_command"]

OCCLUSION = "occlusion"


@dataclass(frozen=True)
class _Explained:
    """What is explained: how pictures become its input, the method, and the call that explains a batch."""

    spec: ImageSpec
    method: str
    classes: list[str] | None
    run: Callable[[torch.Tensor], Explanation]


def _kit_pipeline(kit: Kit, method: str | None, *, batch_size: int) -> _Explained:
    """The kit's encoder and head, explained by gradient methods on the aligned face."""
    from edge_sdk.explanations import EXPLAINERS, explain

    method = method or "grad"
    if method not in EXPLAINERS:
        raise typer.BadParameter(
            f"choose one of {', '.join(EXPLAINERS)} (occlusion with --onnx)", param_hint="--method"
        )
    return _Explained(
        spec=kit.spec,
        method=method,
        classes=list(kit.manifest.task.classes),
        run=lambda images: explain(kit, images, method=method, batch_size=batch_size),
    )


def _onnx_classifier(
    model: Path, method: str | None, *, template: ImageSpec, pixel_scale: float, window: int, batch_size: int
) -> _Explained:
    """An ONNX classifier loaded once, explained by occlusion on pictures made into its square input."""
    from edge_sdk.explanations import explain_onnx, open_onnx_classifier, read_onnx_input

    if method not in (None, OCCLUSION):
        raise typer.BadParameter(f"an ONNX classifier is explained by {OCCLUSION} only", param_hint="--method")
    if not math.isfinite(pixel_scale):
        raise typer.BadParameter("must be a finite number such as 1 or 255", param_hint="--pixel-scale")
    session = open_onnx_classifier(model, threads=torch.get_num_threads())
    graph = read_onnx_input(session)
    if graph.side is None:
        raise typer.BadParameter(
            f"{model.name} takes (C, H, W) = {(graph.channels, graph.height, graph.width)} (None: open); pictures "
            "become square inputs: export the classifier with one fixed side",
            param_hint="--onnx",
        )
    if window > graph.side:
        raise typer.BadParameter(f"at most the classifier's image side, {graph.side}", param_hint="--window")
    try:  # the kit's face template (fractions of the side) aligns faces at any size
        spec = replace(template, size=graph.side, channels=graph.channels or 0, mean=0.0, std=1.0 / pixel_scale)
    except ValueError as exc:  # a side under 8 pixels, or other than 1 or 3 channels
        raise typer.BadParameter(f"{model.name}: pictures cannot become its input: {exc}", param_hint="--onnx") from exc
    return _Explained(
        spec=spec,
        method=OCCLUSION,
        classes=None,
        run=lambda images: explain_onnx(session, images, window=window, batch_size=batch_size),
    )


def _upload_maps(client: CloudClient, dataset: str, arrays: dict[str, np.ndarray], method: str) -> dict[str, Any]:
    """Send the maps in batches the server takes; returns its record of the last one."""
    limit = int(client.version()["max_batch"])
    stored: dict[str, Any] = {}
    for start in range(0, len(arrays["maps"]), limit):
        part = slice(start, start + limit)
        stored = client.upload_explanations(
            dataset,
            arrays["maps"][part],
            arrays["predicted"][part],
            method=method,
            probabilities=arrays["probabilities"][part],
        )
    return stored


def _released_as(method: str, coarsen: int | None, *, size: int) -> str:
    """The name of what is released (the method, and the coarsening grid); refuses a grid finer than the map."""
    if coarsen is not None and coarsen > size:
        raise typer.BadParameter(f"at most the map's side, {size}", param_hint="--coarsen")
    return method if coarsen is None else f"{method}+coarsen{coarsen}"


def _write_npz(out: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub reads ** as allow_pickle

    atomic_write(out, write)


def _explain_folder(
    folder: Path,
    explained: _Explained,
    *,
    policy: FacePolicy,
    batch_size: int,
    coarsen: int | None,
    keep: int,
    quiet: bool,
) -> tuple[dict[str, np.ndarray], torch.Tensor, list[Any]]:
    """Explain every readable face of ``folder``, batch by batch, with a progress bar.

    Args:
        folder: The pictures.
        explained: What explains them.
        policy: Which faces of a picture become inputs.
        batch_size: Pictures read and explained at a time.
        coarsen: Grid the maps are averaged over, or ``None``.
        keep: How many inputs to return for a figure.
        quiet: No progress bar.

    Returns:
        The arrays of the output file (maps, predicted, probabilities, files, faces),
        the first ``keep`` inputs, and the pictures skipped with their reasons.

    Raises:
        EmptyInputError: No picture of the folder could be read (each one's reason is
            printed first).
    """
    from edge_sdk.explanation_noise import coarsen_maps

    files = list_images(folder)
    maps: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    images: list[torch.Tensor] = []
    names: list[str] = []
    faces: list[int] = []
    skipped: list[Any] = []
    with tqdm(total=len(files), desc="explain", unit="img", disable=quiet) as bar:
        for batch in iter_folder_batches(folder, explained.spec, batch_size=batch_size, files=files, policy=policy):
            if batch.files:
                result = explained.run(batch.images)
                released = result.maps if coarsen is None else coarsen_maps(result.maps, grid=coarsen)
                maps.append(released.numpy())
                predicted.append(result.predicted.numpy())
                probabilities.append(result.probabilities.numpy())
                if sum(i.shape[0] for i in images) < keep:
                    images.append(batch.images)
            names.extend(batch.files)
            faces.extend(batch.faces)
            skipped.extend(batch.skipped)
            bar.update(len(set(batch.files)) + len(batch.skipped))
    if not names:
        for s in skipped:
            typer.secho(f"skipped {s.file}: {s.reason}", fg=typer.colors.YELLOW, err=True)
        raise EmptyInputError(f"{folder}: none of {len(files)} image files could be read")
    arrays: dict[str, np.ndarray] = {
        "maps": np.concatenate(maps).astype(np.float32),
        "predicted": np.concatenate(predicted).astype(np.int64),
        "probabilities": np.concatenate(probabilities).astype(np.float32),
        "files": np.array(names, dtype=np.str_),
        "faces": np.array(faces, dtype=np.int64),
    }
    kept = torch.cat(images)[:keep] if images else torch.empty(0)
    return arrays, kept, skipped


@handle_errors
def explain_command(
    folder: FolderArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz (maps, predicted, probabilities, files).")],
    method: Annotated[
        str | None, typer.Option(help="grad (default), grad-cam or integrated-gradients; occlusion with --onnx.")
    ] = None,
    onnx: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Explain this ONNX classifier instead of the kit head (occlusion maps under onnxruntime); "
            "pictures are resized to its input, faces aligned on the kit's template unless --no-align.",
        ),
    ] = None,
    pixel_scale: Annotated[
        float | None,
        typer.Option(min=1.0, help="With --onnx: the classifier takes pixels in [0, SCALE] (1, the default, or 255)."),
    ] = None,
    window: Annotated[
        int | None, typer.Option(min=1, help="With --onnx: side of the occluded square, in pixels (default 4).")
    ] = None,
    figure: Annotated[
        Path | None, typer.Option(help="Also write a PNG of the first faces with their maps over them.")
    ] = None,
    kit: KitOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images explained at a time.")] = 32,
    threads: ThreadsOption = None,
    align: AlignOption = True,
    all_faces: AllFacesOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    upload: Annotated[
        str | None,
        typer.Option(help="Cloud stub URL: store each batch's maps with their predictions under --dataset (audits)."),
    ] = None,
    api_key: ApiKeyOption = None,
    dataset: Annotated[str | None, typer.Option(help="With --upload: the dataset the maps are stored under.")] = None,
    coarsen: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Average each map over a GRID x GRID grid before it is written or uploaded: less of the face "
            "for an inverter, less detail (measured in docs/explanations.md).",
        ),
    ] = None,
) -> None:
    """Explain the kit head's answer (or an ONNX classifier's) for every face of FOLDER with an attribution map.

    Each map is in the frame of the image the model sees (the aligned face at the kit's
    image size, or the classifier's input). A map computed on the picture leaks the
    picture (an inversion network reconstructs faces from prediction and map): keep maps
    on the device like the pictures, or know what the cloud then sees before --upload
    sends them.
    """
    require_extra("explain", feature="edge-sdk explain")
    if (upload is None) != (dataset is None):
        raise typer.BadParameter("--upload URL and --dataset NAME go together", param_hint="--upload")
    if upload is not None and onnx is not None:
        raise typer.BadParameter(
            "the service stores maps of the kit head's answers, not of --onnx", param_hint="--upload"
        )
    if onnx is None and (pixel_scale is not None or window is not None):
        raise typer.BadParameter("--pixel-scale and --window set how an --onnx classifier is explained")
    require_api_key(upload=upload, api_key=api_key)
    use_threads(threads)
    loaded = load_kit(kit)
    explained = (
        _kit_pipeline(loaded, method, batch_size=batch_size)
        if onnx is None
        else _onnx_classifier(
            onnx,
            method,
            template=loaded.spec,
            pixel_scale=pixel_scale or 1.0,
            window=window or 4,
            batch_size=batch_size,
        )
    )
    spec = explained.spec
    released_as = _released_as(explained.method, coarsen, size=spec.size)
    arrays, images, skipped = _explain_folder(
        folder,
        explained,
        policy=FacePolicy(align=align, all_faces=all_faces),
        batch_size=batch_size,
        coarsen=coarsen,
        keep=16 if figure is not None else 0,
        quiet=quiet,
    )
    config = {
        "command": "explain",
        "kit": loaded.manifest.name,
        "onnx": None if onnx is None else str(onnx),
        "method": explained.method,
        "coarsen": coarsen,
        "classes": explained.classes,
    }
    arrays["config"] = np.array(json.dumps(config, sort_keys=True))

    _write_npz(out, arrays)
    typer.echo(f"explained {len(arrays['files'])} faces ({released_as}) -> {out}")
    if upload is not None and dataset is not None:  # after the file is written: a failed upload loses nothing
        with CloudClient(upload, api_key=api_key or "") as client:
            uploaded = _upload_maps(client, dataset, arrays, released_as)
        typer.echo(f"uploaded the maps to dataset {dataset!r} at {upload} ({uploaded['total']} there now)")
    if figure is not None:
        from edge_sdk.figures import save_attribution_overlays

        pixels = to_unit_range(images, spec)
        names_of = explained.classes
        labels = [names_of[int(c)] if names_of else str(int(c)) for c in arrays["predicted"][: len(pixels)]]
        save_attribution_overlays(pixels, torch.from_numpy(arrays["maps"][: len(pixels)]), labels, figure)
        typer.echo(f"figure: {figure}")
    for s in skipped:
        typer.secho(f"skipped {s.file}: {s.reason}", fg=typer.colors.YELLOW, err=True)
