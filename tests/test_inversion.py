from __future__ import annotations

import pytest
import torch

from edge_sdk.inversion import inversion_loss, invert
from edge_sdk.kit import Kit


def _targets(kit: Kit, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    z_true = torch.randn(n, kit.architecture.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return z_true, kit.encoder(kit.generator(z_true))


def test_inversion_reduces_the_feature_loss(tiny_kit: Kit) -> None:
    _, features = _targets(tiny_kit)
    result = invert(features, generator=tiny_kit.generator, encoder=tiny_kit.encoder, steps=150, lr=0.05, seed=1)
    assert result.loss.shape == (6,)
    # Non-convex: from a random start a sample may stop in a local minimum, so the claim is
    # about the typical sample (median ratio at most 0.08 measured over 12 tiny kits).
    assert (result.loss / result.initial_loss).median() < 0.25
    assert result.history[0] > result.history[-1]
    recomputed = inversion_loss(features, result.latent, generator=tiny_kit.generator, encoder=tiny_kit.encoder)
    assert torch.allclose(recomputed, result.loss)


def test_samples_are_inverted_independently(tiny_kit: Kit) -> None:
    _, features = _targets(tiny_kit, n=4)
    start = torch.randn(4, tiny_kit.architecture.latent_dim)
    kwargs = {"generator": tiny_kit.generator, "encoder": tiny_kit.encoder, "steps": 20, "lr": 0.05}
    together = invert(features, init=start, **kwargs).latent  # type: ignore[arg-type]
    alone = torch.cat([invert(features[i : i + 1], init=start[i : i + 1], **kwargs).latent for i in range(4)])  # type: ignore[arg-type]
    assert torch.allclose(together, alone, atol=1e-5)


def test_amortizer_gives_the_start_and_no_network_gradient_leaks(tiny_kit: Kit) -> None:
    _, features = _targets(tiny_kit, n=3)
    result = invert(
        features, generator=tiny_kit.generator, encoder=tiny_kit.encoder, amortizer=tiny_kit.amortizer, steps=0
    )
    with torch.no_grad():
        assert torch.equal(result.latent, tiny_kit.amortizer(features))
    invert(features, generator=tiny_kit.generator, encoder=tiny_kit.encoder, steps=3)
    assert all(p.grad is None for p in tiny_kit.generator.parameters())


def test_latent_weight_adds_the_gaussian_prior_term(tiny_kit: Kit) -> None:
    z, features = _targets(tiny_kit, n=2)
    plain = inversion_loss(features, z, generator=tiny_kit.generator, encoder=tiny_kit.encoder)
    weighted = inversion_loss(features, z, generator=tiny_kit.generator, encoder=tiny_kit.encoder, latent_weight=0.5)
    assert torch.allclose(weighted - plain, 0.5 * z.pow(2).mean(1))


def test_sgd_with_momentum_and_bad_arguments(tiny_kit: Kit) -> None:
    _, features = _targets(tiny_kit, n=2)
    kw = {"generator": tiny_kit.generator, "encoder": tiny_kit.encoder}
    result = invert(features, steps=50, lr=0.5, optimizer="sgd", **kw)  # type: ignore[arg-type]
    assert result.loss.mean() < result.initial_loss.mean()
    with pytest.raises(ValueError, match="optimizer"):
        invert(features, steps=1, optimizer="lbfgs", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        invert(features, steps=-1, **kw)  # type: ignore[arg-type]
