"""Crafting a large folder on a Ray cluster (``edge-sdk craft DIR --out OUT --ray``), with Ray Data.

The folder's sorted file list is cut into the same batches as the single-process
command (``edge-sdk craft``, :func:`edge_sdk.jobs.run_folder_job`) and read as a Ray
dataset of batches. A pool of actors, each loading the kit once, decodes, aligns and
crafts one batch at a time and writes it as one shard of ``OUT/``; ``OUT/manifest.json``
is written last and lists the shards. An interrupted run resumes at shard granularity:
the same command skips the shards already written.

Same inputs and seed give the same features as the single-process command, because
every batch gets the same faces and the crafter's draws depend only on the seed and
the batch's content (:class:`~edge_sdk.crafting.Crafter`). Floating-point sums depend on
the thread count, so compare at ``--threads`` equal to ``threads_per_actor``.

Repeats across batches are released once, as the single process's repeat cache does
(an attacker averaging several releases of one face is attack A3). A first pass over
the dataset encodes every face and finds, by the raw feature's SHA-256 (kept in the
driver's memory, never written), the faces seen in an earlier batch; the crafting pass
leaves them out of their batch and the driver copies the earlier release into their
rows before writing the manifest. The persisted ``--cache`` of a device is not used.

On an existing cluster (``ray start --head`` then ``ray start --address=HEAD:6379`` on
each node, or a KubeRay ``RayCluster``), pass its address; the folder, ``OUT`` and the
kit must be reachable at the same paths from every node (a shared file system), and
every node needs this package installed (``pip install 'edge-feature-sdk[ray]'``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from edge_sdk.crafting.cache import RepeatCache
from edge_sdk.crafting.config import CrafterConfig
from edge_sdk.crafting.crafter import Crafter
from edge_sdk.data.folder import FolderImages, iter_folder_batches, list_images
from edge_sdk.data.images import FacePolicy
from edge_sdk.errors import EdgeSDKError, EmptyInputError, OutputWriteError
from edge_sdk.extras import require_extra
from edge_sdk.fileio import SHARD_MANIFEST, read_features, write_features, write_shard_manifest
from edge_sdk.jobs import FolderJobResult, batch_done, batch_path, crafting_settings, open_parts, write_batch
from edge_sdk.kit import load_kit
from edge_sdk.runtime import load_encoder

__all__ = ["DistributedJobError", "craft_folder_on_ray"]


class DistributedJobError(EdgeSDKError):
    """The cluster could not finish the job; the shards already written are kept for a resume."""


Repeat = tuple[int, int, int]
"""A face released before: (row in its batch, earlier batch, row there)."""


class _Worker:
    """What both actor kinds share: the kit, the encoder and the folder's decoding, loaded once per actor."""

    def __init__(
        self,
        *,
        folder: str,
        kit: str | None,
        encoder_onnx: str | None,
        config: dict[str, Any],
        policy: dict[str, Any],
        threads: int,
    ) -> None:
        torch.set_num_threads(threads)
        self.folder = Path(folder)
        self.kit = load_kit(kit)
        self.encoder = load_encoder(self.kit, Path(encoder_onnx) if encoder_onnx else None)
        self.config = CrafterConfig(**config)
        self.policy = FacePolicy(**policy)

    def decode(self, files: list[str]) -> FolderImages:
        return next(
            iter_folder_batches(self.folder, self.kit.spec, batch_size=len(files), files=files, policy=self.policy)
        )


class _EncodeActor(_Worker):
    """First pass: the SHA-256 of each face's raw feature, to find repeats across batches."""

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        digests = []
        for files in rows["files"]:
            batch = self.decode(json.loads(files))
            raw = self.encoder.encode(batch.images).numpy() if batch.files else np.empty((0,))
            digests.append(json.dumps([hashlib.sha256(row.tobytes()).hexdigest() for row in raw]))
        return {"index": list(rows["index"]), "digests": digests}


class _CraftActor(_Worker):
    """Second pass: craft one batch (repeats left out) and write it as a shard of the output."""

    def __init__(self, *, out: str, job_config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out, self.job_config = Path(out), job_config
        self.crafter = Crafter(self.kit, self.config, encoder=self.encoder)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        images = []
        for index, files, repeats in zip(rows["index"], rows["files"], rows["repeats"], strict=True):
            batch = self.decode(json.loads(files))
            repeated: list[list[int]] = json.loads(repeats)
            transform = functools.partial(self._craft, repeated={r[0] for r in repeated})
            write_batch(self.out, int(index), batch, transform, self.job_config, record={"repeats": repeated})
            images.append(len(batch.files))
        return {"index": list(rows["index"]), "images": images}

    def _craft(self, batch: FolderImages, repeated: set[int]) -> tuple[np.ndarray, dict[str, Any]]:
        """Craft the whole batch as the single process does, the faces of earlier batches as cache hits.

        Their rows hold NaN until the driver copies the earlier releases in.
        """
        # A fresh cache per batch: which faces repeat is decided for the whole folder by the first pass.
        self.crafter.cache = RepeatCache(scope=self.crafter.scope)
        if repeated:
            keys = self.crafter.cache.keys_for(self.encoder.encode(batch.images))
            rows = sorted(repeated)
            self.crafter.cache.put([keys[r] for r in rows], torch.full((len(rows), *self.kit.feature_shape), torch.nan))
        result = self.crafter.craft(images=batch.images)
        return result.features.numpy(), {**result.diagnostics, "repeats_of_earlier_batches": len(repeated)}


def _repeats(digests: dict[int, list[str]]) -> dict[int, list[Repeat]]:
    """Per batch, the faces first seen in an earlier batch (batch order is the single process's order)."""
    first: dict[str, tuple[int, int]] = {}
    repeats: dict[int, list[Repeat]] = {}
    for index in sorted(digests):
        here: dict[str, int] = {}
        for row, digest in enumerate(digests[index]):
            if digest in first:
                repeats.setdefault(index, []).append((row, *first[digest]))
            else:
                here.setdefault(digest, row)
        first.update({digest: (index, row) for digest, row in here.items()})
    return repeats


def _fill_repeats(out: Path, index: int, repeats: list[Repeat], sources: dict[int, np.ndarray]) -> None:
    """Copy the earlier releases into a shard's repeated rows (idempotent, so safe on resume).

    ``sources`` keeps the source shards' features read so far.
    """
    shard = read_features(batch_path(out, index))
    features = np.array(shard.features)
    for row, source_index, source_row in repeats:
        if source_index not in sources:
            sources[source_index] = read_features(batch_path(out, source_index)).features
        features[row] = sources[source_index][source_row]
    write_features(batch_path(out, index), features=features, files=shard.files, faces=shard.faces, config=shard.config)


def _connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (``None``: ``RAY_ADDRESS`` or a new local instance); True if started here.

    Raises:
        DistributedJobError: The cluster cannot be reached or started.
    """
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # one progress bar, ours
    context.raise_original_map_exception = True  # an actor's OutputWriteError reaches the caller as itself
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise DistributedJobError(
            f"could not join or start a Ray cluster at {address or 'this machine'} ({exc})"
        ) from exc
    return True


def _stream(
    actor: type[_Worker], items: list[dict[str, Any]], *, actors: int, threads: int, kwargs: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Run ``actor`` over ``items`` (one batch each) on a fixed pool of ``actors``; rows as they finish."""
    import ray.data

    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    mapped = dataset.map_batches(
        actor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
        fn_constructor_kwargs=kwargs,
    )
    import ray.exceptions

    try:
        yield from mapped.iter_rows()
    except ray.exceptions.RayError as exc:
        raise _sdk_error(exc) from exc


def _sdk_error(exc: BaseException) -> EdgeSDKError:
    """The SDK's own error an actor raised (full disk, bad kit ...), else :class:`DistributedJobError`."""
    import ray.exceptions

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        # Ray's error types also derive from the actor's own (RayTaskError(OutputWriteError)); take the original.
        if isinstance(cause, EdgeSDKError) and not isinstance(cause, ray.exceptions.RayError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return DistributedJobError(f"crafting on Ray failed ({type(exc).__name__}: {first_line}); rerun to resume")


def craft_folder_on_ray(
    folder: str | Path,
    out: str | Path,
    *,
    config: CrafterConfig,
    kit: str | Path | None = None,
    encoder_onnx: str | Path | None = None,
    batch_size: int = 32,
    policy: FacePolicy = FacePolicy(),
    actors: int = 2,
    threads_per_actor: int = 1,
    address: str | None = None,
    restart: bool = False,
    progress: bool = True,
) -> FolderJobResult:
    """Craft every face of ``folder`` on Ray and write ``out/`` as shards and a manifest.

    Args:
        folder: Folder of pictures (searched recursively), reachable from every node.
        out: Output folder: ``batch_NNNNN.npz`` shards (features, files, faces, config,
            as :func:`~edge_sdk.fileio.write_features`), ``batch_NNNNN.json`` records
            (diagnostics, skipped files) and ``manifest.json``, written last. Read it
            whole with :func:`~edge_sdk.fileio.read_features` or shard by shard with
            :func:`~edge_sdk.fileio.iter_feature_shards`.
        config: Crafting settings.
        kit: Kit folder; the bundled default kit if omitted.
        encoder_onnx: Exported encoder to run under onnxruntime.
        batch_size: Files per batch, as the single-process command's ``--batch-size``;
            the release depends on it.
        policy: Face alignment and which faces of a picture.
        actors: Crafting actors (each loads the kit once).
        threads_per_actor: torch threads and Ray CPUs of each actor.
        address: Ray cluster address; ``None`` uses ``RAY_ADDRESS`` or starts a local instance.
        restart: Discard the shards of an interrupted run instead of resuming it.
        progress: Show a progress bar.

    Returns:
        The job's summary; ``diagnostics_path`` is the manifest.

    Raises:
        MissingExtraError: Ray Data is not installed (extra ``ray``).
        ResumeMismatchError: ``out`` holds shards of other files or settings.
        OutputWriteError: ``out`` is a file, the folder or above it, or holds other files.
        EmptyInputError: No face could be read from the folder.
        DistributedJobError: The cluster failed (an actor died, the cluster went away).
        OutputWriteError: A shard could not be written (a full disk).
        ValueError: ``actors``, ``threads_per_actor`` or ``batch_size`` below 1.
    """
    require_extra("ray", feature="crafting on Ray")
    if min(actors, threads_per_actor, batch_size) < 1:
        raise ValueError(
            f"actors, threads_per_actor and batch_size must be >= 1, got {actors}, {threads_per_actor}, {batch_size}"
        )
    # Absolute paths: the actors may run on other nodes, in other working folders.
    folder, out = Path(folder).resolve(), Path(out).resolve()
    encoder_onnx = Path(encoder_onnx).resolve() if encoder_onnx else None
    # A missing or damaged kit, encoder or configuration fails here, before any cluster work.
    loaded = load_kit(kit)
    Crafter(loaded, config, encoder=load_encoder(loaded, encoder_onnx))
    files = list_images(folder)
    _check_output_folder(out, folder, restart=restart)
    job_config = crafting_settings(
        loaded, config, encoder_onnx=encoder_onnx, threads=threads_per_actor, faces=asdict(policy)
    )
    open_parts(out, files=files, batch_size=batch_size, config=job_config, restart=False)
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    todo = [i for i in range(len(batches)) if not batch_done(out, i)]
    if todo:  # shards change: the manifest of an earlier run no longer describes the folder
        (out / SHARD_MANIFEST).unlink(missing_ok=True)
    kwargs = {
        "folder": str(folder),
        "kit": None if kit is None else str(Path(kit).resolve()),  # None: each node's own bundled kit
        "encoder_onnx": str(encoder_onnx) if encoder_onnx else None,
        "config": asdict(config),
        "policy": asdict(policy),
        "threads": threads_per_actor,
    }
    started = _connect(address) if todo else False
    try:
        repeats: dict[int, list[Repeat]] = {}
        if todo:
            # Repeats in a batch to craft may point at any earlier batch, done or not: encode them all.
            first = [{"index": i, "files": json.dumps(batches[i])} for i in range(max(todo) + 1)]
            rows = _stream(_EncodeActor, first, actors=actors, threads=threads_per_actor, kwargs=kwargs)
            with tqdm(total=len(first), desc="find repeats", unit="batch", disable=not progress) as bar:
                digests = {}
                for row in rows:
                    digests[int(row["index"])] = json.loads(row["digests"])
                    bar.update()
            repeats = _repeats(digests)
            items = [
                {"index": i, "files": json.dumps(batches[i]), "repeats": json.dumps(repeats.get(i, []))} for i in todo
            ]
            crafted = _stream(
                _CraftActor,
                items,
                actors=actors,
                threads=threads_per_actor,
                kwargs={**kwargs, "out": str(out), "job_config": job_config},
            )
            with tqdm(total=sum(len(batches[i]) for i in todo), desc="craft", unit="img", disable=not progress) as bar:
                for row in crafted:
                    bar.update(len(batches[int(row["index"])]))
    finally:
        if started:
            import ray

            ray.shutdown()
    return _finish(out, len(batches), resumed=len(batches) - len(todo), folder=folder, files=len(files))


_JOB_FILES = (
    "state.json",
    SHARD_MANIFEST,
    "batch_*.npz",
    "batch_*.json",
    ".batch_*.tmp",
    ".state.json.*.tmp",
    ".manifest.json.*.tmp",
)


def _check_output_folder(out: Path, folder: Path, *, restart: bool) -> None:
    """Refuse an output that is a file, the input folder or above it, or a folder of other files.

    ``restart`` removes this job's own files (shards, records, state, manifest), nothing else.

    Raises:
        OutputWriteError: ``out`` cannot hold this job's shards.
    """
    if out.exists() and not out.is_dir():
        raise OutputWriteError(f"{out}: a file; --ray writes a folder of shards, give a new or empty folder")
    if folder == out or folder.is_relative_to(out):
        raise OutputWriteError(f"{out}: holds the pictures to craft; give the shards a folder of their own")
    if restart:
        for pattern in _JOB_FILES:
            for path in out.glob(pattern):
                path.unlink()
    if out.is_dir() and not (out / "state.json").exists() and any(out.iterdir()):
        raise OutputWriteError(f"{out}: holds files that are not this job's shards; give a new or empty folder")


def _finish(out: Path, batches: int, *, resumed: int, folder: Path, files: int) -> FolderJobResult:
    """Fill the repeated rows and write the manifest; the job's summary."""
    skipped: list[dict[str, str]] = []
    sources: dict[int, np.ndarray] = {}
    for index in range(batches):
        record = json.loads(batch_path(out, index, ".json").read_text())
        skipped.extend(record["skipped"])
        if record.get("repeats"):
            _fill_repeats(out, index, [(r[0], r[1], r[2]) for r in record["repeats"]], sources)
    manifest = write_shard_manifest(out, [batch_path(out, i) for i in range(batches)], skipped=skipped)
    images = json.loads(manifest.read_text())["rows"]
    if not images:
        raise EmptyInputError(f"{folder}: none of {files} image files could be read")
    return FolderJobResult(out=out, images=images, skipped=skipped, resumed_batches=resumed, diagnostics_path=manifest)
