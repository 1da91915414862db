"""The models the package ships: every advertised artifact loads by name, says the scale its name
says, has a model card with measured results, and beats bicubic on a real CT slice that
pydicom-data ships (never a ../shared image)."""

import numpy as np
import pytest

from medsr_edge.core.degradation import crop_to_multiple, degrade, upscale_bicubic
from medsr_edge.core.metrics import psnr
from medsr_edge.runtime.enhancer import Enhancer
from medsr_edge.runtime.models import model_card, shipped_models
from medsr_edge.runtime.transforms import Normalizer


@pytest.fixture(scope="module")
def ct_slice():
    from pydicom.data import get_testdata_file

    from medsr_edge.runtime.io import read_image

    path = get_testdata_file("693_UNCR.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data is not installed")
    img = read_image(path)
    return Normalizer.of(img).forward(img.frames[0])


@pytest.mark.parametrize("scale", [2, 4])
def test_shipped_models_and_cards(scale):
    models = shipped_models()
    for name in (f"student-x{scale}", f"teacher-x{scale}"):
        assert name in models, f"{name} is not shipped"
        card = model_card(name)
        assert card["scale"] == scale and card["results"]["mean"]["psnr_gain_vs_bicubic"] > 1.0
    names = {f.name for f in models[f"student-x{scale}"]}
    assert {f"student-x{scale}.onnx", f"student-x{scale}-int8.onnx"} <= names


def test_every_shipped_size_has_a_card_for_its_scale():
    import re

    for name in shipped_models():
        scale = int(re.search(r"-x(\d)", name).group(1))
        card = model_card(name)
        assert card["scale"] == scale, f"{name}: card says x{card['scale']}"
        assert card["results"]["mean"]["psnr_gain_vs_bicubic"] > 1.0, name


@pytest.mark.parametrize("name", ["student-fast-x2", "student-fast-x4", "student-quality-x4"])
def test_each_student_size_beats_bicubic_on_a_real_ct(ct_slice, name):
    models = shipped_models()
    if name not in models:
        pytest.fail(f"{name} is advertised in the README but not shipped")
    scale = int(name[-1])
    hr = crop_to_multiple(ct_slice, scale)
    lr = degrade(hr, scale)
    for precision in ("fp32", "int8"):
        if precision == "int8" and f"{name}-int8.onnx" not in {f.name for f in models[name]}:
            continue
        sr = Enhancer(name, "onnxruntime", precision, threads=1).enhance_array(lr)
        gain = psnr(sr, hr, scale) - psnr(upscale_bicubic(lr, scale), hr, scale)
        assert np.isfinite(gain) and gain > 0.5, f"{name} {precision}: {gain:+.2f} dB over bicubic"


@pytest.mark.parametrize("scale,precision", [(4, "fp32"), (4, "int8"), (2, "fp32"), (2, "int8")])
def test_shipped_student_beats_bicubic_on_a_real_ct(ct_slice, scale, precision):
    hr = crop_to_multiple(ct_slice, scale)
    lr = degrade(hr, scale)
    enh = Enhancer(f"student-x{scale}", "onnxruntime", precision, threads=1)
    assert enh.scale == scale
    sr = enh.enhance_array(lr)
    gain = psnr(sr, hr, scale) - psnr(upscale_bicubic(lr, scale), hr, scale)
    assert np.isfinite(gain) and gain > 0.5, f"student-x{scale} {precision}: {gain:+.2f} dB over bicubic"
