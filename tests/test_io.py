import numpy as np
import pytest
from conftest import SHARED, needs_shared, phantom
from PIL import Image as PILImage

from medsr_edge.core.degradation import degrade, upscale_bicubic
from medsr_edge.core.errors import ImageReadError, ImageWriteError
from medsr_edge.runtime.io import iter_image_files, read_image, write_raster
from medsr_edge.runtime.transforms import Normalizer


def test_png_8_and_16_bit_roundtrip(tmp_path):
    img8 = (phantom(40) * 255).round().astype(np.uint8)
    img16 = (phantom(40) * 60000).round().astype(np.uint16)
    PILImage.fromarray(img8).save(tmp_path / "a.png")
    PILImage.fromarray(img16).save(tmp_path / "b.png")
    a, b = read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png")
    assert a.dtype == np.uint8 and np.array_equal(a.frames[0], img8)
    assert b.dtype == np.uint16 and np.array_equal(b.frames[0], img16)
    write_raster(tmp_path / "b2.png", b.frames, b)
    back = read_image(tmp_path / "b2.png")
    assert back.dtype == np.uint16 and np.array_equal(back.frames[0], img16)


def test_colour_file_of_grey_content_becomes_single_channel(tmp_path):
    g = (phantom(32) * 255).astype(np.uint8)
    PILImage.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "rgb.jpg", quality=100)
    im = read_image(tmp_path / "rgb.jpg")
    assert im.frames.shape == (1, 32, 32)
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 255
    PILImage.fromarray(colour).save(tmp_path / "red.png")
    with pytest.raises(ImageReadError, match="colour image"):
        read_image(tmp_path / "red.png")


def test_multipage_and_float_tiff(tmp_path):
    import tifffile

    stack = (np.stack([phantom(24, s) for s in range(3)]) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    im = read_image(tmp_path / "s.tif")
    assert im.frames.shape == (3, 24, 24) and im.dtype == np.uint16
    bad = np.ones((8, 8), np.float32)
    bad[2, 2] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", bad)
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(tmp_path / "nan.tif")


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"hello world" * 10])
def test_bad_raster_files_raise_one_line_errors(tmp_path, content):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError) as exc:
        read_image(p)
    msg = str(exc.value)
    assert "bad.png" in msg and "\n" not in msg


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="is a folder"):
        read_image(tmp_path)


def test_iter_image_files_recursive(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.png", "a/b/y.dcm", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files([tmp_path])]
    assert found == ["a/b/y.dcm", "a/x.png"]


def test_write_raster_refuses_lossy_bit_depth(tmp_path):
    img16 = (phantom(16) * 60000).astype(np.uint16)
    PILImage.fromarray(img16).save(tmp_path / "b.png")
    im = read_image(tmp_path / "b.png")
    with pytest.raises(ImageWriteError, match="8 bits only"):
        write_raster(tmp_path / "b.jpg", im.frames, im)
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / "b.jpg").exists()


def test_normalizer_is_invertible():
    frames = np.array([[[-1000.0, 0.0], [500.0, 3000.0]]])
    n = Normalizer.for_image(frames, np.dtype(np.int16))
    y = n.forward(frames)
    assert y.min() == 0.0 and y.max() == 1.0
    assert np.allclose(n.inverse(y), frames, atol=0.5)
    inv = Normalizer.for_image(frames, np.dtype(np.uint16), invert=True)
    assert np.allclose(inv.inverse(inv.forward(frames)), frames, atol=0.5)
    assert Normalizer.for_image(np.zeros((1, 2, 2)), np.dtype(np.uint8)) == Normalizer(0.0, 255.0)


def test_degrade_is_antialiased_bicubic():
    hr = phantom(64)
    lr = degrade(hr, 4)
    assert lr.shape == (16, 16) and 0 <= lr.min() and lr.max() <= 1
    assert abs(lr.mean() - hr.mean()) < 0.01  # antialiasing keeps the mean
    assert upscale_bicubic(lr, 4).shape == (64, 64)
    with pytest.raises(ValueError):
        degrade(hr[:63], 4)


@needs_shared()
def test_real_dicom_files_read():
    files = sorted((SHARED / "dicom").glob("*.dcm"))
    assert len(files) >= 10
    by_name = {f.name: read_image(f) for f in files}
    ct = by_name["ct_693_UNCR_native.dcm"]
    assert ct.dtype == np.int16 and ct.frames.min() < -900  # HU: air below -900
    assert np.array_equal(ct.frames, by_name["ct_693_J2KR_jpeg2000.dcm"].frames)  # lossless J2K == native
    assert by_name["cr_RG3_UNCR_1760_native.dcm"].invert  # MONOCHROME1
    assert by_name["ct_enhanced_multiframe_eCT_Supplemental.dcm"].frames.shape[0] == 2
    assert by_name["mr_enhanced_multiframe_jpegls_emri_small.dcm"].frames.shape == (10, 64, 64)
    big = by_name["ct_abdomen_big_endian_anon_apct.dcm"]
    assert big.frames.shape == (1, 512, 512) and big.frames.min() >= -1024
    mr = by_name["mr_MR2_UNCR_1024_native.dcm"]
    assert np.array_equal(mr.frames, by_name["mr_MR2_J2KR_jpeg2000.dcm"].frames)


@needs_shared()
def test_real_raster_images_read():
    for pattern in ("mri/*/test/*.jpg", "xray/*/test/*.png"):
        f = next(SHARED.glob(pattern))
        im = read_image(f)
        assert im.dtype == np.uint8 and im.frames.ndim == 3


def test_degrade_rounds_to_the_given_value_grid():
    hr = phantom(64)
    levels = degrade(hr, 4, step=1 / 255) * 255
    assert np.abs(levels - np.round(levels)).max() < 1e-4
    assert np.abs(degrade(hr, 4, step=1 / 255) - degrade(hr, 4)).max() <= 0.5 / 255 + 1e-6
    unrounded = degrade(hr, 4) * 255
    assert np.abs(unrounded - np.round(unrounded)).max() > 0.1  # the default stays continuous


def test_grid_step_of_8_bit_integer_and_float_images():
    u8 = np.array([[0, 10], [20, 255]], np.uint8)
    assert Normalizer.for_image(u8[None], u8.dtype).grid_step(u8, u8.dtype) == pytest.approx(1 / 255)
    hu = np.array([[-1000.0, -998.0], [40.0, 1000.0]])  # stored int16 with rescale slope 2
    norm = Normalizer.for_image(hu[None], np.dtype(np.int16))
    assert norm.grid_step(hu, np.dtype(np.int16)) == pytest.approx(2 / 2000)
    assert norm.grid_step(hu, np.dtype(np.float32)) == 0.0
