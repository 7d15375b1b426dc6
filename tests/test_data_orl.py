from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_sdk.data.images import ImageSpec, aligned_input, load_image, read_picture
from edge_sdk.data.orl import SPLITS, load_orl, orl_keys, orl_landmarks, orl_root, pose_labels
from edge_sdk.faces.alignment import ORL_TEMPLATE
from edge_sdk.faces.detector import default_detector


def test_full_set_has_400_images_of_40_people() -> None:
    faces = load_orl("all")
    assert len(faces) == 400
    assert faces.images.shape == (400, 1, 64, 64)
    assert torch.bincount(faces.identity).tolist() == [10] * 40
    assert faces.images.min() >= -1 and faces.images.max() <= 1


@pytest.mark.parametrize(
    ("split", "count", "ids", "images"),
    [
        ("public", 200, range(0, 20), range(1, 11)),
        ("public-train", 160, range(0, 20), range(1, 9)),
        ("public-val", 40, range(0, 20), range(9, 11)),
        ("private", 200, range(20, 40), range(1, 11)),
        ("private-train", 120, range(20, 40), range(1, 7)),
        ("private-test", 80, range(20, 40), range(7, 11)),
    ],
)
def test_split_sizes_and_members(split: str, count: int, ids: range, images: range) -> None:
    keys = orl_keys(split)  # type: ignore[arg-type]
    assert len(keys) == count
    assert {s - 1 for s, _ in keys} == set(ids)
    assert {i for _, i in keys} == set(images)


def test_public_and_private_share_no_identity() -> None:
    public = {s for s, _ in orl_keys("public")}
    private = {s for s, _ in orl_keys("private")}
    assert public.isdisjoint(private) and len(public | private) == 40
    train, test = set(orl_keys("private-train")), set(orl_keys("private-test"))
    assert train.isdisjoint(test) and train | test == set(orl_keys("private"))


def test_pose_labels_cover_every_image_in_balanced_tertiles() -> None:
    labels = pose_labels()
    assert len(labels) == 400
    counts = torch.bincount(torch.tensor(list(labels.values())))
    assert counts.tolist() == [133, 133, 134]


def test_loaded_labels_follow_the_csv() -> None:
    faces = load_orl("private-test")
    labels = pose_labels()
    expected = [labels[(int(i) + 1, int(n))] for i, n in zip(faces.identity, faces.image_index, strict=True)]
    assert faces.pose.tolist() == expected


def test_unknown_split_is_refused() -> None:
    assert "private-test" in SPLITS
    with pytest.raises(ValueError, match="unknown split"):
        load_orl("secret")  # type: ignore[arg-type]


def test_recorded_landmarks_cover_every_face() -> None:
    landmarks = orl_landmarks()
    assert sorted(landmarks) == orl_keys("all")
    points = np.stack(list(landmarks.values()))
    assert points.shape == (400, 5, 2) and np.isfinite(points).all()
    # ORL pictures are 92 x 112: every landmark lies inside, right eye left of left eye.
    assert (points[..., 0] > 0).all() and (points[..., 0] < 92).all()
    assert (points[..., 1] > 0).all() and (points[..., 1] < 112).all()
    assert (points[:, 0, 0] < points[:, 1, 0]).all()


@pytest.mark.parametrize("key", [(1, 1), (13, 5), (27, 8), (40, 10)])
def test_recorded_landmarks_are_what_the_detector_finds(key: tuple[int, int]) -> None:
    """A changed detector or setting shows here: rerun scripts/compute_orl_landmarks.py."""
    subject, image = key
    path = orl_root() / f"s{subject}" / f"{image}.pgm"
    largest = max(default_detector().detect(read_picture(path)), key=lambda face: face.area)
    np.testing.assert_allclose(orl_landmarks()[key], largest.landmarks, atol=0.05)
    spec = ImageSpec(face_template=ORL_TEMPLATE)
    faces = load_orl("all", spec=spec)
    loaded = faces.images[orl_keys("all").index(key)]
    torch.testing.assert_close(loaded, load_image(path, spec), atol=0.02, rtol=0)


def test_aligning_needs_a_face_template() -> None:
    picture = np.zeros((112, 92, 3), np.float32)
    with pytest.raises(ValueError, match="no face template"):
        aligned_input(picture, orl_landmarks()[(1, 1)], ImageSpec())
