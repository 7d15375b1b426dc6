"""epsilon-PII (paper Def. 2): optimal-transport distance between reconstructions and the prior."""

from __future__ import annotations

import math

import numpy as np
import ot
import torch

__all__ = ["epsilon_pii", "image_cost", "transport_plan"]


def image_cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cost of moving image ``a_i`` onto ``b_j``: Euclidean distance over ``sqrt(pixels)``.

    That is the root-mean-square pixel difference, so costs keep one scale across
    image sizes. Differentiable in both arguments (a tiny constant under the square
    root keeps the gradient finite at zero distance); shape ``(N, M)``.
    """
    if a.dim() != 4 or b.dim() != 4 or a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"need two (N, C, H, W) image sets of one image shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    pixels = math.prod(a.shape[1:])
    diff = a.flatten(1)[:, None, :] - b.flatten(1)[None, :, :]
    return diff.pow(2).sum(-1).add(1e-12).sqrt() / math.sqrt(pixels)


def transport_plan(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Exact optimal transport between two image sets with uniform weights.

    Returns:
        The plan ``(N, M)`` (entries sum to 1) and the transport cost, i.e. the EMD,
        solved with POT's network simplex (``ot.emd``).
    """
    if a.dim() != 4 or b.dim() != 4 or a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"need two (N, C, H, W) image sets of one image shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    flat_a, flat_b = a.detach().double().cpu().flatten(1), b.detach().double().cpu().flatten(1)
    cost = (torch.cdist(flat_a, flat_b) / math.sqrt(flat_a.shape[1])).numpy()
    plan = ot.emd(np.full(a.shape[0], 1.0 / a.shape[0]), np.full(b.shape[0], 1.0 / b.shape[0]), cost)
    return torch.from_numpy(plan).to(a), float((plan * cost).sum())


def epsilon_pii(reconstructions: torch.Tensor, prior: torch.Tensor) -> float:
    """Empirical earth mover's distance between reconstructions and prior faces.

    Uniform weights on both sets, cost :func:`image_cost`. Smaller means the
    attacker's reconstructions look more like the public prior (``0`` for
    identical sets).

    Args:
        reconstructions: ``G(z*(F_i))``, shape ``(N, C, H, W)`` in ``[0, 1]``.
        prior: ``G(z_r,j)``, shape ``(M, C, H, W)`` in ``[0, 1]``.

    Example:
        >>> a = torch.rand(5, 1, 8, 8)
        >>> epsilon_pii(a, a[torch.randperm(5)])
        0.0
    """
    return transport_plan(reconstructions, prior)[1]
