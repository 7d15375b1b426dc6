"""Crafting and kit training take a device: the CPU by default, a CUDA GPU when there and asked for."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY
from edge_sdk.cli import app
from edge_sdk.console import EXIT_BAD_INPUT
from edge_sdk.crafting import PRESETS, Crafter, CrafterConfig
from edge_sdk.data.images import ImageSpec
from edge_sdk.data.orl import FaceSet
from edge_sdk.devices import DeviceUnavailableError, resolve_device
from edge_sdk.kit import Kit
from edge_sdk.kit.training import TrainingConfig, train_kit

CUDA = torch.cuda.is_available()
FAST = {"steps": 3, "inversion_steps": 5, "inner_steps": 2, "final_inversion_steps": 5, "prior_samples": 8}
FEW = TrainingConfig(pose_epochs=2, pose_batch_size=8, gan_steps=2, gan_batch_size=8, n_critic=1, amortizer_steps=3)


def _images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _faces(n: int = 16) -> FaceSet:
    return FaceSet(
        images=_images(n), identity=torch.arange(n) // 4, image_index=torch.arange(n), pose=torch.arange(n) % 3
    )


@pytest.mark.parametrize("name", ["tpu", "not a device", "cuda:7" if CUDA else "cuda"])
def test_a_device_that_is_not_here_is_a_typed_error(name: str) -> None:
    with pytest.raises(DeviceUnavailableError):
        resolve_device(name)


@pytest.mark.parametrize("preset", ["default", "feature", "answer-only"])
def test_crafting_on_the_cpu_asked_for_by_name_is_the_default_crafting(tiny_kit: Kit, preset: str) -> None:
    config: CrafterConfig = PRESETS[preset](**FAST)
    default = Crafter(tiny_kit, config).craft(images=_images())
    named = Crafter(tiny_kit, config, device="cpu").craft(images=_images())
    assert torch.equal(default.features, named.features)


def test_moving_a_kit_copies_it_and_leaves_the_original_where_it_was(tiny_kit: Kit) -> None:
    assert tiny_kit.to(torch.device("cpu")) is tiny_kit
    moved = tiny_kit.to(torch.device("meta"))  # a device every machine has, holding shapes only
    assert moved.device.type == "meta" and tiny_kit.device.type == "cpu"
    assert moved.generator is not tiny_kit.generator and moved.manifest is tiny_kit.manifest


def test_kit_training_on_the_cpu_asked_for_by_name_is_the_default_training() -> None:
    spec = ImageSpec(size=16)
    default, _ = train_kit(_faces(), architecture=TINY, spec=spec, config=FEW, progress=False)
    named, _ = train_kit(_faces(), architecture=TINY, spec=spec, config=FEW, progress=False, device="cpu")
    for name, module in default.components().items():
        for a, b in zip(module.state_dict().values(), named.components()[name].state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert named.manifest.training["device"] == "cpu"
    with pytest.raises(DeviceUnavailableError):
        train_kit(_faces(), architecture=TINY, spec=spec, config=FEW, progress=False, device="tpu")


def test_the_craft_command_names_a_missing_gpu(tmp_path, tiny_kit_dir) -> None:  # type: ignore[no-untyped-def]
    if CUDA:
        pytest.skip("this machine has a GPU")
    (tmp_path / "a.png").write_bytes(b"")
    args = ["craft", str(tmp_path), "--out", str(tmp_path / "o.npz"), "--kit", str(tiny_kit_dir), "--device", "cuda"]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_BAD_INPUT and "0 usable CUDA device(s)" in result.output


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("preset", ["default", "answer-only"])  # both keep the head's answers
def test_crafting_on_a_gpu_keeps_what_the_cpu_release_keeps(tiny_kit: Kit, preset: str) -> None:
    config: CrafterConfig = PRESETS[preset](**FAST)
    cpu = Crafter(tiny_kit, config).craft(images=_images())
    gpu = Crafter(tiny_kit, config, device="cuda").craft(images=_images())
    # Same draws and the same CPU encoding; the GPU's arithmetic moves the release, not what it keeps.
    assert gpu.features.device.type == "cpu" and torch.equal(gpu.raw_features, cpu.raw_features)
    assert torch.isfinite(gpu.features).all()
    with torch.no_grad():
        assert tiny_kit.head is not None
        assert torch.equal(tiny_kit.head(gpu.features).argmax(1), tiny_kit.head(cpu.features).argmax(1))


runner = CliRunner()
