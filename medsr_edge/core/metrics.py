"""Image-quality metrics as the SR literature reports them (numpy + scikit-image).

Both take float images already normalised to [0, 1] (data range fixed at 1.0, never per batch)
and crop ``border`` pixels from every side first (border = scale, as in EDSR/SwinIR papers).
SSIM uses a Gaussian window (sigma 1.5, 11x11 support) and population covariance, which is the
setting that reproduces Wang et al.'s MATLAB reference.
"""

from __future__ import annotations

import numpy as np


def _crop(img: np.ndarray, border: int) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    return img[border:-border, border:-border] if border > 0 else img


def psnr(pred: np.ndarray, target: np.ndarray, border: int = 0, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    p, t = _crop(pred, border), _crop(target, border)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch {p.shape} vs {t.shape}")
    mse = float(np.mean((p - t) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range ** 2 / mse)


def ssim(pred: np.ndarray, target: np.ndarray, border: int = 0, data_range: float = 1.0) -> float:
    """Structural similarity (Gaussian window 11, sigma 1.5) of two 2-D images."""
    from skimage.metrics import structural_similarity

    p, t = _crop(pred, border), _crop(target, border)
    return float(structural_similarity(p, t, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, win_size=11))

