import subprocess
import sys

import numpy as np
import pydicom
import pytest
from conftest import phantom
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsr_edge.cli.main import app

runner = CliRunner()


def run(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


def _png(path, size=24):
    PILImage.fromarray((phantom(size) * 255).astype(np.uint8)).save(path)
    return path


def test_enhance_png_and_dicom(tmp_path, tiny_onnx, ct_small):
    src = _png(tmp_path / "a.png")
    code, out, err = run("enhance", src, "--model", tiny_onnx)
    assert code == 0, err
    dst = tmp_path / "a-sr-x4.png"
    assert dst.exists() and PILImage.open(dst).size == (96, 96)
    code, _, err = run("enhance", ct_small, "-o", tmp_path / "ct.dcm", "--model", tiny_onnx)
    assert code == 0, err
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    assert ds.Rows == 512 and "tiny-test" in ds.DerivationDescription


def test_existing_output_refused_unless_overwrite(tmp_path, tiny_onnx):
    src = _png(tmp_path / "a.png")
    dst = tmp_path / "out.png"
    dst.write_bytes(b"keep me")
    code, _, err = run("enhance", src, "-o", dst, "--model", tiny_onnx)
    assert code != 0 and "exists" in err and "Traceback" not in err
    assert dst.read_bytes() == b"keep me"
    code, _, _ = run("enhance", src, "-o", dst, "--model", tiny_onnx, "--skip-existing")
    assert code == 0 and dst.read_bytes() == b"keep me"
    code, _, err = run("enhance", src, "-o", dst, "--model", tiny_onnx, "--overwrite")
    assert code == 0, err
    assert PILImage.open(dst).size == (96, 96)


def test_output_never_replaces_input(tmp_path, tiny_onnx):
    src = _png(tmp_path / "a.png")
    before = src.read_bytes()
    code, _, err = run("enhance", src, "-o", src, "--model", tiny_onnx, "--overwrite")
    assert code != 0 and "replace the input" in err
    assert src.read_bytes() == before


def test_batch_continues_after_bad_files(tmp_path, tiny_onnx, ct_small):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    _png(folder / "good.png")
    _png(folder / "sub" / "good2.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "junk.dcm").write_bytes(b"\x00" * 500)
    raw = ct_small.read_bytes()
    (folder / "trunc.dcm").write_bytes(raw[: len(raw) - 1000])
    code, _, err = run("enhance", folder, "--model", tiny_onnx)
    assert code == 1
    out = tmp_path / "in-sr-x4"
    assert (out / "good.png").exists() and (out / "sub" / "good2.png").exists()
    assert "3 failed" in err and "Traceback" not in err
    for name in ("empty.png", "junk.dcm", "trunc.dcm"):
        line = next(ln for ln in err.splitlines() if name in ln)
        assert line.startswith("error: ")
    assert not list(out.rglob("*.part"))


def test_missing_input_and_model_errors(tmp_path, tiny_onnx):
    code, _, err = run("enhance", tmp_path / "nope.dcm", "--model", tiny_onnx)
    assert code == 1 and "no such file" in err
    code, _, err = run("enhance", _png(tmp_path / "a.png"), "--model", tmp_path / "missing.onnx")
    assert code == 2 and "model file not found" in err
    code, _, err = run("enhance", tmp_path / "a.png", "--model", "no-such-model")
    assert code == 2 and "unknown model" in err


def test_dicom_without_pixel_data(tmp_path, tiny_onnx, ct_small):
    ds = pydicom.dcmread(ct_small)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    code, _, err = run("enhance", tmp_path / "nopix.dcm", "--model", tiny_onnx)
    assert code == 1 and "no pixel data" in err


def test_png_to_dicom_refused(tmp_path, tiny_onnx):
    code, _, err = run("enhance", _png(tmp_path / "a.png"), "-o", tmp_path / "a.dcm", "--model", tiny_onnx)
    assert code == 1 and "DICOM output needs a DICOM input" in err


def test_info_lists_backends():
    code, out, _ = run("info")
    assert code == 0 and "onnxruntime" in out and "medsr-edge" in out


def test_info_marks_the_default_and_gan_models_opt_in(tmp_path, tiny_onnx, monkeypatch):
    import shutil

    for name in ("student-x4", "student-x4-gan", "teacher-x4"):
        shutil.copy(tiny_onnx, tmp_path / f"{name}.onnx")
    monkeypatch.setenv("MEDSR_EDGE_WEIGHTS", str(tmp_path))
    code, out, _ = run("info")
    lines = {ln.split(":")[0].strip(): ln for ln in out.splitlines() if ln.startswith("  ")}
    assert code == 0
    assert "[default]" in lines["student-x4"] and "opt-in" not in lines["student-x4"]
    assert "[GAN-trained, opt-in: --model student-x4-gan]" in lines["student-x4-gan"]
    assert "[" not in lines["teacher-x4"]


def test_export_engine_without_tensorrt_is_one_line():
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    code, _, err = run("export", "--model", "student-x4", "--format", "engine", "--precision", "fp16")
    assert code == 2 and "TensorRT" in err and len(err.strip().splitlines()) == 1


def test_runtime_and_enhance_do_not_import_torch():
    code = ("import sys, medsr_edge.runtime.enhancer, medsr_edge.runtime.pipeline, medsr_edge.cli.main, "
            "medsr_edge.eval.benchmark; bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_gan_model_is_named_as_such_in_the_derived_dicom(tmp_path, tiny_onnx, ct_small, monkeypatch):
    """The DICOM that a GAN-trained model writes says so (its texture may be synthesized); one of
    the default student does not."""
    import onnx

    from medsr_edge.runtime.backend_base import META_PREFIX

    for name, stage in (("student-x4", "psnr"), ("student-x4-gan", "gan")):
        model = onnx.load(str(tiny_onnx))
        props = {p.key: p.value for p in model.metadata_props} | {META_PREFIX + "model_name": name, META_PREFIX + "stage": stage}
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, props)
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
    monkeypatch.setenv("MEDSR_EDGE_WEIGHTS", str(tmp_path))
    for name, flagged in (("student-x4-gan", True), ("student-x4", False)):
        out = tmp_path / f"{name}.dcm"
        code, _, err = run("enhance", ct_small, "--model", name, "-o", out)
        assert code == 0, err
        assert ("GAN-trained" in pydicom.dcmread(out).DerivationDescription) is flagged
