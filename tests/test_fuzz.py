"""Property-based fuzzing of the readers: any bytes under an image name give an Image or an
ImageReadError with a one-line message, never another exception (300 generated files per test)."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsr_edge.core.errors import ImageReadError
from medsr_edge.runtime.io import read_image

pytestmark = pytest.mark.filterwarnings("ignore")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(path):
    try:
        image = read_image(path)
    except ImageReadError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert image.frames.ndim == 3 and np.isfinite(image.frames).all()


def _valid_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def valid_dicom() -> bytes:
    from pydicom.data import get_testdata_file

    with open(get_testdata_file("CT_small.dcm"), "rb") as fh:
        return fh.read()


@SETTINGS
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".png", ".dcm", ".tif", ".jpg", ""]))
def test_random_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"f{suffix}"
    path.write_bytes(data)
    _check(path)


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=4000), flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=8))
def test_mutated_valid_png(tmp_path_factory, cut, flips):
    raw = bytearray(_valid_png())
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    path = tmp_path_factory.mktemp("fuzz") / "m.png"
    path.write_bytes(bytes(raw[: max(cut, 1)]))
    _check(path)


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=40000), flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8))
def test_mutated_valid_dicom(tmp_path_factory, valid_dicom, cut, flips):
    raw = bytearray(valid_dicom)
    for pos, val in flips:  # corrupt the header region, where the reader's decisions are made
        if pos < len(raw):
            raw[pos] = val
    path = tmp_path_factory.mktemp("fuzz") / "m.dcm"
    path.write_bytes(bytes(raw[: max(cut, 1)]))
    _check(path)
