"""The crafting call on a tiny kit: shapes, determinism, order, repeat cache, baselines, bad input."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from conftest import principal_component_head
from edge_sdk.crafting.cache import CacheError, RepeatCache
from edge_sdk.crafting.crafter import Crafter, CrafterConfig
from edge_sdk.crafting.pii import epsilon_pii
from edge_sdk.errors import KitError, NonFiniteError, TensorShapeError
from edge_sdk.kit import Kit

FAST = CrafterConfig.feature(
    steps=3,
    inversion_steps=5,
    inner_steps=2,
    final_inversion_steps=5,
    critic_steps=2,
    solver_iterations=3,
    prior_samples=8,
)


def _images(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_craft_returns_features_of_the_kit_shape_and_diagnostics(tiny_kit: Kit) -> None:
    result = Crafter(tiny_kit, FAST).craft(images=_images())
    assert result.features.shape == (5, 4, 4, 4) and torch.isfinite(result.features).all()
    assert torch.equal(result.raw_features, tiny_kit.encode(_images()))
    assert not torch.equal(result.features, result.raw_features)
    d = result.diagnostics
    assert d["crafted"] == 5 and d["cache_hits"] == 0
    for key in ("utility_loss", "relative_distortion", "epsilon_pii", "epsilon_pii_raw"):
        assert np.isfinite(d[key]), key
    assert len(d["curves"]["utility_loss"]) == len(d["curves"]["emd"]) == FAST.steps
    assert d["critic_estimate"] is None  # the default privacy loss is the exact EMD


def test_paper_critic_variant_reports_the_critic_estimate(tiny_kit: Kit) -> None:
    for init in ("fresh", "kit"):
        cfg = replace(FAST, privacy_loss="critic", feature_optimizer="adam", critic_init=init)  # type: ignore[arg-type]
        d = Crafter(tiny_kit, cfg).craft(images=_images()).diagnostics
        assert np.isfinite(d["critic_estimate"]) and len(d["curves"]["critic_estimate"]) == FAST.steps
    paper = CrafterConfig.paper()
    assert (paper.steps, paper.solver, paper.solver_iterations, paper.neumann_alpha, paper.critic_steps) == (
        500,
        "neumann",
        150,
        1e-3,
        10,
    )


def test_same_input_and_seed_give_identical_features_other_seed_differs(tiny_kit: Kit) -> None:
    a = Crafter(tiny_kit, FAST).craft(images=_images()).features
    b = Crafter(tiny_kit, FAST).craft(images=_images()).features
    c = Crafter(tiny_kit, replace(FAST, seed=1)).craft(images=_images()).features
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_output_follows_the_callers_order(tiny_kit: Kit) -> None:
    perm = torch.tensor([3, 0, 4, 1, 2])
    a = Crafter(tiny_kit, FAST).craft(images=_images()).features
    b = Crafter(tiny_kit, FAST).craft(images=_images()[perm]).features
    assert torch.equal(a[perm], b)


def test_repeats_get_the_first_release_alone_or_inside_a_new_batch(tiny_kit: Kit) -> None:
    crafter = Crafter(tiny_kit, FAST)
    first = crafter.craft(images=_images()).features
    again = crafter.craft(images=_images())
    assert torch.equal(again.features, first) and again.diagnostics["cache_hits"] == 5
    mixed = torch.cat([_images(2, seed=9), _images()[1:2]])
    result = crafter.craft(images=mixed)
    assert result.diagnostics == {**result.diagnostics, "cache_hits": 1, "crafted": 2}
    assert torch.equal(result.features[2], first[1])


def test_duplicates_inside_one_batch_are_crafted_once(tiny_kit: Kit) -> None:
    x = _images(3)
    result = Crafter(tiny_kit, FAST).craft(images=torch.cat([x, x[:1]]))
    assert result.diagnostics["crafted"] == 3
    assert torch.equal(result.features[0], result.features[3])


def test_beta_trades_distortion(tiny_kit: Kit) -> None:
    loose = Crafter(tiny_kit, replace(FAST, beta=0.0, steps=6)).craft(images=_images())
    tight = Crafter(tiny_kit, replace(FAST, beta=50.0, steps=6)).craft(images=_images())
    assert tight.diagnostics["utility_loss"] < 0.5 * loose.diagnostics["utility_loss"]  # 0.25-0.27 on 12 kits


@pytest.mark.parametrize("solver", ["cg", "neumann", "dense"])
def test_every_solver_and_hessian_runs(tiny_kit: Kit, solver: str) -> None:
    for hessian in ("gauss-newton", "exact"):
        cfg = replace(FAST, solver=solver, hessian=hessian, steps=2)  # type: ignore[arg-type]
        result = Crafter(tiny_kit, cfg).craft(images=_images(3))
        assert torch.isfinite(result.features).all()


def test_crafter_z_releases_encoded_generator_outputs(tiny_kit: Kit) -> None:
    result = Crafter(tiny_kit, replace(FAST, method="crafter-z")).craft(images=_images())
    assert result.diagnostics["method"] == "crafter-z"
    # Enc(G(z)) is in the range of Enc o G: a long inversion reproduces it almost exactly,
    # unlike the raw features of arbitrary images.
    from edge_sdk.inversion import invert

    kw = {
        "generator": tiny_kit.generator,
        "encoder": tiny_kit.encoder,
        "amortizer": tiny_kit.amortizer,
        "steps": 300,
        "lr": 0.05,
    }
    crafted_fit = invert(result.features, **kw).loss.mean()  # type: ignore[arg-type]
    raw_fit = invert(result.raw_features, **kw).loss.mean()  # type: ignore[arg-type]
    assert crafted_fit < raw_fit


def test_latent_noise_sets_where_crafter_z_starts(tiny_kit: Kit) -> None:
    from edge_sdk.inversion import invert

    images = _images(6)
    # A learning rate of 1e-7 leaves z where it started: the release shows the start Enc(G(z0)).
    frozen = replace(FAST, method="crafter-z", steps=1, latent_lr=1e-7)

    def gap_to_inversion(noise: float) -> float:
        """Mean relative distance of the release from Enc(G(z*(F0))), z* solved here as the crafter does."""
        result = Crafter(tiny_kit, replace(frozen, latent_noise=noise)).craft(images=images)
        z_raw = invert(
            result.raw_features,
            generator=tiny_kit.generator,
            encoder=tiny_kit.encoder,
            amortizer=tiny_kit.amortizer,
            steps=frozen.inversion_steps,
            lr=frozen.inner_lr,
            latent_weight=frozen.latent_weight,
        ).latent
        with torch.no_grad():
            at_inversion = tiny_kit.encoder(tiny_kit.generator(z_raw))
        gap = (result.features - at_inversion).flatten(1).norm(dim=1) / at_inversion.flatten(1).norm(dim=1)
        return gap.mean().item()

    paper, half, fresh = (gap_to_inversion(m) for m in (0.0, 0.5, 1.0))
    assert paper < 1e-3  # latent_noise=0: the attacker's inversion (paper App. F)
    assert 10 * paper < half < fresh  # noise moves the start away from the person's inversion
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="latent_noise"):
            CrafterConfig(latent_noise=bad)


def _head_kl(kit: Kit, released: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """KL(head(F0) || head(F)) per sample, computed here independently of the crafter."""
    assert kit.head is not None
    with torch.no_grad():
        log_p, log_q = torch.log_softmax(kit.head(raw), 1), torch.log_softmax(kit.head(released), 1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def test_head_utility_keeps_the_heads_answers_where_privacy_alone_does_not(tiny_kit: Kit) -> None:
    kit = replace(tiny_kit, head=principal_component_head(tiny_kit))
    with torch.no_grad():  # faces the generator can draw: the raw answers are reachable from a fresh latent
        images = kit.generator(torch.randn(8, kit.architecture.latent_dim, generator=torch.Generator().manual_seed(8)))
    base = replace(FAST, method="crafter-z", steps=40, latent_lr=0.05)
    kept = Crafter(kit, replace(base, utility="head", beta=20.0)).craft(images=images)
    free = Crafter(kit, replace(base, utility="head", beta=0.0)).craft(images=images)
    # Measured over 8 kit seeds: kept / free KL at most 0.03, free KL 0.55-1.5 nats.
    assert _head_kl(kit, free.features, free.raw_features).mean() > 0.2
    assert (
        _head_kl(kit, kept.features, kept.raw_features).mean()
        < 0.2 * _head_kl(kit, free.features, free.raw_features).mean()
    )
    default = CrafterConfig()
    assert (default.method, default.utility, default.beta, default.steps, default.latent_noise) == (
        "crafter-z",
        "head",
        1.0,
        100,
        1.0,
    )
    with pytest.raises(ValueError, match="utility"):
        CrafterConfig(utility="pixels")  # type: ignore[arg-type]
    headless = replace(tiny_kit, head=None)
    with pytest.raises(KitError, match="has no head"):
        Crafter(headless)
    assert Crafter(headless, FAST).craft(images=images).features.shape == kept.features.shape


def test_bad_inputs_are_typed_errors(tiny_kit: Kit) -> None:
    crafter = Crafter(tiny_kit, FAST)
    with pytest.raises(TensorShapeError, match="exactly one"):
        crafter.craft()
    with pytest.raises(TensorShapeError, match="exactly one"):
        crafter.craft(images=_images(), features=torch.zeros(5, 4, 4, 4))
    with pytest.raises(TensorShapeError, match=r"\(batch, 4, 4, 4\)"):
        crafter.craft(features=torch.zeros(5, 4, 4))
    nan = torch.zeros(2, 4, 4, 4)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        crafter.craft(features=nan)
    with pytest.raises(ValueError, match="solver"):
        CrafterConfig(solver="svd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        CrafterConfig(steps=-1)


def test_persisted_cache_survives_a_restart_and_holds_no_raw_feature(tmp_path: Path, tiny_kit: Kit) -> None:
    path = tmp_path / "repeat.sqlite"
    scope = Crafter(tiny_kit, FAST).scope
    first = Crafter(tiny_kit, FAST, cache=RepeatCache(path, scope=scope)).craft(images=_images())
    restarted = Crafter(tiny_kit, FAST, cache=RepeatCache(path, scope=scope)).craft(images=_images())
    assert restarted.diagnostics["cache_hits"] == 5
    assert torch.equal(restarted.features, first.features)
    blob = path.read_bytes()
    for row in first.raw_features.numpy():
        assert row.astype(np.float32).tobytes()[:64] not in blob
    with pytest.raises(CacheError, match="another kit"):
        RepeatCache(path, scope="another configuration")
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CacheError, match="not a usable"):
        RepeatCache(tmp_path / "junk.sqlite")


def test_cache_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = RepeatCache(tmp_path / "c.sqlite", max_entries=2)
    raw = torch.arange(3.0)[:, None]
    keys = cache.keys_for(raw)
    for i in range(3):
        cache.put([keys[i]], raw[i : i + 1])
    assert len(cache) == 2
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM crafted").fetchone()[0] == 2


def test_epsilon_pii_is_zero_for_identical_sets_and_grows_with_a_shift() -> None:
    a = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    assert epsilon_pii(a, a.flip(0)) == 0.0
    shifts = [epsilon_pii(a, a + s) for s in (0.05, 0.1, 0.2)]
    assert shifts == sorted(shifts) and shifts[0] == pytest.approx(0.05, rel=1e-6)


def test_epsilon_pii_matches_an_assignment_solved_by_scipy() -> None:
    gen = torch.Generator().manual_seed(2)
    a, b = torch.rand(7, 1, 6, 6, generator=gen), torch.rand(7, 1, 6, 6, generator=gen)
    cost = torch.cdist(a.flatten(1).double(), b.flatten(1).double()).numpy() / 6.0
    rows, cols = linear_sum_assignment(cost)
    assert epsilon_pii(a, b) == pytest.approx(cost[rows, cols].mean(), rel=1e-9)


def test_exact_emd_privacy_loss_moves_reconstructions_towards_the_prior(tiny_kit: Kit) -> None:
    cfg = replace(FAST, privacy_loss="emd", beta=0.0, steps=8, lr=0.2, inner_steps=10)
    result = Crafter(tiny_kit, cfg).craft(images=_images(6))
    emd = result.diagnostics["curves"]["emd"]
    assert len(emd) == 8 and result.diagnostics["curves"]["critic_estimate"] == []
    assert emd[-1] < 0.95 * emd[0]  # 0.77-0.88 measured over 12 tiny kits


@pytest.mark.parametrize(
    ("method", "overrides", "skips_inversion"),
    [
        ("crafter-z", {"latent_noise": 1.0}, True),
        ("crafter-z", {"latent_noise": 0.5}, False),
        ("answer-only", {}, True),
        ("crafter", {}, False),
    ],
)
def test_without_the_privacy_measurement_the_release_is_the_same_and_unused_inversions_are_skipped(
    tiny_kit: Kit, method: str, overrides: dict[str, float], skips_inversion: bool
) -> None:
    config = replace(FAST, method=method, utility="head", **overrides)  # type: ignore[arg-type]
    measured = Crafter(tiny_kit, config).craft(images=_images())
    fast = Crafter(tiny_kit, config, measure_privacy=False)
    inversion_steps: list[int] = []
    invert = fast.method.invert
    fast.method.invert = lambda f, start, steps: inversion_steps.append(steps) or invert(f, start, steps)  # type: ignore[method-assign]
    quick = fast.craft(images=_images())
    assert torch.equal(quick.features, measured.features)
    assert quick.diagnostics["epsilon_pii"] is None and measured.diagnostics["epsilon_pii"] is not None
    # Only the amortizer's guess (0 steps) when the release does not start from the attacker's inversion.
    assert inversion_steps == ([0] if skips_inversion else [config.inversion_steps])
