"""Crafting methods as strategies and the loss objects they share, checked against independent computations."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import get_args

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from edge_sdk.crafting import (
    METHODS,
    Crafter,
    CrafterConfig,
    CraftingMethod,
    CriticEMD,
    ExactEMD,
    FeatureDistance,
    HeadKL,
)
from edge_sdk.crafting.config import Method
from edge_sdk.crafting.methods import CraftingProblem
from edge_sdk.kit import Kit
from edge_sdk.kit.models import Critic
from edge_sdk.metrics import relative_distortion


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_registry_holds_every_method_the_config_names() -> None:
    assert set(METHODS) == set(get_args(Method))
    assert all(issubclass(cls, CraftingMethod) and cls.name == name for name, cls in METHODS.items())
    with pytest.raises(ValueError, match="'crafter', 'crafter-z'"):
        CrafterConfig(method="svd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="feature_optimizer"):
        CrafterConfig(feature_optimizer="sgd")  # type: ignore[arg-type]


class _ScaledRelease(CraftingMethod):
    """A method written outside the package: releases ``scale * F0``, one step per config step."""

    name = "scaled"

    def begin(self, problem: CraftingProblem) -> None:
        self.released = problem.raw.clone()

    def step(self, problem: CraftingProblem, step: int) -> float:
        self.released = 0.5 * self.released
        return float(problem.utility(self.released))

    def release(self) -> torch.Tensor:
        return self.released

    def final_inversion(self, crafted: torch.Tensor) -> torch.Tensor:
        return self.invert(crafted, None, 2)


def test_a_new_method_plugs_in_through_the_registry(tiny_kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, "scaled", _ScaledRelease)
    config = CrafterConfig(method="scaled", utility="feature", steps=2, inversion_steps=2)  # type: ignore[arg-type]
    images = _images(4, 0)
    result = Crafter(tiny_kit, config).craft(images=images)
    torch.testing.assert_close(result.features, 0.25 * result.raw_features)  # in the caller's order
    assert result.diagnostics["method"] == "scaled"
    assert result.diagnostics["curves"]["utility_loss"] == pytest.approx([0.5, 0.75], abs=1e-5)
    torch.testing.assert_close(
        torch.tensor(result.diagnostics["relative_distortion"]), torch.tensor(0.75), rtol=1e-6, atol=0
    )


def test_exact_emd_is_the_optimal_assignment_and_its_objective_moves_towards_the_prior() -> None:
    gen = torch.Generator().manual_seed(3)
    recon, prior = torch.rand(6, 1, 8, 8, generator=gen), torch.rand(6, 1, 8, 8, generator=gen)
    loss = ExactEMD(prior)
    objective = loss.fit(recon)
    cost = torch.cdist(recon.flatten(1).double(), prior.flatten(1).double()).numpy() / 8.0
    rows, cols = linear_sum_assignment(cost)
    assert loss.curve == [pytest.approx(cost[rows, cols].mean(), rel=1e-9)]
    x = recon.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x), x)
    moved = (recon - 0.05 * grad / grad.norm()).detach()
    refitted = ExactEMD(prior)
    refitted.fit(moved)
    assert refitted.curve[0] < loss.curve[0]  # a step down the objective lowers the exact EMD itself


def test_critic_emd_trains_the_critic_and_records_its_estimate(tiny_kit: Kit) -> None:
    prior, recon = _images(8, 1), _images(4, 2)
    critic = Critic(tiny_kit.architecture)
    untrained = copy.deepcopy(critic)
    loss = CriticEMD(prior, critic, steps=1, lr=1e-3, gp_weight=10.0, rng=torch.Generator().manual_seed(0))
    objective = loss.fit(recon)
    # The estimate is the Wasserstein gap before the update, on the prior batch the rng draws.
    real = prior[torch.randint(0, 8, (4,), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        expected = untrained(real).mean() - untrained(recon).mean()
        assert loss.curve == [pytest.approx(expected.item(), rel=1e-5, abs=1e-7)]
        assert objective(recon) == pytest.approx(-critic(recon).mean().item())  # scored by the updated critic
    changed = [not torch.equal(a, b) for a, b in zip(untrained.parameters(), critic.parameters(), strict=True)]
    assert any(changed)


def test_utility_losses_match_direct_computations(tiny_kit: Kit) -> None:
    raw = torch.randn(5, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    moved = raw + 0.3 * torch.randn(raw.shape, generator=torch.Generator().manual_seed(2))
    assert FeatureDistance(raw)(moved).item() == pytest.approx(relative_distortion(moved, raw).mean().item(), rel=1e-5)
    assert FeatureDistance(raw)(raw).item() < 1e-5
    head: nn.Module = tiny_kit.head  # type: ignore[assignment]
    with torch.no_grad():
        p, q = torch.softmax(head(raw).double(), 1), torch.softmax(head(moved).double(), 1)
    kl = (p * (p / q).log()).sum(1).mean().item()
    assert HeadKL(head, raw)(moved).item() == pytest.approx(kl, rel=1e-3, abs=1e-6)
    assert HeadKL(head, raw)(raw).item() == pytest.approx(0.0, abs=1e-7)


def test_every_method_is_seeded_and_reports_its_curves(tiny_kit: Kit) -> None:
    base = CrafterConfig.feature(steps=3, inversion_steps=5, inner_steps=2, final_inversion_steps=5, prior_samples=8)
    for name in METHODS:
        config = replace(base, method=name)
        first, again = (Crafter(tiny_kit, config).craft(images=_images(5, 0)) for _ in range(2))
        assert torch.equal(first.features, again.features)
        steps = 3 if METHODS[name].iterative else 0
        assert len(first.diagnostics["curves"]["emd"]) == len(first.diagnostics["curves"]["utility_loss"]) == steps
