"""The one data path (issue 28): training, INT8 calibration and the bench read, normalise and degrade
an image the same way, through medsr_edge.dataset."""

from pathlib import Path

import numpy as np
import pytest

from medsr_edge.core.degradation import crop_to_multiple
from medsr_edge.dataset import ground_truths, make_lr

pytest.importorskip("scipy")


def test_training_calibration_and_bench_see_the_same_pixels(phantom_dir):
    from medsr_edge.distill.data import load_samples
    from medsr_edge.eval import benchmark as bm
    from medsr_edge.export.quantize import load_calibration_set

    scale = 4
    train = {s.path: s for s in load_samples(phantom_dir, "train")}
    bench = {b.path: b for b in bm.load_bench_images(phantom_dir, scale, split="train")}
    calib = load_calibration_set(phantom_dir, scale, max_images=16, split="train", holdout=0.5)
    assert train.keys() == bench.keys() and len(train) == 8
    assert all(s.step == pytest.approx(1 / 255) for s in train.values() if s.modality == "mri")  # 8-bit grid
    for path, b in bench.items():
        assert np.array_equal(b.hr, crop_to_multiple(train[path].hr, scale))
        assert np.array_equal(b.lr, make_lr(b.hr, scale, train[path].step))
    assert calib.check_hr  # the held-back images: bench's ground truth and LR for the same files
    for hr, lr, name in zip(calib.check_hr, calib.check_lr, calib.sources):
        b = next(v for k, v in bench.items() if str(k) == name)
        assert np.array_equal(hr, b.hr) and np.array_equal(lr, b.lr)


def test_filters_and_caps(phantom_dir, tmp_path):
    firsts = list(ground_truths(phantom_dir, "test", limit_per_modality=1))
    assert sorted(g.modality for g in firsts) == ["ct", "mri"]
    assert not list(ground_truths(phantom_dir, "test", min_side=97))  # the phantoms are 96 pixels
    assert {g.source for g in ground_truths(phantom_dir, "val", sources=["ct"])} == {"ct/synthetic"}
    bad = phantom_dir / "ct" / "synthetic" / "test" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    errors: list[str] = []
    got = list(ground_truths(phantom_dir, "test", sources=["ct"], errors=errors))
    assert len(got) == 2 and len(errors) == 1 and "broken.png" in errors[0]


def test_lossy_is_known_from_the_file(tmp_path, mr_small, phantom_dir):
    """JPEG files and DICOM marked lossy (attribute or transfer syntax) are lossy; PNG and
    uncompressed or JPEG 2000 lossless DICOM are not."""
    import pydicom
    from PIL import Image as PILImage

    from medsr_edge.runtime.io import read_image

    png = next((phantom_dir / "mri" / "synthetic" / "train").glob("*.png"))
    jpg = tmp_path / "a.jpg"
    PILImage.open(png).save(jpg, quality=70)
    assert read_image(jpg).lossy and not read_image(png).lossy
    assert not read_image(mr_small).lossy
    ds = pydicom.dcmread(mr_small)
    ds.LossyImageCompression = "01"
    marked = tmp_path / "marked.dcm"
    ds.save_as(marked)
    assert read_image(marked).lossy
    import io

    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    del ds.LossyImageCompression  # a JPEG baseline stream says lossy by its transfer syntax alone
    pixels = (ds.pixel_array / ds.pixel_array.max() * 255).astype(np.uint8)
    stream = io.BytesIO()
    PILImage.fromarray(pixels).save(stream, format="JPEG", quality=80)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([stream.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    baseline = tmp_path / "baseline.dcm"
    ds.save_as(baseline, enforce_file_format=True)
    assert read_image(baseline).lossy
    assert not read_image(Path(get_testdata_file("MR_small_jp2klossless.dcm"))).lossy


def test_lossy_downscale_cleans_only_lossy_ground_truth(phantom_dir):
    """--lossy-downscale N: the ground truth of JPEG images is their antialiased 1/N downscale
    (block edges averaged away); lossless images are untouched."""
    from conftest import phantom
    from PIL import Image as PILImage

    from medsr_edge.core.degradation import degrade
    from medsr_edge.distill.data import load_samples

    d = phantom_dir / "xray" / "jpeg" / "train"
    d.mkdir(parents=True)
    for i in range(2):
        PILImage.fromarray((phantom(192, seed=i) * 255).round().astype(np.uint8)).save(d / f"{i}.jpg", quality=60)
    as_stored = {s.path: s for s in load_samples(phantom_dir, "train")}
    cleaned = {s.path: s for s in load_samples(phantom_dir, "train", lossy_downscale=2)}
    assert as_stored.keys() == cleaned.keys() and len(cleaned) == 10
    for path, s in cleaned.items():
        if path.suffix == ".jpg":
            assert s.lossy and s.hr.shape == (96, 96)
            assert np.array_equal(s.hr, degrade(as_stored[path].hr, 2))
            assert s.step == as_stored[path].step  # LR still rounded to the file's 8-bit grid
        else:
            assert not s.lossy and np.array_equal(s.hr, as_stored[path].hr)
    with pytest.raises(ValueError, match="lossy_downscale"):
        load_samples(phantom_dir, "train", lossy_downscale=0)
