"""The intrapersonal subspace and the crafting utility that keeps a release's coordinates in it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, principal_component_head
from edge_sdk.crafting import Crafter, CrafterConfig
from edge_sdk.crafting.losses import HeadHinge, IntrapersonalDistance
from edge_sdk.data.orl import FaceSet
from edge_sdk.errors import KitError
from edge_sdk.kit import Architecture, Kit, load_kit
from edge_sdk.kit.models import IntrapersonalSubspace
from edge_sdk.kit.training import fit_intrapersonal


def _people(people: int, pictures: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(N, 4, 4, 4)``: a person's offset in dimensions 0-9, their picture's variation in 10-19."""
    gen = torch.Generator().manual_seed(seed)
    identity = torch.arange(people).repeat_interleave(pictures)
    flat = torch.zeros(len(identity), 64)
    flat[:, :10] = 5 * torch.randn(people, 10, generator=gen)[identity]
    flat[:, 10:20] = torch.randn(len(identity), 10, generator=gen) * torch.linspace(3, 1, 10)
    return flat.view(-1, 4, 4, 4), identity


def test_the_subspace_is_the_principal_directions_of_features_around_their_person_mean() -> None:
    features, identity = _people(people=6, pictures=5, seed=0)
    subspace = IntrapersonalSubspace(Architecture(image_size=16, feature_channels=4, intrapersonal_rank=5))
    subspace.fit(features, identity)
    # Independent reference: numpy's SVD of the residuals from each person's mean.
    flat, ids = features.flatten(1).double().numpy(), identity.numpy()
    means = np.stack([flat[ids == p].mean(0) for p in range(6)])
    _, singular, vh = np.linalg.svd(flat - means[ids], full_matrices=False)
    reference = vh[:5].T @ vh[:5]
    basis = subspace.basis.double().numpy()
    np.testing.assert_allclose(basis @ basis.T, reference, atol=1e-5)
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-5)
    np.testing.assert_allclose(subspace.variance.numpy(), singular[:5] ** 2 / (30 - 6), rtol=1e-5)
    # What tells people apart (dimensions 0-9) is left out of it.
    assert float(subspace.basis[:10].abs().max()) < 1e-5
    assert subspace(features).shape == (30, 5)


def test_a_refit_gives_the_same_buffers_and_too_few_pictures_are_refused() -> None:
    features, identity = _people(people=6, pictures=5, seed=1)
    arch = Architecture(image_size=16, feature_channels=4, intrapersonal_rank=5)
    first = IntrapersonalSubspace(arch).fit(features, identity)
    order = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    shuffled = IntrapersonalSubspace(arch).fit(features[order], identity[order])
    # The order of the faces does not matter, and the fixed signs make the bases equal, not only their span.
    torch.testing.assert_close(shuffled.basis, first.basis, atol=1e-5, rtol=0)
    same = IntrapersonalSubspace(arch).fit(features.clone(), identity.clone())
    assert torch.equal(first.basis, same.basis) and torch.equal(first.variance, same.variance)
    with pytest.raises(ValueError, match="fewer than the rank 5"):
        IntrapersonalSubspace(arch).fit(features[:6], identity[:6])  # 6 faces of 2 people: 4 dimensions
    with pytest.raises(ValueError, match="do not fit"):
        IntrapersonalSubspace(arch).fit(features[:, :2], identity)


def test_the_utility_sees_moves_inside_the_subspace_and_none_outside() -> None:
    features, identity = _people(people=6, pictures=5, seed=2)
    subspace = IntrapersonalSubspace(Architecture(image_size=16, feature_channels=4, intrapersonal_rank=5))
    subspace.fit(features, identity)
    raw = features[:4]
    loss = IntrapersonalDistance(subspace, raw, head_weight=0.0)
    assert float(loss(raw)) < 1e-5
    outside = raw.clone().flatten(1)
    outside[:, :10] += 3.0  # where people differ
    assert float(loss(outside.view_as(raw))) < 1e-5
    step = subspace.basis[:, 0].view(1, 4, 4, 4) * 2.0
    expected = (2.0 / raw.flatten(1).norm(dim=1)).mean()
    torch.testing.assert_close(loss(raw + step), expected.to(torch.float32), rtol=1e-4, atol=1e-6)
    # With a lower rank only the first directions count: a move along the last one is free.
    first_two = IntrapersonalDistance(subspace, raw, head_weight=0.0, rank=2)
    last = subspace.basis[:, 4].view(1, 4, 4, 4) * 2.0
    assert float(first_two(raw + last)) < 1e-5 and float(loss(raw + last)) > 0.1
    torch.testing.assert_close(first_two(raw + step), expected.to(torch.float32), rtol=1e-4, atol=1e-6)


def _fitted(kit: Kit, seed: int = 0) -> Kit:
    images = torch.rand(40, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    assert kit.intrapersonal is not None
    kit.intrapersonal.fit(kit.encode(images), torch.arange(8).repeat_interleave(5))
    return kit


def test_crafter_z_keeps_the_intrapersonal_coordinates_seeded(tiny_kit: Kit) -> None:
    kit = _fitted(tiny_kit)
    config = CrafterConfig.intrapersonal(steps=25, inversion_steps=3, final_inversion_steps=3)
    images = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    first = Crafter(kit, config).craft(images=images)
    again = Crafter(kit, config).craft(images=images)
    assert torch.equal(first.features, again.features)
    curve = first.diagnostics["curves"]["utility_loss"]
    assert len(curve) == 25 and curve[-1] < curve[0]
    other = Crafter(kit, replace(config, seed=1)).craft(images=images)
    assert not torch.equal(first.features, other.features)
    with_head = Crafter(kit, replace(config, head_loss="kl", head_weight=0.3)).craft(images=images)
    assert not torch.equal(first.features, with_head.features)
    fewer = Crafter(kit, replace(config, intrapersonal_rank=2)).craft(images=images)
    assert not torch.equal(first.features, fewer.features)
    with pytest.raises(KitError, match="more directions than kit"):
        Crafter(kit, replace(config, intrapersonal_rank=5))  # the tiny kit's subspace has 4


def test_settings_that_would_be_ignored_are_refused() -> None:
    with pytest.raises(ValueError, match="head_weight"):
        CrafterConfig(head_weight=0.5)  # the default utility is the head's KL alone
    with pytest.raises(ValueError, match="exceeds the feature size"):
        Architecture(image_size=16, feature_channels=1, intrapersonal_rank=17)
    with pytest.raises(ValueError, match="intrapersonal_rank applies"):
        CrafterConfig(intrapersonal_rank=4)
    with pytest.raises(ValueError, match="intrapersonal_rank must be >= 1"):
        CrafterConfig.intrapersonal(intrapersonal_rank=0)
    with pytest.raises(ValueError, match="head_loss applies"):
        CrafterConfig(head_loss="hinge")
    with pytest.raises(ValueError, match="head_loss must be one of"):
        CrafterConfig.intrapersonal(head_loss="mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weighs nothing with head_weight=0"):
        CrafterConfig.intrapersonal(head_weight=0.0)  # the preset's hinge, weighed by nothing
    with pytest.raises(ValueError, match="head_margin is the margin of head_loss='hinge'"):
        CrafterConfig.intrapersonal(head_loss="kl", head_margin=0.5)


def _hinge_by_hand(logits: list[list[float]], answers: list[int], *, margin: float) -> list[float]:
    """Per face: the best other logit minus the answer's, plus the margin, when positive."""
    return [
        max(max(v for c, v in enumerate(row) if c != y) - row[y] + margin, 0.0)
        for row, y in zip(logits, answers, strict=True)
    ]


def test_the_hinge_is_the_answers_logit_deficit_and_zero_once_the_answer_is_kept() -> None:
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 4))
    raw, released = torch.randn(6, 2, 2, 2), torch.randn(6, 2, 2, 2, requires_grad=True)
    hinge = HeadHinge(head, raw)
    with torch.no_grad():
        margin = HeadHinge(head, raw, margin=0.5)(released)
    with torch.no_grad():
        answers, logits = head(raw).argmax(1).tolist(), head(released).tolist()
    deficits = _hinge_by_hand(logits, answers, margin=0.0)
    loss = hinge(released)
    torch.testing.assert_close(loss, torch.tensor(sum(deficits) / 6))
    assert 0 < sum(d > 0 for d in deficits) < 6  # the seed gives faces of both kinds
    (gradient,) = torch.autograd.grad(loss, released)
    kept = [i for i, d in enumerate(deficits) if d == 0]
    assert float(gradient[kept].abs().max()) == 0.0  # a face whose answer is kept is not pulled
    assert float(hinge(raw).detach()) == 0.0
    # With a margin the answer must lead by it: every face owes 0.5 more, or what it lacks of it.
    assert abs(float(margin) - sum(_hinge_by_hand(logits, answers, margin=0.5)) / 6) < 1e-5
    assert float(margin) > float(loss.detach())
    with pytest.raises(ValueError, match="margin must be >= 0"):
        HeadHinge(head, raw, margin=-1.0)


def test_the_hinge_keeps_the_heads_answers_that_the_intrapersonal_utility_alone_loses(tiny_kit: Kit) -> None:
    # A head whose answers spread over the classes across the generator's range (a random tiny
    # head answers nearly one class everywhere, which any release keeps).
    kit = replace(_fitted(tiny_kit), head=principal_component_head(tiny_kit))
    config = CrafterConfig.intrapersonal(
        steps=25, inversion_steps=3, final_inversion_steps=3, head_weight=0.0, head_loss="kl"
    )
    with torch.no_grad():
        images = kit.generator(torch.randn(8, kit.architecture.latent_dim, generator=torch.Generator().manual_seed(8)))
    alone = Crafter(kit, config).craft(images=images)
    hinged = Crafter(kit, replace(config, head_weight=1.0, head_loss="hinge")).craft(images=images)
    assert kit.head is not None

    def deficit(result):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            return float(HeadHinge(kit.head, result.raw_features)(result.features))

    # Measured over tiny-kit seeds 0-3: 0.0 with the hinge, 0.16-0.92 without.
    assert deficit(hinged) < 0.5 * deficit(alone)
    with pytest.raises(KitError, match="has no head, whose answers head_weight=1 keeps"):
        Crafter(replace(kit, head=None), replace(config, head_weight=1.0))
    assert not torch.equal(
        hinged.features, Crafter(kit, replace(config, head_weight=1.0)).craft(images=images).features
    )


def test_fit_intrapersonal_fits_the_subspace_and_keeps_every_network(tiny_kit: Kit) -> None:
    images = torch.rand(40, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    identity = torch.arange(8).repeat_interleave(5)
    faces = FaceSet(images=images, identity=identity, image_index=torch.arange(40), pose=torch.zeros(40).long())
    fitted = fit_intrapersonal(tiny_kit, faces)
    reference = IntrapersonalSubspace(TINY).fit(tiny_kit.encode(images), identity)
    assert fitted.intrapersonal is not None
    torch.testing.assert_close(fitted.intrapersonal.basis, reference.basis)
    assert fitted.encoder is tiny_kit.encoder and fitted.generator is tiny_kit.generator
    assert tiny_kit.intrapersonal is not None and not tiny_kit.intrapersonal.fitted  # the original is left as it was
    with pytest.raises(ValueError, match="fewer than"):
        fit_intrapersonal(tiny_kit, FaceSet(images[:10], torch.arange(10), torch.arange(10), torch.zeros(10).long()))


def test_a_kit_without_a_fitted_subspace_is_refused(tiny_kit: Kit) -> None:
    with pytest.raises(KitError, match="intrapersonal"):
        Crafter(tiny_kit, CrafterConfig(utility="intrapersonal"))  # built, never fitted
    tiny_kit.intrapersonal = None
    with pytest.raises(KitError, match="intrapersonal"):
        Crafter(tiny_kit, CrafterConfig(utility="intrapersonal"))


def test_a_manifest_written_before_the_subspace_still_loads(tiny_kit_dir: Path) -> None:
    manifest = tiny_kit_dir / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["architecture"]["intrapersonal_rank"]
    del data["files"]["intrapersonal"]
    manifest.write_text(json.dumps(data))
    kit = load_kit(tiny_kit_dir)
    assert kit.intrapersonal is None
    assert kit.architecture == replace(TINY, intrapersonal_rank=Architecture().intrapersonal_rank)  # the default


def test_the_default_kit_ships_a_fitted_subspace() -> None:
    kit = load_kit()
    assert kit.intrapersonal is not None and kit.intrapersonal.rank == kit.architecture.intrapersonal_rank
    assert bool((kit.intrapersonal.variance > 0).all())
    torch.testing.assert_close(kit.intrapersonal.basis.T @ kit.intrapersonal.basis, torch.eye(16), atol=1e-4, rtol=0)


def test_craft_command_with_the_intrapersonal_preset(tmp_path: Path, tiny_kit: Kit) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from edge_sdk.cli import app
    from edge_sdk.fileio import read_features
    from edge_sdk.kit import save_kit

    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        Image.new("L", (92, 112), 30 + 50 * i).save(faces / f"{i}.png")
    save_kit(tiny_kit, tmp_path / "unfitted")
    save_kit(_fitted(tiny_kit), tmp_path / "fitted")
    runner = CliRunner()
    for kit, expected in (("fitted", 0), ("unfitted", 1)):
        out = tmp_path / f"{kit}.npz"
        args = ["craft", str(faces), "--out", str(out), "--kit", str(tmp_path / kit), "--steps", "2", "-q"]
        result = runner.invoke(app, [*args, "--preset", "intrapersonal"])
        assert (result.exit_code != 0) == bool(expected), result.output
    assert read_features(tmp_path / "fitted.npz").config["crafter"]["utility"] == "intrapersonal"
    assert "fit_intrapersonal" in result.output and not (tmp_path / "unfitted.npz").exists()
