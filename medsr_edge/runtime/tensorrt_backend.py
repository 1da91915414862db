"""TensorRT 10 engines run with pycuda buffers (imported lazily: NVIDIA machines only).

An engine is only valid for the TensorRT version and GPU (compute capability) that built it, so
``export`` writes a JSON sidecar (``<engine>.json``) and this backend checks it before
deserialising: a foreign engine is refused with a message that says how to rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import BackendUnavailable, ModelError, first_line
from .backend_base import Backend

REBUILD_HINT = "rebuild it on this machine: medsr-edge export --model MODEL --format engine-fp16|engine-int8"


def sidecar_path(engine: str | Path) -> Path:
    return Path(str(engine) + ".json")


def read_engine_metadata(engine: str | Path) -> dict:
    path = sidecar_path(engine)
    if not path.is_file():
        raise ModelError(f"{engine}: no {path.name} metadata next to the engine; {REBUILD_HINT}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ModelError(f"{path}: corrupt engine metadata; {REBUILD_HINT}") from None


def check_engine_compatible(meta: dict, trt_version: str, gpu_name: str, compute_capability: str,
                            engine: str | Path = "engine") -> None:
    """Raise ModelError when an engine was built by another TensorRT version or for another GPU."""
    built_trt = str(meta.get("tensorrt_version", "?"))
    if built_trt != trt_version:
        raise ModelError(f"{engine}: built with TensorRT {built_trt}, this machine has {trt_version}; {REBUILD_HINT}")
    built_cc = str(meta.get("compute_capability", "?"))
    if built_cc != compute_capability:
        raise ModelError(f"{engine}: built for {meta.get('gpu_name', '?')} (sm {built_cc}), this GPU is "
                         f"{gpu_name} (sm {compute_capability}); {REBUILD_HINT}")


def check_shape_in_profile(shape: tuple[int, ...], profile: dict, engine: str | Path = "engine") -> None:
    """Raise ModelError when an input (N, C, H, W) lies outside the engine's optimization profile."""
    lo, hi = profile["min"], profile["max"]
    if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
        raise ModelError(f"{engine}: input {tuple(shape)} is outside the engine profile {tuple(lo)}..{tuple(hi)}; "
                         "use --tile within the profile or rebuild with a larger --max-shape")


def import_tensorrt():
    """(tensorrt, pycuda.driver) or BackendUnavailable naming what to install."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("TensorRT is not installed: pip install 'medsr-edge[tensorrt]' on an NVIDIA "
                                 "machine (JetPack 6 ships it); or use --backend onnxruntime") from None
    try:
        import pycuda.driver as cuda
        cuda.init()
        if cuda.Device.count() == 0:
            raise BackendUnavailable("TensorRT needs an NVIDIA GPU and none was found")
    except ImportError:
        raise BackendUnavailable("pycuda is not installed: pip install pycuda") from None
    except BackendUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - pycuda raises its own LogicError/RuntimeError
        raise BackendUnavailable(f"no usable CUDA device ({first_line(exc, typed=False)})") from None
    return trt, cuda


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"

    def __init__(self, path: str | Path, expected_scale: int | None = None) -> None:
        self.path = Path(path)
        self.meta = read_engine_metadata(self.path)
        self._check_meta(expected_scale)
        self.precision = str(self.meta.get("precision", "fp16"))
        trt, cuda = import_tensorrt()
        self.cuda = cuda
        dev = cuda.Device(0)
        cc = "{}.{}".format(*dev.compute_capability())
        check_engine_compatible(self.meta, trt.__version__, dev.name(), cc, self.path)
        self._cuda_ctx = dev.make_context()  # made current here; popped below, pushed again in run()
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise ModelError(f"{self.path}: TensorRT could not deserialise the engine; {REBUILD_HINT}")
            self.context = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
            self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.profile = {"min": tuple(lo), "max": tuple(hi)}
            self.stream = cuda.Stream()
        finally:
            self._cuda_ctx.pop()
        self._buffers: dict[str, tuple[int, object]] = {}

    def _buffer(self, name: str, nbytes: int):
        size, mem = self._buffers.get(name, (0, None))
        if size < nbytes:
            mem = self.cuda.mem_alloc(nbytes)
            self._buffers[name] = (nbytes, mem)
        return mem

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        check_shape_in_profile(x.shape, self.profile, self.path)
        self._cuda_ctx.push()
        try:
            self.context.set_input_shape(self.input_name, x.shape)
            out_shape = tuple(self.context.get_tensor_shape(self.output_name))
            out = np.empty(out_shape, np.float32)
            d_in, d_out = self._buffer("in", x.nbytes), self._buffer("out", out.nbytes)
            self.context.set_tensor_address(self.input_name, int(d_in))
            self.context.set_tensor_address(self.output_name, int(d_out))
            self.cuda.memcpy_htod_async(d_in, x, self.stream)
            if not self.context.execute_async_v3(self.stream.handle):
                raise ModelError(f"{self.path}: TensorRT execution failed")
            self.cuda.memcpy_dtoh_async(out, d_out, self.stream)
            self.stream.synchronize()
        finally:
            self._cuda_ctx.pop()
        return out

    def __del__(self) -> None:
        ctx = getattr(self, "_cuda_ctx", None)
        if ctx is not None:
            try:
                ctx.detach()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
