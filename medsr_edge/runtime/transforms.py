"""The invertible intensity normalisation between modality units and the network's [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalizer:
    """Invertible per-image linear map from modality units to [0, 1] for the network.

    8-bit images use the fixed range of their stored values, 0..255 mapped through the modality
    LUT (a DICOM RescaleSlope/Intercept), so [0, 1] covers every value the file can hold; other
    images use their own min and max, so every image spans [0, 1]. ``invert`` flips MONOCHROME1 so
    bright means dense, as in training data.
    """

    lo: float
    hi: float
    invert: bool = False

    @classmethod
    def of(cls, image) -> Normalizer:
        """The normaliser of an :class:`~medsr_edge.runtime.image.Image` (frames, stored type,
        value range, MONOCHROME1)."""
        return cls.for_image(image.frames, image.dtype, image.invert, image.value_range)

    @classmethod
    def for_image(cls, frames: np.ndarray, dtype: np.dtype, invert: bool = False,
                  value_range: tuple[float, float] | None = None) -> Normalizer:
        """``value_range``: the modality values of the stored range (used for 8-bit images;
        default 0..255)."""
        if np.dtype(dtype) == np.uint8:
            lo, hi = value_range if value_range is not None else (0.0, 255.0)
            return cls(float(lo), float(hi), invert)
        lo, hi = float(np.min(frames)), float(np.max(frames))
        return cls(lo, hi if hi > lo else lo + 1.0, invert)

    def grid_step(self, frame: np.ndarray, dtype: np.dtype) -> float:
        """The spacing of stored values in [0, 1] units: 1/255 for 8-bit images, the smallest gap
        between the values of ``frame`` (the rescale slope) for other integer images, 0 for float
        pixels. A low-resolution image made for training or scoring is rounded to it."""
        if np.dtype(dtype) == np.uint8:
            return 1.0 / 255.0  # 255 steps of the rescale slope over a range of 255 slopes
        if not np.issubdtype(np.dtype(dtype), np.integer):
            return 0.0
        gaps = np.diff(np.unique(np.asarray(frame)))
        return float(gaps.min()) / (self.hi - self.lo) if gaps.size else 0.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Modality units -> float32 in [0, 1]."""
        y = ((np.asarray(x, np.float64) - self.lo) / (self.hi - self.lo)).astype(np.float32)
        return 1.0 - y if self.invert else y

    @property
    def needs_float64(self) -> bool:
        """True when float32 modality values could not resolve this image's range: an offset
        (``lo``/``hi``) more than 2^12 times the range leaves float32 fewer than 2^12 levels."""
        return max(abs(self.lo), abs(self.hi)) > 4096.0 * (self.hi - self.lo)

    def inverse(self, y: np.ndarray, inplace: bool = False) -> np.ndarray:
        """[0, 1] (values outside are clipped) -> modality units; rounding is the writer's. float32,
        or float64 where float32 could not resolve the image's range (:attr:`needs_float64`).

        ``inplace=True`` reuses ``y``'s memory (a float32 array the caller owns): no copies of a
        large output image."""
        if self.needs_float64:
            y = np.clip(np.asarray(y, np.float64), 0.0, 1.0)
            return (1.0 - y if self.invert else y) * (self.hi - self.lo) + self.lo
        y = np.asarray(y, np.float32)
        y = np.clip(y, 0.0, 1.0, out=y if inplace else None)
        if self.invert:
            np.subtract(1.0, y, out=y)
        y *= np.float32(self.hi - self.lo)
        y += np.float32(self.lo)
        return y
