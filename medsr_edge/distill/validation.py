"""Validation during training: PSNR/SSIM (data range 1, border crop = scale) of the model and of
bicubic on the run's fixed validation crops."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.degradation import upscale_bicubic
from ..core.metrics import psnr, ssim


@torch.no_grad()
def evaluate(model: nn.Module, val: list, scale: int, device: torch.device) -> dict[str, float]:
    """Mean PSNR/SSIM (data range 1, border crop = scale) of ``model`` and bicubic on ``val``."""
    model.eval()
    res = {"val_psnr": [], "val_ssim": [], "val_psnr_bicubic": []}
    for lr, hr, _ in val:
        sr = model(torch.from_numpy(lr)[None, None].to(device)).float().clamp(0, 1)[0, 0].cpu().numpy()
        res["val_psnr"].append(psnr(sr, hr, scale))
        res["val_ssim"].append(ssim(sr, hr, scale))
        res["val_psnr_bicubic"].append(psnr(upscale_bicubic(lr, scale), hr, scale))
    model.train()
    return {k: float(np.mean(v)) for k, v in res.items()}
