"""The kit shipped in the package: present, intact, small, and usable."""

from __future__ import annotations

import torch

from edge_sdk.data.orl import load_orl
from edge_sdk.kit import default_kit_path, load_kit


def test_default_kit_loads_with_verified_checksums() -> None:
    kit = load_kit()
    assert kit.path == default_kit_path()
    assert kit.feature_shape == (32, 16, 16)
    assert kit.head is not None and kit.critic is not None
    assert kit.manifest.training["seed"] == 0


def test_default_kit_weights_fit_the_30_mb_budget() -> None:
    total = sum(p.stat().st_size for p in default_kit_path().glob("*.safetensors"))
    assert total <= 30 * 1024 * 1024


def test_default_head_beats_the_majority_class_on_private_test() -> None:
    kit = load_kit()
    faces = load_orl("private-test")
    assert kit.head is not None
    with torch.no_grad():
        accuracy = (kit.head(kit.encode(faces.images)).argmax(1) == faces.pose).float().mean()
    majority = torch.bincount(faces.pose).max() / len(faces)
    assert accuracy > majority


def test_default_kit_aligns_faces_as_its_training_data_was() -> None:
    from edge_sdk.faces.alignment import ORL_TEMPLATE

    kit = load_kit()
    assert kit.spec.face_template == ORL_TEMPLATE
    assert torch.equal(load_orl("public-val").images, load_orl("public-val", spec=kit.spec).images)
