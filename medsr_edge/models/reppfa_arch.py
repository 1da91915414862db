"""RepPFANet: re-parameterizable convolutions with parameter-free attention (our own design,
after the ideas that win the NTIRE/AIM efficient-SR challenges).

What it takes from where, per FLOP:

- ECBSR / RepVGG: every 3x3 convolution trains with extra branches (:class:`RepConv`) and folds
  into one plain 3x3 kernel for deployment, so capacity during training costs nothing at inference.
- SPAN (NTIRE 2024): each block ends in a *parameter-free* attention, ``sigmoid(h) - 0.5`` of its
  own last feature map, multiplying the block's residual sum. No pooling, no extra convolutions:
  element-wise ops that TensorRT and ONNX Runtime fuse into the convolutions around them.
- RLFN / IMDN: features from early and late blocks are concatenated and mixed by one 1x1
  convolution before the reconstruction, so low-level detail reaches the output directly.
- The anchor (ECBSR, ABPN): an interpolation of the input, as scale^2 sub-pixel channels, is added
  before the pixel shuffle, so the network learns only the residual over it. ``nearest`` repeats
  the input (pixel replication); ``sinc`` is a fixed windowed-sinc interpolation
  (:class:`SincAnchor`), close to the zero-filled k-space interpolation an MR scanner does.

Deployed graph: Conv, SiLU (x * sigmoid(x)), Sigmoid, Sub, Mul, Add, Concat, DepthToSpace (and for
the sinc anchor a Pad, edge mode).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..core.degradation import sinc_taps
from .student_arch import Reparameterizable, RepConv


class PFABlock(nn.Module):
    """Three RepConv 3x3 layers (SiLU between) and parameter-free attention.

    ``h = c3(silu(c2(silu(c1(x)))))``; output ``(h + x) * (sigmoid(h) - 0.5)``.
    """

    def __init__(self, num_feat: int, expand: int = 2) -> None:
        super().__init__()
        self.c1 = RepConv(num_feat, num_feat, expand)
        self.c2 = RepConv(num_feat, num_feat, expand)
        self.c3 = RepConv(num_feat, num_feat, expand)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c3(self.act(self.c2(self.act(self.c1(x)))))
        return (h + x) * (torch.sigmoid(h) - 0.5)


class SincAnchor(nn.Module):
    """A fixed windowed-sinc interpolation of a 1-channel input as ``scale^2`` sub-pixel channels
    (pixel-shuffle order), edges replicated: :func:`medsr_edge.core.degradation.upscale_sinc`
    before the shuffle. Not trained and not stored: the kernel follows from ``scale`` and
    ``radius`` (LR pixels)."""

    def __init__(self, scale: int, radius: int = 8) -> None:
        super().__init__()
        t = torch.from_numpy(sinc_taps(scale, radius)).float()
        kernel = torch.einsum("ai,bj->abij", t, t).reshape(scale * scale, 1, 2 * radius + 1, 2 * radius + 1)
        self.register_buffer("kernel", kernel, persistent=False)
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius
        return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), self.kernel)


class RepPFANet(Reparameterizable, nn.Module):
    """Student generator: RepConv head, ``num_block`` :class:`PFABlock`, 1x1 fusion of the head,
    first-block and last-block features, a RepConv to ``scale^2`` channels, the anchor residual and
    a pixel shuffle. ``anchor``: ``nearest`` or ``sinc`` (1-channel only; ``anchor_radius`` LR px).

    Input (N, 1, H, W) in [0, 1]; output (N, 1, H*scale, W*scale), not clamped. Receptive
    radius: 3 * num_block + 2 input pixels (or the sinc anchor's radius if larger).
    """

    def __init__(self, num_in_ch: int = 1, num_out_ch: int = 1, scale: int = 4,
                 num_feat: int = 32, num_block: int = 4, expand: int = 2, anchor: str = "nearest",
                 anchor_radius: int = 8) -> None:
        super().__init__()
        if num_in_ch != num_out_ch:
            raise ValueError("the anchor residual needs num_in_ch == num_out_ch")
        if num_block < 1:
            raise ValueError("num_block must be >= 1")
        if anchor not in ("nearest", "sinc") or (anchor == "sinc" and num_in_ch != 1):
            raise ValueError(f"anchor {anchor!r}: use nearest, or sinc for 1-channel networks")
        self.scale = scale
        self.anchor = SincAnchor(scale, anchor_radius) if anchor == "sinc" else None
        self.head = RepConv(num_in_ch, num_feat, expand)
        self.body = nn.ModuleList(PFABlock(num_feat, expand) for _ in range(num_block))
        self.fuse = nn.Conv2d(num_feat * 3, num_feat, 1)
        self.tail = RepConv(num_feat, num_out_ch * scale * scale, expand)
        self.shuffle = nn.PixelShuffle(scale)
        # Start as pixel replication: the tail's branches begin at zero, so early training refines
        # the anchor instead of first undoing a random residual.
        for conv in (self.tail.conv3, self.tail.conv1, self.tail.squeeze):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        first = out = self.body[0](feat)
        for block in self.body[1:]:
            out = block(out)
        out = self.tail(self.fuse(torch.cat([feat, first, out], 1)))
        s2 = self.scale * self.scale
        if self.anchor is not None:
            anchor = self.anchor(x)
        else:
            anchor = x.repeat(1, s2, 1, 1) if self.head.in_ch == 1 else torch.repeat_interleave(x, s2, dim=1)
        return self.shuffle(out + anchor)
