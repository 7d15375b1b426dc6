from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from edge_sdk.metrics import psnr, ssim


def test_ssim_and_psnr_match_scikit_image() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(4, 1, 32, 32, generator=gen)
    b = (a + 0.15 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    ours_ssim, ours_psnr = ssim(a, b), psnr(a, b)
    for i in range(4):
        x, y = a[i, 0].numpy().astype(np.float64), b[i, 0].numpy().astype(np.float64)
        ref = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
        assert ours_ssim[i].item() == pytest.approx(ref, abs=1e-5)
        assert ours_psnr[i].item() == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1.0), abs=1e-4)


def test_ssim_is_one_for_identical_and_low_for_unrelated_images() -> None:
    a = torch.rand(2, 1, 24, 24)
    assert torch.allclose(ssim(a, a), torch.ones(2))
    assert ssim(a, torch.rand(2, 1, 24, 24)).max() < 0.2


def test_metric_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))
    with pytest.raises(ValueError, match="window"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
