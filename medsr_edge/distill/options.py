"""Training options: one keyword-only, validated object shared by every training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import MedsrError
from .data import BALANCE_CHOICES, TRAIN_DEGRADATIONS, AugmentConfig


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """Shared options, validated on construction (MedsrError naming the option). Sizes in pixels
    of the high-resolution patch; ``lr`` is the learning rate."""

    data: Path
    out: Path
    scale: int = 4
    iters: int = 1000
    batch: int = 16
    patch: int = 128
    lr: float = 2e-4
    split: str | None = "train"
    val_split: str | None = "val"
    val_every: int = 250
    save_every: int = 250
    seed: int = 0
    threads: int | None = None
    denoise: str | None = None
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    limit_per_modality: int | None = None
    ema_decay: float = 0.999
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 0  # data-loading processes (0: batches made in the training process)
    edge_patches: float = 0.0  # fraction of patches centred on an image's strongest edges (PatchSampler)
    exclude_sources: tuple[str, ...] = ()  # <modality>/<source> names left out of training and validation
    balance: str = "modality"  # patch sampling: "modality", per modality then per source ("source"), or "image"
    sources: tuple[str, ...] = ()  # only these <modality>/<source> (or modalities); () = all
    native_weight: float = 1.0  # images stored with more than 8 bits drawn this many times as often (PatchSampler)
    lossy_downscale: int = 1  # ground truth of lossy-compressed images downscaled by this factor first (load_samples)
    degradation: str = "bicubic"  # LR model: bicubic, mr-kspace, ct-kernel, xr-detector or mixed (PatchSampler)
    max_seconds: float | None = None  # stop this process (with a checkpoint) after this long; re-run resumes
    channels_last: bool = False  # NHWC memory format for the networks (CUDA convolutions run faster)
    compile: bool = False  # torch.compile the generator

    def __post_init__(self) -> None:
        checks = [(self.scale in (2, 3, 4, 8), "--scale", "use 2, 3, 4 or 8"),
                  (self.iters >= 1 and self.batch >= 1, "--iters/--batch", "must be at least 1"),
                  (self.patch >= 8 * self.scale and self.patch % self.scale == 0, "--patch",
                   f"a multiple of --scale of at least {8 * self.scale} pixels"),
                  (self.lr >= 0, "--lr", "cannot be negative"),
                  (self.val_every >= 1 and self.save_every >= 1, "--val-every", "must be at least 1"),
                  (self.balance in BALANCE_CHOICES, "--balance", f"use {', '.join(BALANCE_CHOICES)}"),
                  (self.degradation in TRAIN_DEGRADATIONS, "--degradation", f"use {', '.join(TRAIN_DEGRADATIONS)}"),
                  (0.0 <= self.edge_patches <= 1.0, "--edge-patches", "a fraction in [0, 1]"),
                  (1 <= self.lossy_downscale <= 4, "--lossy-downscale", "an integer from 1 (as stored) to 4"),
                  (self.native_weight > 0, "--native-weight", "a positive weight (1: every image alike)"),
                  (0.0 <= self.ema_decay < 1.0, "ema_decay", "in [0, 1)")]
        for ok, option, fix in checks:
            if not ok:
                raise MedsrError(f"{option}: {fix}")
