"""Every real greyscale DICOM image at hand, written back as a derived x2 image and read by three
implementations: pydicom (values as written), SimpleITK/GDCM (same modality values) and dcmtk
(dcmdump parses it); dciodvfy (dicom3tools) finds no error the input did not already have.

Inputs: pydicom's and pydicom-data's test files (every one that medsr-edge accepts as an image),
plus ../shared/data/dicom and the first files of each ../shared CT source when present."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED, dciodvfy_errors, needs_dciodvfy, readable_copy

from medsr_edge.core.degradation import resize_bicubic
from medsr_edge.core.errors import MedsrError
from medsr_edge.runtime.dicom import write_derived_dicom
from medsr_edge.runtime.io import read_image


def _candidates() -> list[Path]:
    dirs = [Path(pydicom.__file__).parent / "data" / "test_files"]
    dirs += [Path(p) for p in glob.glob(str(Path(pydicom.__file__).parents[1] / "data_store" / "data"))]
    files = sorted({p for d in dirs for p in d.glob("*.dcm")}, key=lambda p: p.name)
    if SHARED.is_dir():
        files += sorted((SHARED / "dicom").glob("*.dcm"))
        for source in sorted((SHARED / "ct").glob("*")):
            files += sorted(source.rglob("*.dcm"))[:3]
    return files


def _images() -> list[Path]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in _candidates():
            try:
                image = read_image(f)
            except MedsrError:
                continue  # refusals (colour, SEG, dose, no pixels, corrupt) are tested elsewhere
            if image.frames.size <= 4_000_000:
                out.append(f)
    return out


IMAGES = _images()


def _derive(src, tmp_path):
    image = read_image(src)
    frames = np.stack([resize_bicubic(f.astype(np.float32), (f.shape[0] * 2, f.shape[1] * 2)) for f in image.frames])
    out = tmp_path / "sr.dcm"
    write_derived_dicom(out, image, frames, 2, "test", identity="test")
    return image, frames, out


IDS = [f"{p.parent.name}/{p.name}" for p in IMAGES]


@pytest.mark.parametrize("src", IMAGES, ids=IDS)
def test_derived_dicom_reads_back_identically(src, tmp_path):
    image, frames, out = _derive(src, tmp_path)
    back = read_image(out)
    lo, hi = image.value_range
    expected = np.clip(frames, lo, hi)
    # pydicom: the modality values we meant to write, to within the rounding of the stored integers
    slope = abs(float(image.meta["rescale"][0][0]))
    assert back.frames.shape == expected.shape and np.abs(back.frames - expected).max() <= slope / 2 + 1e-3  # float32 arithmetic on values of thousands
    assert back.dtype == image.dtype and back.invert == image.invert
    ds = pydicom.dcmread(out)
    assert (ds.BitsAllocated, ds.BitsStored) == (image.meta["bits_allocated"], image.meta["bits_stored"])
    sitk = pytest.importorskip("SimpleITK")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).astype(np.float64).reshape(back.frames.shape)
    if back.invert:  # GDCM shows MONOCHROME1 as MONOCHROME2: stored values mirrored in the BitsStored range
        arr = (2 ** ds.BitsStored - 1) - arr
    np.testing.assert_allclose(arr, back.frames, atol=1e-3 * max(1.0, slope))


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmdump not installed (apt-get install dcmtk)")
@pytest.mark.parametrize("src", IMAGES, ids=IDS)
def test_dcmtk_parses_every_derived_dicom(src, tmp_path):
    _, _, out = _derive(src, tmp_path)
    dump = subprocess.run(["dcmdump", "-q", str(out)], capture_output=True, text=True, errors="replace")
    assert dump.returncode == 0 and "E:" not in dump.stderr, dump.stderr[:500]


@needs_dciodvfy
@pytest.mark.parametrize("src", IMAGES, ids=IDS)
def test_dciodvfy_finds_no_new_error_in_a_derived_dicom(src, tmp_path):
    _, _, out = _derive(src, tmp_path)
    before = dciodvfy_errors(src)
    if any("read failed" in e for e in before):  # dciodvfy cannot parse the input's encoding
        before = dciodvfy_errors(readable_copy(src, tmp_path))
    new = dciodvfy_errors(out) - before
    assert not new, f"new dciodvfy errors {new}"


def test_the_reader_sweep_found_the_usual_suspects():
    """The sweep above must cover CT, MR and CR/DX, multi-frame and compressed inputs."""
    names = {p.name for p in IMAGES}
    assert {"CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "emri_small.dcm"} <= names
    assert len(IMAGES) >= 30 and os.path.exists(IMAGES[0])
