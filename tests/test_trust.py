"""Exit 0 means a correct output: the cases an independent attack on `enhance` found, each as a
regression test (no traceback, no silently wrong image, memory bounded before decoding, resume
that checks what it skips)."""

import os
import struct
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import tifffile
from conftest import make_tiny_onnx
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsr_edge.cli.main import app
from medsr_edge.core.errors import ImageReadError, ImageWriteError
from medsr_edge.core.files import TEMP_MARK
from medsr_edge.runtime.io import read_image

runner = CliRunner()
CLI = [sys.executable, "-c", "from medsr_edge.cli.main import app; app()"]


def _enhance(*args):
    res = runner.invoke(app, ["enhance", *map(str, args)])
    assert "Traceback" not in res.output
    return res


def _png(path, arr):
    PILImage.fromarray(arr).save(path)
    return path


def test_nan_or_zero_rescale_slope_is_refused(tmp_path, ct_small, tiny_onnx):
    for slope in ("NaN", "inf", "0"):
        ds = pydicom.dcmread(ct_small)
        ds["RescaleSlope"].value = slope
        ds.save_as(tmp_path / f"s{slope}.dcm")
        res = _enhance(tmp_path / f"s{slope}.dcm", "--model", tiny_onnx)
        assert res.exit_code == 1 and "RescaleSlope" in res.output
        assert not list(tmp_path.glob("*-sr-x4.dcm"))


def test_model_whose_real_scale_differs_from_its_metadata_writes_nothing(tmp_path, ct_small):
    """An x4 network labelled x2 would give a DICOM with PixelSpacing wrong by 2x."""
    import onnx

    model = onnx.load(str(make_tiny_onnx(tmp_path / "m.onnx", scale=4)))
    for prop in model.metadata_props:
        if prop.key == "medsr.scale":
            prop.value = "2"
    onnx.save(model, str(tmp_path / "liar.onnx"))
    res = _enhance(ct_small, "-o", tmp_path / "out.dcm", "--model", tmp_path / "liar.onnx")
    assert res.exit_code == 1 and "is not x2" in res.output
    assert not (tmp_path / "out.dcm").exists()


def test_damaged_model_metadata_is_one_line(tmp_path, ct_small):
    import onnx

    model = onnx.load(str(make_tiny_onnx(tmp_path / "m.onnx")))
    for prop in model.metadata_props:
        if prop.key == "medsr.scale":
            prop.value = '"four"'
    onnx.save(model, str(tmp_path / "bad.onnx"))
    res = _enhance(ct_small, "--model", tmp_path / "bad.onnx")
    assert res.exit_code == 2 and "metadata is damaged" in res.output


def test_cmyk_jpeg_is_refused(tmp_path, tiny_onnx):
    PILImage.new("CMYK", (16, 16), (10, 20, 30, 40)).save(tmp_path / "c.jpg")
    res = _enhance(tmp_path / "c.jpg", "--model", tiny_onnx)
    assert res.exit_code == 1 and "CMYK" in res.output


def test_sixteen_bit_colour_and_alpha_png_are_refused(tmp_path, tiny_onnx):
    import zlib

    def png16(path, colour_type, channels):
        raw = b"".join(b"\0" + np.full((4, channels), 40000, ">u2").tobytes() for _ in range(4))

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 16, colour_type, 0, 0, 0))
                         + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

    png16(tmp_path / "rgb.png", 2, 3)
    png16(tmp_path / "ga.png", 4, 2)
    for name, kind in (("rgb.png", "16-bit RGB"), ("ga.png", "16-bit grey+alpha")):
        res = _enhance(tmp_path / name, "--model", tiny_onnx)
        assert res.exit_code == 1 and kind in res.output


@pytest.mark.parametrize("dtype", [np.int16, np.float64, np.float32, np.uint16])
def test_tiff_keeps_its_pixel_type_and_values(tmp_path, tiny_onnx, dtype):
    """int16 must not come out shifted by +32768, float64 not reduced to float32."""
    ramp = np.linspace(-3000 if np.dtype(dtype).kind != "u" else 0, 3000, 16 * 16).reshape(16, 16)
    tifffile.imwrite(tmp_path / "in.tif", ramp.astype(dtype))
    res = _enhance(tmp_path / "in.tif", "--model", tiny_onnx)
    assert res.exit_code == 0, res.output
    out = tifffile.imread(tmp_path / "in-sr-x4.tif")
    assert out.dtype == dtype and out.shape == (64, 64)
    assert abs(float(out.mean()) - float(ramp.mean())) < 0.05 * (ramp.max() - ramp.min())


@pytest.mark.parametrize("args, message", [
    (["--overlap", "-1"], "--overlap"),
    (["--threads", "100000"], "--threads"),
    (["--tile", "-5"], "--tile"),
    (["--to", "."], "not an output type"),
])
def test_bad_options_are_refused_with_one_line(tmp_path, tiny_onnx, args, message):
    src = _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    res = _enhance(src, "--model", tiny_onnx, *args)
    assert res.exit_code == 2 and message in res.output
    assert not (tmp_path / "a-sr-x4.png").exists()


def test_enhance_dot_writes_beside_the_folder(tmp_path, tiny_onnx, monkeypatch):
    work = tmp_path / "scans"
    work.mkdir()
    _png(work / "a.png", np.zeros((8, 8), np.uint8))
    monkeypatch.chdir(work)
    res = _enhance(".", "--model", tiny_onnx)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "scans-sr-x4" / "a.png").is_file()


def test_fifo_is_refused_not_waited_on(tmp_path, tiny_onnx):
    os.mkfifo(tmp_path / "pipe.png")
    res = subprocess.run(CLI + ["enhance", str(tmp_path / "pipe.png"), "--model", str(tiny_onnx)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "not a regular file" in res.stderr and "Traceback" not in res.stderr


def test_symlink_loop_as_output_is_one_line(tmp_path, tiny_onnx):
    src = _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    res = _enhance(src, "-o", tmp_path / "loop" / "out", "--model", tiny_onnx)
    assert res.exit_code == 1 and "error:" in res.output


def _j2k_dicom(tmp_path, ct_small, tiny_onnx):
    res = _enhance(ct_small, "-o", tmp_path / "j2k.dcm", "--model", tiny_onnx, "--compress", "jpeg2000")
    assert res.exit_code == 0, res.output
    return tmp_path / "j2k.dcm"


def test_corrupt_compressed_dicom_is_called_corrupt_not_missing_a_decoder(tmp_path, ct_small, tiny_onnx, capfd):
    raw = bytearray(_j2k_dicom(tmp_path, ct_small, tiny_onnx).read_bytes())
    start = raw.index(b"\xff\x4f\xff\x51")  # JPEG 2000 codestream: SOC, SIZ
    raw[start + 4:start + 40] = bytes(36)  # wipe the image size in SIZ
    (tmp_path / "bad.dcm").write_bytes(bytes(raw))
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "bad.dcm")
    assert "corrupt" in str(err.value) and "pip install" not in str(err.value)
    assert "Traceback" not in capfd.readouterr().err  # pydicom's plugin log stays quiet


def test_header_bombs_are_refused_before_decoding(tmp_path):
    """A 138-byte TIFF whose header asks for 9.3 GiB, and a DICOM declaring 300 frames of
    16384 x 16384: refused from the header (no allocation, so no MemoryError either)."""
    entries = [(256, 4, 1, 50000), (257, 4, 1, 50000), (258, 3, 1, 32), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, 1, 8), (278, 4, 1, 50000), (279, 4, 1, 16)]  # 50000 x 50000 x 32 bit, deflate
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    (tmp_path / "bomb.tif").write_bytes(struct.pack("<2sHI", b"II", 42, 24) + bytes(16) + ifd)
    assert (tmp_path / "bomb.tif").stat().st_size <= 138
    with pytest.raises(ImageReadError, match="memory budget"):
        read_image(tmp_path / "bomb.tif")
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 16384
    ds.NumberOfFrames = 300
    ds.save_as(tmp_path / "bomb.dcm")
    with pytest.raises(ImageReadError, match="memory budget"):
        read_image(tmp_path / "bomb.dcm")


def test_resume_rechecks_what_it_skips(tmp_path, ct_small, tiny_onnx):
    """A DICOM output cut by 4,000 bytes and a TIFF cut inside its last page are not complete:
    the re-run refuses to skip them (and does not silently replace them)."""
    src = tmp_path / "in"
    src.mkdir()
    pydicom.dcmread(ct_small).save_as(src / "ct.dcm")
    tifffile.imwrite(src / "stack.tif", np.stack([np.full((16, 16), v, np.uint16) for v in (100, 2000, 4000)]),
                     photometric="minisblack")
    out = tmp_path / "out"
    assert _enhance(src, "-o", out, "--model", tiny_onnx).exit_code == 0
    again = _enhance(src, "-o", out, "--model", tiny_onnx)
    assert again.exit_code == 0 and "0 enhanced, 2 skipped" in again.output
    for name, cut in (("ct.dcm", 4000), ("stack.tif", 100)):
        raw = (out / name).read_bytes()
        (out / name).write_bytes(raw[:-cut])
    res = _enhance(src, "-o", out, "--model", tiny_onnx)
    assert res.exit_code == 1 and res.output.count("not a complete image") == 2


def test_stale_temporaries_of_killed_runs_are_swept(tmp_path, tiny_onnx):
    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png", np.zeros((8, 8), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".a.png{TEMP_MARK}x1y2.part"  # left by a killed run: nobody holds its lock
    live = out / f".b.png{TEMP_MARK}x1y2.part"  # a concurrent writer in another process holds its lock
    stale.write_bytes(b"partial"), live.write_bytes(b"partial")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(live)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = _enhance(src, "-o", out, "--model", tiny_onnx)
    finally:
        holder.kill()
    assert res.exit_code == 0 and "removed a temporary file" in res.output
    assert not stale.exists() and live.exists() and (out / "a.png").is_file()


def test_unreadable_input_named_on_the_command_line_does_not_abort_the_batch(tmp_path, tiny_onnx):
    ok = _png(tmp_path / "ok.png", np.zeros((8, 8), np.uint8))
    res = _enhance(tmp_path / "missing.png", ok, "-o", tmp_path / "out", "--model", tiny_onnx)
    assert res.exit_code == 1 and "missing.png: no such file" in res.output
    assert (tmp_path / "out" / "ok.png").is_file()


def _patched(tmp_path, name: str, marker: bytes, offset: int, value: bytes) -> "os.PathLike":
    """A pydicom test file with ``value`` written ``offset`` bytes after the first ``marker`` of its
    pixel data (a frame header field), so the stream disagrees with the DICOM header."""
    from pydicom.data import get_testdata_file

    raw = bytearray(open(get_testdata_file(name), "rb").read())
    at = raw.index(marker, raw.index(b"\xe0\x7f\x10\x00"))  # after the (7FE0,0010) Pixel Data tag
    raw[at + offset:at + offset + len(value)] = value
    out = tmp_path / f"lying-{name}"
    out.write_bytes(bytes(raw))
    return out


@pytest.mark.parametrize("name, marker, offset, value, said", [
    ("JPEGLSNearLossless_16.dcm", b"\xff\xf7", 5, struct.pack(">HH", 32768, 32768), "declares 32768x32768"),
    ("JPEG-LL.dcm", b"\xff\xc3", 5, struct.pack(">HH", 30000, 30000), "declares 30000x30000"),
    ("MR_small_jp2klossless.dcm", b"\xff\x4f\xff\x51", 8, struct.pack(">II", 40000, 40000), "declares 40000x40000"),
    ("MR_small_RLE.dcm", b"\x02\x00\x00\x00\x40\x00", 0, struct.pack("<I", 15), "declares 15 segments"),
])
def test_a_compressed_stream_that_lies_about_its_size_is_refused_before_decoding(tmp_path, name, marker, offset, value, said):
    """The decoder allocates what the stream declares (5.3 GB for a 10.8 KB JPEG-LS file once):
    the frame header is compared with the DICOM header first, in a child process whose address
    space is capped at 1 GiB, so a decode attempt would fail with a memory error instead."""
    path = _patched(tmp_path, name, marker, offset, value)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30));"
            "from medsr_edge.runtime.io import read_image; from medsr_edge.core.errors import ImageReadError\n"
            f"try:\n read_image({str(path)!r})\nexcept ImageReadError as e:\n print(e)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "does not match the DICOM header" in res.stdout and said in res.stdout, res.stdout


def test_a_deflate_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """Deflated Explicit VR Little Endian: pydicom inflates the whole dataset in one call. A small
    file inflating past the budget is refused from a streamed count (the budget scaled down here)."""
    import zlib

    from pydicom.data import get_testdata_file

    import medsr_edge.runtime.dicom as dicom_mod

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    ds.save_as(tmp_path / "ok.dcm", enforce_file_format=True)
    assert read_image(tmp_path / "ok.dcm").frames.shape == (1, 128, 128)  # a normal deflated file reads
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(tmp_path / "ok.dcm", "rb") as fh:  # preamble and file meta stay; the deflated dataset is replaced
        read_preamble(fh, force=False)
        _read_file_meta_info(fh)
        head = (tmp_path / "ok.dcm").read_bytes()[:fh.tell()]
    bomb = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = bomb.compress(bytes(64 << 20)) + bomb.flush()  # 64 MiB of zeros in ~64 KB
    (tmp_path / "bomb.dcm").write_bytes(head + body)
    monkeypatch.setattr(dicom_mod, "MAX_INFLATED_BYTES", 32 << 20)  # the budget, scaled down for the test
    with pytest.raises(ImageReadError, match="deflate bomb"):
        read_image(tmp_path / "bomb.dcm")


def _corrupt_rle(tmp_path):
    from pydicom.data import get_testdata_file

    raw = bytearray(open(get_testdata_file("MR_small_RLE.dcm"), "rb").read())
    at = raw.index(b"\x02\x00\x00\x00\x40\x00")
    raw[at + 64:at + 300] = b"\x80" * 236  # the segments decode short: pydicom's decoder logs a traceback
    (tmp_path / "corrupt.dcm").write_bytes(bytes(raw))
    return tmp_path / "corrupt.dcm"


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_no_traceback_when_a_corrupt_compressed_file_is_the_first_read(tmp_path, tiny_onnx, verbose):
    """pydicom's first import resets its logger: the file read first in a fresh process must
    still give exactly our one-line error."""
    bad = _corrupt_rle(tmp_path)
    res = subprocess.run([*CLI, "enhance", str(bad), "-o", str(tmp_path / "out.dcm"), "--model", str(tiny_onnx), *verbose],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and 'File "' not in res.stderr, res.stderr
    assert "compressed pixel data is corrupt" in res.stderr


def test_no_logger_can_print_a_traceback_after_setup(capfd):
    import logging

    from medsr_edge.core.logs import setup_logging

    setup_logging(False)
    try:
        raise RuntimeError("decoder failed\nsecond line")
    except RuntimeError:
        logging.getLogger("pydicom").exception("Error decoding the frame")
        logging.getLogger("some.library").error("boom", exc_info=True, stack_info=True)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "second line" not in err and "Stack" not in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 2


def _safetensors_with(tmp_path, config, tensors=None, name="odd.safetensors"):
    import json

    import torch
    from safetensors.torch import save_file

    from medsr_edge.models import build_model

    if tensors is None:
        tensors = {k: v.contiguous() for k, v in build_model("student-tiny", scale=4).state_dict().items()}
    path = tmp_path / name
    save_file(tensors, str(path), metadata={"config": json.dumps(config), "meta": json.dumps({"scale": 4})})
    del torch
    return path


@pytest.mark.parametrize("config, said", [
    ({"type": "os.system", "num_feat": 8}, "no known architecture"),
    (["RepSRNet"], "no known architecture"),
    ({"type": "RepSRNet", "num_feat": 8, "num_block": 1, "expand": 2, "scale": 4, "payload": "x"}, "not a parameter"),
    ({"type": "RRDBNet", "num_feat": 100000, "num_block": 1, "num_grow_ch": 8}, "out of range"),
    ({"type": "RRDBNet", "num_feat": 1024, "num_block": 64, "num_grow_ch": 512}, "do not match"),  # ~14 GB if built
    ({"type": "RepSRNet", "num_feat": -3, "num_block": 1, "expand": 2}, "out of range"),
    ({"type": "RepSRNet", "num_feat": 8, "num_block": 1, "expand": "two"}, "cannot be built"),
])
def test_safetensors_with_an_odd_config_is_one_line_and_allocates_nothing(tmp_path, ct_small, config, said):
    from medsr_edge.core.errors import ModelError
    from medsr_edge.models.checkpoint import load_model

    path = _safetensors_with(tmp_path, config)
    with pytest.raises(ModelError, match=said):
        load_model(path)
    res = subprocess.run([*CLI, "enhance", str(ct_small), "-o", str(tmp_path / "o.dcm"), "--model", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) <= 2 and str(path) in res.stderr


def test_derived_dicom_asserts_no_burned_in_annotation_the_source_did_not(tmp_path, ct_small, tiny_onnx):
    assert "BurnedInAnnotation" not in pydicom.dcmread(ct_small)
    assert _enhance(ct_small, "-o", tmp_path / "a.dcm", "--model", tiny_onnx).exit_code == 0
    assert "BurnedInAnnotation" not in pydicom.dcmread(tmp_path / "a.dcm")  # unknown stays unknown
    ds = pydicom.dcmread(ct_small)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(tmp_path / "marked.dcm")
    assert _enhance(tmp_path / "marked.dcm", "-o", tmp_path / "b.dcm", "--model", tiny_onnx).exit_code == 0
    assert pydicom.dcmread(tmp_path / "b.dcm").BurnedInAnnotation == "YES"


def test_outputs_that_differ_in_pixels_never_share_a_sop_instance_uid(tmp_path, ct_small, tiny_onnx):
    uids, pixels = [], []
    for i, tile in enumerate(("0", "32")):
        out = tmp_path / f"t{i}.dcm"
        assert _enhance(ct_small, "-o", out, "--model", tiny_onnx, "--tile", tile, "--overlap", "2").exit_code == 0
        ds = pydicom.dcmread(out)
        uids.append(ds.SOPInstanceUID)
        pixels.append(ds.pixel_array)
    assert not np.array_equal(*pixels)  # a 2-pixel overlap leaves seams: the tiling changes pixels
    assert uids[0] != uids[1]


def test_a_backslash_in_the_model_name_does_not_make_series_description_multi_valued(tmp_path, ct_small, tiny_onnx):
    import onnx

    model = onnx.load(str(tiny_onnx))
    for prop in model.metadata_props:
        if prop.key == "medsr.model_name":
            prop.value = "site\\model"
    odd = tmp_path / "odd.onnx"
    onnx.save(model, str(odd))
    assert _enhance(ct_small, "-o", tmp_path / "o.dcm", "--model", odd).exit_code == 0
    ds = pydicom.dcmread(tmp_path / "o.dcm")
    assert ds["SeriesDescription"].VM == 1 and "\\" not in ds.SeriesDescription


def test_a_study_folder_with_reports_plans_and_dose_grids_does_not_fail(tmp_path, ct_small, tiny_onnx):
    import shutil

    from pydicom.data import get_testdata_file

    study = tmp_path / "study"
    study.mkdir()
    shutil.copy(ct_small, study / "ct.dcm")
    for name in ("rtplan.dcm", "test-SR.dcm", "rtdose.dcm"):
        shutil.copy(get_testdata_file(name), study / name)
    res = subprocess.run([*CLI, "enhance", str(study), "-o", str(tmp_path / "out"), "--model", str(tiny_onnx)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("not an image, not read") == 3
    assert "RT Plan Storage" in res.stderr and "Comprehensive SR Storage" in res.stderr
    assert "1 enhanced, 0 skipped, 0 failed, 3 not images (not read)" in res.stderr
    assert [p.name for p in (tmp_path / "out").rglob("*.dcm")] == ["ct.dcm"]
    only = subprocess.run([*CLI, "enhance", str(study / "rtplan.dcm"), "--model", str(tiny_onnx)],
                          capture_output=True, text=True, timeout=300)
    assert only.returncode == 1 and "none of the inputs is an image" in only.stderr  # nothing done is not success


def test_an_image_whose_pixels_are_cut_off_is_called_truncated(tmp_path, ct_small):
    ds = pydicom.dcmread(ct_small)
    del ds.PixelData
    ds.save_as(tmp_path / "cut.dcm")
    with pytest.raises(ImageReadError, match="truncated: the CT Image Storage has no pixel data"):
        read_image(tmp_path / "cut.dcm")


def test_a_named_output_is_not_replaced_by_a_run_that_started_before_it_existed(tmp_path, tiny_onnx, monkeypatch):
    """Two runs with the same -o FILE and no --overwrite: the one that finishes second must not
    replace what the first wrote (the existence check at start is not enough)."""
    from medsr_edge.runtime import pipeline
    from medsr_edge.runtime.enhancer import Enhancer
    from medsr_edge.runtime.pipeline import Job, enhance_file

    src = _png(tmp_path / "a.png", (np.arange(64).reshape(8, 8) * 3).astype(np.uint8))
    out = tmp_path / "out.png"
    real_read = pipeline.read_image

    def read_then_lose_the_race(path):  # the other run publishes its output while this one works
        image = real_read(path)
        out.write_bytes(b"the other run's output")
        return image

    monkeypatch.setattr(pipeline, "read_image", read_then_lose_the_race)
    with pytest.raises(ImageWriteError, match="another run wrote it meanwhile"):
        enhance_file(Enhancer(tiny_onnx), Job(src, out, named=True))
    assert out.read_bytes() == b"the other run's output"
    assert not list(tmp_path.glob(f".*{TEMP_MARK}*"))  # no temporary left behind


@pytest.mark.parametrize("err", [28, 30, 13])  # ENOSPC, EROFS, EACCES
def test_write_faults_name_the_output_and_the_os_error(tmp_path, ct_small, tiny_onnx, monkeypatch, err):



    import medsr_edge.runtime.dicom as dicom_mod
    from medsr_edge.runtime.enhancer import Enhancer
    from medsr_edge.runtime.pipeline import Job, enhance_file

    class Failing:
        def __init__(self, *a, **k):
            pass

        def write(self, data):
            raise OSError(err, os.strerror(err))

        def close(self):
            pass

    monkeypatch.setattr(dicom_mod.tempfile, "TemporaryFile", Failing)
    out = tmp_path / "o.dcm"
    with pytest.raises(ImageWriteError) as exc:
        enhance_file(Enhancer(tiny_onnx), Job(ct_small, out))
    msg = str(exc.value)
    assert str(out) in msg and os.strerror(err) in msg and "malformed" not in msg and "input" not in msg
    assert not out.exists()



def _eight_bit_dicom(path, ct_small, slope: str, intercept: str):
    ds = pydicom.dcmread(ct_small)
    stored = np.tile(np.linspace(0, 255, 128), (128, 1)).round().astype(np.uint8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OB"
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.save_as(path)
    return path


def test_eight_bit_dicom_with_a_rescale_keeps_its_modality_range(tmp_path, ct_small, tiny_onnx):
    """The 8-bit path normalised with a fixed 0..255 after the rescale: values above 255 or below
    0 in modality units were clipped flat. The range is the stored range through the rescale."""
    src = _eight_bit_dicom(tmp_path / "u8.dcm", ct_small, "2", "-100")
    image = read_image(src)
    assert image.frames.min() == -100 and image.frames.max() == 410
    assert _enhance(src, "-o", tmp_path / "o.dcm", "--model", tiny_onnx).exit_code == 0
    out = read_image(tmp_path / "o.dcm").frames
    assert out.min() < -80 and out.max() > 390  # the whole range survives, not 0..255
    assert abs(out.mean() - image.frames.mean()) < 0.1 * 510  # the tiny test model is not an identity


def test_float64_tiff_keeps_detail_next_to_a_large_offset(tmp_path, tiny_onnx):
    """A float64 image 1000 + [0, 1e-3]: float32 modality values hold ~16 levels there."""
    from medsr_edge.runtime.transforms import Normalizer

    ramp = 1000.0 + np.tile(np.linspace(0, 1e-3, 32), (32, 1))
    tifffile.imwrite(tmp_path / "f.tif", ramp.astype(np.float64))
    image = read_image(tmp_path / "f.tif")
    norm = Normalizer.of(image)
    back = norm.inverse(norm.forward(image.frames[0]))
    assert np.abs(back - ramp).max() < 1e-3 / 2 ** 20  # float32 in [0, 1], float64 back: nothing lost
    assert _enhance(tmp_path / "f.tif", "-o", tmp_path / "o.tif", "--model", tiny_onnx).exit_code == 0
    out = tifffile.imread(tmp_path / "o.tif")
    assert out.dtype == np.float64 and len(np.unique(out)) > 1000


def test_float_values_near_the_limit_are_refused_not_turned_into_nan(tmp_path):
    tifffile.imwrite(tmp_path / "huge.tif", np.array([[-1.7e308, 1.7e308], [0.0, 1.0]] * 8, np.float64))
    with pytest.raises(ImageReadError, match="beyond"):
        read_image(tmp_path / "huge.tif")


@pytest.mark.parametrize("slope, intercept", [("1e300", "0"), ("1", "1e9"), ("1e-30", "5")])
def test_extreme_rescale_values_are_refused_with_the_reason(tmp_path, ct_small, slope, intercept):
    ds = pydicom.dcmread(ct_small)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.save_as(tmp_path / "x.dcm")
    with pytest.raises(ImageReadError, match="fix the header"):
        read_image(tmp_path / "x.dcm")


def test_ct_padding_is_not_smeared_into_the_patient_and_is_restored(tmp_path, ct_small, tiny_onnx):
    """Outside the reconstruction circle a CT holds PixelPaddingValue (-2000 stored, -3024 HU here).
    The network must not see that step (it rang into the body and widened the normalisation), the
    output must hold the padding value exactly there, and the tag must stay."""
    ds = pydicom.dcmread(ct_small)
    stored = ds.pixel_array.copy()
    yy, xx = np.mgrid[:128, :128]
    outside = np.hypot(yy - 63.5, xx - 63.5) > 60
    stored[outside] = -2000
    ds.PixelData = stored.astype(np.int16).tobytes()
    ds.save_as(tmp_path / "pad.dcm")
    assert _enhance(tmp_path / "pad.dcm", "-o", tmp_path / "o.dcm", "--model", tiny_onnx).exit_code == 0
    out = pydicom.dcmread(tmp_path / "o.dcm")
    assert out.PixelPaddingValue == -2000
    got = out.pixel_array
    up = np.repeat(np.repeat(outside, 4, 0), 4, 1)
    assert (got[up] == -2000).all()  # padding restored exactly
    inside = got[~up]
    real_min = stored[~outside].min()
    assert inside.min() >= real_min - 0.1 * (stored.max() - real_min)  # no ring dragged towards -2000


def test_an_animated_png_is_refused_not_cut_to_its_first_frame(tmp_path):
    frames = [PILImage.fromarray(np.full((16, 16), v, np.uint8)) for v in (10, 200, 90)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="animated image with 3 frames"):
        read_image(tmp_path / "anim.png")


def test_exif_orientation_is_applied_so_the_output_looks_like_the_input(tmp_path):
    arr = np.zeros((16, 32), np.uint8)
    arr[:, :8] = 255  # a bright band on the left of the stored pixels
    im = PILImage.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # viewers rotate 90 degrees clockwise: the band shows at the top
    im.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    shown = read_image(tmp_path / "rot.jpg").frames[0]
    assert shown.shape == (32, 16) and shown[:8].mean() > 200 and shown[-8:].mean() < 50


def test_an_unsupported_output_type_is_refused_not_made_a_folder(tmp_path, tiny_onnx):
    src = _png(tmp_path / "a.png", np.zeros((16, 16), np.uint8))
    res = _enhance(src, "-o", tmp_path / "out.bmp", "--model", tiny_onnx)
    assert res.exit_code == 2 and ".bmp is not an output type" in res.output
    assert not (tmp_path / "out.bmp").exists()


def test_a_one_column_image_is_refused(tmp_path, ct_small, tiny_onnx):
    ds = pydicom.dcmread(ct_small)
    ds.Columns = 1
    ds.PixelData = ds.pixel_array[:, :1].tobytes()
    ds.save_as(tmp_path / "col.dcm")
    res = _enhance(tmp_path / "col.dcm", "-o", tmp_path / "o.dcm", "--model", tiny_onnx)
    assert res.exit_code == 1 and "too small to super-resolve" in res.output and not (tmp_path / "o.dcm").exists()


def test_an_unreadable_sub_folder_is_named_not_skipped_silently(tmp_path, monkeypatch):
    from medsr_edge.runtime.io import find_image_files

    (tmp_path / "study" / "locked").mkdir(parents=True)
    _png(tmp_path / "study" / "a.png", np.zeros((16, 16), np.uint8))
    real_scandir = os.scandir

    def scandir(path="."):  # what a folder without read permission does (root reads everything)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = find_image_files([tmp_path / "study"])
    assert [p.name for p in found.images] == ["a.png"]
    assert any(p.name == "locked" and "folder not readable (Permission denied)" in why for p, why in found.passed_over)


def test_a_model_with_a_second_input_is_named_for_what_it_is(tmp_path, ct_small):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("gain", TensorProto.FLOAT, ["N", 1, "H", "W"])
    out = helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 1, "H", "W"])
    graph = helper.make_graph([helper.make_node("Add", ["lr", "gain"], ["sr"])], "two", [x, y], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="medsr.scale", value="2")
    onnx.save(model, str(tmp_path / "two.onnx"))
    res = _enhance(ct_small, "-o", tmp_path / "o.dcm", "--model", tmp_path / "two.onnx")
    assert res.exit_code == 2 and "has 2 inputs (lr, gain)" in res.output and "--tile" not in res.output


def test_an_output_over_the_budget_is_refused_before_any_work(tmp_path, ct_small, tiny_onnx, monkeypatch):
    """An 8-frame 4096^2 DICOM was enhanced for minutes and then could not be written (over DICOM's
    4 GiB); an x8 model on 4096^2 took 5.5 GB. Both are refused from the sizes, before the model
    runs (the limits are scaled down here so the test stays small)."""
    from medsr_edge.runtime import pipeline
    from medsr_edge.runtime.enhancer import Enhancer
    from medsr_edge.runtime.pipeline import Job, enhance_file

    def no_work(self, lr):
        raise AssertionError("the model ran before the budget check")

    monkeypatch.setattr(Enhancer, "enhance_array", no_work)
    ds = pydicom.dcmread(ct_small)
    one = ds.pixel_array
    ds.NumberOfFrames = 8
    ds.PixelData = np.repeat(one[None], 8, 0).tobytes()
    ds.save_as(tmp_path / "multi.dcm")
    monkeypatch.setattr(pipeline, "MAX_DICOM_PIXEL_BYTES", 8 * 512 * 512 * 2 - 1)  # one byte short for 8 x4 frames
    with pytest.raises(ImageWriteError, match="over DICOM's 4 GiB per file"):
        enhance_file(Enhancer(tiny_onnx), Job(tmp_path / "multi.dcm", tmp_path / "o.dcm"))
    monkeypatch.setattr(pipeline, "MAX_OUTPUT_FRAME_PIXELS", 512 * 512 - 1)
    with pytest.raises(ImageReadError, match="output budget"):
        enhance_file(Enhancer(tiny_onnx), Job(ct_small, tmp_path / "o2.dcm"))
    assert not list(tmp_path.glob("o*.dcm"))


@pytest.mark.parametrize("name, option, expected", [
    ("MR_small_jp2klossless.dcm", [], "1.2.840.10008.1.2.4.90"),  # JPEG 2000 lossless stays JPEG 2000 lossless
    ("MR_small_RLE.dcm", [], "1.2.840.10008.1.2.5"),
    ("MR_small_jpeg_ls_lossless.dcm", [], "1.2.840.10008.1.2.4.80"),
    ("MR_small.dcm", [], "1.2.840.10008.1.2.1"),  # uncompressed stays uncompressed
    ("MR_small_jp2klossless.dcm", ["--compress", "none"], "1.2.840.10008.1.2.1"),
    ("MR_small.dcm", ["--compress", "rle"], "1.2.840.10008.1.2.5"),
])
def test_output_compression_follows_the_source(tmp_path, tiny_onnx, name, option, expected):
    from pydicom.data import get_testdata_file

    res = _enhance(get_testdata_file(name), "-o", tmp_path / "o.dcm", "--model", tiny_onnx, *option)
    assert res.exit_code == 0, res.output
    out = pydicom.dcmread(tmp_path / "o.dcm")
    assert out.file_meta.TransferSyntaxUID == expected
    src = read_image(get_testdata_file(name))
    assert read_image(tmp_path / "o.dcm").frames.shape == (src.frames.shape[0], 256, 256)


def test_a_lossy_source_is_never_made_lossy_twice(tmp_path, tiny_onnx):
    from pydicom.data import get_testdata_file

    src = get_testdata_file("JPEG2000.dcm")  # JPEG 2000 (lossy allowed)
    assert pydicom.dcmread(src).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
    assert _enhance(src, "-o", tmp_path / "o.dcm", "--model", tiny_onnx).exit_code == 0
    assert pydicom.dcmread(tmp_path / "o.dcm").file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # lossless only


def test_an_unreadable_file_named_on_the_command_line_is_a_per_file_error(tmp_path, ct_small, tiny_onnx, monkeypatch):
    """As root every file is readable, so the permission error is injected where medsr-edge first
    opens an input (what a mode-000 file gives another user): one error line, the batch goes on."""
    import builtins

    import medsr_edge.runtime.io as io_mod

    locked = tmp_path / "locked.dcm"
    locked.write_bytes(ct_small.read_bytes())

    def guarded_open(path, *args, **kwargs):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(io_mod, "open", guarded_open, raising=False)
    res = _enhance(locked, ct_small, "-o", tmp_path / "out", "--model", tiny_onnx)
    assert res.exit_code == 1
    assert f"error: {locked}: permission denied; make the file readable" in res.output
    assert "Usage:" not in res.output and (tmp_path / "out" / "CT_small.dcm").is_file()


@pytest.mark.parametrize("keyword, value", [("SOPClassUID", "1.2.8\x19\xc9g\n}9"), ("PhotometricInterpretation", "RGB\nEVIL"),
                                            ("Modality", "M\nR")])
def test_crafted_header_text_never_breaks_a_one_line_message(tmp_path, ct_small, tiny_onnx, keyword, value):
    """Found by the slow fuzz: a mutated SOP Class UID went into the 'not an image' note verbatim."""
    ds = pydicom.dcmread(ct_small)
    if keyword == "SOPClassUID":
        del ds.PixelData
    setattr(ds, keyword, value)
    ds.save_as(tmp_path / "x.dcm")
    res = _enhance(tmp_path / "x.dcm", "-o", tmp_path / "o.dcm", "--model", tiny_onnx)
    for line in res.output.splitlines():
        assert "\x19" not in line and not line.startswith(("}9", "EVIL", "R ")), res.output
    assert all(line.startswith(("error:", "note:", str(tmp_path), "0 enhanced", "1 enhanced")) for line in res.output.splitlines() if line), res.output
