"""Inference backends behind one call: ``run(x)`` maps (N, C, H, W) float32 in [0, 1] to
(N, C, H*scale, W*scale) float32. ONNX Runtime is the default; TensorRT and PyTorch are imported
only when asked for, so the runtime works with numpy + onnxruntime alone."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np

from ..formats import format_of_file
from .errors import BackendUnavailable, ModelError

META_PREFIX = "medsr."


class Backend:
    name = "base"
    path: Path
    scale: int
    precision: str
    meta: dict
    device: str = "cpu"

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _check_meta(self, expected_scale: int | None) -> None:
        if "scale" not in self.meta:
            raise ModelError(f"{self.path}: model has no medsr.scale metadata; export it with `medsr-edge export`")
        try:
            self.scale = int(self.meta["scale"])
            channels = int(self.meta.get("in_channels", 1))
        except (TypeError, ValueError):
            raise ModelError(f"{self.path}: model metadata is damaged (scale {self.meta.get('scale')!r}, in_channels "
                             f"{self.meta.get('in_channels')!r}); re-export it with `medsr-edge export`") from None
        if self.scale not in (2, 3, 4, 8):
            raise ModelError(f"{self.path}: model metadata says scale {self.scale}; medsr-edge models are x2, x3, x4 or x8")
        if channels != 1:
            raise ModelError(f"{self.path}: model takes {self.meta['in_channels']} channels; medsr-edge needs 1")
        if expected_scale and expected_scale != self.scale:
            raise ModelError(f"{self.path}: model is x{self.scale}, but x{expected_scale} was asked for")


def ort_providers(device: str) -> list:
    """Execution providers for ``device`` (auto | cpu | cuda | tensorrt), best first, present only."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    trt_opts = {"trt_engine_cache_enable": True,
                "trt_engine_cache_path": os.path.join(os.path.expanduser("~"), ".cache", "medsr-edge", "trt")}
    wanted = {"auto": [("TensorrtExecutionProvider", trt_opts), "CUDAExecutionProvider", "CPUExecutionProvider"],
              "tensorrt": [("TensorrtExecutionProvider", trt_opts), "CUDAExecutionProvider", "CPUExecutionProvider"],
              "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
              "cpu": ["CPUExecutionProvider"]}[device]
    out = [p for p in wanted if (p[0] if isinstance(p, tuple) else p) in available]
    if device in ("cuda", "tensorrt") and len(out) == 1:
        raise BackendUnavailable(f"no {device.upper()} execution provider in this onnxruntime; "
                                 "pip install onnxruntime-gpu on an NVIDIA machine")
    return out


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 expected_scale: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        providers = ort_providers(device)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            if "fp16" in self.path.name or "float16" in first.lower():
                raise BackendUnavailable(f"{self.path}: FP16 ONNX needs a GPU execution provider "
                                         f"(pip install onnxruntime-gpu); CPU said: {first}") from None
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first})") from None
        self.device = "cuda" if self.session.get_providers()[0] != "CPUExecutionProvider" else "cpu"
        raw = self.session.get_modelmeta().custom_metadata_map
        self.meta = {k[len(META_PREFIX):]: _parse(v) for k, v in raw.items() if k.startswith(META_PREFIX)}
        self._check_meta(expected_scale)
        self.precision = str(self.meta.get("precision", format_of_file(self.path).precision))
        inp = self.session.get_inputs()[0]
        if len(inp.shape) != 4 or inp.shape[1] != 1:
            raise ModelError(f"{self.path}: input shape {inp.shape} is not (N, 1, H, W)")
        self.input_name = inp.name

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise ModelError(f"{self.path}: inference failed on a {x.shape[-2]}x{x.shape[-1]} input ({first}); "
                             "try a smaller --tile") from None


class TorchBackend(Backend):
    """A safetensors checkpoint run by PyTorch (CPU or CUDA); needs the ``train`` extra."""

    name = "torch"

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 expected_scale: int | None = None) -> None:
        try:  # imported here, never at module level: the runtime itself must not need torch
            torch = importlib.import_module("torch")
            load_model = importlib.import_module("medsr_edge.models.checkpoint").load_model
        except ImportError:
            raise BackendUnavailable("the torch backend needs PyTorch: pip install 'medsr-edge[train]'") from None
        self.torch = torch
        self.path = Path(path)
        dev = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        if threads and dev == "cpu":
            torch.set_num_threads(threads)
        from ..models import count_params, gflops_per_output_mpx

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


def _parse(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def open_backend(path: str | Path, backend: str = "auto", device: str = "auto", threads: int | None = None,
                 expected_scale: int | None = None) -> Backend:
    """Open a model file with the backend its format needs (``backend="auto"``) or the one named."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        fmt = format_of_file(path)
    except KeyError as exc:
        raise ModelError(str(exc.args[0])) from None
    chosen = fmt.backend if backend == "auto" else backend
    if chosen != fmt.backend:
        raise ModelError(f"{path}: a {fmt.name} file runs on {fmt.backend}, not {chosen}")
    if chosen == "onnxruntime":
        return OnnxRuntimeBackend(path, device, threads, expected_scale)
    if chosen == "torch":
        return TorchBackend(path, device, threads, expected_scale)
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, expected_scale=expected_scale)
