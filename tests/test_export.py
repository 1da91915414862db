import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from conftest import phantom  # noqa: E402

from medsr_edge.core.degradation import degrade  # noqa: E402
from medsr_edge.core.errors import ModelError  # noqa: E402
from medsr_edge.export.onnx_export import export_onnx, get_metadata  # noqa: E402
from medsr_edge.export.quantize import CalibrationSet, convert_fp16, quantize_int8  # noqa: E402
from medsr_edge.models import build_model  # noqa: E402
from medsr_edge.models.checkpoint import load_model, save_model  # noqa: E402
from medsr_edge.runtime.backends import OnnxRuntimeBackend  # noqa: E402


@pytest.fixture
def student_ckpt(tmp_path):
    torch.manual_seed(0)
    cfg = {"name": "student-test", "type": "RepSRNet", "num_feat": 8, "num_block": 2, "scale": 4}
    net = build_model(cfg)
    for p in net.parameters():
        p.data += 0.02 * torch.randn_like(p)
    return save_model(tmp_path / "run" / "model.safetensors", net, cfg, {"scale": 4, "iterations": 1})


def test_checkpoint_roundtrip_and_corruption(student_ckpt, tmp_path):
    model, cfg, meta = load_model(student_ckpt)
    assert cfg["type"] == "RepSRNet" and meta["scale"] == 4
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError):
        load_model(bad)


def test_onnx_export_is_verified_and_carries_metadata(student_ckpt, tmp_path):
    real = [degrade(phantom(96), 4)]
    out, report = export_onnx(student_ckpt, tmp_path / "s.onnx", verify_images=real)
    assert all(v <= 1e-4 for v in report.values()) and any("non-square" in k for k in report)
    model = onnx.load(str(out))
    meta = get_metadata(model)
    assert meta["scale"] == 4 and meta["arch"] == "RepSRNet" and len(meta["source_sha256"]) == 64
    assert model.opset_import[0].version >= 17
    assert not any(n.op_type == "Add" and "expand" in n.name for n in model.graph.node)  # folded form
    backend = OnnxRuntimeBackend(out, device="cpu")
    assert backend.run(np.zeros((2, 1, 9, 13), np.float32)).shape == (2, 1, 36, 52)  # dynamic N/H/W


def test_int8_keeps_the_tail_input_in_float_for_reppfanet(tmp_path):
    """RepPFANet's 1x1 fusion convolution feeds the tail: it stays float, so the tail's input is
    not an 8-bit tensor; its body convolutions are quantized."""
    from medsr_edge.export.quantize import float_nodes

    torch.manual_seed(0)
    cfg = {"name": "reppfa-test", "type": "RepPFANet", "num_feat": 8, "num_block": 2, "expand": 2, "scale": 4}
    ckpt = save_model(tmp_path / "run" / "model.safetensors", build_model(cfg), cfg, {"scale": 4, "iterations": 1})
    fp32, _ = export_onnx(ckpt, tmp_path / "p.onnx")
    model = onnx.load(str(fp32))
    kept = float_nodes(model)
    assert "/fuse/Conv" in kept and "/tail/fused/Conv" in kept
    assert not any(n.startswith("/body") for n in kept)
    assert kept.count("/fuse/Conv") == 1 and len(set(kept)) == len(kept)


def test_int8_keeps_the_sinc_anchor_and_the_tail_in_float(tmp_path):
    """A sinc anchor's output is added to the result as it is: its convolution stays float, and it
    does not take the place of the tail as "the last convolution" (which stays float too)."""
    from medsr_edge.export.quantize import float_nodes

    cfg = {"name": "student-sinc", "type": "RepPFANet", "num_feat": 8, "num_block": 2, "expand": 2, "anchor": "sinc",
           "scale": 4}
    ckpt = save_model(tmp_path / "run" / "model.safetensors", build_model(cfg), cfg, {"scale": 4, "iterations": 1})
    fp32, _ = export_onnx(ckpt, tmp_path / "p.onnx")
    kept = float_nodes(onnx.load(str(fp32)), 1)
    assert "/anchor/Conv" in kept and "/tail/fused/Conv" in kept and "/head/fused/Conv" in kept
    assert "/body.0/c1/fused/Conv" in kept and "/body.0/c2/fused/Conv" not in kept


def test_int8_and_fp16(student_ckpt, tmp_path):
    fp32, _ = export_onnx(student_ckpt, tmp_path / "s.onnx")
    hrs = [phantom(64, seed=s) for s in range(8)]
    lrs = [degrade(h, 4) for h in hrs]
    calib = CalibrationSet(lrs[2:], lrs[:2], hrs[:2], [])
    out, report = quantize_int8(fp32, tmp_path / "s-int8.onnx", calib, max_gt_drop_db=1.0, min_psnr_vs_fp32=25.0,
                                max_local_diff=1.0)
    assert report["psnr_int8_vs_fp32_db"] >= 25.0
    assert report["float_nodes"][0].startswith("/head") and any("DepthToSpace" in n for n in report["float_nodes"])
    _, more = quantize_int8(fp32, tmp_path / "s-int8-f1.onnx", calib, max_gt_drop_db=1.0, min_psnr_vs_fp32=25.0, float_convs=1,
                            max_local_diff=1.0)
    assert more["float_nodes"][1].startswith("/body.0") and len(more["float_nodes"]) == len(report["float_nodes"]) + 1
    model = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert get_metadata(model)["precision"] == "int8"
    with pytest.raises(ModelError, match="INT8 loses"):
        quantize_int8(fp32, tmp_path / "never.onnx", calib, keep_float_ends=False, min_psnr_vs_fp32=200.0)
    assert not (tmp_path / "never.onnx").exists()
    mixed = CalibrationSet([degrade(phantom(n, seed=n), 4) for n in (64, 96, 128, 200)], lrs[:2], hrs[:2], [])
    for method in ("percentile", "entropy"):  # histogram calibrators on images of different sizes
        _, rep = quantize_int8(fp32, tmp_path / f"s-{method}.onnx", mixed, method, max_gt_drop_db=1.0, min_psnr_vs_fp32=25.0,
                                max_local_diff=1.0)
        assert rep["calibration"]["method"] == method and rep["calibration"]["images"] == 4
    half = convert_fp16(fp32, tmp_path / "s-fp16.onnx")
    assert get_metadata(onnx.load(str(half)))["precision"] == "fp16"


def test_export_refuses_to_replace_its_input_or_an_existing_file(tmp_path, student_ckpt):
    """Checked before any work: the source model and existing files are never overwritten, and an
    unwritable folder is a one-line error."""
    from typer.testing import CliRunner

    from medsr_edge.cli.main import app

    src = student_ckpt
    before = src.read_bytes()
    runner = CliRunner()
    for out, msg in ((src, "replace the input model"), (tmp_path / "taken.onnx", "output exists"),
                     (tmp_path / "file" / "x.onnx", "cannot write here")):
        if out.name == "taken.onnx":
            out.write_bytes(b"keep")
            (tmp_path / "file").write_bytes(b"a file, not a folder")
        res = runner.invoke(app, ["export", "--model", str(src), "--format", "onnx", "-o", str(out)])
        assert res.exit_code == 2 and msg in res.stderr and "Traceback" not in res.stderr, res.output
    assert src.read_bytes() == before and (tmp_path / "taken.onnx").read_bytes() == b"keep"
    res = runner.invoke(app, ["export", "--model", str(src), "--format", "onnx", "-o", str(tmp_path / "taken.onnx"), "--overwrite"])
    assert res.exit_code == 0, res.output


def test_fidelity_rule():
    from medsr_edge.core.fidelity import fidelity_failures, is_gan_model

    assert fidelity_failures({"ct": (30.0, 30.4), "mri": (29.0, 29.6)}) == {"mri": (29.0, 29.6)}
    assert is_gan_model("student-x4-gan") and is_gan_model("run", {"stage": "gan"}) and not is_gan_model("student-x4")
    assert not is_gan_model("organ-x4") and not is_gan_model("esrgan-small") and is_gan_model("teacher-x4_GAN.onnx")


def test_export_refuses_a_gan_model_below_bicubic(phantom_dir, tmp_path):
    """A GAN-trained model that falls more than 0.5 dB below bicubic on the held-back images is
    not exported in any format, nor without real images to check it on; the same weights under a
    non-GAN name export (the guard is for GAN models)."""
    from medsr_edge.export.exporter import ExportOptions, export_model

    torch.manual_seed(0)
    cfg = {"name": "gan-test", "type": "RepSRNet", "num_feat": 8, "num_block": 1, "scale": 4}
    net = build_model(cfg)
    for p in net.parameters():
        p.data += 0.5 * torch.randn_like(p)  # far from bicubic
    ckpt = save_model(tmp_path / "student-x4-gan" / "model.safetensors", net, cfg, {"scale": 4, "stage": "gan"})
    for fmt in ("onnx", "pytorch", "onnx-int8"):
        out = tmp_path / f"out-{fmt}"
        with pytest.raises(ModelError, match="fidelity guard: more than 0.5 dB below bicubic in ct, mri"):
            export_model(ckpt, fmt, ExportOptions(output=out, calib_data=phantom_dir, calib_split="val"), report=lambda s: None)
        assert not out.exists()
    with pytest.raises(ModelError, match="GAN-trained: its fidelity guard needs real images"):
        export_model(ckpt, "onnx", ExportOptions(output=tmp_path / "x.onnx"), report=lambda s: None)
    plain = save_model(tmp_path / "plain" / "model.safetensors", net, cfg, {"scale": 4})
    assert export_model(plain, "pytorch", ExportOptions(output=tmp_path / "p.safetensors"), report=lambda s: None).is_file()


def test_int8_refuses_a_local_defect_that_the_mean_checks_pass(student_ckpt, tmp_path):
    """The local check: the 99.99th percentile of |INT8 - FP32| on the worst check image, recomputed
    here from both models' outputs; an INT8 model that passes both mean checks is refused (nothing
    written) when that percentile exceeds ``max_local_diff``."""
    fp32, _ = export_onnx(student_ckpt, tmp_path / "s.onnx")
    hrs = [phantom(64, seed=s) for s in range(8)]
    lrs = [degrade(h, 4) for h in hrs]
    calib = CalibrationSet(lrs[2:], lrs[:2], hrs[:2], [])
    lenient = dict(max_gt_drop_db=1.0, min_psnr_vs_fp32=25.0)
    out, report = quantize_int8(fp32, tmp_path / "ok.onnx", calib, max_local_diff=1.0, **lenient)
    ref, got = (OnnxRuntimeBackend(p, device="cpu") for p in (fp32, out))
    worst = max(float(np.quantile(np.abs(np.clip(got.run(x[None, None]), 0, 1) - np.clip(ref.run(x[None, None]), 0, 1)), 0.9999))
                for x in calib.check_lr)
    assert worst > 0 and report["p99_99_abs_diff_vs_fp32"] == pytest.approx(worst, abs=1e-4)
    with pytest.raises(ModelError, match="1 output pixel in 10,000"):
        quantize_int8(fp32, tmp_path / "never.onnx", calib, max_local_diff=worst * 0.9, **lenient)
    assert not (tmp_path / "never.onnx").exists()


def test_release_writes_every_released_format_or_nothing(student_ckpt, phantom_dir, tmp_path):
    """`export --format release` writes the table's released formats under the shipped names, each
    verified; an INT8 its gate refuses is left out (and an older INT8 of that name removed, so FP32
    and INT8 never come from two runs); any other refusal leaves the folder as it was."""
    from typer.testing import CliRunner

    from medsr_edge.cli.main import app
    from medsr_edge.core.formats import RELEASED, artifact_name

    runner = CliRunner()
    common = ["export", "--model", str(student_ckpt), "--format", "release", "--name", "student-t",
              "--calib-data", str(phantom_dir), "--calib-split", "val", "--calib-images", "4"]
    out = tmp_path / "weights"
    res = runner.invoke(app, [*common, "-o", str(out), "--max-gt-drop", "5", "--min-psnr-vs-fp32", "10",
                              "--max-local-diff", "1"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(artifact_name("student-t", f) for f in RELEASED) and len(names) == 4
    assert get_metadata(onnx.load(str(out / "student-t-int8.onnx")))["precision"] == "int8"
    assert load_model(out / "student-t.safetensors")[2]["model_name"] == "student-t"

    # INT8 refused by its gate: the rest is released, the older INT8 is gone.
    fp32_before = (out / "student-t.onnx").stat().st_mtime_ns
    res = runner.invoke(app, [*common, "-o", str(out), "--overwrite", "--min-psnr-vs-fp32", "200"])
    assert res.exit_code == 0 and "onnx-int8 refused by its gate" in res.output, res.output
    assert not (out / "student-t-int8.onnx").exists() and (out / "student-t.onnx").stat().st_mtime_ns != fp32_before
    assert not list(out.glob(".release-*"))

    # Any other refusal (here an existing file without --overwrite, or a bad checkpoint) changes nothing.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = runner.invoke(app, [*common, "-o", str(out)])
    assert res.exit_code == 2 and "output exists" in res.stderr, res.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    res = runner.invoke(app, [*common[:2], str(bad), *common[3:], "-o", str(out), "--overwrite"])
    assert res.exit_code == 2 and "Traceback" not in res.stderr, res.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    res = runner.invoke(app, [*common[:-6], "-o", str(tmp_path / "nocal")])
    assert res.exit_code == 2 and "--calib-data" in res.stderr, res.output
