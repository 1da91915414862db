import numpy as np
import pytest
from conftest import phantom

from medsr_edge.core.errors import ModelError
from medsr_edge.core.metrics import psnr
from medsr_edge.runtime.enhancer import Enhancer, blend_weights, tile_starts
from medsr_edge.runtime.models import resolve_model, shipped_models


def test_blend_weights_are_a_partition_of_unity():
    for length, tile, overlap in [(100, 32, 8), (257, 64, 16), (64, 64, 16), (70, 64, 16)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile >= length
        total = np.zeros(length)
        for s, w in zip(starts, blend_weights(length, starts, tile, overlap)):
            total[s:s + len(w)] += w
        assert np.allclose(total, 1.0, atol=1e-6)


def test_tiled_equals_untiled_tiny_model(tiny_onnx):
    lr = phantom(150)[:, :130]
    whole = Enhancer(tiny_onnx, tile=0).enhance_array(lr)
    tiled = Enhancer(tiny_onnx, tile=48, overlap=16).enhance_array(lr)
    assert whole.shape == tiled.shape == (600, 520)
    assert psnr(tiled, whole) >= 60


@pytest.mark.skipif("student-x4" not in shipped_models(), reason="shipped student-x4 not present")
def test_tiled_equals_untiled_shipped_student():
    """At the default overlap (32 input pixels, twice the default student's receptive radius of 14)."""
    lr = phantom(200)[:, :180]
    enh = Enhancer("student-x4", tile=64)
    assert enh.overlap == 32
    tiled = enh.enhance_array(lr)
    enh.tile = 0
    whole = enh.enhance_array(lr)
    assert psnr(tiled, whole) >= 60
    # no seam: the error along the tile borders is no larger than elsewhere
    diff = np.abs(tiled - whole)
    assert diff.max() < 1e-3


def test_enhance_image_roundtrips_units(tiny_onnx, ct_small):
    from medsr_edge.runtime.io import read_image

    image = read_image(ct_small)
    out, norm = Enhancer(tiny_onnx).enhance_image(image)
    assert out.shape == (1, image.shape[0] * 4, image.shape[1] * 4)
    assert out.min() >= image.frames.min() - 1 and out.max() <= image.frames.max() + 1


def test_model_errors_are_clear(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        resolve_model("no-such-model", "onnxruntime", "fp32")
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Enhancer(bad)
    with pytest.raises(ModelError, match="model file not found"):
        Enhancer(tmp_path / "missing.onnx")


def test_wrong_scale_is_refused_before_any_image(tiny_onnx):
    with pytest.raises(ModelError, match="x4"):
        Enhancer(tiny_onnx, scale=2)


def test_deterministic_on_cpu(tiny_onnx):
    lr = phantom(64)
    a = Enhancer(tiny_onnx, tile=32).enhance_array(lr)
    b = Enhancer(tiny_onnx, tile=32).enhance_array(lr)
    assert a.tobytes() == b.tobytes()
