"""Faults real users hit: tiny and huge images, inconsistent DICOM, unwritable outputs, full disks."""

import errno
import os
import struct
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsr_edge.cli.main import app
from medsr_edge.core.errors import ImageReadError, ImageWriteError
from medsr_edge.runtime import io as rio
from medsr_edge.runtime.io import read_image, write_raster

runner = CliRunner()


@pytest.mark.parametrize("size, ok", [(1, False), (3, False), (8, True)])
def test_tiny_images_are_refused_in_one_line_or_enhanced(tmp_path, tiny_onnx, size, ok):
    """Below 8 pixels a side there is nothing to restore (a 1-column DICOM once came out wrong
    with exit 0): refused with the reason, no output; from 8 pixels on, enhanced."""
    src = tmp_path / f"t{size}.png"
    PILImage.fromarray(np.full((size, size), 100, np.uint8)).save(src)
    res = runner.invoke(app, ["enhance", str(src), "--model", str(tiny_onnx)])
    out = tmp_path / f"t{size}-sr-x4.png"
    if ok:
        assert res.exit_code == 0, res.stderr
        assert PILImage.open(out).size == (4 * size, 4 * size)
    else:
        assert res.exit_code == 1 and "too small to super-resolve" in res.stderr and not out.exists()


def _png_header_only(path, width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_huge_dimensions_in_header_refused_without_allocating(tmp_path):
    p = tmp_path / "huge.png"
    _png_header_only(p, 100000, 100000)
    with pytest.raises(ImageReadError, match="huge.png"):
        read_image(p)


def test_dicom_rows_columns_inconsistent_with_pixel_bytes(tmp_path, ct_small):
    ds = pydicom.dcmread(ct_small)
    ds.Rows = ds.Rows * 2
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(ImageReadError, match="header needs"):
        read_image(tmp_path / "bad.dcm")


def test_output_folder_not_writable(tmp_path, tiny_onnx):
    src = tmp_path / "a.png"
    PILImage.fromarray(np.full((8, 8), 7, np.uint8)).save(src)
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the output folder should be: mkdir fails for everyone, root too
    res = runner.invoke(app, ["enhance", str(src), "-o", str(blocker / "out.png"), "--model", str(tiny_onnx)])
    assert res.exit_code == 1 and "cannot write here" in res.stderr and "Traceback" not in res.stderr


def test_disk_full_leaves_no_partial_file(tmp_path, monkeypatch):
    src = tmp_path / "a.png"
    PILImage.fromarray(np.full((8, 8), 7, np.uint8)).save(src)
    image = read_image(src)

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rio.os, "replace", full)
    with pytest.raises(ImageWriteError, match="No space left"):
        write_raster(tmp_path / "out.png", image.frames.astype(np.float32), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    p = tmp_path / "secret.png"
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(p)
    p.chmod(0)
    with pytest.raises(ImageReadError, match="permission denied"):
        read_image(p)


def test_unreadable_file_one_line_error_in_a_batch(tmp_path, tiny_onnx, monkeypatch):
    """The same fault where the tests run as root (CI containers): the OS refusal is simulated,
    the batch reports it in one line and still enhances the readable file."""
    import builtins

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("ok.png", "secret.png"):
        PILImage.fromarray(np.full((8, 8), 50, np.uint8)).save(folder / name)
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if str(file).endswith("secret.png"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    res = runner.invoke(app, ["enhance", str(folder), "--model", str(tiny_onnx)])
    assert res.exit_code == 1 and "Traceback" not in res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "secret.png" in ln)
    assert line.startswith("error: ") and "permission denied" in line
    assert (tmp_path / "in-sr-x4" / "ok.png").exists() and not (tmp_path / "in-sr-x4" / "secret.png").exists()


def test_palette_png_of_grey_content(tmp_path):
    img = PILImage.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).convert("P")
    img.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").frames.shape == (1, 16, 16)
