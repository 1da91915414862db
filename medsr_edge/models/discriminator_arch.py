"""U-Net discriminator with spectral normalisation (as in Real-ESRGAN), single-channel input.

Gives a per-pixel realness map, works on any patch size divisible by 8, and exposes its
intermediate features for the feature-matching perceptual loss used when VGG19 weights are absent.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm


class UNetDiscriminatorSN(nn.Module):
    def __init__(self, num_in_ch: int = 1, num_feat: int = 64) -> None:
        super().__init__()
        sn = spectral_norm
        self.conv0 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.down = nn.ModuleList([
            sn(nn.Conv2d(num_feat, num_feat * 2, 4, 2, 1, bias=False)),
            sn(nn.Conv2d(num_feat * 2, num_feat * 4, 4, 2, 1, bias=False)),
            sn(nn.Conv2d(num_feat * 4, num_feat * 8, 4, 2, 1, bias=False)),
        ])
        self.up = nn.ModuleList([
            sn(nn.Conv2d(num_feat * 8, num_feat * 4, 3, 1, 1, bias=False)),
            sn(nn.Conv2d(num_feat * 4, num_feat * 2, 3, 1, 1, bias=False)),
            sn(nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1, bias=False)),
        ])
        self.conv7 = sn(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv8 = sn(nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(num_feat, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        skips = [act(self.conv0(x))]
        for conv in self.down:
            skips.append(act(conv(skips[-1])))
        feats = list(skips)
        out = skips.pop()
        for conv in self.up:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
            out = act(conv(out)) + skips.pop()
        out = act(self.conv8(act(self.conv7(out))))
        logits = self.conv9(out)
        return (logits, feats) if return_features else logits
