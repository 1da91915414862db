"""Network architectures (torch) and a small registry that builds them from a config dict."""

from __future__ import annotations

from typing import Any

from torch import nn

from .discriminator_arch import UNetDiscriminatorSN
from .reppfa_arch import PFABlock, RepPFANet
from .rrdbnet_arch import RRDBNet
from .student_arch import RepConv, RepSRNet

ARCHS: dict[str, type[nn.Module]] = {
    "RRDBNet": RRDBNet,
    "RepSRNet": RepSRNet,
    "RepPFANet": RepPFANet,
    "UNetDiscriminatorSN": UNetDiscriminatorSN,
}

# Named configs. ``esrgan-full`` is the canonical ESRGAN teacher (16.7 M parameters, a GPU job);
# the smaller ones train on a 2-core CPU in hours.
CONFIGS: dict[str, dict[str, Any]] = {
    "esrgan-full": {"type": "RRDBNet", "num_feat": 64, "num_block": 23, "num_grow_ch": 32},
    "esrgan-small": {"type": "RRDBNet", "num_feat": 32, "num_block": 6, "num_grow_ch": 16},
    "esrgan-tiny": {"type": "RRDBNet", "num_feat": 16, "num_block": 2, "num_grow_ch": 8},
    # Students (RepPFANet, see reppfa_arch.py); latencies in the README's student table.
    # Widths are multiples of 16 (one AVX-512 fp32 vector; 8 for GPUs' tensor cores): on an AVX-512
    # CPU a 24-wide 4-block net ran no faster than the 32-wide default, so the fast size is shallower.
    "student-fast": {"type": "RepPFANet", "num_feat": 32, "num_block": 2, "expand": 2},
    "student": {"type": "RepPFANet", "num_feat": 32, "num_block": 4, "expand": 2},
    "student-quality": {"type": "RepPFANet", "num_feat": 32, "num_block": 8, "expand": 2},
    # The CPU teacher: the default's depth at twice its width (4x its MACs), started as the trained
    # default widened (widen.py) and trained on with the same recipe.
    "teacher-wide": {"type": "RepPFANet", "num_feat": 64, "num_block": 4, "expand": 2},
    # The default size over a windowed-sinc anchor instead of pixel replication (reppfa_arch.py).
    "student-sinc": {"type": "RepPFANet", "num_feat": 32, "num_block": 4, "expand": 2, "anchor": "sinc"},
    # The first student (plain RepConv trunk, ReLU), kept for the models trained with it.
    "student-v1": {"type": "RepSRNet", "num_feat": 32, "num_block": 4, "expand": 2},
    "student-tiny": {"type": "RepSRNet", "num_feat": 8, "num_block": 1, "expand": 2},
    "discriminator": {"type": "UNetDiscriminatorSN", "num_feat": 64},
    "discriminator-small": {"type": "UNetDiscriminatorSN", "num_feat": 32},
}


def resolve_config(config: str | dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Return a full config dict from a config name or dict, with ``overrides`` applied."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise KeyError(f"unknown model config {config!r}; known: {', '.join(CONFIGS)}")
        cfg = {"name": config, **CONFIGS[config]}
    else:
        cfg = dict(config)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def build_model(config: str | dict[str, Any], **overrides: Any) -> nn.Module:
    """Build a network from a config name or dict (``{"type": "RRDBNet", ...}``)."""
    cfg = resolve_config(config, **overrides)
    kwargs = {k: v for k, v in cfg.items() if k not in ("type", "name")}
    return ARCHS[cfg["type"]](**kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflops_per_output_mpx(model: nn.Module, scale: int, size: int = 64) -> float:
    """Convolution FLOPs (2 x multiply-adds) per output megapixel, in GFLOPs, measured with hooks
    on a ``size`` x ``size`` input (the networks are fully convolutional, so this is size-free)."""
    import torch

    macs = 0

    def hook(mod: nn.Conv2d, _inp, out) -> None:
        nonlocal macs
        macs += out[0].numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, size, size))
    finally:
        for h in handles:
            h.remove()
    return 2.0 * macs / (size * scale) ** 2 * 1e6 / 1e9


__all__ = ["ARCHS", "CONFIGS", "PFABlock", "RRDBNet", "RepPFANet", "RepConv", "RepSRNet", "UNetDiscriminatorSN",
           "build_model", "count_params", "gflops_per_output_mpx", "resolve_config"]
