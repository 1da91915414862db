"""PyTorch checkpoints (safetensors) as an inference backend, for benchmarks and quick checks.

Importing this module registers the ``torch`` backend with the runtime, which itself never
imports torch; deployments run the exported ONNX or TensorRT files instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models import count_params, gflops_per_output_mpx
from ..models.checkpoint import load_model
from ..runtime.backend_base import Backend


class TorchBackend(Backend):
    """A safetensors checkpoint run by PyTorch (CPU or CUDA); needs the ``train`` extra."""

    name = "torch"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 expected_scale: int | None = None) -> None:
        self.torch = torch
        self.path = Path(path)
        dev = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        if threads and dev == "cpu":
            torch.set_num_threads(threads)
        self.model, self.config, meta = load_model(self.path, dev)
        if hasattr(self.model, "reparameterize"):
            self.model.reparameterize()  # the student's deploy form: same output, fewer ops
        scale = int(meta.get("scale", 4))
        self.meta = {**meta, "arch": self.config.get("type"), "params": count_params(self.model),
                     "gflops_per_output_mpx": round(gflops_per_output_mpx(self.model.cpu(), scale), 3)}
        self.model.to(dev)
        self.device, self.precision = dev, "fp32"
        self._check_meta(expected_scale)

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)).float().cpu().numpy()

