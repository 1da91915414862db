"""Fréchet Radiomics Distance (``frd``), FRD v1 of the ``frd-score`` package: a perceptual score
built for medical images, with no downloaded weights.

Each image gets frd-score's own v1 radiomics vector (PyRadiomics first-order, texture, LoG and
wavelet features on a whole-image mask, the package's ``process_image_mask_pair``). A set of
outputs is compared with the ground truths the way ``frd_score.compute_frd`` does for v1: features
z-scored on the ground truths' statistics, columns that turn NaN/inf dropped, Fréchet distance of
the Gaussian fits, natural log. Lower is closer; the value depends on the number of images, so
compare rows of one run only. Install with ``pip install 'medsr-edge[frd]'``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from .fid import FidUnavailable

FRD_VERSION = "v1"
INTENSITY_SCALE = 255.0  # [0, 1] images are handed over as 0..255 (the package's PNG convention)


def _frd_module():
    try:
        import frd_score.frd as frd
        import radiomics  # noqa: F401 - frd-score imports PyRadiomics lazily; fail here, not mid-bench
    except ImportError as exc:
        raise FidUnavailable(f"frd needs frd-score and PyRadiomics: pip install 'medsr-edge[frd]' ({exc.name} missing)") from None
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    return frd


def frd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FRD v1 of two feature sets (N, D) and (M, D), as ``frd_score.compute_frd`` computes it."""
    frd = _frd_module()
    sets = [s[~np.isnan(s).any(axis=1)].astype(np.float32) for s in (real, fake)]
    lo, hi = frd.V1_DEFAULT_NORM_RANGE
    norm = [frd.z_score_normalize(s, lo, hi, replace_nan=False, base_distribution=sets[0], handle_std_zero=False)
            for s in sets]
    keep = ~np.any([np.isnan(n).any(axis=0) | np.isinf(n).any(axis=0) for n in norm], axis=0)
    norm = [n[:, keep] for n in norm]
    d2 = frd.calculate_frechet_distance(norm[0].mean(0), np.cov(norm[0], rowvar=False),
                                        norm[1].mean(0), np.cov(norm[1], rowvar=False))
    return float(np.log(d2)) if d2 > 0 else float("-inf")


class FRDScorer:
    """Same interface as :class:`medsr_edge.eval.fid.FrechetScorer`, plus modalities: the ground
    truths' features once, then ``compute()`` for the outputs added since the last call (all
    images; ``by_modality`` then holds the value of each modality with at least 3 images)."""

    def __init__(self) -> None:
        self.frd = _frd_module()
        self.extractor = self.frd.get_feature_extractor(FRD_VERSION, image_dim=2)
        self.by_modality: dict[str, float] = {}
        self.real: list[tuple[str, np.ndarray]] = []
        self.fake: list[tuple[str, np.ndarray]] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="medsr-frd-")

    def features(self, image: np.ndarray) -> np.ndarray:
        """The FRD v1 radiomics vector of a 2-D [0, 1] image."""
        import SimpleITK as sitk

        path = Path(self._tmp.name) / "image.nii"
        sitk.WriteImage(sitk.GetImageFromArray(np.clip(np.asarray(image, np.float32), 0, 1) * np.float32(INTENSITY_SCALE)),
                        str(path))
        result = self.frd.process_image_mask_pair((path, None), feature_extractor=self.extractor, frd_version=FRD_VERSION)
        if result is None:
            raise ValueError("no radiomics features for an image (mask too small)")
        return np.asarray(result[0], np.float64)

    def add(self, image: np.ndarray, real: bool, modality: str = "all") -> None:
        (self.real if real else self.fake).append((modality, self.features(image)))

    def compute(self) -> float:
        value = frd_from_features(np.stack([f for _, f in self.real]), np.stack([f for _, f in self.fake]))
        self.by_modality = {m: frd_from_features(np.stack([f for k, f in self.real if k == m]),
                                                 np.stack([f for k, f in self.fake if k == m]))
                            for m in sorted({m for m, _ in self.real}) if sum(k == m for k, _ in self.real) > 2}
        self.fake = []
        return value
