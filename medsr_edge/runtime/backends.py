"""Inference backends behind one call: ``run(x)`` maps (N, C, H, W) float32 in [0, 1] to
(N, C, H*scale, W*scale) float32. ONNX Runtime is the default; TensorRT and PyTorch are imported
only when asked for, so the runtime works with numpy + onnxruntime alone."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.errors import BackendUnavailable, ModelError, first_line
from ..core.formats import format_of_file
from .backend_base import META_PREFIX, Backend, parse_meta_value

# Backends that live outside the runtime (the PyTorch one: medsr_edge.export.torch_backend) are plugins:
# declared as entry points of the group below in pyproject.toml and loaded when a file needs them, so
# the runtime never imports torch, and `Enhancer("x.safetensors")` works wherever torch is installed.
ENTRY_POINT_GROUP = "medsr_edge.backends"
REGISTERED: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make ``open_backend`` open ``name`` files with ``factory(path, device, threads, expected_scale)``."""
    REGISTERED[name] = factory


def plugin_backend(name: str) -> Callable[..., Backend] | None:
    """The factory of backend ``name``: registered, or loaded from its entry point (None when there
    is none). A plugin whose packages are missing raises BackendUnavailable naming the extra."""
    if name in REGISTERED:
        return REGISTERED[name]
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                REGISTERED[name] = ep.load()
            except ImportError as exc:
                raise BackendUnavailable(f"the {name} backend needs {exc.name or 'a missing package'}: "
                                         f"pip install 'medsr-edge[train]'") from None
            return REGISTERED[name]
    return None

DEVICES = "auto, cpu, cuda, cuda:N, tensorrt"


def parse_device(device: str) -> tuple[str, int]:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``tensorrt`` -> (kind, GPU index); anything else
    is a one-line error listing the choices."""
    kind, _, index = str(device).strip().lower().partition(":")
    if kind in ("auto", "cpu", "tensorrt") and not index:
        return kind, 0
    if kind == "cuda" and (not index or index.isdigit()):
        return kind, int(index or 0)
    raise BackendUnavailable(f"--device {device!r}: use one of {DEVICES}")


def ort_providers(device: str) -> list:
    """Execution providers for ``device`` (see :func:`parse_device`), best first, present only; a
    GPU device that this onnxruntime cannot use is a one-line error naming what to install."""
    import onnxruntime as ort

    kind, index = parse_device(device)
    available = ort.get_available_providers()
    trt_opts = {"device_id": index, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": os.path.join(os.path.expanduser("~"), ".cache", "medsr-edge", "trt")}
    cuda = ("CUDAExecutionProvider", {"device_id": index})
    wanted = {"auto": [("TensorrtExecutionProvider", trt_opts), cuda, "CPUExecutionProvider"],
              "tensorrt": [("TensorrtExecutionProvider", trt_opts), "CPUExecutionProvider"],
              "cuda": [cuda, "CPUExecutionProvider"],
              "cpu": ["CPUExecutionProvider"]}[kind]
    out = [p for p in wanted if (p[0] if isinstance(p, tuple) else p) in available]
    if kind == "cuda" and "CUDAExecutionProvider" not in available:
        raise BackendUnavailable("--device cuda: this onnxruntime has no CUDA execution provider; "
                                 "pip uninstall onnxruntime && pip install onnxruntime-gpu (NVIDIA driver and CUDA 12)")
    if kind == "tensorrt" and "TensorrtExecutionProvider" not in available:
        raise BackendUnavailable("--device tensorrt: this onnxruntime has no TensorRT execution provider; "
                                 "pip install onnxruntime-gpu and TensorRT 10 (pip install tensorrt), or run a "
                                 "TensorRT engine: --backend tensorrt with pip install 'medsr-edge[tensorrt]'")
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
            first = first_line(exc, 160, typed=False)
            if "fp16" in self.path.name or "float16" in first.lower():
                raise BackendUnavailable(f"{self.path}: FP16 ONNX needs a GPU execution provider "
                                         f"(pip install onnxruntime-gpu); CPU said: {first}") from None
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first})") from None
        self.device = "cuda" if self.session.get_providers()[0] != "CPUExecutionProvider" else "cpu"
        raw = self.session.get_modelmeta().custom_metadata_map
        self.meta = {k[len(META_PREFIX):]: parse_meta_value(v) for k, v in raw.items() if k.startswith(META_PREFIX)}
        self._check_meta(expected_scale)
        self.precision = str(self.meta.get("precision", format_of_file(self.path).precision))
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelError(f"{self.path}: the model has {len(inputs)} inputs ({names}); a medsr-edge model takes one "
                             "image (N, 1, H, W); export it with medsr-edge export")
        inp = inputs[0]
        if len(inp.shape) != 4 or inp.shape[1] != 1:
            raise ModelError(f"{self.path}: input shape {inp.shape} is not (N, 1, H, W)")
        self.input_name = inp.name

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            first = first_line(exc, 160, typed=False)
            memory = any(w in first.lower() for w in ("alloc", "out of memory", "memory"))
            fix = "try a smaller --tile" if memory else "the model does not run on this input; check or re-export it"
            raise ModelError(f"{self.path}: inference failed on a {x.shape[-2]}x{x.shape[-1]} input ({first}); {fix}") from None


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
    factory = plugin_backend(chosen) if chosen != "tensorrt" else None
    if factory is not None:
        return factory(path, device, threads, expected_scale)
    if chosen == "torch":
        raise BackendUnavailable(f"{path}: a PyTorch checkpoint runs through medsr_edge.export.torch_backend "
                                 "(pip install 'medsr-edge[train]'); or export it: medsr-edge export --format onnx")
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, expected_scale=expected_scale)
