"""INT8-aware fine-tuning (quantization-aware training) of a re-parameterizable student.

Post-training INT8 of a deep student loses more than the 0.1 dB an INT8 model may lose: each
8-bit activation adds noise that the later blocks amplify (RepPFANet 32x8: 0.14 to 0.37 dB,
depending on calibration and how many convolutions stay float). Fine-tuning with that noise in the
forward pass teaches the network to be robust to it. The simulation matches what
``medsr_edge.export.quantize`` (ONNX Runtime static QDQ) deploys for the convolutions it
quantizes:

- weights: the *folded* 3x3 kernel of each RepConv, per output channel, symmetric int8
  (scale = max |w| / 127);
- inputs and outputs: per tensor, asymmetric uint8 over the running minimum and maximum seen in
  training (ONNX Runtime's MinMax calibration, range widened to include 0). The quantizer puts a
  QuantizeLinear after each quantized convolution, so that ONNX Runtime can run it as one
  QLinearConv; its output is therefore an 8-bit tensor too.

Gradients pass the rounding unchanged (straight-through estimator). The simulation runs in
training mode only: evaluation (validation, EMA, export) sees the plain float network, whose
weights are saved in the usual training form, so the exporter needs nothing new.
"""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.nn import functional as F

from ..models.student_arch import RepConv


class ActivationRange:
    """Running minimum and maximum of a tensor (the MinMax calibrator), always containing 0."""

    def __init__(self) -> None:
        self.low, self.high = 0.0, 0.0

    def observe(self, x: torch.Tensor) -> None:
        self.low = min(self.low, float(x.detach().min()))
        self.high = max(self.high, float(x.detach().max()))

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` rounded to the uint8 grid of the range (values outside it clip)."""
        scale = max(self.high - self.low, 1e-8) / 255.0
        zero = int(round(-self.low / scale))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 rounding of a conv kernel [out, in, kh, kw]."""
    scale = (weight.detach().abs().amax(dim=(1, 2, 3)) / 127.0).clamp_min(1e-12)
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -128, 127)


def _simulated_forward(self, x: torch.Tensor) -> torch.Tensor:
    if not self.training:
        return type(self).forward(self, x)
    self.int8_input.observe(x)
    if isinstance(self, RepConv):
        weight, bias = self.folded()
        padding = 1
    else:
        weight, bias, padding = self.weight, self.bias, self.padding
    out = F.conv2d(self.int8_input.fake_quantize(x), fake_quantize_weight(weight), bias, padding=padding)
    self.int8_output.observe(out)
    return self.int8_output.fake_quantize(out)


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


def simulate_int8(model: nn.Module, float_convs: int = 0) -> list[str]:
    """Make the training-mode forward of each of :func:`quantized_convolutions` run on int8-rounded
    inputs and weights and round its output to uint8 (in place; evaluation mode is unchanged).
    Returns the names."""
    names = quantized_convolutions(model, float_convs)
    modules = dict(model.named_modules())
    for name in names:
        conv = modules[name]
        conv.int8_input, conv.int8_output = ActivationRange(), ActivationRange()
        conv.forward = types.MethodType(_simulated_forward, conv)
    return names
