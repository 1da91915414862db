"""Batches as a hospital disk holds them: thousands of files, interruptions, re-runs, a missing
decoder. The CLI runs in a subprocess here wherever a signal, a file-descriptor limit or a changed
pydicom plugin list must not leak into the test process."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import phantom
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsr_edge.cli.main import app
from medsr_edge.runtime.pipeline import output_is_complete

runner = CliRunner()
CLI = [sys.executable, "-c", "from medsr_edge.cli.main import app; app()"]


def _folder(root, n, size=16):
    root.mkdir(parents=True, exist_ok=True)
    img = (phantom(size) * 255).astype(np.uint8)
    for i in range(n):
        PILImage.fromarray(np.roll(img, i, axis=1)).save(root / f"img{i:05d}.png")
    return root


def test_thousands_of_files_with_few_file_descriptors(tmp_path, tiny_onnx):
    """3,000 files (plus non-image clutter) under a 64-descriptor limit: every file is enhanced,
    so the batch neither leaks open files nor holds the folder's files open at once."""
    src = _folder(tmp_path / "in", 3000, size=8)
    (src / "notes.txt").write_text("not an image")
    (src / "Thumbs.db").write_bytes(b"\x00" * 64)
    code = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); " \
           "from medsr_edge.cli.main import app; app()"
    res = subprocess.run([sys.executable, "-c", code, "enhance", str(src), "-o", str(tmp_path / "out"),
                          "--model", str(tiny_onnx), "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3000 enhanced, 0 skipped, 0 failed" in res.stderr
    outs = sorted((tmp_path / "out").glob("*.png"))
    assert len(outs) == 3000 and not list((tmp_path / "out").glob(".*"))
    assert PILImage.open(outs[-1]).size == (32, 32)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_batch_leaves_complete_outputs_and_resumes(tmp_path, tiny_onnx, sig):
    """A signal mid-batch: exit 130, every output on disk is a whole image, no temporary file is
    left; the same command again skips the finished outputs and does the rest."""
    src = _folder(tmp_path / "in", 400, size=96)
    out = tmp_path / "out"
    cmd = CLI + ["enhance", str(src), "-o", str(out), "--model", str(tiny_onnx), "--threads", "1", "--tile", "32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and len(list(out.glob("*.png"))) >= 5) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    done = sorted(out.glob("*.png"))
    assert 5 <= len(done) < 400
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert all(output_is_complete(p) for p in done)
    before = {p.name: p.stat().st_mtime_ns for p in done}

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{400 - len(done)} enhanced, {len(done)} skipped" in res.stderr
    assert len(list(out.glob("*.png"))) == 400
    assert all((out / name).stat().st_mtime_ns == t for name, t in before.items())


def test_rerun_policy(tmp_path, tiny_onnx):
    """Outputs medsr-edge named are resumed; a damaged one is reported, not replaced, unless
    --overwrite; an output folder inside the input folder is not enhanced again."""
    src = _folder(tmp_path / "in", 3)
    out = src / "sr"
    args = ["enhance", str(src), "-o", str(out), "--model", str(tiny_onnx)]
    assert runner.invoke(app, args).exit_code == 0
    (out / "img00001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert "0 enhanced, 2 skipped" in res.stderr and "1 failed" in res.stderr
    assert "img00001.png: exists but is not a complete image" in res.stderr
    assert not (out / "sr").exists()
    res = runner.invoke(app, args + ["--overwrite"])
    assert res.exit_code == 0 and "3 enhanced" in res.stderr
    assert output_is_complete(out / "img00001.png")


def test_missing_decoder_names_the_package(tmp_path, tiny_onnx):
    """JPEG 2000 DICOM with every JPEG 2000 plugin removed from pydicom, as on a box without
    pylibjpeg-openjpeg: one line naming the file and the package, exit 1, nothing written."""
    from pydicom.data import get_testdata_file

    j2k = get_testdata_file("MR_small_jp2klossless.dcm")
    code = ("from pydicom.pixels import get_decoder\n"
            "from pydicom.uid import JPEG2000Lossless\n"
            "dec = get_decoder(JPEG2000Lossless)\n"
            "for name in dec.available_plugins: dec.remove_plugin(name)\n"
            "from medsr_edge.cli.main import app; app()\n")
    dst = tmp_path / "out.dcm"
    res = subprocess.run([sys.executable, "-c", code, "enhance", j2k, "-o", str(dst), "--model", str(tiny_onnx)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "MR_small_jp2klossless.dcm" in lines[0]
    assert "no decoder for JPEG 2000" in lines[0] and "pylibjpeg-openjpeg" in lines[0]
    assert "Traceback" not in res.stderr and not os.listdir(tmp_path)
