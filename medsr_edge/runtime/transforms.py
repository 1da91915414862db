"""Plain array transforms shared by training, inference and benchmarks (numpy + Pillow only).

The degradation here is *the* degradation: training makes its LR patches with :func:`degrade`
and the benchmark makes its LR images with it too, so scores measure what the model learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage


@dataclass(frozen=True)
class Normalizer:
    """Invertible per-image linear map from modality units to [0, 1] for the network.

    8-bit images use the fixed range [0, 255]; other images use their own min and max, so every
    image spans [0, 1]. ``invert`` flips MONOCHROME1 so bright means dense, as in training data.
    """

    lo: float
    hi: float
    invert: bool = False

    @classmethod
    def for_image(cls, frames: np.ndarray, dtype: np.dtype, invert: bool = False) -> "Normalizer":
        if np.dtype(dtype) == np.uint8:
            return cls(0.0, 255.0, invert)
        lo, hi = float(np.min(frames)), float(np.max(frames))
        return cls(lo, hi if hi > lo else lo + 1.0, invert)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Modality units -> float32 in [0, 1]."""
        y = ((np.asarray(x, np.float64) - self.lo) / (self.hi - self.lo)).astype(np.float32)
        return 1.0 - y if self.invert else y

    def inverse(self, y: np.ndarray, inplace: bool = False) -> np.ndarray:
        """[0, 1] (values outside are clipped) -> float32 modality units; rounding is the writer's.

        ``inplace=True`` reuses ``y``'s memory (a float32 array the caller owns): no copies of a
        large output image."""
        y = np.asarray(y, np.float32)
        y = np.clip(y, 0.0, 1.0, out=y if inplace else None)
        if self.invert:
            np.subtract(1.0, y, out=y)
        y *= np.float32(self.hi - self.lo)
        y += np.float32(self.lo)
        return y


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
            rng: np.random.Generator | None = None) -> np.ndarray:
    """Make the low-resolution image from a ground-truth 2-D float image in [0, 1].

    Default: antialiased bicubic downsampling by ``scale`` (the literature's BI degradation).
    Optional Gaussian blur (sigma in HR pixels) before, and Gaussian noise (sigma in [0,1] units)
    after. ``hr`` sides must be multiples of ``scale`` (see :func:`crop_to_multiple`).
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
    return np.clip(lr, 0.0, 1.0)


def upscale_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: upscale a 2-D float image by ``scale``."""
    h, w = lr.shape
    return resize_bicubic(lr, (h * scale, w * scale))
