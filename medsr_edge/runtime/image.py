"""The image every reader returns and every writer takes, and the limits checked before decoding."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ImageReadError


@dataclass
class Image:
    """A single-channel image or stack of frames.

    frames: float64 (F, H, W), modality units (HU for CT, stored grey levels otherwise).
    dtype: the numpy dtype the pixels were stored in (uint8, uint16, int16, float32).
    value_range: (min, max) representable in the stored form, in modality units; outputs clip to it.
    invert: True for DICOM MONOCHROME1 (high values display dark); the network sees it inverted.
    dataset: the pydicom Dataset (without pixel data decoded twice) for DICOM inputs, else None.
    """

    frames: np.ndarray
    dtype: np.dtype
    value_range: tuple[float, float]
    source: Path
    format: str
    invert: bool = False
    dataset: Any = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.frames.shape[1], self.frames.shape[2]

    @property
    def lossy(self) -> bool:
        """True when the stored pixels went through lossy compression: a JPEG file, or a DICOM
        whose Lossy Image Compression is 01 or whose transfer syntax is a lossy one."""
        if self.format == "jpeg":
            return True
        ds = self.dataset
        if ds is None:
            return False
        if str(ds.get("LossyImageCompression", "")).strip() == "01":
            return True
        meta = getattr(ds, "file_meta", None)
        return str(getattr(meta, "TransferSyntaxUID", "")) in LOSSY_TRANSFER_SYNTAXES


# Transfer syntaxes that are lossy whatever the encoder did: JPEG baseline and extended, JPEG-LS
# near-lossless, the MPEG/HEVC video syntaxes. (JPEG 2000 and HTJ2K may be either: their Lossy Image
# Compression attribute decides.)
LOSSY_TRANSFER_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),
})


# Memory budget, checked against the header before anything is decoded. One frame's x4 output
# in float32 is then at most 1 GiB, and all frames of a file as float64 modality values too.
MAX_FRAME_PIXELS = 4096 * 4096
MAX_TOTAL_PIXELS = 2 ** 27


@contextmanager
def quiet_logger(name: str):
    """Silence a library's logger for a block: a decoder that logs a traceback for a corrupt
    file must not print it; our one-line error says what went wrong."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def check_pixel_budget(path: Path, frames: int, rows: int, cols: int) -> None:
    """Raise ImageReadError when a header declares more pixels than the memory budget allows."""
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise ImageReadError(path, f"header declares {frames} frame(s) of {rows}x{cols} pixels; the file is corrupt")
    if rows * cols > MAX_FRAME_PIXELS or rows * cols * frames > MAX_TOTAL_PIXELS:
        raise ImageReadError(path, f"header declares {frames} frame(s) of {rows}x{cols} pixels, above the memory budget "
                                   f"({MAX_FRAME_PIXELS // 1_000_000} MP per frame, {MAX_TOTAL_PIXELS // 1_000_000} MP per file); "
                                   "crop or split the image first")


def to_stored(values: np.ndarray, dtype: np.dtype, value_range: tuple[float, float]) -> np.ndarray:
    """Round and clip modality values into ``dtype`` (float stays float). Works in place on a
    float32 ``values`` (one temporary at most), so large outputs are not copied several times."""
    lo, hi = value_range
    if np.issubdtype(dtype, np.floating):  # float stays float, at the precision it came in
        return np.clip(values, lo, hi).astype(dtype, copy=False)
    work = values if values.dtype == np.float32 else values.astype(np.float32)
    np.clip(work, lo, hi, out=work)
    np.rint(work, out=work)
    return work.astype(dtype)
