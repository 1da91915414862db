"""Sources: discovery by <modality>/<source>, leaving sources out, source-balanced patches, per-source
bench scores, and the recipe augmentations (issue: win on hospitals the model never saw)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import phantom
from PIL import Image
from typer.testing import CliRunner

from medsr_edge.core.errors import MedsrError
from medsr_edge.runtime.io import data_files, source_of


@pytest.fixture
def two_source_dir(tmp_path) -> Path:
    """mri/big (12 train images), mri/small (1), ct/one (2), each with a test image."""
    root = tmp_path / "data"
    for src, n in (("mri/big", 12), ("mri/small", 1), ("ct/one", 2)):
        for split, count in (("train", n), ("test", 1)):
            d = root / src / split
            d.mkdir(parents=True)
            for i in range(count):
                Image.fromarray((phantom(96, seed=i) * 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


def test_source_is_the_first_two_folders():
    assert source_of(("mri", "cheng", "train", "a.png")) == "mri/cheng"
    assert source_of(("mri", "a.png")) == "mri"
    assert source_of(("a.png",)) == "all"


def test_sources_are_selected_and_left_out(two_source_dir):
    every = data_files(two_source_dir)
    assert {d.source for d in every} == {"mri/big", "mri/small", "ct/one"}
    kept = data_files(two_source_dir, "train", exclude_sources=["mri/big"])
    assert {d.source for d in kept} == {"mri/small", "ct/one"} and len(kept) == 3
    only = data_files(two_source_dir, sources=["mri/small"])
    assert [d.source for d in only] == ["mri/small", "mri/small"]  # train and test: every image of the source
    assert {d.modality for d in data_files(two_source_dir, sources=["ct"])} == {"ct"}  # a whole modality


def test_an_unknown_source_is_refused_with_the_list(two_source_dir):
    with pytest.raises(MedsrError) as err:
        data_files(two_source_dir, exclude_sources=["mri/bigg"])
    msg = str(err.value)
    assert "--exclude-source mri/bigg" in msg and "ct/one, mri/big, mri/small" in msg and "\n" not in msg


def test_exclude_source_cli_error_is_one_line(two_source_dir, tmp_path):
    from medsr_edge.cli.main import app

    res = CliRunner().invoke(app, ["train", "student", "--data", str(two_source_dir), "--out", str(tmp_path / "run"),
                                   "--exclude-source", "xray/none"])
    assert res.exit_code == 2
    assert "no such source" in res.output and "mri/small" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


def test_patches_are_balanced_per_source_not_per_image(two_source_dir):
    from medsr_edge.distill.data import PatchSampler, load_samples

    samples = load_samples(two_source_dir, "train")
    for balance, small_share in (("source", 0.25), ("modality", 0.5 / 13)):
        sampler = PatchSampler(samples, 32, 4, seed=1, balance=balance)
        picks = [sampler._pick().source for _ in range(4000)]
        assert abs(picks.count("ct/one") / 4000 - 0.5) < 0.04  # modalities alike in both
        assert abs(picks.count("mri/small") / 4000 - small_share) < 0.03, balance
    with pytest.raises(ValueError, match="balance"):
        PatchSampler(samples, 32, 4, balance="hospital")


def test_native_images_are_drawn_more_often_when_weighted():
    """--native-weight W: within its group, an image stored with more than 8 bits is drawn W times as
    often as an 8-bit one (1 native + 4 8-bit at W = 4: half the draws, against a fifth)."""
    from medsr_edge.distill.data import PatchSampler, Sample

    hr = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    samples = [Sample(hr, "ct", Path("native.dcm"), 1 / 4095, "ct/a")]
    samples += [Sample(hr, "ct", Path(f"{i}.jpg"), 1 / 255, "ct/a") for i in range(4)]
    for weight, share in ((1.0, 0.2), (4.0, 0.5)):
        sampler = PatchSampler(samples, 32, 4, seed=2, native_weight=weight)
        picks = [sampler._pick().path.name for _ in range(4000)]
        assert abs(picks.count("native.dcm") / 4000 - share) < 0.03, weight
    with pytest.raises(ValueError, match="native_weight"):
        PatchSampler(samples, 32, 4, native_weight=0)


def test_left_out_sources_are_not_trained_on(two_source_dir):
    from medsr_edge.distill.data import load_samples

    samples = load_samples(two_source_dir, "train", exclude_sources=["mri/small"])
    assert {s.source for s in samples} == {"mri/big", "ct/one"}


def test_intensity_augmentation_windows_gamma_and_inverts():
    from medsr_edge.distill.data import AugmentConfig, intensity_augment

    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (8, 1))
    aug = AugmentConfig(p_intensity=1.0, p_invert=0.0, max_gamma=1.0, max_window_cut=0.2)
    rng = np.random.default_rng(0)
    out, step = intensity_augment(ramp, 1 / 255, aug, rng)
    assert out.min() == 0.0 and out.max() == 1.0  # both ends cut and stretched back
    assert step > 1 / 255  # the value grid is stretched with the window
    assert np.all(np.diff(out[0]) >= 0)  # monotone: no inversion at p_invert 0
    inv, _ = intensity_augment(ramp, 0.0, AugmentConfig(p_invert=1.0, max_gamma=1.0, max_window_cut=0.0), rng)
    np.testing.assert_allclose(inv, 1.0 - ramp, atol=1e-6)
    bright, _ = intensity_augment(ramp, 0.0, AugmentConfig(p_invert=0.0, max_gamma=2.0, max_window_cut=0.0),
                                  np.random.default_rng(3))
    assert not np.allclose(bright, ramp)  # a gamma other than 1 was applied
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(p_intensity=1.5)


def test_degradation_jitter_changes_the_lr_only_when_asked(two_source_dir):
    from medsr_edge.core.degradation import degrade
    from medsr_edge.distill.data import AugmentConfig, PatchSampler, load_samples

    samples = load_samples(two_source_dir, "train")
    hr = samples[0].hr[:64, :64]
    plain = PatchSampler(samples, 32, 4, seed=0)
    np.testing.assert_array_equal(plain.lr_of(hr, 0.0), degrade(hr, 4))
    jittered = PatchSampler(samples, 32, 4, seed=0, augment=AugmentConfig(p_degrade_jitter=1.0))
    assert not np.array_equal(jittered.lr_of(hr, 0.0), degrade(hr, 4))


def test_bench_scores_each_source(two_source_dir, tmp_path):
    from medsr_edge.eval import benchmark as bm

    images = bm.load_bench_images(two_source_dir, 4, sources=["mri"])
    assert {im.source for im in images} == {"mri/big", "mri/small"}
    n = len(images)
    ps = [30.0 + i for i in range(n)]
    bic = [29.0] * n
    row = bm.Row("m", "onnx", "onnxruntime", "fp32")
    bm._score(row, ps, [0.9] * n, images, bic)
    for src in ("mri/big", "mri/small"):
        idx = [i for i, im in enumerate(images) if im.source == src]
        assert row.per_source[src]["n"] == len(idx)
        assert row.per_source[src]["psnr_gain_vs_bicubic"] == pytest.approx(np.mean([ps[i] - 29.0 for i in idx]), abs=1e-4)
    bic_row = bm.Row("bicubic", "-", "numpy", "fp32")
    bm._score(bic_row, bic, [0.9] * n, images, None)
    headers, cells = bm.source_table([bic_row, row])
    assert headers[:3] == ["Source", "Images", "bicubic PSNR"] and [c[0] for c in cells] == ["mri/big", "mri/small"]
    assert "Gain over bicubic per source" in bm.markdown_table([bic_row, row], by_source=True)
    assert json.dumps(bm.to_json([row], {}))  # per_source is part of the JSON row
