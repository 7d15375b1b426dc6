"""Image-similarity metrics on batches of images in ``[0, 1]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]


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
