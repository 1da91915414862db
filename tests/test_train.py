import csv
import dataclasses

import pytest

torch = pytest.importorskip("torch")

from medsr_edge.distill.data import PatchSampler, load_samples  # noqa: E402
from medsr_edge.distill.options import TrainOptions  # noqa: E402
from medsr_edge.distill.train import distill_student, train_teacher  # noqa: E402
from medsr_edge.models.checkpoint import load_model  # noqa: E402
from medsr_edge.runtime.io import discover  # noqa: E402


def test_data_discovery_and_sampling(phantom_dir):
    files = discover(phantom_dir, "train")
    assert len(files) == 8 and {m for _, m in files} == {"mri", "ct"}
    samples = load_samples(phantom_dir, "train")
    lr, hr = PatchSampler(samples, 32, 4, seed=1).batch(6)
    assert lr.shape == (6, 1, 8, 8) and hr.shape == (6, 1, 32, 32)
    assert 0 <= hr.min() and hr.max() <= 1


def _opts(root, out, iters):
    return TrainOptions(data=root, out=out, iters=iters, batch=2, patch=32, val_every=2, save_every=2, threads=1)


def test_teacher_psnr_resume_gan_and_distill(phantom_dir, tmp_path):
    out = tmp_path / "teacher"
    train_teacher(_opts(phantom_dir, out, 2), "esrgan-tiny")
    path = train_teacher(_opts(phantom_dir, out, 4), "esrgan-tiny")  # resumes at iteration 2
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(float(r["iter"])) for r in rows if r.get("val_psnr")] == [2, 4]
    assert (out / "curves.png").stat().st_size > 1000
    model, cfg, meta = load_model(path)
    assert meta["iterations"] == 4 and cfg["type"] == "RRDBNet"
    gan = train_teacher(_opts(phantom_dir, tmp_path / "gan", 2), stage="gan", init=out, disc_config="discriminator-small")
    assert load_model(gan)[2]["losses"]["perceptual_mode"] in ("vgg19-conv5_4", "vgg16-conv5_3", "feature-matching")
    student = distill_student(_opts(phantom_dir, tmp_path / "student", 2), path, "student-tiny")
    s_model, s_cfg, s_meta = load_model(student)
    assert s_cfg["type"] == "RepSRNet" and s_meta["teacher"] == str(path)


def test_distill_fine_tunes_from_init(phantom_dir, tmp_path):
    """--init starts from the given student (its config wins over ``config``) and a fresh optimiser;
    with a zero learning rate the result is that student exactly."""
    teacher = train_teacher(_opts(phantom_dir, tmp_path / "teacher", 1), "esrgan-tiny")
    first = distill_student(_opts(phantom_dir, tmp_path / "s1", 2), teacher, "student-tiny")
    opts = dataclasses.replace(_opts(phantom_dir, tmp_path / "s2", 2), lr=0.0)
    second = distill_student(opts, teacher, "student", init=first)
    a, cfg_a, _ = load_model(first)
    b, cfg_b, meta_b = load_model(second)
    assert cfg_a == cfg_b and meta_b["init"] == str(first)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_edge_patches_are_centred_on_the_rare_strong_edges(tmp_path):
    """A 12-pixel bright marker in a 512x512 textured image: uniform 64-pixel patches seldom hold
    it, edge-centred ones (edge_fraction=1) always."""
    import numpy as np

    from medsr_edge.distill.data import AugmentConfig, Sample

    yy, xx = np.mgrid[0:512, 0:512] / 512.0
    img = (0.4 + 0.15 * np.sin(40 * yy) * np.cos(30 * xx)).astype(np.float32)  # texture: no patch is "empty"
    img[300:312, 100:112] = 1.0
    still = AugmentConfig(p_rotate=0.0, p_scale=0.0, p_elastic=0.0)
    sample = Sample(img, "xray", tmp_path / "m.png")

    def marker_share(edge_fraction):
        sampler = PatchSampler([sample], 64, 4, still, seed=0, edge_fraction=edge_fraction)
        return np.mean([sampler.hr_patch()[0].max() > 0.9 for _ in range(200)])

    assert marker_share(1.0) == 1.0
    assert marker_share(0.0) < 0.2
