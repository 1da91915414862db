"""RRDBNet generator of ESRGAN (Wang et al., ECCV-W 2018), single-channel by default."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a residual scaled by 0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(num_feat + i * num_grow_ch, num_grow_ch if i < 4 else num_feat, 3, 1, 1)
            for i in range(5)
        )
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        for conv in self.convs:  # small init, as in ESRGAN, keeps the deep residual net stable
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data *= 0.1
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(self.lrelu(out))
        return out * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and a residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator: RRDB trunk at low resolution, nearest-neighbour x2 upsampling stages.

    Input: (N, num_in_ch, H, W) in [0, 1]. Output: (N, num_out_ch, H*scale, W*scale), same range
    (not clamped). ``scale`` is 2 or 4.
    """

    def __init__(self, num_in_ch: int = 1, num_out_ch: int = 1, scale: int = 4,
                 num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"RRDBNet supports scale 2 or 4, got {scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_ups = nn.ModuleList(
            nn.Conv2d(num_feat, num_feat, 3, 1, 1) for _ in range(scale.bit_length() - 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in self.conv_ups:
            feat = self.lrelu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
