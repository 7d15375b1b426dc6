"""Shared fixtures: tiny architectures and kits built in the test, never the shipped weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge_sdk.data.images import ImageSpec
from edge_sdk.kit import Architecture, Kit, KitManifest, TaskSpec, build_models, save_kit
from edge_sdk.kit.manifest import ComponentFile

TINY = Architecture(
    image_size=16, channels=1, feature_channels=4, encoder_width=4, latent_dim=8,
    generator_width=4, critic_width=4, amortizer_width=4, head_width=4, num_classes=3,
)  # fmt: skip


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


def make_tiny_kit(seed: int = 0, arch: Architecture = TINY) -> Kit:
    """A randomly initialised kit of the tiny architecture, networks in eval mode."""
    torch.manual_seed(seed)
    models = {name: m.eval() for name, m in build_models(arch).items()}
    manifest = KitManifest(
        name="tiny", image=ImageSpec(size=arch.image_size, channels=arch.channels), architecture=arch,
        task=TaskSpec(), files={c: ComponentFile(path=f"{c}.safetensors", sha256="0" * 64) for c in models},
        training={"seed": seed},
    )  # fmt: skip
    return Kit(manifest=manifest, **models)  # type: ignore[arg-type]


@pytest.fixture
def tiny_kit() -> Kit:
    return make_tiny_kit()


@pytest.fixture
def tiny_kit_dir(tmp_path: Path, tiny_kit: Kit) -> Path:
    folder = tmp_path / "kit"
    save_kit(tiny_kit, folder)
    return folder
