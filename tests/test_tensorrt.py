"""TensorRT logic that needs no GPU runs everywhere; building/running engines needs NVIDIA."""

import importlib.util
import json

import pytest

from medsr_edge.core.errors import BackendUnavailable, ModelError
from medsr_edge.runtime.tensorrt_backend import (
    check_engine_compatible,
    check_shape_in_profile,
    import_tensorrt,
    read_engine_metadata,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None


def _profile():
    from medsr_edge.export.tensorrt_build import ShapeProfile

    return ShapeProfile


def test_shape_profile_parsing():
    ShapeProfile = _profile()
    p = ShapeProfile.from_hw("16x16", "256x256", "512x768", batch=2)
    assert p.min == (1, 1, 16, 16) and p.opt == (2, 1, 256, 256) and p.max == (2, 1, 512, 768)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile.from_hw("64x64", "32x32", "512x512")
    with pytest.raises(ValueError, match="HxW"):
        ShapeProfile.from_hw("64", "128x128", "512x512")


def test_engine_metadata_records_what_the_runtime_checks(tmp_path):
    _profile()
    from medsr_edge.export.tensorrt_build import ShapeProfile, engine_metadata

    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"onnx bytes")
    meta = engine_metadata({"scale": 4, "model_name": "student-x4"}, "int8", ShapeProfile.from_hw(), onnx_file,
                           "10.3.0", "Orin", "8.7")
    assert meta["tensorrt_version"] == "10.3.0" and meta["compute_capability"] == "8.7"
    assert meta["profile"]["max"] == [1, 1, 512, 512] and len(meta["source_onnx_sha256"]) == 64
    check_engine_compatible(meta, "10.3.0", "Orin", "8.7")
    with pytest.raises(ModelError, match="built with TensorRT 10.3.0, this machine has 10.7.0"):
        check_engine_compatible(meta, "10.7.0", "Orin", "8.7")
    with pytest.raises(ModelError, match=r"built for Orin \(sm 8.7\), this GPU is H100 \(sm 9.0\)"):
        check_engine_compatible(meta, "10.3.0", "H100", "9.0")


def test_profile_bounds_and_sidecar(tmp_path):
    profile = {"min": (1, 1, 16, 16), "max": (1, 1, 512, 512)}
    check_shape_in_profile((1, 1, 256, 300), profile)
    with pytest.raises(ModelError, match="outside the engine profile"):
        check_shape_in_profile((1, 1, 600, 300), profile)
    engine = tmp_path / "m-fp16.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ModelError, match="no m-fp16.engine.json metadata"):
        read_engine_metadata(engine)
    (tmp_path / "m-fp16.engine.json").write_text(json.dumps({"scale": 4}))
    assert read_engine_metadata(engine)["scale"] == 4


class _Fake:
    """A stand-in for the tensorrt and pycuda modules that records what the builder asks for."""

    def __init__(self, version):
        import types

        self.calls = []
        calls = self.calls
        trt = types.SimpleNamespace(__version__=version)
        flags = {"PREFER_AOT_PYTHON_PLUGINS": 1, "PREFER_JIT_PYTHON_PLUGINS": 2}
        if version.startswith("10."):
            flags["STRONGLY_TYPED"] = 0
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
        trt.BuilderFlag = types.SimpleNamespace()  # TensorRT 11 has no FP16/INT8 flags: any use fails
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})

        class Config:
            def set_memory_pool_limit(self, *a): calls.append(("pool",) + a)
            def set_flag(self, flag): calls.append(("set_flag", flag))
            def add_optimization_profile(self, p): calls.append(("profile", p.shapes))
            def create_timing_cache(self, data): return b"cache"
            def set_timing_cache(self, cache, ignore_mismatch): pass
            def get_timing_cache(self): return types.SimpleNamespace(serialize=lambda: b"cache")

        class Profile:
            def set_shape(self, name, lo, opt, hi): self.shapes = (name, lo, opt, hi)

        class Builder:
            def __init__(self, logger): pass
            def create_network(self, flags):
                calls.append(("create_network", flags))
                return types.SimpleNamespace(get_input=lambda i: types.SimpleNamespace(name="lr"))
            def create_builder_config(self): return Config()
            def create_optimization_profile(self): return Profile()
            def build_serialized_network(self, network, config): return b"engine bytes"

        class Parser:
            num_errors = 0
            def __init__(self, network, logger): pass
            def parse(self, data): return True

        trt.Builder, trt.OnnxParser = Builder, Parser
        device = types.SimpleNamespace(name=lambda: "NVIDIA H100", compute_capability=lambda: (9, 0))
        self.modules = (trt, types.SimpleNamespace(Device=lambda i: device))


@pytest.mark.parametrize("version, flags", [("10.3.0", 1), ("11.0.0", 0)])
def test_engines_are_built_strongly_typed_on_tensorrt_10_and_11(tmp_path, monkeypatch, version, flags):
    """No weak-typing builder flag is set (TensorRT 11 removed them); the network is created
    strongly typed (TensorRT 10: the creation flag; 11: always), from a precision-typed ONNX."""
    from medsr_edge.export import tensorrt_build as tb

    fake = _Fake(version)
    monkeypatch.setattr(tb, "import_tensorrt", lambda: fake.modules)
    src = tmp_path / "m-fp16.onnx"
    src.write_bytes(b"onnx")
    out = tb.build_engine(src, tmp_path / "m-fp16.engine", "fp16", tb.ShapeProfile.from_hw(),
                          {"scale": 4, "model_name": "m", "precision": "fp16"})
    assert ("create_network", flags) in fake.calls
    assert not [c for c in fake.calls if c[0] == "set_flag"]
    assert out.read_bytes() == b"engine bytes"
    meta = read_engine_metadata(out)
    assert (meta["tensorrt_version"], meta["compute_capability"], meta["precision"]) == (version, "9.0", "fp16")


def test_engine_precision_must_match_its_onnx(tmp_path):
    from medsr_edge.export.tensorrt_build import check_source_precision

    src = tmp_path / "m.onnx"
    with pytest.raises(ModelError, match="is fp32 ONNX; a strongly typed fp16 engine"):
        check_source_precision({"precision": "fp32"}, "fp16", src)
    uint8 = {"precision": "int8", "quantization": {"calibration": {"activation": "uint8", "symmetric": False}}}
    with pytest.raises(ModelError, match="symmetric int8 activations"):
        check_source_precision(uint8, "int8", src)
    check_source_precision({"precision": "int8", "quantization": {"calibration": {"activation": "int8", "symmetric": True}}},
                           "int8", src)


def test_engine_building_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; import medsr_edge.export.tensorrt_build, medsr_edge.runtime.tensorrt_backend; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed")
def test_missing_tensorrt_names_the_package():
    with pytest.raises(BackendUnavailable, match=r"medsr-edge\[tensorrt\]"):
        import_tensorrt()


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="needs an NVIDIA GPU with TensorRT 10 and pycuda")
def test_build_and_run_engine(tmp_path, tiny_onnx):
    import numpy as np

    from medsr_edge.export.quantize import convert_fp16
    from medsr_edge.export.tensorrt_build import ShapeProfile, build_engine
    from medsr_edge.runtime.backends import OnnxRuntimeBackend
    from medsr_edge.runtime.tensorrt_backend import TensorRTBackend

    half = convert_fp16(tiny_onnx, tmp_path / "tiny-fp16.onnx")
    out = build_engine(half, tmp_path / "tiny-fp16.engine", "fp16", ShapeProfile.from_hw("8x8", "64x64", "128x128"),
                       {"scale": 4, "model_name": "tiny", "precision": "fp16"})
    trt_out = TensorRTBackend(out).run(np.random.rand(1, 1, 40, 56).astype(np.float32))
    assert trt_out.shape == (1, 1, 160, 224)
    x = np.random.default_rng(0).random((1, 1, 40, 56), np.float32)
    ref = OnnxRuntimeBackend(tiny_onnx, device="cpu").run(x)
    assert np.abs(TensorRTBackend(out).run(x) - ref).max() < 1e-2
