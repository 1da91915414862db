"""Shared fixtures. Images come from the tests themselves (phantoms) or from files that installed
packages ship (pydicom's test files); ``../shared/data`` is used only when present."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def needs_shared():
    return pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent (real-data tests skipped)")


def phantom(size: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth synthetic 'anatomy' in [0, 1]: Shepp-Logan phantom plus gentle texture."""
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    base = resize(shepp_logan_phantom(), (size, size), anti_aliasing=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    tex = 0.05 * np.sin(2 * np.pi * (3 + seed) * xx) * np.cos(2 * np.pi * 4 * yy)
    return np.clip(base * 0.9 + tex + 0.05 + rng.normal(0, 0.003, base.shape), 0, 1).astype(np.float32)


@pytest.fixture
def phantom_dir(tmp_path) -> Path:
    """A data folder laid out like ../shared/data: <modality>/<source>/<split>/*.png (8- and 16-bit)."""
    from PIL import Image

    for modality, bits in (("mri", 8), ("ct", 16)):
        for split, n in (("train", 4), ("val", 2), ("test", 2)):
            d = tmp_path / "data" / modality / "synthetic" / split
            d.mkdir(parents=True)
            for i in range(n):
                img = phantom(96, seed=i + (10 if split != "train" else 0))
                if bits == 8:
                    Image.fromarray((img * 255).round().astype(np.uint8)).save(d / f"{i}.png")
                else:
                    Image.fromarray((img * 4000).round().astype(np.uint16)).save(d / f"{i}.png")
    return tmp_path / "data"


@pytest.fixture(scope="session")
def ct_small() -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm"))


@pytest.fixture(scope="session")
def mr_small() -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("MR_small.dcm"))


def dciodvfy_errors(path: Path) -> set[str]:
    """Error lines of dicom3tools' dciodvfy (the tool writes to stderr), without the tag an error
    was found in: an input's bad UID copied into the Source Image reference is the same error."""
    import re
    import subprocess

    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace")
    errors = set()
    for ln in (res.stdout + res.stderr).splitlines():
        if ln.startswith("Error"):
            ln = ln.strip().split(" in (0x")[0]
            # "(0x0008,0x1155) UI Referenced SOP Instance UID": where a bad value sits, not what is wrong with it
            errors.add(re.sub(r"\(0x[0-9a-f]{4},0x[0-9a-f]{4}\) [A-Z]{2} [A-Za-z ]+?  ", "", ln))
    return errors


def readable_copy(src: Path, tmp: Path) -> Path:
    """``src`` re-encoded by pydicom in explicit VR little endian, for validators that cannot read
    its transfer syntax (deflate, big endian): the baseline errors of the input itself."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.dcmread(src)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return src
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = tmp / f"readable-{src.name}"
    ds.save_as(out, enforce_file_format=True, little_endian=True, implicit_vr=False)
    return out


needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy not installed (apt-get install dicom3tools)")


def make_tiny_onnx(path: Path, scale: int = 4, seed: int = 0, feat: int = 8) -> Path:
    """A small fully convolutional x``scale`` SR network (Conv-ReLU-Conv-DepthToSpace plus the
    nearest-upsampled input), built with onnx.helper: no torch needed, medsr metadata included."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    s2 = scale * scale
    inits = [
        numpy_helper.from_array((rng.normal(0, 0.3, (feat, 1, 3, 3))).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(feat, np.float32), "b1"),
        numpy_helper.from_array((rng.normal(0, 0.02, (s2, feat, 3, 3))).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(s2, np.float32), "b2"),
        numpy_helper.from_array(np.array([1, s2, 1, 1], np.int64), "reps"),
    ]
    nodes = [
        helper.make_node("Conv", ["lr", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Tile", ["lr", "reps"], ["anchor"]),
        helper.make_node("Add", ["c2", "anchor"], ["sum"]),
        helper.make_node("DepthToSpace", ["sum"], ["sr"], blocksize=scale, mode="CRD"),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 1, "H", "W"])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 1, "sH", "sW"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for k, v in {"scale": str(scale), "in_channels": "1", "precision": "fp32", "model_name": "tiny-test",
                 "version": '"test"', "params": str(sum(int(np.prod(i.dims)) for i in inits))}.items():
        model.metadata_props.add(key="medsr." + k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    return make_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny-x4.onnx")
