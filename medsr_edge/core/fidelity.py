"""The fidelity rule for GAN-trained models, shared by `bench` (rows refused) and `export`
(nothing written): hallucinated detail in a medical image is a defect, so a GAN-trained model may
not fall more than FIDELITY_MARGIN_DB below bicubic's PSNR in any modality."""

from __future__ import annotations

import re

FIDELITY_MARGIN_DB = 0.5  # a GAN-trained model may fall at most this far below bicubic in any modality


def is_gan_model(name: str, meta: dict | None = None) -> bool:
    """True for a GAN-trained model: ``gan`` as a word of its name (``student-x4-gan``, not
    ``organ-x4`` or ``esrgan-small``), or a GAN stage in its metadata."""
    return "gan" in re.split(r"[^a-z0-9]+", name.lower()) or (meta or {}).get("stage") == "gan"


def fidelity_failures(per_modality: dict[str, tuple[float, float]], margin_db: float = FIDELITY_MARGIN_DB) -> dict[str, tuple[float, float]]:
    """The modalities where a model's PSNR is more than ``margin_db`` below bicubic's.

    per_modality: {modality: (model PSNR dB, bicubic PSNR dB)} on the same images. Hallucinated
    detail in a medical image is a defect: a GAN-trained model with any failure is refused."""
    return {m: (a, b) for m, (a, b) in per_modality.items() if a < b - margin_db}
