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
    import subprocess

    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return {ln.strip().split(" in (0x")[0] for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")}


needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy not installed (apt-get install dicom3tools)")
