"""INT8-aware fine-tuning (quantization-aware training) of a re-parameterizable student.

Post-training INT8 of a deep student loses more than the 0.1 dB an INT8 model may lose: each
8-bit activation adds noise that the later blocks amplify (RepPFANet 32x8: 0.14 to 0.37 dB,
depending on calibration and how many convolutions stay float). Fine-tuning with that noise in the
forward pass teaches the network to be robust to it. The simulation matches what
``medsr_edge.export.quantize`` (ONNX Runtime static QDQ) deploys for the convolutions it
quantizes:

- weights: the *folded* 3x3 kernel of each RepConv, per output channel, symmetric int8
  (scale = max |w| / 127);
- inputs and outputs: per tensor, asymmetric uint8 (:class:`Int8Grid`): first over the running
  minimum and maximum (ONNX Runtime's MinMax calibration), then with a learned step size (LSQ).
  The quantizer puts a QuantizeLinear after each quantized convolution, so that ONNX Runtime can
  run it as one QLinearConv; its output is therefore an 8-bit tensor too. The residual stream and
  the other float operations read float tensors, as export leaves them
  (``medsr_edge.export.quantize.keep_float_tensors_float``).

Gradients pass the rounding unchanged (straight-through estimator); the step sizes get LSQ's
gradient. The simulation runs in training mode only: evaluation (validation, EMA) sees the plain
float network, whose weights are saved in the usual training form. The learned ranges go into the
checkpoint's metadata (``int8_aware.ranges``), and INT8 export uses them for those tensors.
"""

from __future__ import annotations

import types

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models.student_arch import RepConv


class Int8Grid(nn.Module):
    """Per-tensor asymmetric uint8 rounding of one activation tensor, with a learned step.

    For its first ``observe`` training batches it rounds over the running minimum and maximum
    (ONNX Runtime's MinMax calibration, range widened to include 0); then the zero point is fixed
    at the value those give and the step size is learned by gradient descent (LSQ, Esser et al.
    2020, on ``log(step)``), trading clipped outliers against rounding noise. The learned range
    (:meth:`value_range`) is what INT8 export then uses for that tensor.
    """

    def __init__(self, observe: int = 20) -> None:
        super().__init__()
        self.observe = observe
        self.log_step = nn.Parameter(torch.zeros(()))
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("zero_point", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    @property
    def learning(self) -> bool:
        return int(self.seen) >= self.observe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.learning:
            return torch._fake_quantize_learnable_per_tensor_affine(
                x, self.log_step.exp().reshape(1), self.zero_point.reshape(1), 0, 255, 1.0)
        with torch.no_grad():
            self.low.fill_(min(float(self.low), float(x.min())))
            self.high.fill_(max(float(self.high), float(x.max())))
            step = max(float(self.high - self.low), 1e-8) / 255.0
            zero = int(round(-float(self.low) / step))
            self.seen += 1
            if self.learning:
                self.log_step.fill_(float(np.log(step)))
                self.zero_point.fill_(zero)
        return torch.fake_quantize_per_tensor_affine(x, step, zero, 0, 255)

    def value_range(self) -> tuple[float, float]:
        """(lowest, highest) value of the uint8 grid, in the tensor's units."""
        if not self.learning:
            return float(self.low), float(self.high)
        step, zero = float(self.log_step.detach().exp()), float(self.zero_point)
        return -zero * step, (255.0 - zero) * step


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 rounding of a conv kernel [out, in, kh, kw]."""
    scale = (weight.detach().abs().amax(dim=(1, 2, 3)) / 127.0).clamp_min(1e-12)
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -128, 127)


def _simulated_forward(self, x: torch.Tensor) -> torch.Tensor:
    if not self.training:
        return type(self).forward(self, x)
    if isinstance(self, RepConv):
        weight, bias = self.folded()
        padding = 1
    else:
        weight, bias, padding = self.weight, self.bias, self.padding
    grids = self.__dict__["int8_grids"]
    out = F.conv2d(grids["input"](x), fake_quantize_weight(weight), bias, padding=padding)
    return grids["output"](out)


def quantized_convolutions(model: nn.Module, float_convs: int = 0) -> list[str]:
    """Names of the convolutions that INT8 export quantizes: those inside ``model.body`` after
    the first ``float_convs`` (the head, the fusion convolution and the tail stay float, as
    ``medsr_edge.export.quantize.float_nodes`` keeps them)."""
    body = getattr(model, "body", None)
    if body is None:
        raise ValueError(f"{type(model).__name__} has no body of blocks to fine-tune for INT8")
    reps = [n for n, m in body.named_modules() if isinstance(m, RepConv)]
    names = [n for n, m in body.named_modules() if isinstance(m, RepConv)
             or (isinstance(m, nn.Conv2d) and not any(n.startswith(r + ".") for r in reps))]
    names = [f"body.{n}" for n in names]
    return names[float_convs:]


def simulate_int8(model: nn.Module, float_convs: int = 0, observe: int = 20) -> nn.ModuleDict:
    """Make the training-mode forward of each of :func:`quantized_convolutions` run on an
    :class:`Int8Grid`-rounded input, its folded kernel rounded to int8 per output channel, and
    round its output on a second grid (in place; evaluation mode is unchanged, and the grids are
    not part of ``model``'s state). Returns the grids, keyed ``NAME|input`` and ``NAME|output``
    with ``NAME`` the convolution's (for the optimiser, the checkpoint and :func:`learned_ranges`)."""
    names = quantized_convolutions(model, float_convs)
    modules = dict(model.named_modules())
    grids = nn.ModuleDict()
    for name in names:
        conv = modules[name]
        pair = nn.ModuleDict({"input": Int8Grid(observe), "output": Int8Grid(observe)})
        conv.__dict__["int8_grids"] = pair  # not registered: the saved weights stay the plain network's
        conv.forward = types.MethodType(_simulated_forward, conv)
        grids[name.replace(".", "_") + "_input"], grids[name.replace(".", "_") + "_output"] = pair["input"], pair["output"]
    grids.names = names
    return grids


def learned_ranges(grids: nn.ModuleDict) -> dict[str, dict[str, list[float]]]:
    """``{convolution name: {"input": [low, high], "output": [low, high]}}`` of :func:`simulate_int8`'s
    grids: what INT8 export uses for those tensors instead of calibrating them."""
    return {name: {side: list(grids[name.replace(".", "_") + "_" + side].value_range()) for side in ("input", "output")}
            for name in grids.names}
