"""Folder jobs: turn every image of a folder into features, batch by batch, resumably.

A job writes each finished batch into ``OUT.parts/`` and assembles ``OUT`` (one
``.npz``) only at the end, atomically: an interrupted run leaves no partial ``OUT``,
and running the same command again skips the batches already written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edge_sdk.crafting.config import CrafterConfig
from edge_sdk.data.folder import FolderImages, iter_folder_batches, list_images
from edge_sdk.data.images import FacePolicy, ImageSpec
from edge_sdk.errors import EdgeSDKError, EmptyInputError
from edge_sdk.fileio import read_features, write_features, write_json
from edge_sdk.kit.kit import Kit

__all__ = [
    "BatchTransform",
    "FolderJobResult",
    "ResumeMismatchError",
    "batch_done",
    "batch_path",
    "crafting_settings",
    "open_parts",
    "parts_folder",
    "run_folder_job",
    "write_batch",
]

BatchTransform = Callable[[FolderImages], tuple[np.ndarray, dict[str, Any]]]


class ResumeMismatchError(EdgeSDKError):
    """Unfinished work for the same output exists but was made with other settings or files."""


@dataclass
class FolderJobResult:
    """Summary of a finished folder job."""

    out: Path
    images: int
    skipped: list[dict[str, str]]
    resumed_batches: int
    diagnostics_path: Path


def _fingerprint(files: list[str], batch_size: int, config: dict[str, Any]) -> str:
    text = json.dumps({"files": files, "batch_size": batch_size, "config": config}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def run_folder_job(
    folder: str | Path,
    out: str | Path,
    *,
    spec: ImageSpec,
    policy: FacePolicy = FacePolicy(),
    transform: BatchTransform,
    batch_size: int,
    config: dict[str, Any],
    restart: bool = False,
    progress: bool = True,
    desc: str = "images",
) -> FolderJobResult:
    """Apply ``transform`` to the images of ``folder`` batch by batch and write ``out``.

    Args:
        folder: Folder of images (searched recursively).
        out: Output ``.npz`` path; ``out.parts/`` holds finished batches meanwhile and
            ``out`` with suffix ``.json`` receives the diagnostics.
        spec: Image preprocessing.
        policy: Face alignment on or off; the largest face or all of them. Recorded
            in the job's settings, so a resume must use the same.
        transform: Maps a decoded batch to ``(features, batch diagnostics)``.
        batch_size: Files per batch.
        config: Settings stored in the output; a resume must match them.
        restart: Discard unfinished work instead of resuming it.
        progress: Show a progress bar.
        desc: Progress bar label.

    Raises:
        ResumeMismatchError: ``out.parts/`` holds work of other files or settings.
        EmptyInputError: No image in the folder could be read.
    """
    folder, out = Path(folder), Path(out)
    files = list_images(folder)
    config = {**config, "faces": asdict(policy)}
    parts = parts_folder(out)
    open_parts(parts, files=files, batch_size=batch_size, config=config, restart=restart)
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    start = time.perf_counter()
    resumed = 0
    with tqdm(total=len(files), desc=desc, unit="img", disable=not progress) as bar:
        for index, names in enumerate(batches):
            if batch_done(parts, index):
                resumed += 1
            else:
                batch = next(iter_folder_batches(folder, spec, batch_size=len(names), files=names, policy=policy))
                write_batch(parts, index, batch, transform, config)
            bar.update(len(names))
    result = _assemble(parts, len(batches), out, config)
    if not result.files:
        shutil.rmtree(parts, ignore_errors=True)
        raise EmptyInputError(f"{folder}: none of {len(files)} image files could be read")
    diagnostics_path = write_json(
        out.with_suffix(".json"),
        {
            "images": len(result.files),
            "skipped": result.skipped,
            "batches": len(batches),
            "resumed_batches": resumed,
            "seconds_this_run": round(time.perf_counter() - start, 3),
            "config": config,
            "per_batch": result.per_batch,
        },
    )
    shutil.rmtree(parts, ignore_errors=True)
    return FolderJobResult(
        out=out,
        images=len(result.files),
        skipped=result.skipped,
        resumed_batches=resumed,
        diagnostics_path=diagnostics_path,
    )


def crafting_settings(
    kit: Kit, config: CrafterConfig, *, encoder_onnx: Path | None, threads: int, **extra: Any
) -> dict[str, Any]:
    """What a crafting job records with its output (and a resume must match): kit, crafting, encoder, threads."""
    return {
        "command": "craft",
        "kit": kit.manifest.name,
        "kit_path": str(kit.path),
        "crafted": True,
        "crafter": asdict(config),
        "encoder_backend": "onnxruntime" if encoder_onnx else "torch",
        "encoder_onnx": str(encoder_onnx) if encoder_onnx else None,
        "threads": threads,
        **extra,
    }


def parts_folder(out: Path) -> Path:
    """Where a job writing ``out`` keeps its finished batches (and what else must survive a resume) meanwhile."""
    return out.with_name(out.name + ".parts")


def open_parts(parts: Path, *, files: list[str], batch_size: int, config: dict[str, Any], restart: bool) -> None:
    """Start the batch folder ``parts`` for this job, or check that the unfinished work there is this job's.

    Raises:
        ResumeMismatchError: ``parts`` holds batches of other files, batch size or settings.
    """
    fingerprint = _fingerprint(files, batch_size, config)
    state_path = parts / "state.json"
    if restart and parts.exists():
        shutil.rmtree(parts)
    if not parts.exists() or not any(parts.iterdir()):
        write_json(state_path, {"fingerprint": fingerprint, "files": len(files), "batch_size": batch_size})
        return
    try:
        state = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError):
        state = {}
    if state.get("fingerprint") != fingerprint:
        raise ResumeMismatchError(
            f"{parts}: holds work made from other pictures or other settings; rerun with --restart to discard it"
        )


def batch_path(parts: Path, index: int, suffix: str = ".npz") -> Path:
    """Where batch ``index`` of a job is kept: its features (``.npz``) or its record (``.json``)."""
    return parts / f"batch_{index:05d}{suffix}"


def batch_done(parts: Path, index: int) -> bool:
    """Whether batch ``index`` is finished: its record and, written last, its ``.npz`` are files."""
    return batch_path(parts, index).is_file() and batch_path(parts, index, ".json").is_file()


def write_batch(
    parts: Path,
    index: int,
    batch: FolderImages,
    transform: BatchTransform,
    config: dict[str, Any],
    *,
    record: dict[str, Any] | None = None,
) -> None:
    """Transform one decoded batch and write its features and record (diagnostics, skipped files, ``record``)."""
    features, diagnostics = transform(batch) if batch.files else (np.empty((0, 0), np.float32), {})
    skipped = [{"file": s.file, "reason": s.reason} for s in batch.skipped]
    # Record first, features last: a batch counts as done once its .npz exists.
    write_json(batch_path(parts, index, ".json"), {"diagnostics": diagnostics, "skipped": skipped, **(record or {})})
    write_features(batch_path(parts, index), features=features, files=batch.files, faces=batch.faces, config=config)


@dataclass
class _Assembled:
    files: list[str]
    skipped: list[dict[str, str]]
    per_batch: list[dict[str, Any]]


def _assemble(parts: Path, batches: int, out: Path, config: dict[str, Any]) -> _Assembled:
    """Join the finished batches into ``out`` (written only if some face was read)."""
    chunks, files, faces, skipped, per_batch = [], [], [], [], []
    for index in range(batches):
        record = json.loads(batch_path(parts, index, ".json").read_text())
        skipped.extend(record["skipped"])
        per_batch.append(record["diagnostics"])
        written = read_features(batch_path(parts, index))
        if written.files:
            chunks.append(written.features)
            files.extend(written.files)
            faces.extend(written.faces)
    if files:
        write_features(out, features=np.concatenate(chunks), files=files, faces=faces, config=config)
    return _Assembled(files=files, skipped=skipped, per_batch=per_batch)
