"""The one data path of training, INT8 calibration and the bench: find the images of a data folder
(:func:`.runtime.io.data_files`: one layout, one set of source filters), read them
(:func:`.runtime.io.read_image`), normalise each to [0, 1] (:class:`.runtime.transforms.Normalizer`)
and make low-resolution versions (:func:`make_lr`, rounded to the source's value grid). The three callers differ only in what they
ask for (every frame or the first; a minimum side; a cap per modality), never in how it is done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core.degradation import bench_params, degrade_with
from .core.errors import ImageReadError
from .runtime.io import DataFile, data_files, read_image
from .runtime.transforms import Normalizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundTruth:
    """One normalised frame. ``hr``: float32 (H, W) in [0, 1]; ``step``: its source's value grid in
    the same units (1/255 for 8-bit files), to which LR images are rounded."""

    hr: np.ndarray
    step: float
    modality: str
    source: str  # <modality>/<source>
    path: Path
    lossy: bool = False  # the stored pixels went through lossy compression (Image.lossy)


def read_ground_truths(files: Iterable[DataFile], *, all_frames: bool = False, min_side: int = 0,
                       limit_per_modality: int | None = None, errors: list[str] | None = None) -> Iterator[GroundTruth]:
    """Read, in order, the frames of ``files`` (the first of each file, or every one with
    ``all_frames``) whose shorter side is at least ``min_side`` pixels, at most
    ``limit_per_modality`` per modality. An unreadable file is logged, its one-line error appended
    to ``errors``, and the rest go on."""
    counts: dict[str, int] = {}
    for found in files:
        if limit_per_modality and counts.get(found.modality, 0) >= limit_per_modality:
            continue
        try:
            image = read_image(found.path)
        except ImageReadError as exc:
            log.warning("skipping %s", exc)
            if errors is not None:
                errors.append(str(exc))
            continue
        norm = Normalizer.of(image)
        step = norm.grid_step(image.frames[0], image.dtype)
        for frame in (image.frames if all_frames else image.frames[:1]):
            if min(frame.shape) < min_side:
                continue
            if limit_per_modality and counts.get(found.modality, 0) >= limit_per_modality:
                break
            yield GroundTruth(norm.forward(frame).astype(np.float32, copy=False), step, found.modality, found.source,
                              found.path, image.lossy)
            counts[found.modality] = counts.get(found.modality, 0) + 1


def ground_truths(root: str | Path, split: str | None = None, *, sources: tuple[str, ...] | list[str] = (),
                  exclude_sources: tuple[str, ...] | list[str] = (), **options) -> Iterator[GroundTruth]:
    """:func:`read_ground_truths` over :func:`.runtime.io.data_files` ``(root, split, sources=...,
    exclude_sources=...)``; an unknown source name is refused before anything is read."""
    return read_ground_truths(data_files(root, split, sources=sources, exclude_sources=exclude_sources), **options)


def make_lr(hr: np.ndarray, scale: int, step: float, degradation: str = "bicubic",
            rng: np.random.Generator | None = None) -> np.ndarray:
    """The LR image of ``hr`` (sides multiples of ``scale``): antialiased bicubic, or an acquisition
    family at its fixed bench settings (:func:`~medsr_edge.core.degradation.bench_params`), rounded
    to ``step``."""
    return degrade_with(hr, scale, bench_params(degradation, scale), rng, step)


__all__ = ["GroundTruth", "ground_truths", "make_lr", "read_ground_truths"]
