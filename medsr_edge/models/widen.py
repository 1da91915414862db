"""Function-preserving widening of a RepPFANet (Net2WiderNet, Chen et al., ICLR 2016).

A wider network starts as the trained narrow one instead of from scratch: each of the ``k`` copies
of a feature channel receives the source channel's incoming weights, and each outgoing weight from a
copy is divided by ``k``. Every non-linearity of RepPFANet (SiLU, the parameter-free attention, the
identity branch) acts channel by channel, so the copies carry equal values and the wide network
computes what the narrow one did. A little noise on the incoming weights (``noise``, relative to each
tensor's standard deviation) lets the copies drift apart under training.
"""

from __future__ import annotations

import torch
from torch import nn

from .reppfa_arch import RepPFANet
from .student_arch import RepConv


def _conv(dst: nn.Conv2d, src: nn.Conv2d, out_map: torch.Tensor, in_map: torch.Tensor, in_split: torch.Tensor) -> None:
    """dst.weight[o, i] = src.weight[out_map[o], in_map[i]] / in_split[i]; dst.bias[o] = src.bias[out_map[o]]."""
    dst.weight.copy_(src.weight[out_map][:, in_map] / in_split.view(1, -1, 1, 1))
    dst.bias.copy_(src.bias[out_map])


def _copies(old: int, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(map new index -> old index, number of copies of each new index's source) for ``new = k * old``."""
    index = torch.arange(new) % old
    return index, torch.full((new,), new // old, dtype=torch.float32)


def _repconv(dst: RepConv, src: RepConv) -> None:
    if dst.identity != src.identity:  # e.g. a tail whose input width equals scale^2 on one side only
        raise ValueError(f"cannot widen a {src.in_ch}->{src.out_ch} convolution into {dst.in_ch}->{dst.out_ch}: "
                         "one has an identity branch and the other not; pick another width")
    out_map, _ = _copies(src.out_ch, dst.out_ch)
    in_map, in_split = _copies(src.in_ch, dst.in_ch)
    mid_old, mid_new = src.expand.out_channels, dst.expand.out_channels
    mid_map, mid_split = _copies(mid_old, mid_new)
    _conv(dst.conv3, src.conv3, out_map, in_map, in_split)
    _conv(dst.conv1, src.conv1, out_map, in_map, in_split)
    _conv(dst.expand, src.expand, mid_map, in_map, in_split)
    _conv(dst.squeeze, src.squeeze, out_map, mid_map, mid_split)


@torch.no_grad()
def widen(src: RepPFANet, dst: RepPFANet, noise: float = 0.0, seed: int = 0) -> RepPFANet:
    """Load ``dst`` (same depth, scale, anchor and expand; features a whole multiple of ``src``'s)
    with the widened weights of ``src``; returns ``dst``. ``noise``: standard deviation of the
    Gaussian noise added to each widened body weight, relative to that tensor's own (0: exact)."""
    if not (isinstance(src, RepPFANet) and isinstance(dst, RepPFANet)):
        raise ValueError("widening needs two RepPFANet networks")
    c_old, c_new = src.head.out_ch, dst.head.out_ch
    if (len(src.body) != len(dst.body) or src.scale != dst.scale or c_new % c_old
            or src.head.expand.out_channels // src.head.in_ch != dst.head.expand.out_channels // dst.head.in_ch
            or (src.anchor is None) != (dst.anchor is None)):
        raise ValueError(f"cannot widen {c_old} features x {len(src.body)} blocks (x{src.scale}) into "
                         f"{c_new} x {len(dst.body)} (x{dst.scale}): same depth, scale, anchor and expand, "
                         "and a whole multiple of the features")
    if not (src.head.fused is None and dst.head.fused is None):
        raise ValueError("widen the training form (before reparameterize)")
    _repconv(dst.head, src.head)
    for b_dst, b_src in zip(dst.body, src.body, strict=True):
        for name in ("c1", "c2", "c3"):
            _repconv(getattr(b_dst, name), getattr(b_src, name))
    # fuse: 1x1 over [head, first block, last block], each widened the same way
    out_map, _ = _copies(c_old, c_new)
    in_map = torch.cat([g * c_old + out_map for g in range(3)])
    _conv(dst.fuse, src.fuse, out_map, in_map, torch.full((3 * c_new,), c_new / c_old))
    _repconv(dst.tail, src.tail)
    if noise > 0:
        gen = torch.Generator().manual_seed(seed)
        for name, p in dst.named_parameters():
            if name.endswith("weight") and not name.startswith("tail") and p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=gen) * noise * float(p.std()))
    return dst
