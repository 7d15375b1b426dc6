"""An operator's own task: labelled images from a folder with ``labels.csv`` or an ``.npz``, split for the verifier.

A cloud operator whose model serves a task of its own verifies it on its own images:
``edge-cloud verify MODEL.onnx --data DIR_OR_NPZ``, or through the service after
registering the dataset once. The verifier then trains its honest baselines and
calibrates its margin on that data (``DetectorConfig.for_data``).

Formats:

* a folder holding ``labels.csv`` with the columns ``file`` (a path relative to the
  folder) and ``label`` (an integer class, ``0 .. K - 1``), the SDK's own labels file
  (:func:`edge_sdk.data.folder.read_labels_csv`); pictures are decoded by
  :func:`edge_sdk.data.images.read_picture` (the SDK's allow-listed decoders) and must
  share one size; they are read as grey when every picture is grey;
* an ``.npz`` holding ``images`` (``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with
  ``C`` of 1 or 3; ``uint8``, or floats in ``[0, 1]``) and ``labels`` (``(N,)`` integers),
  read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloud_stub.verification.tasks import ModelTask, TaskData, TaskDataError
from edge_sdk.client.payloads import PayloadFormatError, decode_npy
from edge_sdk.data.folder import read_labels_csv
from edge_sdk.data.images import ImageLoadError, read_picture
from edge_sdk.errors import LabelFileError

__all__ = [
    "MIN_IMAGES_PER_CLASS",
    "MIN_TEST_IMAGES",
    "MIN_TRAIN_IMAGES",
    "OperatorDataError",
    "load_operator_task",
    "operator_task",
    "read_npz",
]

MIN_TRAIN_IMAGES = 200  # the probe decoder and the retrained copies learn from these
MIN_TEST_IMAGES = 100  # held-out images the probe is scored on and the fine-tune batch
MIN_IMAGES_PER_CLASS = 10
MAX_IMAGES = 100_000
MAX_ARRAY_BYTES = 1 << 30  # what an archive may expand to
TEST_FRACTION = 0.3


class OperatorDataError(TaskDataError):
    """The operator's dataset is missing, malformed or too small to verify a model on."""


def operator_task(
    images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, *, source: str, seed: int = 0
) -> ModelTask:
    """A task from labelled images: a seeded split per class, 70% to train the verifier's models, 30% held out.

    Args:
        images: ``(N, C, H, W)`` float images in ``[0, 1]``.
        labels: ``(N,)`` classes ``0 .. K - 1``.
        source: Where they came from, for the task's description.
        seed: Seed of the split.

    Raises:
        OperatorDataError: Wrong shapes, values outside ``[0, 1]``, NaN, fewer than two
            classes, or fewer images than :data:`MIN_TRAIN_IMAGES`, :data:`MIN_TEST_IMAGES`
            or :data:`MIN_IMAGES_PER_CLASS` per class (the message gives the minimum).

    Example:
        >>> x, y = np.random.default_rng(0).random((400, 1, 8, 8)), np.arange(400) % 4
        >>> task = operator_task(x, y, source="example")
        >>> task.input_shape, task.num_classes, len(task.loader().test_images)
        ((1, 8, 8), 4, 120)
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels)).long()
    if x.dim() != 4 or x.shape[1] not in (1, 3) or y.shape != (len(x),):
        raise OperatorDataError(
            f"need images (N, 1 or 3, H, W) and labels (N,); got {list(x.shape)} and {list(y.shape)}"
        )
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise OperatorDataError("image values must be finite and in [0, 1]")
    classes = int(y.max()) + 1 if len(y) else 0
    counts = torch.bincount(y, minlength=classes) if len(y) and int(y.min()) >= 0 else torch.zeros(0)
    if classes < 2 or len(counts) != classes or int(counts.min()) < MIN_IMAGES_PER_CLASS:
        raise OperatorDataError(
            f"need labels 0 .. K-1 for K >= 2 classes with at least {MIN_IMAGES_PER_CLASS} images each; "
            f"got counts {counts.tolist()}"
        )
    generator = torch.Generator().manual_seed(seed)
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    for label in range(classes):
        members = torch.nonzero(y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        test_mask[members[: round(TEST_FRACTION * len(members))]] = True
    train, test = torch.nonzero(~test_mask).flatten(), torch.nonzero(test_mask).flatten()
    # Shuffled once, so the verifier's leading slices hold every class.
    train = train[torch.randperm(len(train), generator=generator)]
    test = test[torch.randperm(len(test), generator=generator)]
    if len(train) < MIN_TRAIN_IMAGES or len(test) < MIN_TEST_IMAGES:
        need = max(MIN_TRAIN_IMAGES / (1 - TEST_FRACTION), MIN_TEST_IMAGES / TEST_FRACTION)
        raise OperatorDataError(
            f"{len(y)} images are too few to verify on: the verifier needs at least {int(np.ceil(need))} "
            f"({MIN_TRAIN_IMAGES} to train on, {MIN_TEST_IMAGES} held out)"
        )
    data = TaskData(x[train], y[train], x[test], y[test])
    digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:12]
    channels, height, width = x.shape[1:]
    return ModelTask(
        name=f"operator-{digest}",
        input_shape=(int(channels), int(height), int(width)),
        num_classes=classes,
        description=f"{source}: {len(y)} images {channels}x{height}x{width}, {classes} classes "
        f"({len(train)} to train on, {len(test)} held out)",
        loader=lambda: data,
    )


def dataset_summary_job(data: bytes, name: str) -> dict[str, Any]:
    """Read an uploaded ``.npz`` dataset and describe the task it makes; what the service runs in a worker process.

    Raises:
        OperatorDataError: As :func:`read_npz` and :func:`operator_task`.
    """
    images, labels = read_npz(data, what="the uploaded dataset")
    task = operator_task(images, labels, source=name)
    split = task.loader()
    return {
        "description": task.description,
        "input_shape": list(task.input_shape),
        "classes": task.num_classes,
        "train_images": len(split.train_images),
        "heldout_images": len(split.test_images),
    }


def _channels_first(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        return images.transpose(0, 3, 1, 2)
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images
    raise OperatorDataError(f"images of shape {list(images.shape)}: need (N, H, W), (N, H, W, C) or (N, C, H, W)")


def _member_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, what: str) -> np.ndarray:
    """One ``.npy`` member: at most its declared size is decompressed, and its header must match it."""
    with archive.open(info) as member:
        data = member.read()
    try:
        return decode_npy(data)
    except PayloadFormatError as exc:
        raise OperatorDataError(f"{what}: {info.filename}: {exc}") from exc


# What zipfile and its decompressors raise on a damaged or unusual archive: unsupported
# versions and methods (NotImplementedError), encrypted members (RuntimeError), bad data.
_ZIP_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
)


def read_npz(source: Path | bytes, *, what: str = "the dataset") -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, C, H, W) in [0, 1], labels (N,))`` from an ``.npz`` file or its bytes, never unpickling.

    Raises:
        OperatorDataError: Not an ``.npz`` of plain arrays, arrays missing, wrong dtypes or shapes.
    """
    opened = source if isinstance(source, Path) else io.BytesIO(source)
    try:
        # Declared sizes bound what zipfile decompresses (a member is read up to its
        # declared size), and each array's header must match its member before anything
        # is allocated; the archive is read here, never by np.load, which would take a
        # bare .npy or a pickle too.
        with zipfile.ZipFile(opened) as archive:
            members = {info.filename: info for info in archive.infolist()}
            expanded = sum(info.file_size for info in members.values())
            if expanded > MAX_ARRAY_BYTES:
                raise OperatorDataError(f"{what}: its arrays hold {expanded} bytes, over the {MAX_ARRAY_BYTES} limit")
            if "images.npy" not in members or "labels.npy" not in members:
                names = sorted(name.removesuffix(".npy") for name in members)
                raise OperatorDataError(f"{what}: needs arrays 'images' and 'labels'; has {names}")
            images = _member_array(archive, members["images.npy"], what=what)
            labels = _member_array(archive, members["labels.npy"], what=what)
    except OperatorDataError:
        raise
    except _ZIP_ERRORS as exc:
        raise OperatorDataError(f"{what}: not an .npz archive of plain arrays ({type(exc).__name__}: {exc})") from exc
    if images.ndim == 0 or labels.ndim != 1:
        raise OperatorDataError(
            f"{what}: images of shape {list(images.shape)} and labels of shape {list(labels.shape)}: "
            "need a batch of images and one label each"
        )
    if len(images) > MAX_IMAGES:
        raise OperatorDataError(f"{what}: {len(images)} images is over the {MAX_IMAGES} limit")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif not np.issubdtype(images.dtype, np.floating):
        raise OperatorDataError(f"{what}: images must be uint8 or floats in [0, 1], got {images.dtype}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise OperatorDataError(f"{what}: labels must be integers, got {labels.dtype}")
    return _channels_first(images), labels


def _read_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = path / "labels.csv"
    try:
        labels = read_labels_csv(table)
    except LabelFileError as exc:
        raise OperatorDataError(str(exc)) from exc
    if len(labels) > MAX_IMAGES:
        raise OperatorDataError(f"{table}: {len(labels)} images is over the {MAX_IMAGES} limit")
    root = path.resolve()
    pictures = []
    for name in labels:
        picture = (path / name).resolve()
        if not picture.is_relative_to(root):
            raise OperatorDataError(f"{table}: {name!r} is outside the folder")
        try:
            pictures.append(read_picture(picture))
        except ImageLoadError as exc:
            raise OperatorDataError(str(exc)) from exc
    sizes = {p.shape[:2] for p in pictures}
    if len(sizes) > 1:
        raise OperatorDataError(f"{path}: pictures must share one size; found {sorted(sizes)[:3]}")
    stacked = np.stack(pictures).transpose(0, 3, 1, 2)  # (N, 3, H, W)
    grey = np.allclose(stacked[:, :1], stacked[:, 1:], atol=1e-6)
    return (stacked[:, :1] if grey else stacked), np.array(list(labels.values()))


def load_operator_task(path: str | Path, *, seed: int = 0) -> ModelTask:
    """The task of a folder with ``labels.csv`` or of an ``.npz`` (formats in the module docstring).

    Raises:
        OperatorDataError: Missing, unreadable, malformed or too small (the message says which).
    """
    path = Path(path)
    if path.is_dir():
        images, labels = _read_folder(path)
    elif path.suffix.lower() == ".npz" and path.is_file():
        images, labels = read_npz(path, what=str(path))
    else:
        raise OperatorDataError(f"{path}: need a folder with labels.csv or an .npz file")
    return operator_task(images, labels, source=str(path), seed=seed)
