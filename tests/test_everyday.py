"""Everyday things: a fast torch-free `info`, plain help texts, a site UID root."""

import subprocess
import sys

import pydicom
from typer.testing import CliRunner

from medsr_edge.cli.main import app

runner = CliRunner()


def test_info_does_not_import_torch_unless_asked():
    code = ("import sys; from medsr_edge.cli.main import app\n"
            "try:\n app(['info'])\nexcept SystemExit:\n pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "NO-TORCH", res.stdout + res.stderr
    assert "shipped" not in res.stderr and "models in" in res.stdout


def test_help_texts_keep_extras_in_brackets_and_plain_metavars():
    for args in (["enhance", "--help"], ["train", "teacher", "--help"], ["bench", "--help"], ["compare", "--help"]):
        out = runner.invoke(app, args).output
        assert "<list[" not in out and "<path>" not in out and "<int>" not in out, args
    teacher = " ".join(runner.invoke(app, ["train", "teacher", "--help"]).output.split())
    assert "pip install 'medsr-edge[perceptual]'" in teacher.replace("- ", "-")  # rich markup once ate [perceptual]
    assert "--device DEVICE" in runner.invoke(app, ["enhance", "--help"]).output


def test_uid_root_is_used_and_checked(tmp_path, ct_small, tiny_onnx):
    root = "1.2.826.0.1.3680043.10.999."
    res = runner.invoke(app, ["enhance", str(ct_small), "-o", str(tmp_path / "o.dcm"), "--model", str(tiny_onnx),
                              "--uid-root", root])
    assert res.exit_code == 0, res.output
    ds = pydicom.dcmread(tmp_path / "o.dcm")
    assert ds.SeriesInstanceUID.startswith(root) and ds.SOPInstanceUID.startswith(root)
    assert len(ds.SOPInstanceUID) <= 64
    for bad in ("1.2.3", "1.02.3.", "1.2.x.", "1." * 30):
        res = runner.invoke(app, ["enhance", str(ct_small), "--model", str(tiny_onnx), "--uid-root", bad])
        assert res.exit_code == 2 and "UID root" in res.output, bad
