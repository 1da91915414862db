import numpy as np
import pydicom
import pytest
from conftest import SHARED, dciodvfy_errors, needs_dciodvfy, needs_shared

from medsr_edge.core.degradation import resize_bicubic
from medsr_edge.core.errors import ImageReadError
from medsr_edge.runtime.dicom import write_derived_dicom
from medsr_edge.runtime.io import read_image


def _upscaled(image, scale=2):
    return np.stack([resize_bicubic(f.astype(np.float32), (f.shape[0] * scale, f.shape[1] * scale)) for f in image.frames])


def test_derived_ct_keeps_hu_and_updates_geometry(ct_small, tmp_path):
    src = pydicom.dcmread(ct_small)
    image = read_image(ct_small)
    frames = _upscaled(image, 2)
    out = tmp_path / "sr.dcm"
    write_derived_dicom(out, image, frames, 2, "Super-resolution x2 by medsr-edge, model test (onnxruntime, fp32)")
    ds = pydicom.dcmread(out)
    assert (ds.Rows, ds.Columns) == (src.Rows * 2, src.Columns * 2)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([float(v) / 2 for v in src.PixelSpacing])
    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.SOPClassUID == src.SOPClassUID
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert "medsr-edge" in ds.DerivationDescription
    assert ds.BitsAllocated == 16 and ds.PixelRepresentation == src.PixelRepresentation
    assert ds.RescaleIntercept == src.RescaleIntercept and ds.get("WindowCenter") == src.get("WindowCenter")
    hu_in, hu_out = image.frames, read_image(out).frames
    assert abs(hu_out.mean() - hu_in.mean()) < 2.0  # HU kept (bicubic upsampling keeps the mean)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_dicom_without_pixels_and_truncated(tmp_path, ct_small):
    ds = pydicom.dcmread(ct_small)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_image(tmp_path / "nopix.dcm")
    raw = ct_small.read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageReadError, match="trunc.dcm"):
        read_image(tmp_path / "trunc.dcm")


def test_rgb_dicom_refused():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("SC_rgb.dcm")
    if path is None:
        pytest.skip("pydicom-data's SC_rgb.dcm is not installed")
    with pytest.raises(ImageReadError, match=r"colour pixels \(RGB"):
        read_image(path)


@needs_dciodvfy
def test_derived_dicom_is_conformant_for_pydicom_files(ct_small, mr_small, tmp_path):
    for src in (ct_small, mr_small):
        image = read_image(src)
        out = tmp_path / f"{src.stem}-sr.dcm"
        write_derived_dicom(out, image, _upscaled(image), 2, "test")
        new = dciodvfy_errors(out) - dciodvfy_errors(src)
        assert not new, f"{src.name}: new dciodvfy errors {new}"


@needs_shared()
@needs_dciodvfy
def test_derived_dicom_is_conformant_for_real_files(tmp_path):
    for src in sorted((SHARED / "dicom").glob("*.dcm")):
        image = read_image(src)
        if max(image.shape) > 600:  # keep the test fast: the big CR/MR files are covered by reading
            continue
        out = tmp_path / f"{src.stem}-sr.dcm"
        write_derived_dicom(out, image, _upscaled(image), 2, "test")
        back = read_image(out)
        assert back.frames.shape == (image.frames.shape[0], image.shape[0] * 2, image.shape[1] * 2)
        assert back.invert == image.invert
        new = dciodvfy_errors(out) - dciodvfy_errors(src)
        assert not new, f"{src.name}: new dciodvfy errors {new}"
