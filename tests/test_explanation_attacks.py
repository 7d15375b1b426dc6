"""PredMI, ExpMI, GNIME's game and the fidelity measures, on tiny data with known answers."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from edge_sdk.evaluation.explanation_attacks import (
    ExplanationData,
    average_ranks,
    deletion_curve,
    explanation_data,
    rank_correlation,
    train_gnime,
    train_inverter,
)
from edge_sdk.explanation_noise import normalise_maps, rescale_noise
from edge_sdk.explanations import KitClassifier
from edge_sdk.kit import Kit

pytest.importorskip("captum", reason="Captum is not installed (extra 'explain')")


def _images(n: int = 12) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1


def test_rank_correlation_is_spearmans() -> None:
    maps = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0))
    other = maps + 0.3 * torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(1))
    expected = [spearmanr(a.flatten(), b.flatten()).statistic for a, b in zip(maps, other, strict=True)]
    torch.testing.assert_close(rank_correlation(maps, other), torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(rank_correlation(maps, -maps), -torch.ones(3))


def test_rank_correlation_averages_tied_ranks_as_scipy() -> None:
    gen = torch.Generator().manual_seed(3)
    # Grad-CAM-like: a third of the pixels exactly zero, the rest on a coarse grid of values.
    maps = (torch.rand(4, 8, 8, generator=gen) * 4).round().clamp_min(1) * (torch.rand(4, 8, 8, generator=gen) > 0.33)
    other = (maps + torch.rand(4, 8, 8, generator=gen) * 3).round()
    expected = [spearmanr(a.flatten(), b.flatten()).statistic for a, b in zip(maps, other, strict=True)]
    torch.testing.assert_close(rank_correlation(maps, other), torch.tensor(expected, dtype=torch.float32))
    assert average_ranks(torch.tensor([[0.0, 0.0, 2.0, 1.0]])).tolist() == [[1.5, 1.5, 4.0, 3.0]]


def test_rank_correlation_of_a_constant_map_is_undefined() -> None:
    maps = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(4))
    constant = maps.clone()
    constant[1] = 0.0
    result = rank_correlation(maps, constant)
    assert result[0] == 1.0 and torch.isnan(result[1])
    with_nan = maps.clone()
    with_nan[0, 0, 0] = torch.nan
    result = rank_correlation(with_nan, maps)
    assert torch.isnan(result[0]) and result[1] == 1.0


def test_noise_rescaled_to_a_mean_square_and_maps_to_their_peak() -> None:
    maps = normalise_maps(torch.rand(4, 8, 8) * torch.tensor([1.0, 5.0, 0.1, 2.0]).view(4, 1, 1))
    assert torch.allclose(maps.flatten(1).amax(1), torch.ones(4))
    noised = rescale_noise(maps, maps + torch.randn(4, 8, 8), mse=0.01)
    torch.testing.assert_close((noised - maps).pow(2).flatten(1).mean(1), torch.full((4,), 0.01))


def test_deletion_curve_starts_at_the_answer_and_ends_on_a_black_image(tiny_kit: Kit) -> None:
    images = _images(4)
    model = KitClassifier(tiny_kit).eval()
    with torch.no_grad():
        p = model(images).softmax(1)
        black = model(torch.full_like(images, (0.0 - tiny_kit.spec.mean) / tiny_kit.spec.std)).softmax(1)
    target = p.argmax(1)
    curve = deletion_curve(tiny_kit, images, torch.rand(4, 16, 16), target, fractions=4)
    assert curve.shape == (4, 5)
    torch.testing.assert_close(curve[:, 0], p[torch.arange(4), target])
    torch.testing.assert_close(curve[:, -1], black[torch.arange(4), target])


def test_an_inverter_learns_faces_from_maps_and_predmi_ignores_the_map(tiny_kit: Kit) -> None:
    data = explanation_data(tiny_kit, _images(), method="grad", copies=2)
    assert data.images.shape == (24, 1, 16, 16) and data.maps.shape == (24, 16, 16)

    def loss(steps: int) -> float:
        inverter = train_inverter(data, steps=steps, batch_size=8)
        with torch.no_grad():
            return float((inverter(data.maps, data.probabilities) - data.images).pow(2).mean())

    # Measured over tiny-kit seeds 0-4 (EDGE_SDK_TEST_SEED): 60 steps bring the error to 0.52-0.60 of the untrained one.
    assert loss(60) < 0.8 * loss(0)
    predmi = train_inverter(data, use_maps=False, steps=3, batch_size=8)
    with torch.no_grad():
        torch.testing.assert_close(
            predmi(data.maps, data.probabilities), predmi(torch.rand_like(data.maps), data.probabilities)
        )


def test_gnime_noise_is_seeded_and_moves_the_maps(tiny_kit: Kit) -> None:
    data = explanation_data(tiny_kit, _images(), method="grad-cam")
    first = train_gnime(data, steps=4, batch_size=8, lam=1.0)
    again = train_gnime(data, steps=4, batch_size=8, lam=1.0)
    with torch.no_grad():
        noised = first(data.maps, data.probabilities)
        torch.testing.assert_close(noised, again(data.maps, data.probabilities))
    assert noised.shape == data.maps.shape and not torch.equal(noised, data.maps)
    assert isinstance(data, ExplanationData)
