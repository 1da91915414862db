"""DICOM as a PACS export holds it: series of UID-named files, several series in one folder,
enhanced multi-frame objects, non-image objects beside the images. Inputs are pydicom's test
files, re-labelled by the tests into series."""

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from conftest import dciodvfy_errors, needs_dciodvfy
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medsr_edge.cli.main import app
from medsr_edge.core.degradation import resize_bicubic
from medsr_edge.runtime.dicom import write_derived_dicom
from medsr_edge.runtime.io import find_image_files, read_image

runner = CliRunner()


def _series(folder, n, series_uid=None, series_number=7, names="IM{:04d}", start_z=0.0):
    """``n`` slices of CT_small.dcm as one series: UID-named or IM0001-named files, no suffix."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    for i in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber, ds.InstanceNumber = series_number, i + 1
        ds.ImagePositionPatient = [-100.0, -120.0, start_z + 2.5 * i]
        ds.save_as(folder / (ds.SOPInstanceUID if names == "uid" else names.format(i + 1)))
    return series_uid


def _enhance(*args):
    return runner.invoke(app, ["enhance", *map(str, args)])


def _read_all(folder):
    return [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]


def test_dicom_found_by_content_whatever_the_name(tmp_path):
    _series(tmp_path / "a", 2, names="uid")
    _series(tmp_path / "b", 2, names="IM{:04d}.IMA")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (tmp_path / "notes.txt").write_text("not an image")
    found = find_image_files([tmp_path])
    assert len(found.images) == 4
    passed = {p.name: why for p, why in found.passed_over}
    assert "DICOMDIR" in passed["DICOMDIR"] and passed["notes.txt"] == "not an image file"


def test_one_output_series_per_input_series_in_one_run_and_in_halves(tmp_path, tiny_onnx):
    src = tmp_path / "export"
    uid_a = _series(src / "s1", 3, names="uid", series_number=3)
    uid_b = _series(src / "s2", 3, names="uid", series_number=4)
    res = _enhance(src, "-o", tmp_path / "one", "--model", tiny_onnx)
    assert res.exit_code == 0, res.output
    out = _read_all(tmp_path / "one")
    assert len(out) == 6
    series = {}
    for ds in out:
        series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    assert len(series) == 2
    for members in series.values():
        src_uids = {m.SourceImageSequence[0].ReferencedSOPInstanceUID for m in members}
        assert len(src_uids) == 3
        assert sorted(int(m.InstanceNumber) for m in members) == [1, 2, 3]
        assert len({m.SeriesNumber for m in members}) == 1 and len({m.SOPInstanceUID for m in members}) == 3
        assert "tiny-test" in members[0].SeriesDescription and "SR x4" in members[0].SeriesDescription
    assert not {uid_a, uid_b} & set(series)
    # The same slices in two separate runs (two processes' worth of state) land in the same series.
    halves = tmp_path / "halves"
    for i, files in enumerate((sorted((src / "s1").iterdir())[:2], sorted((src / "s1").iterdir())[2:])):
        part = tmp_path / f"part{i}"
        part.mkdir()
        for f in files:
            shutil.copy(f, part / f.name)
        assert _enhance(part, "-o", halves / f"run{i}", "--model", tiny_onnx).exit_code == 0
    half_series = {ds.SeriesInstanceUID for ds in _read_all(halves)}
    one_run = {ds.SeriesInstanceUID for ds in out if ds.SeriesNumber == 1003}
    assert half_series == one_run


def test_two_patients_with_the_same_file_names_are_both_enhanced(tmp_path, tiny_onnx):
    _series(tmp_path / "patientA", 2, names="IM{:04d}.dcm")
    _series(tmp_path / "patientB", 2, names="IM{:04d}.dcm")
    res = _enhance(tmp_path / "patientA", tmp_path / "patientB", "-o", tmp_path / "out", "--model", tiny_onnx)
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.dcm")) == [
        "patientA/IM0001.dcm", "patientA/IM0002.dcm", "patientB/IM0001.dcm", "patientB/IM0002.dcm"]


def test_colliding_outputs_are_refused_before_anything_runs(tmp_path, tiny_onnx):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.PNG")
    res = _enhance(folder, "-o", tmp_path / "out", "--model", tiny_onnx)
    assert res.exit_code == 2 and "both map to" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def _pixel_centres(ds, rows, cols):
    """Patient coordinates (mm) of the centres of pixels (row, col) from a dataset's geometry."""
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return ipp + np.outer(cols, iop[:3] * dc) + np.outer(rows, iop[3:] * dr)


@pytest.mark.parametrize("scale", [2, 4])
def test_output_grid_lies_on_the_input_anatomy(tmp_path, scale):
    """The centre of output pixel (r', c') is input pixel ((r' + 0.5)/S - 0.5, (c' + 0.5)/S - 0.5),
    in patient coordinates, for an oblique orientation with anisotropic pixels."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.ImageOrientationPatient = [0.8, 0.6, 0.0, 0.0, 0.0, -1.0]
    ds.PixelSpacing = [0.7, 1.1]
    path = tmp_path / "oblique.dcm"
    ds.save_as(path)
    image = read_image(path)
    frames = np.repeat(np.repeat(image.frames, scale, 1), scale, 2)
    write_derived_dicom(tmp_path / "sr.dcm", image, frames, scale, "test")
    out = pydicom.dcmread(tmp_path / "sr.dcm")
    rows, cols = np.array([0, 5, 37, 255]), np.array([0, 9, 100, 3])
    got = _pixel_centres(out, rows, cols)
    want = _pixel_centres(ds, (rows + 0.5) / scale - 0.5, (cols + 0.5) / scale - 0.5)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_simpleitk_sees_the_same_anatomy_in_input_and_output(tmp_path):
    """A bright blob: its centroid in patient coordinates is the same in the input and in the x4
    output when SimpleITK reads both (a second reader of the geometry we write)."""
    sitk = pytest.importorskip("SimpleITK")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    yy, xx = np.mgrid[0:128, 0:128]
    blob = 1000 * np.exp(-((yy - 40.3) ** 2 + (xx - 77.6) ** 2) / (2 * 4.0 ** 2))
    ds.PixelData = (blob - float(ds.RescaleIntercept)).round().astype(np.int16).tobytes()
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # sagittal
    path = tmp_path / "blob.dcm"
    ds.save_as(path)
    image = read_image(path)
    frames = np.stack([resize_bicubic(f.astype(np.float32), (512, 512)) for f in image.frames])
    write_derived_dicom(tmp_path / "sr.dcm", image, frames, 4, "test")

    def centroid(p):
        img = sitk.ReadImage(str(p))
        arr = sitk.GetArrayFromImage(img)[0].astype(float)
        arr = np.where(arr > arr.max() * 0.05, arr, 0)
        r, c = np.mgrid[0:arr.shape[0], 0:arr.shape[1]]
        idx = ((c * arr).sum() / arr.sum(), (r * arr).sum() / arr.sum(), 0.0)
        return np.array(img.TransformContinuousIndexToPhysicalPoint(idx))

    np.testing.assert_allclose(centroid(tmp_path / "sr.dcm"), centroid(path), atol=0.02)


def test_enhanced_multiframe_positions_shift_per_frame(tmp_path):
    path = get_testdata_file("eCT_Supplemental.dcm")
    src = pydicom.dcmread(path)
    image = read_image(path)
    write_derived_dicom(tmp_path / "sr.dcm", image, np.repeat(np.repeat(image.frames, 2, 1), 2, 2), 2, "test")
    out = pydicom.dcmread(tmp_path / "sr.dcm")
    shared = src.SharedFunctionalGroupsSequence[0]
    iop = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    dr, dc = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    for a, b in zip(src.PerFrameFunctionalGroupsSequence, out.PerFrameFunctionalGroupsSequence):
        p_in = np.array([float(v) for v in a.PlanePositionSequence[0].ImagePositionPatient])
        p_out = np.array([float(v) for v in b.PlanePositionSequence[0].ImagePositionPatient])
        np.testing.assert_allclose(p_out - p_in, -0.25 * (iop[:3] * dc + iop[3:] * dr), atol=1e-6)


@pytest.mark.parametrize("name, reason", [
    ("rtdose.dcm", "dose grid"),
    ("liver.dcm", "segmentation"),
    ("US1_UNCR.dcm", "colour pixels"),
    ("OBXXXX1A.dcm", "colour pixels"),
])
def test_non_image_objects_are_refused_with_the_reason(tmp_path, tiny_onnx, name, reason):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom-data's {name} is not installed")
    res = _enhance(path, "-o", tmp_path / "out.dcm", "--model", tiny_onnx)
    assert res.exit_code == 1 and reason in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out.dcm").exists()


def test_rgb_pixels_labelled_monochrome_are_refused(tmp_path, tiny_onnx):
    ds = pydicom.dcmread(get_testdata_file("SC_rgb.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(tmp_path / "liar.dcm")
    res = _enhance(tmp_path / "liar.dcm", "--model", tiny_onnx)
    assert res.exit_code == 1 and "3 samples per pixel" in res.output


def _eight_bit(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    arr = ds.pixel_array.astype(float)
    ds.PixelData = ((arr - arr.min()) / (arr.max() - arr.min()) * 255).round().astype(np.uint8).tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    for kw in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter", "WindowWidth"):
        if kw in ds:
            del ds[kw]
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "eight.dcm")
    return tmp_path / "eight.dcm"


@needs_dciodvfy
def test_eight_bit_stays_eight_bit(tmp_path, tiny_onnx):
    path = _eight_bit(tmp_path)
    res = _enhance(path, "-o", tmp_path / "out.dcm", "--model", tiny_onnx)
    assert res.exit_code == 0, res.output
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert (out.BitsAllocated, out.BitsStored, out.pixel_array.dtype) == (8, 8, np.uint8)
    assert out.pixel_array.shape == (512, 512)
    assert not dciodvfy_errors(tmp_path / "out.dcm") - dciodvfy_errors(path)


@pytest.mark.parametrize("compress, syntax", [("rle", "1.2.840.10008.1.2.5"), ("jpeg-ls", "1.2.840.10008.1.2.4.80"),
                                              ("jpeg2000", "1.2.840.10008.1.2.4.90")])
def test_lossless_compressed_output_decodes_to_the_same_pixels(tmp_path, tiny_onnx, ct_small, compress, syntax):
    assert _enhance(ct_small, "-o", tmp_path / "plain.dcm", "--model", tiny_onnx).exit_code == 0
    res = _enhance(ct_small, "-o", tmp_path / "packed.dcm", "--model", tiny_onnx, "--compress", compress)
    assert res.exit_code == 0, res.output
    plain, packed = pydicom.dcmread(tmp_path / "plain.dcm"), pydicom.dcmread(tmp_path / "packed.dcm")
    assert packed.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(packed.pixel_array, plain.pixel_array)
    assert (tmp_path / "packed.dcm").stat().st_size < (tmp_path / "plain.dcm").stat().st_size


@pytest.mark.skipif(shutil.which("dcmdump") is None or shutil.which("dcm2pnm") is None,
                    reason="dcmtk not installed (apt-get install dcmtk)")
def test_dcmtk_reads_what_we_write(tmp_path, tiny_onnx, ct_small):
    """dcmtk, a second DICOM implementation, parses the output and decodes its pixels to the
    values pydicom reads."""
    assert _enhance(ct_small, "-o", tmp_path / "sr.dcm", "--model", tiny_onnx, "--compress", "rle").exit_code == 0
    dump = subprocess.run(["dcmdump", "+E", str(tmp_path / "sr.dcm")], capture_output=True, text=True)
    assert dump.returncode == 0 and "(0028,0010) US 512" in dump.stdout, dump.stderr
    subprocess.run(["dcm2pnm", "--write-16-bit-pnm", "--no-windowing", str(tmp_path / "sr.dcm"), str(tmp_path / "sr.pgm")],
                   check=True, capture_output=True)
    tokens = (tmp_path / "sr.pgm").read_text().split()  # plain (ASCII) PGM: P2 W H MAX values...
    assert tokens[:3] == ["P2", "512", "512"]
    pgm = np.array(tokens[4:], np.int64).reshape(512, 512)
    stored = pydicom.dcmread(tmp_path / "sr.dcm").pixel_array.astype(np.int64)
    # dcm2pnm maps the stored range linearly onto 0..65535 without windowing: same ordering, same image
    assert np.corrcoef(pgm.ravel(), stored.ravel())[0, 1] > 0.9999
