"""Image-similarity metrics on batches of images in ``[0, 1]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


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
    kernel = _gaussian_window(window, sigma, x.shape[1]).to(xd.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=x.shape[1])

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
