"""epsilon-PII (paper Def. 2): optimal-transport distance between reconstructions and the prior."""

from __future__ import annotations

import numpy as np
import ot
import torch

__all__ = ["epsilon_pii"]


def epsilon_pii(reconstructions: torch.Tensor, prior: torch.Tensor) -> float:
    """Empirical earth mover's distance between two sets of images.

    Uniform weights on both sets; the cost of moving image ``a`` onto image ``b`` is
    their Euclidean distance divided by the square root of the number of pixels
    (the root-mean-square pixel difference), so ``epsilon`` keeps one scale across
    image sizes. Smaller means the attacker's reconstructions look more like the
    public prior (``0`` for identical sets).

    Args:
        reconstructions: ``G(z*(F_i))``, shape ``(N, C, H, W)`` in ``[0, 1]``.
        prior: ``G(z_r,j)``, shape ``(M, C, H, W)`` in ``[0, 1]``.

    Returns:
        The distance, solved exactly with POT's network simplex (``ot.emd2``).

    Example:
        >>> a = torch.rand(5, 1, 8, 8)
        >>> epsilon_pii(a, a[torch.randperm(5)])
        0.0
    """
    if reconstructions.dim() != 4 or prior.dim() != 4 or reconstructions.shape[1:] != prior.shape[1:]:
        raise ValueError(
            f"need two (N, C, H, W) image sets of one image shape, got {tuple(reconstructions.shape)} "
            f"and {tuple(prior.shape)}"
        )
    a = reconstructions.detach().double().flatten(1).cpu()
    b = prior.detach().double().flatten(1).cpu()
    cost = torch.cdist(a, b).numpy() / np.sqrt(a.shape[1])
    weights_a = np.full(a.shape[0], 1.0 / a.shape[0])
    weights_b = np.full(b.shape[0], 1.0 / b.shape[0])
    return float(ot.emd2(weights_a, weights_b, cost))
