"""Training data: folders of PNG/JPEG/TIFF/DICOM -> normalised ground truth -> (LR, HR) patches.

Images are read with the runtime readers, normalised per image to [0, 1] (the runtime's
:class:`~medsr_edge.runtime.transforms.Normalizer`) and kept in memory. Batches are sampled
balanced per modality (and, with ``balance="source"``, per source in it: ``<modality>/<source>``,
the first two folders under the data root); augmented on the HR patch (geometry,
and optionally intensity); and degraded with the same
:func:`~medsr_edge.core.degradation.degrade` that the benchmark uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.degradation import (
    DEGRADATIONS,
    FAMILY_OF_MODALITY,
    bench_params,
    crop_to_multiple,
    degrade,
    degrade_with,
    draw_params,
)
from ..dataset import ground_truths

log = logging.getLogger(__name__)


@dataclass
class Sample:
    hr: np.ndarray  # float32 (H, W) in [0, 1]
    modality: str
    path: Path
    step: float = 0.0  # the source's value grid in [0, 1] units; LR images are rounded to it
    source: str = ""  # <modality>/<source>
    lossy: bool = False  # read from a lossy-compressed file (JPEG, lossy DICOM)


def load_samples(root: str | Path, split: str | None = None, denoise: str | None = None,
                 limit_per_modality: int | None = None, min_size: int = 64, *,
                 sources: tuple[str, ...] | list[str] = (),
                 exclude_sources: tuple[str, ...] | list[str] = (), lossy_downscale: int = 1) -> list[Sample]:
    """Read and normalise every image (each frame of a multi-frame file is one sample).

    denoise: None, ``"median"`` (3x3) or ``"gaussian"`` (sigma 0.5): optional clean-up of the
    ground truth, e.g. for noisy low-dose CT. exclude_sources: sources (``<modality>/<source>``)
    left out, e.g. to score a recipe on a source it never saw; sources: only these (or these
    modalities); an unknown name is refused. lossy_downscale: the ground truth of lossy-compressed
    images (JPEG files, lossy DICOM) is first downscaled by this integer factor (antialiased
    bicubic, not rounded), which averages their 8x8 block edges and ringing away instead of
    handing them to the network as texture to reproduce; 1 keeps them as stored.
    """
    if lossy_downscale < 1:
        raise ValueError(f"lossy_downscale {lossy_downscale}: use an integer >= 1")
    samples = []
    for gt in ground_truths(root, split, sources=sources, exclude_sources=exclude_sources, all_frames=True,
                            min_side=min_size, limit_per_modality=limit_per_modality):
        hr = gt.hr
        if denoise == "median":
            hr = ndimage.median_filter(hr, size=3)
        elif denoise == "gaussian":
            hr = ndimage.gaussian_filter(hr, 0.5)
        if gt.lossy and lossy_downscale > 1:
            hr = degrade(crop_to_multiple(hr, lossy_downscale), lossy_downscale)
            if min(hr.shape) < min_size:
                continue
        samples.append(Sample(hr.astype(np.float32), gt.modality, gt.path, gt.step, gt.source, gt.lossy))
    if not samples:
        raise FileNotFoundError(f"no readable images under {root}" + (f" in '{split}' folders" if split else ""))
    return samples


CONTENT_STD = 0.02  # a patch whose std is below this (in [0, 1] units) is background; draw again
CONTENT_TRIES = 8  # draws before an empty-looking patch is accepted anyway
BALANCE_CHOICES = ("source", "modality", "image")
TRAIN_DEGRADATIONS = (*DEGRADATIONS, "mixed")
EDGE_CELL, EDGE_POINTS = 16, 64  # edge-centred patches: 16x16-pixel cells, at most 64 per image
_SPLINE_MARGIN = 8  # pixels; the cubic B-spline prefilter decays as 0.268^n (8 px: 2.6e-5)


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the HR-patch augmentations (flips and 90-degree turns always)."""

    p_rotate: float = 0.25  # rotation by up to +-max_angle degrees
    max_angle: float = 15.0
    p_scale: float = 0.25  # isotropic zoom in [1/max_zoom, max_zoom]
    max_zoom: float = 1.2
    p_elastic: float = 0.1  # smooth elastic deformation
    elastic_alpha: float = 6.0  # displacement amplitude, pixels
    elastic_sigma: float = 12.0  # smoothness of the displacement field, pixels
    p_intensity: float = 0.0  # intensity augmentation (gamma, window/level, inversion) of a patch
    max_gamma: float = 1.6  # gamma in [1/max_gamma, max_gamma], log-uniform
    max_window_cut: float = 0.15  # window/level: up to this fraction of [0, 1] cut at each end
    p_invert: float = 0.2  # of the intensity-augmented patches, this share inverted (MONOCHROME1-like)
    p_degrade_jitter: float = 0.0  # LR made with a random extra blur and noise (still bicubic)
    max_blur: float = 0.5  # extra Gaussian blur sigma, HR pixels, uniform in [0, max_blur]
    max_noise: float = 0.004  # Gaussian noise sigma on the LR, [0, 1] units, uniform in [0, max_noise]

    def __post_init__(self) -> None:
        for name in ("p_rotate", "p_scale", "p_elastic", "p_intensity", "p_invert", "p_degrade_jitter"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name)} is a probability: use 0..1")
        if self.max_gamma < 1.0 or not 0.0 <= self.max_window_cut < 0.5 or self.max_blur < 0 or self.max_noise < 0:
            raise ValueError("augmentation ranges: max_gamma >= 1, 0 <= max_window_cut < 0.5, max_blur and max_noise >= 0")


def intensity_augment(hr: np.ndarray, step: float, aug: AugmentConfig, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A patch in [0, 1] seen through another display pipeline: a random window/level (each end cut
    by up to ``max_window_cut``, then stretched back to [0, 1]), a gamma in [1/max_gamma, max_gamma]
    and, with ``p_invert``, inverted. Returns the patch and its value grid step, stretched with it."""
    lo, hi = rng.uniform(0.0, aug.max_window_cut, 2)
    hi = 1.0 - hi
    out = np.clip((hr - lo) / (hi - lo), 0.0, 1.0)
    out = out ** np.float32(np.exp(rng.uniform(-1.0, 1.0) * np.log(aug.max_gamma)))
    if rng.random() < aug.p_invert:
        out = 1.0 - out
    return out.astype(np.float32), step / (hi - lo) if step else step


def _dihedral(arrs, rng):
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for a in arrs:
        a = np.rot90(a, k)
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


def is_native(sample: Sample) -> bool:
    """True for an image stored with more than 8 bits: its value grid is finer than 1/255 (or it
    has none, as float images)."""
    return sample.step < 0.5 / 255


class PatchSampler:
    """Draws (lr, hr) batches: lr (B, 1, P/scale, P/scale), hr (B, 1, P, P), float32 in [0, 1]."""

    def __init__(self, samples: list[Sample], patch: int, scale: int, augment: AugmentConfig | None = None,
                 blur_sigma: float = 0.0, noise_sigma: float = 0.0, seed: int = 0, balance: str = "modality",
                 edge_fraction: float = 0.0, degradation: str = "bicubic", native_weight: float = 1.0) -> None:
        """balance: ``"source"`` (a modality, then a source in it, then an image, each uniformly),
        ``"modality"`` (a modality, then an image in it) or ``"image"`` (every image alike).
        degradation: how LR patches are made: ``"bicubic"``; an acquisition family
        (``"mr-kspace"``, ``"ct-kernel"``, ``"xr-detector"``) with parameters drawn per patch from
        :func:`~medsr_edge.core.degradation.draw_params`' ranges; or ``"mixed"``: half the patches
        bicubic, half the family of the patch's modality (mri, ct, xray; others bicubic).
        native_weight: within its group, an image stored with more than 8 bits (its value grid finer
        than 1/255: native CT and MR DICOM, 16-bit PNG/TIFF) is drawn this many times as often as an
        8-bit one; 1 draws every image alike."""
        if native_weight <= 0:
            raise ValueError(f"native_weight {native_weight}: use a positive weight")
        if balance not in BALANCE_CHOICES:
            raise ValueError(f"balance {balance!r}: use {', '.join(BALANCE_CHOICES)}")
        if degradation not in TRAIN_DEGRADATIONS:
            raise ValueError(f"degradation {degradation!r}: use {', '.join(TRAIN_DEGRADATIONS)}")
        self.degradation = degradation
        if patch % scale:
            raise ValueError(f"patch {patch} must be a multiple of scale {scale}")
        self.samples = [s for s in samples if min(s.hr.shape) >= patch]
        if not self.samples:
            raise ValueError(f"no image is at least {patch}x{patch}")
        self.patch, self.scale = patch, scale
        self.augment = augment or AugmentConfig()
        self.blur_sigma, self.noise_sigma = blur_sigma, noise_sigma
        self.edge_fraction = edge_fraction
        self._edges: dict[int, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)
        # groups[modality][source] -> sample indices; one modality/source level collapses per balance
        self.groups: dict[str, dict[str, list[int]]] = {}
        for i, s in enumerate(self.samples):
            mod = "all" if balance == "image" else s.modality
            src = s.source if balance == "source" else "all"
            self.groups.setdefault(mod, {}).setdefault(src, []).append(i)
        # per group, the cumulative draw probabilities of its images (None: uniform)
        self._cdf: dict[tuple[str, str], np.ndarray] = {}
        if native_weight != 1.0:
            for mod, by_source in self.groups.items():
                for src, idx in by_source.items():
                    w = np.array([native_weight if is_native(self.samples[i]) else 1.0 for i in idx])
                    self._cdf[mod, src] = np.cumsum(w) / w.sum()

    def _pick(self) -> Sample:
        mods = sorted(self.groups)
        mod = mods[int(self.rng.integers(len(mods)))]
        by_source = self.groups[mod]
        srcs = sorted(by_source)
        src = srcs[int(self.rng.integers(len(srcs)))]
        idx, cdf = by_source[src], self._cdf.get((mod, src))
        k = int(self.rng.integers(len(idx))) if cdf is None else min(int(np.searchsorted(cdf, self.rng.random(), "right")), len(idx) - 1)
        return self.samples[idx[k]]

    def edge_points(self, sample: Sample) -> np.ndarray:
        """(N, 2) pixel positions (y, x) of ``sample``'s strongest edges: of a grid of 16x16-pixel
        cells, up to EDGE_POINTS whose largest gradient magnitude is at least half the image's
        largest (burned-in markers, metal, collimator and bone edges: the rare extreme
        structures that uniform patches seldom hold). Computed once per image."""
        key = id(sample)
        if key not in self._edges:
            img = sample.hr
            grad = np.hypot(ndimage.sobel(img, 0), ndimage.sobel(img, 1))
            h, w = (d // EDGE_CELL * EDGE_CELL for d in img.shape)
            cells = grad[:h, :w].reshape(h // EDGE_CELL, EDGE_CELL, w // EDGE_CELL, EDGE_CELL).max(axis=(1, 3))
            top = np.argsort(cells, axis=None)[::-1][:EDGE_POINTS]
            top = top[cells.flat[top] >= 0.5 * cells.max()]  # strong edges only, not the image's texture
            self._edges[key] = np.stack(np.unravel_index(top, cells.shape), 1) * EDGE_CELL + EDGE_CELL // 2
        return self._edges[key]

    def _geometric(self, img: np.ndarray, y: int, x: int) -> np.ndarray:
        """Patch at (y, x) of size P, through a random rotation/zoom/elastic warp (cubic spline)."""
        aug, rng, p = self.augment, self.rng, self.patch
        angle = np.deg2rad(rng.uniform(-aug.max_angle, aug.max_angle)) if rng.random() < aug.p_rotate else 0.0
        zoom = np.exp(rng.uniform(-1, 1) * np.log(aug.max_zoom)) if rng.random() < aug.p_scale else 1.0
        elastic = rng.random() < aug.p_elastic
        if angle == 0.0 and zoom == 1.0 and not elastic:
            return img[y:y + p, x:x + p]
        c = (p - 1) / 2.0
        yy, xx = np.mgrid[0:p, 0:p].astype(np.float32) - c
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        sy = cos * yy - sin * xx + y + c
        sx = sin * yy + cos * xx + x + c
        if elastic:
            for grid in (sy, sx):
                grid += ndimage.gaussian_filter(rng.uniform(-1, 1, (p, p)), aug.elastic_sigma) * aug.elastic_alpha * aug.elastic_sigma
        # Warp only the window the patch samples from (plus a margin where the cubic spline's
        # prefilter has decayed below 1e-4): the cost no longer grows with the image size.
        h, w = img.shape
        y0, y1 = max(int(sy.min()) - _SPLINE_MARGIN, 0), min(int(np.ceil(sy.max())) + _SPLINE_MARGIN + 1, h)
        x0, x1 = max(int(sx.min()) - _SPLINE_MARGIN, 0), min(int(np.ceil(sx.max())) + _SPLINE_MARGIN + 1, w)
        window = img[y0:y1, x0:x1]
        return ndimage.map_coordinates(window, [sy - y0, sx - x0], order=3, mode="reflect").clip(0, 1).astype(np.float32)

    def hr_patch(self) -> tuple[np.ndarray, float]:
        """:meth:`draw` without the modality."""
        patch, step, _ = self.draw()
        return patch, step

    def draw(self) -> tuple[np.ndarray, float, str]:
        """One augmented HR patch, preferring patches with content (not empty background), and
        its source's value grid (:attr:`Sample.step`). With probability ``edge_fraction`` the
        patch is centred (+-patch/4) on one of :meth:`edge_points` instead of drawn uniformly. Also
        returns the patch's modality."""
        for _ in range(CONTENT_TRIES):
            sample = self._pick()
            img = sample.hr
            h, w = img.shape
            if self.edge_fraction and self.rng.random() < self.edge_fraction:
                points = self.edge_points(sample)
                cy, cx = points[int(self.rng.integers(len(points)))] + self.rng.integers(-self.patch // 4, self.patch // 4 + 1, 2)
                y, x = int(np.clip(cy - self.patch // 2, 0, h - self.patch)), int(np.clip(cx - self.patch // 2, 0, w - self.patch))
            else:
                y, x = int(self.rng.integers(h - self.patch + 1)), int(self.rng.integers(w - self.patch + 1))
            patch = self._geometric(img, y, x)
            if patch.std() > CONTENT_STD:
                break
        step = sample.step
        if self.augment.p_intensity and self.rng.random() < self.augment.p_intensity:
            patch, step = intensity_augment(patch, step, self.augment, self.rng)
        return _dihedral([patch], self.rng)[0], step, sample.modality

    def family(self, modality: str) -> str:
        """The degradation family of one patch (see ``degradation`` in the constructor)."""
        if self.degradation != "mixed":
            return self.degradation
        return "bicubic" if self.rng.random() < 0.5 else FAMILY_OF_MODALITY.get(modality, "bicubic")

    def lr_of(self, hr: np.ndarray, step: float, modality: str = "") -> np.ndarray:
        """The LR patch. Bicubic: with the run's blur/noise, plus (with ``p_degrade_jitter``) a
        random extra blur and noise; an acquisition family: its model with parameters drawn for
        this patch. Rounded to the source's value grid."""
        family = self.family(modality)
        if family != "bicubic":
            return degrade_with(hr, self.scale, draw_params(family, self.scale, self.rng), self.rng, step)
        blur, noise, aug = self.blur_sigma, self.noise_sigma, self.augment
        if aug.p_degrade_jitter and self.rng.random() < aug.p_degrade_jitter:
            blur = float(np.hypot(blur, self.rng.uniform(0.0, aug.max_blur)))
            noise = float(np.hypot(noise, self.rng.uniform(0.0, aug.max_noise)))
        return degrade(hr, self.scale, blur, noise, self.rng, step)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        drawn = [self.draw() for _ in range(size)]
        hrs = [h for h, _, _ in drawn]
        lrs = [self.lr_of(h, step, modality) for h, step, modality in drawn]
        return np.stack(lrs)[:, None], np.stack(hrs)[:, None]


class CachedTripletSampler:
    """(lr, hr, teacher_sr) patches from whole images degraded once and super-resolved once by
    the teacher: distillation without running the teacher every step. Flips/90-degree turns only.
    """

    def __init__(self, lrs: list[np.ndarray], hrs: list[np.ndarray], teachers: list[np.ndarray],
                 modalities: list[str], patch: int, scale: int, seed: int = 0) -> None:
        self.lrs, self.hrs, self.teachers = lrs, hrs, teachers
        self.patch, self.scale = patch, scale
        self.rng = np.random.default_rng(seed)
        self.by_modality: dict[str, list[int]] = {}
        for i, m in enumerate(modalities):
            if min(hrs[i].shape) >= patch:
                self.by_modality.setdefault(m, []).append(i)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out_l, out_h, out_t = [], [], []
        mods = sorted(self.by_modality)
        s, lp = self.scale, self.patch // self.scale
        for _ in range(size):
            for _ in range(CONTENT_TRIES):
                idx = self.by_modality[mods[int(self.rng.integers(len(mods)))]]
                i = idx[int(self.rng.integers(len(idx)))]
                lh, lw = self.lrs[i].shape
                y, x = int(self.rng.integers(lh - lp + 1)), int(self.rng.integers(lw - lp + 1))
                hr = self.hrs[i][y * s:(y + lp) * s, x * s:(x + lp) * s]
                if hr.std() > CONTENT_STD:
                    break
            lr, hr, t = _dihedral([self.lrs[i][y:y + lp, x:x + lp], hr,
                                   self.teachers[i][y * s:(y + lp) * s, x * s:(x + lp) * s]], self.rng)
            out_l.append(lr), out_h.append(hr), out_t.append(t)
        return np.stack(out_l)[:, None], np.stack(out_h)[:, None], np.stack(out_t)[:, None]


def validation_set(samples: list[Sample], scale: int, per_modality: int = 4, crop: int = 256,
                   degradation: str = "bicubic") -> list[tuple[np.ndarray, np.ndarray, str]]:
    """A small fixed (lr, hr, modality) set for monitoring: centre crops of the first images, their
    LR made by ``degradation`` (an acquisition family at the bench's fixed settings, ``"mixed"``: the
    family of each modality; noise from a fixed seed)."""
    out, counts = [], {}
    rng = np.random.default_rng(0)
    for s in samples:
        if counts.get(s.modality, 0) >= per_modality:
            continue
        hr = crop_to_multiple(s.hr, scale)
        h, w = hr.shape
        c = min(crop, h, w) // scale * scale
        y, x = (h - c) // 2 // scale * scale, (w - c) // 2 // scale * scale
        hr = hr[y:y + c, x:x + c]
        family = FAMILY_OF_MODALITY.get(s.modality, "bicubic") if degradation == "mixed" else degradation
        out.append((degrade_with(hr, scale, bench_params(family, scale), rng, s.step), hr, s.modality))
        counts[s.modality] = counts.get(s.modality, 0) + 1
    return out
