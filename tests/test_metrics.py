import numpy as np
import pytest
from scipy.ndimage import correlate

from medsr_edge.core.metrics import psnr, ssim


def _reference_ssim(a, b):
    """Wang et al. 2004 with an 11x11 Gaussian (sigma 1.5), valid region only, C1/C2 for range 1."""
    x = np.arange(11) - 5
    g = np.exp(-(x ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    f = lambda im: correlate(im, w, mode="reflect")[5:-5, 5:-5]  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return m.mean()


def test_psnr_known_values():
    a = np.zeros((16, 16))
    assert psnr(a + 0.1, a) == pytest.approx(20.0)
    assert psnr(a + 0.01, a) == pytest.approx(40.0)
    b = a.copy()
    b[:4] = 1.0  # border crop removes the difference entirely
    assert psnr(b, a, border=4) == float("inf")


def test_ssim_matches_independent_gaussian_implementation():
    rng = np.random.default_rng(3)
    a = rng.random((64, 64))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) == pytest.approx(_reference_ssim(a, b), abs=1e-6)


def test_fixed_data_range_not_per_image():
    a = np.full((32, 32), 0.5)
    assert psnr(a * 0.2 + 0.02, a * 0.2) == pytest.approx(psnr(a + 0.02, a))
