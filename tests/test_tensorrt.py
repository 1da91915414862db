"""TensorRT logic that needs no GPU runs everywhere; building/running engines needs NVIDIA."""

import importlib.util
import json

import pytest

from medsr_edge.runtime.errors import BackendUnavailable, ModelError
from medsr_edge.runtime.tensorrt_backend import (check_engine_compatible, check_shape_in_profile,
                                                 import_tensorrt, read_engine_metadata)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None


def _profile():
    pytest.importorskip("torch")  # the export package imports torch for checkpoint hashing
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


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed")
def test_missing_tensorrt_names_the_package():
    with pytest.raises(BackendUnavailable, match=r"medsr-edge\[tensorrt\]"):
        import_tensorrt()


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="needs an NVIDIA GPU with TensorRT 10 and pycuda")
def test_build_and_run_engine(tmp_path, tiny_onnx):
    import numpy as np

    from medsr_edge.export.tensorrt_build import ShapeProfile, build_engine
    from medsr_edge.runtime.backends import OnnxRuntimeBackend
    from medsr_edge.runtime.tensorrt_backend import TensorRTBackend

    out = build_engine(tiny_onnx, tmp_path / "tiny-fp16.engine", "fp16", ShapeProfile.from_hw("8x8", "64x64", "128x128"),
                       {"scale": 4, "model_name": "tiny"})
    trt_out = TensorRTBackend(out).run(np.random.rand(1, 1, 40, 56).astype(np.float32))
    assert trt_out.shape == (1, 1, 160, 224)
    x = np.random.default_rng(0).random((1, 1, 40, 56), np.float32)
    ref = OnnxRuntimeBackend(tiny_onnx, device="cpu").run(x)
    assert np.abs(TensorRTBackend(out).run(x) - ref).max() < 1e-2
