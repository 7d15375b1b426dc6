"""``edge-sdk explain DIR --out FILE``: the kit head's answer for each face, and a map of why."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

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
from edge_sdk.data.images import FacePolicy, to_unit_range
from edge_sdk.errors import EmptyInputError
from edge_sdk.extras import require_extra
from edge_sdk.fileio import atomic_write
from edge_sdk.kit import load_kit

__all__ = ["explain_command"]


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


def _released_as(method: str, coarsen: int | None, *, size: int, methods: Iterable[str]) -> str:
    """The name of what is released (the method, and the coarsening grid); refuses what cannot be made."""
    if method not in methods:
        raise typer.BadParameter(f"choose one of {', '.join(methods)}", param_hint="--method")
    if coarsen is not None and coarsen > size:
        raise typer.BadParameter(f"at most the kit's image size, {size}", param_hint="--coarsen")
    return method if coarsen is None else f"{method}+coarsen{coarsen}"


def _write_npz(out: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub reads ** as allow_pickle

    atomic_write(out, write)


@handle_errors
def explain_command(
    folder: FolderArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz (maps, predicted, probabilities, files).")],
    method: Annotated[str, typer.Option(help="grad, grad-cam or integrated-gradients.")] = "grad",
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
    """Explain the kit head's answer for every face of FOLDER with an attribution map.

    Each map is in the frame of the aligned face the kit sees (the kit's image size).
    A map computed on the picture leaks the picture (an inversion network reconstructs
    faces from prediction and map): keep maps on the device like the pictures, or know
    what the cloud then sees before --upload sends them.
    """
    require_extra("explain", feature="edge-sdk explain")
    from edge_sdk.explanation_noise import coarsen_maps
    from edge_sdk.explanations import EXPLAINERS, explain

    if (upload is None) != (dataset is None):
        raise typer.BadParameter("--upload URL and --dataset NAME go together", param_hint="--upload")
    require_api_key(upload=upload, api_key=api_key)
    use_threads(threads)
    loaded = load_kit(kit)
    released_as = _released_as(method, coarsen, size=loaded.architecture.image_size, methods=EXPLAINERS)
    files = list_images(folder)
    maps: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    images: list[torch.Tensor] = []
    names: list[str] = []
    faces: list[int] = []
    skipped = []
    policy = FacePolicy(align=align, all_faces=all_faces)
    with tqdm(total=len(files), desc="explain", unit="img", disable=quiet) as bar:
        for batch in iter_folder_batches(folder, loaded.spec, batch_size=batch_size, files=files, policy=policy):
            if batch.files:
                result = explain(loaded, batch.images, method=method, batch_size=batch_size)
                released = result.maps if coarsen is None else coarsen_maps(result.maps, grid=coarsen)
                maps.append(released.numpy())
                predicted.append(result.predicted.numpy())
                probabilities.append(result.probabilities.numpy())
                if figure is not None and sum(i.shape[0] for i in images) < 16:
                    images.append(batch.images)
            names.extend(batch.files)
            faces.extend(batch.faces)
            skipped.extend(batch.skipped)
            bar.update(len(set(batch.files)) + len(batch.skipped))
    if not names:
        raise EmptyInputError(f"{folder}: none of {len(files)} image files could be read")
    config = {
        "command": "explain",
        "kit": loaded.manifest.name,
        "method": method,
        "coarsen": coarsen,
        "classes": loaded.manifest.task.classes,
    }
    arrays: dict[str, np.ndarray] = {
        "maps": np.concatenate(maps).astype(np.float32),
        "predicted": np.concatenate(predicted).astype(np.int64),
        "probabilities": np.concatenate(probabilities).astype(np.float32),
        "files": np.array(names, dtype=np.str_),
        "faces": np.array(faces, dtype=np.int64),
        "config": np.array(json.dumps(config, sort_keys=True)),
    }

    _write_npz(out, arrays)
    typer.echo(f"explained {len(names)} faces ({released_as}) -> {out}")
    if upload is not None and dataset is not None:  # after the file is written: a failed upload loses nothing
        with CloudClient(upload, api_key=api_key or "") as client:
            uploaded = _upload_maps(client, dataset, arrays, released_as)
        typer.echo(f"uploaded the maps to dataset {dataset!r} at {upload} ({uploaded['total']} there now)")
    if figure is not None:
        from edge_sdk.figures import save_attribution_overlays

        pixels = to_unit_range(torch.cat(images)[:16], loaded.spec)
        labels = [loaded.manifest.task.classes[int(c)] for c in arrays["predicted"][: len(pixels)]]
        save_attribution_overlays(pixels, torch.from_numpy(arrays["maps"][: len(pixels)]), labels, figure)
        typer.echo(f"figure: {figure}")
    for s in skipped:
        typer.secho(f"skipped {s.file}: {s.reason}", fg=typer.colors.YELLOW, err=True)
