"""The one data path (issue 28): training, INT8 calibration and the bench read, normalise and degrade
an image the same way, through medsr_edge.dataset."""

import numpy as np
import pytest

from medsr_edge.core.degradation import crop_to_multiple
from medsr_edge.dataset import ground_truths, make_lr

pytest.importorskip("scipy")


def test_training_calibration_and_bench_see_the_same_pixels(phantom_dir):
    from medsr_edge.distill.data import load_samples
    from medsr_edge.eval import benchmark as bm
    from medsr_edge.export.quantize import load_calibration_set

    scale = 4
    train = {s.path: s for s in load_samples(phantom_dir, "train")}
    bench = {b.path: b for b in bm.load_bench_images(phantom_dir, scale, split="train")}
    calib = load_calibration_set(phantom_dir, scale, max_images=16, split="train", holdout=0.5)
    assert train.keys() == bench.keys() and len(train) == 8
    assert all(s.step == pytest.approx(1 / 255) for s in train.values() if s.modality == "mri")  # 8-bit grid
    for path, b in bench.items():
        assert np.array_equal(b.hr, crop_to_multiple(train[path].hr, scale))
        assert np.array_equal(b.lr, make_lr(b.hr, scale, train[path].step))
    assert calib.check_hr  # the held-back images: bench's ground truth and LR for the same files
    for hr, lr, name in zip(calib.check_hr, calib.check_lr, calib.sources):
        b = next(v for k, v in bench.items() if str(k) == name)
        assert np.array_equal(hr, b.hr) and np.array_equal(lr, b.lr)


def test_filters_and_caps(phantom_dir, tmp_path):
    firsts = list(ground_truths(phantom_dir, "test", limit_per_modality=1))
    assert sorted(g.modality for g in firsts) == ["ct", "mri"]
    assert not list(ground_truths(phantom_dir, "test", min_side=97))  # the phantoms are 96 pixels
    assert {g.source for g in ground_truths(phantom_dir, "val", sources=["ct"])} == {"ct/synthetic"}
    bad = phantom_dir / "ct" / "synthetic" / "test" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    errors: list[str] = []
    got = list(ground_truths(phantom_dir, "test", sources=["ct"], errors=errors))
    assert len(got) == 2 and len(errors) == 1 and "broken.png" in errors[0]
