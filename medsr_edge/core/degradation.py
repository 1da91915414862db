"""The degradation model: how a low-resolution image is made from a ground truth, and the
bicubic baseline (numpy + Pillow; scipy only for the optional blur).

This is *the* degradation: training makes its LR patches with :func:`degrade`, calibration and
the benchmark make their LR images with it too, so scores measure what the model learned.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage


def resize_bicubic(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a float 2-D array to (height, width); antialiased when shrinking (Pillow)."""
    h, w = size
    out = PILImage.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F").resize(
        (w, h), resample=PILImage.BICUBIC)
    return np.asarray(out, dtype=np.float32)


def crop_to_multiple(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right edge so both sides are multiples of ``scale``."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def degrade(hr: np.ndarray, scale: int, blur_sigma: float = 0.0, noise_sigma: float = 0.0,
            rng: np.random.Generator | None = None, step: float = 0.0) -> np.ndarray:
    """Make the low-resolution image from a ground-truth 2-D float image in [0, 1].

    Default: antialiased bicubic downsampling by ``scale`` (the literature's BI degradation).
    Optional Gaussian blur (sigma in HR pixels) before, and Gaussian noise (sigma in [0,1] units)
    after. ``step`` > 0 rounds the result to multiples of ``step`` (in [0, 1] units): a real
    low-resolution image is stored on its source's value grid (1/255 for 8-bit images, see
    ``Normalizer.grid_step``), never as floats. ``hr`` sides must be multiples of ``scale``
    (see :func:`crop_to_multiple`).
    """
    h, w = hr.shape
    if h % scale or w % scale:
        raise ValueError(f"image {h}x{w} is not a multiple of scale {scale}")
    img = np.asarray(hr, np.float32)
    if blur_sigma > 0:
        from scipy.ndimage import gaussian_filter

        img = gaussian_filter(img, blur_sigma, mode="reflect")
    lr = resize_bicubic(img, (h // scale, w // scale))
    if noise_sigma > 0:
        rng = rng or np.random.default_rng()
        lr = lr + rng.normal(0.0, noise_sigma, lr.shape).astype(np.float32)
    if step > 0:
        lr = (np.round(lr / np.float32(step)) * np.float32(step)).astype(np.float32)
    return np.clip(lr, 0.0, 1.0)


def upscale_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: upscale a 2-D float image by ``scale``."""
    h, w = lr.shape
    return resize_bicubic(lr, (h * scale, w * scale))
