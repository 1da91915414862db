"""Where training runs: threads, seed, device (CPU, CUDA with bf16 autocast, DDP under torchrun), and
the EMA copy of a generator."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def ema_of(model: nn.Module, decay: float) -> AveragedModel:
    """EMA copy of ``model`` whose decay warms up as min(decay, (1 + n) / (10 + n)) after n
    updates, so short runs are not dominated by the random initial weights."""

    @torch.no_grad()
    def avg(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return AveragedModel(model, multi_avg_fn=avg, use_buffers=True)


class Context:
    """Device, distributed rank and autocast, set up once from the environment (torchrun)."""

    def __init__(self, threads: int | None, seed: int, channels_last: bool = False, compile: bool = False) -> None:
        self.channels_last, self.compile = channels_last, compile
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        else:
            self.device = torch.device("cpu")
            if threads:
                torch.set_num_threads(threads)
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(seed + self.rank)
        self.is_main = self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def wrap(self, model: nn.Module) -> nn.Module:
        """On the device (NHWC with ``channels_last``), in DDP under torchrun. ``compile`` compiles
        the forward in place, so ``unwrap`` still returns the module whose weights are saved."""
        model = model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        if self.compile:
            model.compile()
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def tensor(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).to(self.device, non_blocking=True)

    def close(self) -> None:
        if self.world > 1:
            torch.distributed.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
