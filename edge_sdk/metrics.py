"""Image-similarity metrics on batches of images in ``[0, 1]``, and reconstruction risk R.

R is the vicious-classifiers paper's Eq. 6: Mahalanobis distances to the mean and to the input;
the evaluation harness and the cloud verifier both use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MahalanobisMetric", "psnr", "reconstruction_risk", "relative_distortion", "ssim"]


def relative_distortion(released: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """Relative distortion ``||F_i - F0_i|| / ||F0_i||`` of released features, per sample.

    Args:
        released: Released features ``(B, ...)``.
        raw: The raw features ``F0``, same shape.

    Returns:
        ``(B,)``; 0 for the raw features themselves.

    Example:
        >>> raw = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
        >>> relative_distortion(raw + torch.tensor([[0.0, 5.0], [0.0, 0.0]]), raw)
        tensor([1., 0.])
    """
    return (released - raw).flatten(1).norm(dim=1) / raw.flatten(1).norm(dim=1).clamp_min(1e-12)


def _gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004; Gaussian window 11, sigma 1.5).

    Statistics are taken over the window positions that fit inside the image, the
    convention of ``skimage.metrics.structural_similarity(gaussian_weights=True)``.

    Args:
        x: Images ``(B, C, H, W)``.
        y: Images of the same shape.
        data_range: Pixel range (1 for ``[0, 1]`` images).

    Returns:
        SSIM per image ``(B,)``, averaged over channels.

    Example:
        >>> a = torch.rand(2, 1, 32, 32)
        >>> ssim(a, a).tolist()
        [1.0, 1.0]
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"images of {tuple(x.shape[-2:])} are smaller than the {window}-pixel window")
    xd, yd = x.double(), y.double()
    taps = _gaussian_taps(window, sigma).to(xd.device)
    channels = x.shape[1]
    rows = taps.view(1, 1, window, 1).expand(channels, 1, window, 1).contiguous()
    cols = taps.view(1, 1, 1, window).expand(channels, 1, 1, window).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        # The 2-D Gaussian window is separable: two 1-D passes, 2k instead of k^2 taps.
        return F.conv2d(F.conv2d(t, rows, groups=channels), cols, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(xd), blur(yd)
    vx, vy = blur(xd * xd) - mx * mx, blur(yd * yd) - my * my
    cxy = blur(xd * yd) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1).float()


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image ``(B,)``; ``inf`` for identical images."""
    if x.shape != y.shape:
        raise ValueError(f"psnr needs two batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(data_range**2 / mse)).float()


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
