"""Fréchet Inception Distance (FID) of super-resolved outputs against their ground truths, optional.

torchmetrics computes it with the Inception-v3 FID network of torch-fidelity, loaded from a local
weights file only (``pt_inception-2015-12-05-6726825d.pth``, the file pytorch-fid and
torch-fidelity use): nothing is downloaded. Without that file, or without torchmetrics and
torch-fidelity, :func:`fid_scorer` raises :class:`FidUnavailable` with the reason, and the bench
reports FID as skipped.

Images are float arrays in [0, 1] (the same normalisation as PSNR). Each one is cut into
non-overlapping square crops of side ``min(299, H, W)`` at native resolution, so the features see
the restored detail rather than a whole image shrunk to 299 pixels; the grey crop is repeated
into three channels. FID from a few hundred crops is biased upward: compare rows of one run only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.errors import first_line

FID_WEIGHTS_ENV = "MEDSR_FID_WEIGHTS"
INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
CROP = 299


class FidUnavailable(RuntimeError):
    """FID cannot be computed here; the message says why and what to provide."""


def crops(image: np.ndarray, side: int = CROP) -> np.ndarray:
    """Non-overlapping ``c x c`` crops (c = min(side, H, W)) of a 2-D image, as (N, c, c)."""
    c = min(side, *image.shape)
    rows, cols = image.shape[0] // c, image.shape[1] // c
    return np.stack([image[i * c:(i + 1) * c, j * c:(j + 1) * c] for i in range(rows) for j in range(cols)])


class FrechetScorer:
    """Real (ground-truth) statistics once, then one FID per set of outputs.

    ``add(image, real)`` takes a 2-D float image in [0, 1]; ``compute()`` returns the FID of the
    outputs added since the last call against all real images, and forgets those outputs.
    """

    def __init__(self, metric) -> None:
        self.metric = metric
        self.real_crops = 0
        self.fake_crops = 0

    def add(self, image: np.ndarray, real: bool) -> None:
        import torch

        batch = torch.from_numpy(np.clip(crops(np.asarray(image, np.float32)), 0, 1))
        with torch.inference_mode():
            self.metric.update(batch[:, None].expand(-1, 3, -1, -1).contiguous(), real=real)
        if real:
            self.real_crops += len(batch)
        else:
            self.fake_crops += len(batch)

    def compute(self) -> float:
        value = float(self.metric.compute())
        self.metric.reset()  # keeps the real statistics (reset_real_features=False)
        self.fake_crops = 0
        return value


def fid_scorer(weights: str | Path | None = None, feature=None) -> FrechetScorer:
    """A scorer on Inception-v3 FID features from ``weights`` (default ``$MEDSR_FID_WEIGHTS``),
    or on ``feature`` (any torch module mapping (N, 3, H, W) in [0, 1] to (N, D))."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except Exception as exc:  # noqa: BLE001 - any import failure means "no FID here"
        raise FidUnavailable(f"needs torchmetrics and torch-fidelity: pip install 'medsr-edge[fid]' ({type(exc).__name__})") from None
    if feature is not None:
        return FrechetScorer(FrechetInceptionDistance(feature=feature, reset_real_features=False, normalize=True))
    weights = weights or os.environ.get(FID_WEIGHTS_ENV)
    if not weights:
        raise FidUnavailable(f"no Inception weights: pass --fid-weights {INCEPTION_WEIGHTS} (or set {FID_WEIGHTS_ENV}); "
                             "nothing is downloaded")
    if not Path(weights).is_file():
        raise FidUnavailable(f"{weights}: Inception weights file not found; nothing is downloaded")
    try:
        metric = FrechetInceptionDistance(feature=2048, reset_real_features=False, normalize=True,
                                          feature_extractor_weights_path=str(weights))
    except Exception as exc:  # noqa: BLE001 - torch-fidelity missing or broken, weights unreadable
        first = first_line(exc, 160, typed=False)
        raise FidUnavailable(f"Inception-v3 could not be loaded ({type(exc).__name__}: {first}); "
                             "pip install 'medsr-edge[fid]' with a torchvision that matches torch") from None
    return FrechetScorer(metric)
