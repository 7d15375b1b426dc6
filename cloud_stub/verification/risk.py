"""Reconstruction risk R (vicious-classifiers paper, Eq. 6): Mahalanobis distances to the mean and to the input."""

from __future__ import annotations

import torch

__all__ = ["MahalanobisMetric", "reconstruction_risk"]


class MahalanobisMetric:
    """Mahalanobis distance under the covariance of a reference set (the training data).

    Images have more pixels than most reference sets have samples, so the sample
    covariance is singular: ``shrinkage`` blends it with a scaled identity
    (``(1 - s) * Sigma + s * tr(Sigma) / d * I``), and ``shrinkage=0`` uses the
    Moore-Penrose pseudo-inverse instead.

    Args:
        reference: ``(N, ...)`` samples of the data distribution.
        shrinkage: Weight ``s`` in ``[0, 1)`` of the identity.

    Example:
        >>> metric = MahalanobisMetric(torch.randn(500, 3), shrinkage=0.0)
        >>> round(float(metric.distance(torch.zeros(1, 3), torch.zeros(1, 3))), 6)
        0.0
    """

    def __init__(self, reference: torch.Tensor, *, shrinkage: float = 0.1) -> None:
        if not 0.0 <= shrinkage < 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1), got {shrinkage}")
        x = reference.flatten(1).double()
        self.mean = x.mean(dim=0)
        centred = x - self.mean
        covariance = centred.T @ centred / max(len(x) - 1, 1)
        if shrinkage > 0:
            d = covariance.shape[0]
            identity = torch.eye(d, dtype=covariance.dtype) * (torch.trace(covariance) / d)
            self.precision = torch.linalg.inv((1 - shrinkage) * covariance + shrinkage * identity)
        else:
            self.precision = torch.linalg.pinv(covariance, hermitian=True)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``sqrt((a - b)^T P (a - b))`` per row, ``(B,)``."""
        diff = (a.flatten(1).double() - b.flatten(1).double()).to(self.precision.dtype)
        return torch.sqrt(torch.clamp(((diff @ self.precision) * diff).sum(dim=1), min=0.0))

    def to_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Distance of each row to the reference mean."""
        return self.distance(x, self.mean.expand(len(x), -1))


def reconstruction_risk(originals: torch.Tensor, reconstructions: torch.Tensor, metric: MahalanobisMetric) -> float:
    """``R = mean_n d(x_n, mu) / d(x_n, x~_n)``: higher means rarer samples reconstructed more closely.

    A perfect reconstruction makes a term infinite; distances are floored at 1e-12.
    """
    if originals.shape != reconstructions.shape:
        raise ValueError(f"shapes differ: {tuple(originals.shape)} vs {tuple(reconstructions.shape)}")
    ratio = metric.to_mean(originals) / torch.clamp(metric.distance(originals, reconstructions), min=1e-12)
    return float(ratio.mean())
