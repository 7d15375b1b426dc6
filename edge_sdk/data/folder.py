"""A user's folder of face pictures: listing, decoding, and reporting the bad ones."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edge_sdk.data.images import ImageSpec, load_image
from edge_sdk.errors import EmptyInputError, ImageLoadError, LabelFileError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABELS_CSV_COLUMNS",
    "FolderImages",
    "SkippedImage",
    "iter_folder_batches",
    "list_images",
    "load_folder",
    "read_labels_csv",
]

LABELS_CSV_COLUMNS = ("file", "label")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".pgm")


@dataclass(frozen=True)
class SkippedImage:
    """A file that could not be used, and why."""

    file: str
    reason: str


@dataclass
class FolderImages:
    """Decoded images of a folder (or of one batch of it).

    Attributes:
        images: ``(N, C, S, S)`` float32 tensor in model space.
        files: Paths relative to the folder, POSIX style, in the order of ``images``.
        skipped: Files that failed to decode, with the reason.
    """

    images: torch.Tensor
    files: list[str]
    skipped: list[SkippedImage] = field(default_factory=list)


def list_images(root: str | Path) -> list[str]:
    """Image files under ``root`` (recursively, hidden entries excluded), sorted, relative.

    Raises:
        ImageLoadError: ``root`` is not a folder.
        EmptyInputError: The folder holds no file with an image extension.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageLoadError(f"{root}: not a folder")
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise EmptyInputError(f"{root}: no {'/'.join(IMAGE_EXTENSIONS)} images found")
    return files


def _decode(root: Path, files: Sequence[str], spec: ImageSpec) -> FolderImages:
    tensors: list[torch.Tensor] = []
    good: list[str] = []
    skipped: list[SkippedImage] = []
    for name in files:
        try:
            tensors.append(load_image(root / name, spec))
            good.append(name)
        except ImageLoadError as exc:
            skipped.append(SkippedImage(file=name, reason=str(exc).removeprefix(f"{root / name}: ")))
    images = torch.stack(tensors) if tensors else torch.empty(0, spec.channels, spec.size, spec.size)
    return FolderImages(images=images, files=good, skipped=skipped)


def load_folder(root: str | Path, spec: ImageSpec) -> FolderImages:
    """Load every image under ``root``; bad files are skipped and listed, not fatal.

    Raises:
        ImageLoadError: ``root`` is not a folder.
        EmptyInputError: No image file, or none of them could be decoded.

    Example:
        >>> import tempfile; from PIL import Image
        >>> d = Path(tempfile.mkdtemp()); Image.new("L", (92, 112)).save(d / "a.png")
        >>> _ = (d / "b.jpg").write_bytes(b"not a jpeg")
        >>> out = load_folder(d, ImageSpec())
        >>> out.files, [s.file for s in out.skipped]
        (['a.png'], ['b.jpg'])
    """
    root = Path(root)
    result = _decode(root, list_images(root), spec)
    if not result.files:
        reasons = "; ".join(f"{s.file}: {s.reason}" for s in result.skipped[:5])
        raise EmptyInputError(f"{root}: none of {len(result.skipped)} image files could be read ({reasons})")
    return result


def iter_folder_batches(
    root: str | Path, spec: ImageSpec, *, batch_size: int, files: Sequence[str] | None = None
) -> Iterator[FolderImages]:
    """Decode a large folder batch by batch (``batch_size`` files at a time).

    Args:
        root: The folder.
        spec: Preprocessing.
        batch_size: Files per batch; a batch can hold fewer images when some are bad.
        files: Relative file names to use instead of listing the folder.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    root = Path(root)
    names = list(files) if files is not None else list_images(root)
    for start in range(0, len(names), batch_size):
        yield _decode(root, names[start : start + batch_size], spec)


def read_labels_csv(path: str | Path) -> dict[str, int]:
    """Class label per image from a CSV with columns ``file,label`` (file relative to the folder).

    Raises:
        LabelFileError: The file is missing, lacks the columns, or holds a non-integer
            label or a file twice.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not set(LABELS_CSV_COLUMNS) <= set(reader.fieldnames):
                raise LabelFileError(f"{path}: needs a header with columns {', '.join(LABELS_CSV_COLUMNS)}")
            labels: dict[str, int] = {}
            for line, row in enumerate(reader, start=2):
                name = (row["file"] or "").strip()
                try:
                    label = int(row["label"])
                except (TypeError, ValueError):
                    raise LabelFileError(f"{path}:{line}: label {row['label']!r} is not an integer") from None
                if name in labels:
                    raise LabelFileError(f"{path}:{line}: {name!r} appears twice")
                labels[name] = label
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelFileError(f"{path}: cannot read labels ({exc})") from exc
    return labels
