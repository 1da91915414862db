"""TensorRT 10/11 engines, built as *strongly typed* networks from precision-typed ONNX files:
the FP16 ONNX for an FP16 engine, the symmetric int8 QDQ ONNX for an INT8 engine (explicit
quantization). TensorRT 11 removed the weak-typing builder flags (``BuilderFlag.FP16``/``INT8``)
and is always strongly typed; TensorRT 10 (JetPack 6 ships 10.3) gets the ``STRONGLY_TYPED``
creation flag. Nothing here needs torch.

Engines are tied to the GPU and the TensorRT version that built them; the JSON sidecar written
next to each engine records both (plus precision, scale, shape profile and the source ONNX hash)
so the runtime can refuse a foreign engine with a clear message.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..core.errors import ModelError
from ..core.files import atomic_write, file_sha256
from ..runtime.tensorrt_backend import import_tensorrt, sidecar_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShapeProfile:
    """Optimization profile for the (N, 1, H, W) input: min / opt / max, in LR pixels."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    @classmethod
    def from_hw(cls, min_hw: str = "16x16", opt_hw: str = "256x256", max_hw: str = "512x512", batch: int = 1) -> ShapeProfile:
        def parse(s: str) -> tuple[int, int]:
            try:
                h, w = (int(v) for v in s.lower().split("x"))
            except ValueError:
                raise ValueError(f"shape {s!r} is not HxW (e.g. 256x256)") from None
            if h <= 0 or w <= 0:
                raise ValueError(f"shape {s!r} must be positive")
            return h, w

        (a, b), (c, d), (e, f) = parse(min_hw), parse(opt_hw), parse(max_hw)
        if not (a <= c <= e and b <= d <= f):
            raise ValueError(f"profile needs min <= opt <= max, got {min_hw} / {opt_hw} / {max_hw}")
        return cls((1, 1, a, b), (batch, 1, c, d), (batch, 1, e, f))


def network_flags(trt) -> int:
    """``create_network`` flags for a strongly typed network on TensorRT 10 and 11."""
    major = int(str(trt.__version__).split(".")[0])
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if major >= 11 or flag is None:
        return 0  # TensorRT 11: always strongly typed (the flag is deprecated and ignored)
    return 1 << int(flag)


def check_source_precision(onnx_meta: dict, precision: str, onnx_path: Path) -> None:
    """A strongly typed engine has the precision of its ONNX: refuse a mismatch, naming the fix."""
    have = str(onnx_meta.get("precision", "fp32"))
    if precision not in ("fp16", "int8"):
        raise ModelError(f"engine precision must be fp16 or int8, not {precision!r}")
    if have != precision:
        source = "onnx-fp16" if precision == "fp16" else "onnx-int8 with symmetric int8 activations"
        raise ModelError(f"{onnx_path}: is {have} ONNX; a strongly typed {precision} engine is built from the "
                         f"{source} model (medsr-edge export --format engine-{precision} makes it)")
    if precision == "int8":
        cal = (onnx_meta.get("quantization") or {}).get("calibration", {})
        if cal.get("activation") != "int8" or not cal.get("symmetric"):
            raise ModelError(f"{onnx_path}: TensorRT needs symmetric int8 activations in the QDQ model "
                             f"(this one has {cal.get('activation', '?')}, symmetric={cal.get('symmetric')}); "
                             "export with --format engine-int8, which quantizes for TensorRT")


def engine_metadata(onnx_meta: dict, precision: str, profile: ShapeProfile, onnx_path: Path,
                    trt_version: str, gpu_name: str, compute_capability: str) -> dict:
    """What the runtime checks before it deserialises an engine."""
    return {"format": f"engine-{precision}", "precision": precision, "scale": int(onnx_meta.get("scale", 4)),
            "in_channels": 1, "model_name": onnx_meta.get("model_name"), "version": __version__,
            "tensorrt_version": trt_version, "gpu_name": gpu_name, "compute_capability": compute_capability,
            "profile": {"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)},
            "source_onnx": onnx_path.name, "source_onnx_sha256": file_sha256(onnx_path)}


def build_engine(onnx_path: str | Path, out: str | Path, precision: str, profile: ShapeProfile,
                 onnx_meta: dict, workspace_gb: float = 2.0, timing_cache: str | Path | None = None) -> Path:
    """Build and write ``out`` (+ ``out.json``) from a precision-typed ONNX model (see module doc)."""
    onnx_path, out = Path(onnx_path), Path(out)
    check_source_precision(onnx_meta, precision, onnx_path)
    trt, cuda = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse the ONNX model ({errors[:200]})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else out.with_suffix(".timing.cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    dev = cuda.Device(0)
    meta = engine_metadata(onnx_meta, precision, profile, onnx_path, trt.__version__, dev.name(),
                           "{}.{}".format(*dev.compute_capability()))
    # Sidecar first, engine last, each by rename: an engine on disk always has its metadata.
    atomic_write(sidecar_path(out), lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    atomic_write(out, lambda tmp: tmp.write_bytes(bytes(serialized)))
    atomic_write(cache_path, lambda tmp: tmp.write_bytes(bytes(config.get_timing_cache().serialize())))
    log.info("TensorRT %s engine (strongly typed) written to %s (%.1f MB)", precision, out, out.stat().st_size / 1e6)
    return out
