"""Shared fixtures: tiny architectures and kits built in the test, never the shipped weights.

Three environment variables change the numerics the tests run under, so that
``tests/test_portability.py`` can rerun the numerical tests as another machine would
(a test must pass for any of them when the code is right):

- ``EDGE_SDK_TEST_THREADS``: torch's intra-op threads (default 1);
- ``EDGE_SDK_TEST_DETERMINISTIC=1``: ``torch.use_deterministic_algorithms(True)``;
- ``EDGE_SDK_TEST_SEED``: shifts the global seed and every tiny kit's seed (default 0).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from edge_sdk.data.images import ImageSpec
from edge_sdk.kit import Architecture, Kit, KitManifest, TaskSpec, build_models, save_kit
from edge_sdk.kit.manifest import ComponentFile

TINY = Architecture(
    image_size=16,
    channels=1,
    feature_channels=4,
    encoder_width=4,
    latent_dim=8,
    generator_width=4,
    critic_width=4,
    amortizer_width=4,
    head_width=4,
    num_classes=3,
    intrapersonal_rank=4,
)


TEST_SEED = int(os.environ.get("EDGE_SDK_TEST_SEED", "0"))
TEST_THREADS = int(os.environ.get("EDGE_SDK_TEST_THREADS", "1"))
if os.environ.get("EDGE_SDK_TEST_DETERMINISTIC") == "1":
    torch.use_deterministic_algorithms(True)


def shifted_seed(seed: int) -> int:
    """``seed`` itself in a normal run; another seed, the same for every test, under ``EDGE_SDK_TEST_SEED``."""
    return seed + 7919 * TEST_SEED


@pytest.fixture(autouse=True, scope="session")
def _reference_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The verifier keeps its reference probe in the session's temporary folder, not the user's cache."""
    os.environ["EDGE_CLOUD_REFERENCE_CACHE"] = str(tmp_path_factory.mktemp("verifier-cache"))


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(shifted_seed(0))
    torch.set_num_threads(TEST_THREADS)


def make_tiny_kit(seed: int = 0, arch: Architecture = TINY) -> Kit:
    """A randomly initialised kit of the tiny architecture, networks in eval mode."""
    torch.manual_seed(shifted_seed(seed))
    models = {name: m.eval() for name, m in build_models(arch).items()}
    manifest = KitManifest(
        name="tiny",
        image=ImageSpec(size=arch.image_size, channels=arch.channels),
        architecture=arch,
        task=TaskSpec(),
        files={c: ComponentFile(path=f"{c}.safetensors", sha256="0" * 64) for c in models},
        training={"seed": seed},
    )
    return Kit(manifest=manifest, **models)  # type: ignore[arg-type]


@pytest.fixture
def tiny_kit() -> Kit:
    return make_tiny_kit()


@pytest.fixture
def tiny_kit_dir(tmp_path: Path, tiny_kit: Kit) -> Path:
    folder = tmp_path / "kit"
    save_kit(tiny_kit, folder)
    return folder


def principal_component_head(kit: Kit, *, logit_std: float = 2.0) -> nn.Module:
    """A linear head whose logits are the top principal components of ``Enc(G(z))``, ``logit_std`` apart.

    A random tiny head answers almost the same class for every generator output, so
    keeping its answers would be a small effect that rounding can decide; this head's
    answers spread over the classes across the generator's range.
    """
    with torch.no_grad():
        z = torch.randn(256, kit.architecture.latent_dim, generator=torch.Generator().manual_seed(123))
        feats = kit.encoder(kit.generator(z)).flatten(1)
    mean = feats.mean(0)
    _, singular, directions = torch.linalg.svd(feats - mean, full_matrices=False)
    k = kit.architecture.num_classes
    weight = directions[:k] * (logit_std * (feats.shape[0] - 1) ** 0.5 / singular[:k, None])
    linear = nn.Linear(feats.shape[1], k)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(-weight @ mean)
    return nn.Sequential(nn.Flatten(), linear).eval()
