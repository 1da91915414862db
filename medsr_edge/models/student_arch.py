"""Re-parameterizable lightweight student for edge inference (in the spirit of ECBSR / RepVGG).

Training form: every 3x3 convolution is a :class:`RepConv` with four parallel branches
(3x3, 1x1, 1x1-expand -> 3x3, identity). :meth:`RepSRNet.reparameterize` folds each one into a
single 3x3 convolution, so the deployed graph is plain Conv + ReLU + Add + PixelShuffle: the ops
that INT8 quantizers and TensorRT fuse best.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RepConv(nn.Module):
    """3x3 convolution with extra training branches that fold into one 3x3 kernel.

    The 1x1-expand -> 3x3 branch pads its intermediate map with the 1x1 bias (not zeros), so the
    folded kernel is exact at the image border too.
    """

    def __init__(self, in_ch: int, out_ch: int, expand: int = 2) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1)
        self.expand = nn.Conv2d(in_ch, in_ch * expand, 1)
        self.squeeze = nn.Conv2d(in_ch * expand, out_ch, 3, 1, 0)
        self.identity = in_ch == out_ch
        self.fused: nn.Conv2d | None = None

    def _expand_squeeze(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.expand(x)
        bias = self.expand.bias.view(1, -1, 1, 1)
        mid = F.pad(mid - bias, (1, 1, 1, 1)) + bias  # border value = bias, as the folded conv sees
        return self.squeeze(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        out = self.conv3(x) + self.conv1(x) + self._expand_squeeze(x)
        return out + x if self.identity else out

    @torch.no_grad()
    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (weight [out, in, 3, 3], bias [out]) of the equivalent single convolution."""
        return self.folded()

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`fused_kernel`, differentiable: training through the folded kernel (INT8-aware
        fine-tuning quantizes this kernel, as deployment will)."""
        if self.fused is not None:
            return self.fused.weight, self.fused.bias
        weight = self.conv3.weight.clone()
        bias = self.conv3.bias.clone()
        weight += F.pad(self.conv1.weight, (1, 1, 1, 1))
        bias += self.conv1.bias
        w_exp = self.expand.weight[:, :, 0, 0]  # [mid, in]
        weight += torch.einsum("omhw,mi->oihw", self.squeeze.weight, w_exp)
        bias += self.squeeze.bias + torch.einsum("omhw,m->o", self.squeeze.weight, self.expand.bias)
        if self.identity:
            idx = torch.arange(self.in_ch, device=weight.device)
            weight = weight.index_put((idx, idx, torch.ones_like(idx), torch.ones_like(idx)),
                                      torch.ones(self.in_ch, device=weight.device, dtype=weight.dtype), accumulate=True)
        return weight, bias

    def reparameterize(self) -> None:
        """Replace the branches by one 3x3 convolution (in place, irreversible)."""
        weight, bias = self.fused_kernel()
        self.fused = nn.Conv2d(self.in_ch, self.out_ch, 3, 1, 1).to(weight.device, weight.dtype)
        self.fused.weight.data.copy_(weight)
        self.fused.bias.data.copy_(bias)
        for name in ("conv3", "conv1", "expand", "squeeze"):
            delattr(self, name)


class Reparameterizable:
    """For networks built of :class:`RepConv`: fold them all for deployment, and say whether done."""

    def reparameterize(self):
        """Fold every RepConv into a plain 3x3 convolution (in place); returns self for chaining."""
        for module in self.modules():
            if isinstance(module, RepConv) and module.fused is None:
                module.reparameterize()
        return self

    @property
    def is_deploy(self) -> bool:
        return all(m.fused is not None for m in self.modules() if isinstance(m, RepConv))


class RepSRNet(Reparameterizable, nn.Module):
    """Student generator: RepConv trunk at low resolution, long skip, pixel shuffle, and an
    anchor that adds the nearest-upsampled input so the network only learns the residual.

    Input (N, num_in_ch, H, W) in [0, 1]; output (N, num_out_ch, H*scale, W*scale), not clamped.
    """

    def __init__(self, num_in_ch: int = 1, num_out_ch: int = 1, scale: int = 4,
                 num_feat: int = 32, num_block: int = 6, expand: int = 2) -> None:
        super().__init__()
        if num_in_ch != num_out_ch:
            raise ValueError("the anchor residual needs num_in_ch == num_out_ch")
        self.scale = scale
        self.head = RepConv(num_in_ch, num_feat, expand)
        self.body = nn.ModuleList(RepConv(num_feat, num_feat, expand) for _ in range(num_block))
        self.tail = RepConv(num_feat, num_out_ch * scale * scale, expand)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = torch.relu(self.head(x))
        out = feat
        for block in self.body:
            out = torch.relu(block(out))
        out = self.tail(out + feat)
        s2 = self.scale * self.scale  # one channel: repeat == repeat_interleave, and exports as one Tile
        anchor = x.repeat(1, s2, 1, 1) if self.head.in_ch == 1 else torch.repeat_interleave(x, s2, dim=1)
        return self.shuffle(out + anchor)
