"""A user's folder of face pictures: listing, decoding, and reporting the bad ones."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edge_sdk.data.images import FacePolicy, ImageSpec, load_faces
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

# Suffixes listed, matched case-insensitively. The content decides how a file is read
# (edge_sdk.data.images.PICTURE_FORMATS); files with the suffixes of other picture
# formats are listed too, so that they are reported as skipped with their format
# named instead of being passed over in silence.
IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".pgm", ".ppm", ".pbm", ".pnm", ".bmp", ".dib",
    ".webp", ".tif", ".tiff", ".gif", ".mpo",
    ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl", ".eps", ".ps", ".psd", ".svg", ".ico", ".tga",
    ".dng", ".cr2", ".nef", ".arw",
)  # fmt: skip


@dataclass(frozen=True)
class SkippedImage:
    """A file that could not be used, and why."""

    file: str
    reason: str


@dataclass
class FolderImages:
    """Decoded faces of a folder (or of one batch of it).

    Attributes:
        images: ``(N, C, S, S)`` float32 tensor in model space, one row per face.
        files: Path of each row's picture relative to the folder, POSIX style.
        faces: Each row's face index within its picture, 0 for the largest.
        skipped: Files that failed to decode or hold no face, with the reason.
    """

    images: torch.Tensor
    files: list[str]
    faces: list[int] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.faces:
            self.faces = [0] * len(self.files)


def list_images(root: str | Path) -> list[str]:
    """Picture files under ``root`` (recursively, hidden entries excluded), sorted, relative.

    Symbolic links to folders are not walked; links to files are listed, and decoding
    refuses those that lead outside ``root``.

    Raises:
        ImageLoadError: ``root`` is not a folder.
        EmptyInputError: The folder holds no file with a picture suffix.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageLoadError(f"{root}: not a folder")
    files = []
    for here, folders, names in os.walk(root, followlinks=False):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            files.append((Path(here) / name).relative_to(root).as_posix())
    files.sort()
    if not files:
        raise EmptyInputError(f"{root}: no pictures found (looked for {', '.join(IMAGE_EXTENSIONS[:16])}, any case)")
    return files


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _decode(root: Path, files: Sequence[str], spec: ImageSpec, policy: FacePolicy) -> FolderImages:
    tensors: list[torch.Tensor] = []
    good: list[str] = []
    faces: list[int] = []
    skipped: list[SkippedImage] = []
    for name in files:
        path = root / name
        if not _inside(root, path):
            skipped.append(SkippedImage(file=name, reason="symbolic link to a file outside the folder"))
            continue
        try:
            crops = load_faces(path, spec, policy=policy)
        except ImageLoadError as exc:
            skipped.append(SkippedImage(file=name, reason=str(exc).removeprefix(f"{path}: ")))
            continue
        tensors.extend(crops)
        good.extend([name] * len(crops))
        faces.extend(range(len(crops)))
    images = torch.stack(tensors) if tensors else torch.empty(0, spec.channels, spec.size, spec.size)
    return FolderImages(images=images, files=good, faces=faces, skipped=skipped)


def load_folder(root: str | Path, spec: ImageSpec, *, policy: FacePolicy = FacePolicy()) -> FolderImages:
    """Load every picture under ``root``; bad files are skipped and listed, not fatal.

    Args:
        root: The folder.
        spec: The kit's preprocessing.
        policy: Alignment on or off; the largest face or every face of a picture.

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
    result = _decode(root, list_images(root), spec, policy)
    if not result.files:
        reasons = "; ".join(f"{s.file}: {s.reason}" for s in result.skipped[:5])
        raise EmptyInputError(f"{root}: none of {len(result.skipped)} image files could be read ({reasons})")
    return result


def iter_folder_batches(
    root: str | Path,
    spec: ImageSpec,
    *,
    batch_size: int,
    files: Sequence[str] | None = None,
    policy: FacePolicy = FacePolicy(),
) -> Iterator[FolderImages]:
    """Decode a large folder batch by batch (``batch_size`` files at a time).

    Args:
        root: The folder.
        spec: Preprocessing.
        batch_size: Files per batch; a batch holds fewer rows when some files are bad,
            more when ``policy.all_faces`` finds several faces in a picture.
        files: Relative file names to use instead of listing the folder.
        policy: Alignment on or off; the largest face or every face of a picture.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    root = Path(root)
    names = list(files) if files is not None else list_images(root)
    for start in range(0, len(names), batch_size):
        yield _decode(root, names[start : start + batch_size], spec, policy)


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
