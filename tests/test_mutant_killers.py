"""Tests written to kill plausible one-line mutants that survived the suite (see benchmarks/mutants.py,
run by .ci/run): the PSNR border crop on two sides only, MONOCHROME1 not inverted, the CI gate
passing a row that was ok in the baseline and now fails, and a tile blend that lets the outer,
zero-padded half of an overlap into the output (weight-free: no shipped model needed)."""

import numpy as np
import pydicom
from scipy import ndimage

from medsr_edge.core.metrics import psnr
from medsr_edge.eval import benchmark as bm
from medsr_edge.runtime.enhancer import Enhancer
from medsr_edge.runtime.io import read_image
from medsr_edge.runtime.transforms import Normalizer


def test_psnr_crops_the_border_on_every_side():
    rng = np.random.default_rng(0)
    target = rng.random((40, 40))
    for side in (np.s_[:3, :], np.s_[-3:, :], np.s_[:, :3], np.s_[:, -3:]):
        pred = target.copy()
        pred[side] += 0.5  # differs only inside a 3-pixel border
        assert psnr(pred, target, border=4) == float("inf"), side
        assert psnr(pred, target, border=0) < 30


def test_monochrome1_is_read_inverted(tmp_path, ct_small):
    ds = pydicom.dcmread(ct_small)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    image = read_image(tmp_path / "m1.dcm")
    assert image.invert
    frame = image.frames[0]
    shown = Normalizer.of(image).forward(frame)
    hi, lo = np.unravel_index(frame.argmax(), frame.shape), np.unravel_index(frame.argmin(), frame.shape)
    assert shown[hi] < 0.01 and shown[lo] > 0.99  # the largest stored value is the darkest for the network


def test_gate_fails_a_row_that_was_ok_and_now_fails():
    row = {"name": "student-x4", "format": "onnx", "backend": "onnxruntime", "precision": "fp32", "psnr": 32.0,
           "latency_ms_p50": 10.0, "reason": ""}
    base = {"environment": {}, "rows": [{**row, "status": "ok"}]}
    now = {"environment": {}, "rows": [{**row, "status": "failed", "psnr": None, "reason": "ORT crashed"}]}
    fails, _ = bm.regression_gate(now, base, 0.05, 0.5)
    assert len(fails) == 1 and "was ok in the baseline, now failed" in fails[0]


def test_tiled_equals_untiled_with_a_wide_receptive_field(tiny_onnx):
    """A stand-in network with a 13-pixel box receptive field and zero padding, like a real
    convolution stack: with an overlap of 16 the tiles' contaminated outer halves must get no
    weight, so tiled and whole-image outputs agree to float precision."""
    enh = Enhancer(tiny_onnx, tile=48, overlap=16)
    enh._run = lambda lr: np.repeat(np.repeat(ndimage.uniform_filter(lr, 13, mode="constant"), 4, 0), 4, 1)
    lr = np.random.default_rng(1).random((150, 130)).astype(np.float32)
    tiled = enh.enhance_array(lr)
    enh.tile = 0
    whole = enh.enhance_array(lr)
    assert np.abs(tiled - whole).max() < 1e-4  # float32 sums and the 1e-6 weight floor
