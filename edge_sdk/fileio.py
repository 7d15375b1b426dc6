"""Safe file output: atomic writes and the ``.npz`` feature file format."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.errors import FeatureFileError, OutputWriteError

__all__ = [
    "SHARD_MANIFEST",
    "FeatureFile",
    "atomic_write",
    "iter_feature_shards",
    "read_features",
    "write_features",
    "write_json",
    "write_shard_manifest",
]

SHARD_MANIFEST = "manifest.json"
"""The file that makes a folder of feature shards complete, written last."""
_SHARDS_FORMAT = "edge-sdk-feature-shards/1"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the complete new one, never a partial one; on any
    failure (full disk included) the temporary file is removed.

    Raises:
        OutputWriteError: The file could not be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
    except OSError as exc:
        raise OutputWriteError(f"{path}: could not write ({exc.strerror or exc})") from exc
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(f"{path}: could not write ({exc.strerror or exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@dataclass
class FeatureFile:
    """Contents of a feature file.

    Attributes:
        features: ``(N, F, H, W)`` float32 features.
        files: Image paths relative to the input folder, in the order of ``features``.
        config: How the features were made (kit, command settings).
        faces: Face index of each row within its picture (0: the largest face);
            all zeros for files written before faces were counted.
    """

    features: np.ndarray
    files: list[str]
    config: dict[str, Any]
    faces: list[int] = field(default_factory=list)


def write_features(
    path: str | Path,
    *,
    features: np.ndarray,
    files: Sequence[str],
    config: dict[str, Any],
    faces: Sequence[int] | None = None,
) -> Path:
    """Write a ``.npz`` with ``features`` (float32), ``files``, ``faces`` and ``config`` (JSON text), atomically.

    The file loads with ``numpy.load(path)`` and no pickle.

    Args:
        path: Output ``.npz``.
        features: ``(N, ...)`` features, one row per face.
        files: ``N`` picture paths.
        config: Settings recorded as JSON.
        faces: ``N`` face indices within the pictures; zeros if omitted.
    """
    if features.shape[0] != len(files):
        raise ValueError(f"{features.shape[0]} features but {len(files)} file names")
    face_index = np.zeros(len(files), np.int64) if faces is None else np.asarray(list(faces), dtype=np.int64)
    if face_index.shape != (len(files),):
        raise ValueError(f"{len(files)} file names but {face_index.size} face indices")

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(
                handle,
                features=np.ascontiguousarray(features, dtype=np.float32),
                files=np.array(list(files), dtype=np.str_),
                faces=face_index,
                config=np.array(json.dumps(config, sort_keys=True)),
            )

    return atomic_write(path, write)


def read_features(path: str | Path) -> FeatureFile:
    """Read a feature file written by :func:`write_features`, or a folder of shards with its manifest.

    A folder (``edge-sdk craft --ray``) is read whole, its shards concatenated in the
    manifest's order; :func:`iter_feature_shards` reads one shard at a time instead.

    Raises:
        FeatureFileError: Missing, truncated, or without the expected arrays; a folder
            without its manifest (an unfinished job) or whose shards disagree with it.
    """
    path = Path(path)
    if path.is_dir():
        shards = list(iter_feature_shards(path))
        if not shards:
            raise FeatureFileError(f"{path}: the manifest lists no face")
        return FeatureFile(
            features=np.concatenate([s.features for s in shards]),
            files=[f for s in shards for f in s.files],
            config=shards[0].config,
            faces=[i for s in shards for i in s.faces],
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"features", "files", "config"} - set(data.files)
            if missing:
                raise FeatureFileError(f"{path}: missing array(s) {', '.join(sorted(missing))}")
            files = [str(f) for f in data["files"]]
            faces = [int(i) for i in data["faces"]] if "faces" in data.files else [0] * len(files)
            return FeatureFile(
                features=data["features"], files=files, config=json.loads(str(data["config"])), faces=faces
            )
    except FeatureFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise FeatureFileError(f"{path}: not a readable feature file ({exc})") from exc


def write_shard_manifest(folder: str | Path, shards: Sequence[Path], *, skipped: list[dict[str, str]]) -> Path:
    """Write ``folder/manifest.json`` listing ``shards`` (feature files in ``folder``), atomically.

    The manifest gives the format, each shard's name, rows and bytes, the total rows,
    the settings (the first shard's ``config``) and the skipped files; a reader takes a
    folder without it for unfinished work.

    Raises:
        FeatureFileError: A shard cannot be read.
        OutputWriteError: The manifest could not be written.
    """
    folder = Path(folder)
    entries: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    for shard in shards:
        try:
            with np.load(shard, allow_pickle=False) as data:  # names and settings only, not the features
                rows = len(data["files"])
                config = config or json.loads(str(data["config"]))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise FeatureFileError(f"{shard}: not a readable feature file ({exc})") from exc
        entries.append({"path": shard.name, "rows": rows, "bytes": shard.stat().st_size})
    manifest = {
        "format": _SHARDS_FORMAT,
        "rows": sum(e["rows"] for e in entries),
        "shards": entries,
        "config": config,
        "skipped": skipped,
    }
    return write_json(folder / SHARD_MANIFEST, manifest)


def iter_feature_shards(folder: str | Path) -> Iterator[FeatureFile]:
    """The shards of a folder written with :func:`write_shard_manifest`, in order, one at a time.

    Shards without a row are left out.

    Raises:
        FeatureFileError: No manifest (unfinished work), another format, or a shard
            missing or of other rows than the manifest says.
    """
    folder = Path(folder)
    try:
        manifest = json.loads((folder / SHARD_MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise FeatureFileError(f"{folder}: no {SHARD_MANIFEST}; an unfinished job? rerun the same command") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise FeatureFileError(f"{folder / SHARD_MANIFEST}: unreadable ({exc})") from exc
    if manifest.get("format") != _SHARDS_FORMAT:
        raise FeatureFileError(f"{folder / SHARD_MANIFEST}: not a feature-shard manifest ({manifest.get('format')!r})")
    for entry in manifest["shards"]:
        shard = read_features(folder / Path(entry["path"]).name)
        if len(shard.files) != entry["rows"]:
            raise FeatureFileError(
                f"{folder / entry['path']}: {len(shard.files)} rows, the manifest says {entry['rows']}"
            )
        if shard.files:
            yield shard
