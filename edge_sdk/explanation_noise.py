"""Defences of attribution maps before they leave the device: GNIME's noise, and coarsening.

The GNIME paper (``../shared/papers/gnime-inversion-resistant-explanations.md``, Sec. 4)
trains a noise generator ``f_NG(e, y) -> e_hat`` against an inversion network
``f_INV(e, y) -> x`` in a two-player game on public faces; the device then releases
``e_hat`` instead of the map ``e``. This module holds the generator, what the device
runs; the game is :func:`edge_sdk.evaluation.explanation_attacks.train_gnime`.

:func:`coarsen_maps` is the simpler defence measured beside it: each map averaged over a
coarse grid, which keeps where the map is large and drops the fine detail an inverter
reads the face from (``benchmarks/explanation_privacy.py``).

Maps are compared at one scale: :func:`normalise_maps` divides each by its maximum, as
an attacker would before reading it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ExplanationNoiseGenerator", "coarsen_maps", "normalise_maps", "prediction_planes", "rescale_noise"]


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each map ``(N, H, W)`` divided by its largest value (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)
    return maps / peak.view(-1, 1, 1)


def prediction_planes(maps: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """The map and one constant plane per class probability: ``(N, 1 + K, H, W)``."""
    n, h, w = maps.shape
    return torch.cat([maps[:, None], probabilities[:, :, None, None].expand(n, -1, h, w)], dim=1)


class ExplanationNoiseGenerator(nn.Module):
    """``f_NG(e, y) -> e_hat = e + n``: a small U-Net from a normalised map and the prediction to noise.

    Args:
        classes: Length ``K`` of the prediction vector.
        width: Channels of the first layer.

    Example:
        >>> ng = ExplanationNoiseGenerator(classes=3)
        >>> ng(torch.rand(2, 64, 64), torch.softmax(torch.randn(2, 3), 1)).shape
        torch.Size([2, 64, 64])
    """

    def __init__(self, *, classes: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.down = nn.Sequential(nn.Conv2d(1 + classes, w, 3, 1, 1), nn.LeakyReLU(0.2))
        self.inner = nn.Sequential(
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1),
            nn.LeakyReLU(0.2),
        )
        self.out = nn.Conv2d(2 * w, 1, 3, 1, 1)

    def forward(self, maps: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        """Noised maps ``(N, H, W)`` for normalised maps ``(N, H, W)`` and predictions ``(N, K)``."""
        first = self.down(prediction_planes(maps, probabilities))
        noise = self.out(torch.cat([first, self.inner(first)], dim=1))[:, 0]
        return maps + noise


def rescale_noise(maps: torch.Tensor, noised: torch.Tensor, *, mse: float) -> torch.Tensor:
    """Eq. 3 of the paper: the noise ``noised - maps`` rescaled, per map, to mean square ``mse``.

    Lets a provider trade defence for fidelity, and gives baselines the same distortion.
    """
    noise = noised - maps
    power = noise.pow(2).flatten(1).mean(dim=1).clamp_min(1e-20)
    return maps + noise * (mse / power).sqrt().view(-1, 1, 1)


def coarsen_maps(maps: torch.Tensor, *, grid: int) -> torch.Tensor:
    """Each map ``(N, H, W)`` averaged over a ``grid x grid`` grid of cells, then bilinearly back to ``H x W``.

    Cells are :func:`torch.nn.functional.adaptive_avg_pool2d`'s (equal blocks when
    ``grid`` divides the size); the upsampling uses pixel centres
    (``align_corners=False``). What was large stays large; detail finer than a cell is
    gone.

    Raises:
        ValueError: ``grid`` is below 1 or above the map's size.

    Example:
        >>> coarsen_maps(torch.ones(2, 64, 64), grid=8).shape
        torch.Size([2, 64, 64])
    """
    if not 1 <= grid <= min(maps.shape[-2:]):
        raise ValueError(f"grid must be between 1 and the map's size {tuple(maps.shape[-2:])}, got {grid}")
    cells = F.adaptive_avg_pool2d(maps[:, None], grid)
    return F.interpolate(cells, size=maps.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
