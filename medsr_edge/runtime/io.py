"""Read and write medical images as float arrays in their own units (HU for CT).

:func:`read_image` returns an :class:`Image`: ``frames`` is float64 of shape (F, H, W) holding the
modality values (after RescaleSlope/Intercept for DICOM), plus what a writer needs to give the
output the same type, bit depth and meaning. Writers are atomic: they write a temporary file in
the target folder and rename it, so a crash never leaves a partial output and never touches an
input.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageReadError, ImageWriteError

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom", ""}
IMAGE_SUFFIXES = RASTER_SUFFIXES | {".dcm", ".dicom"}
MAX_PIXELS = 20000 * 20000  # refuse headers that claim more (a 400 MPixel slice is not an image)


@dataclass
class Image:
    """A single-channel image or stack of frames.

    frames: float64 (F, H, W), modality units (HU for CT, stored grey levels otherwise).
    dtype: the numpy dtype the pixels were stored in (uint8, uint16, int16, float32).
    value_range: (min, max) representable in the stored form, in modality units; outputs clip to it.
    invert: True for DICOM MONOCHROME1 (high values display dark); the network sees it inverted.
    dataset: the pydicom Dataset (without pixel data decoded twice) for DICOM inputs, else None.
    """

    frames: np.ndarray
    dtype: np.dtype
    value_range: tuple[float, float]
    source: Path
    format: str
    invert: bool = False
    dataset: Any = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.frames.shape[1], self.frames.shape[2]


def is_image_file(path: Path) -> bool:
    """True for files whose name or first bytes say PNG/JPEG/TIFF/DICOM."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def iter_image_files(paths, recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image files (folders searched recursively).

    A path that does not exist is returned as is, so the caller reports it as a per-file error.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = p.rglob("*") if recursive else p.glob("*")
            out.extend(sorted(f for f in found if f.is_file() and is_image_file(f)))
        else:
            out.append(p)
    return out


def read_image(path: str | os.PathLike) -> Image:
    """Read PNG, JPEG, TIFF or DICOM into an :class:`Image`; raise ImageReadError with the fix."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file or folder; check the path")
    if path.is_dir():
        raise ImageReadError(path, "is a folder; pass the files in it or the folder to `enhance`")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(132)
    except PermissionError:
        raise ImageReadError(path, "permission denied; make the file readable (chmod +r)") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read ({exc.strerror})") from None
    if size == 0:
        raise ImageReadError(path, "file is empty")
    if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
        from .dicom import read_dicom  # pydicom only when needed

        return read_dicom(path)
    return _read_raster(path)


def _to_grey(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # grey+alpha or RGBA: drop alpha
        arr = arr[..., :-1]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        return arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 3:
        rgb = arr.astype(np.float64)
        if np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 2 and np.abs(rgb[..., 0] - rgb[..., 2]).max() <= 2:
            return np.round(rgb.mean(-1)).astype(arr.dtype)  # colour file of grey content
        raise ImageReadError(path, "colour image; medsr-edge enhances single-channel (grey) images")
    raise ImageReadError(path, f"unsupported pixel layout {arr.shape}")


def _read_raster(path: Path) -> Image:
    from PIL import Image as PILImage

    PILImage.MAX_IMAGE_PIXELS = MAX_PIXELS  # our own bound (checked below) instead of Pillow's 179 MP
    suffix = path.suffix.lower()
    fmt = {".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}.get(suffix, "png")
    try:
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) > 1:
                    arr = np.stack([_to_grey(p.asarray(), path) for p in tif.pages])
                else:
                    arr = _to_grey(tif.pages[0].asarray(), path)[None]
        else:
            with PILImage.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageReadError(path, f"header claims {im.width}x{im.height} pixels; too large")
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif im.mode == "I;16B":
                    im = im.convert("I;16")
                arr = np.asarray(im)
                if im.mode == "I":  # 16-bit PNG opened as int32
                    arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() < 65536 else arr
                arr = _to_grey(arr, path)[None]
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow/tifffile raise many types on corrupt files
        kind = "TIFF" if fmt == "tiff" else fmt.upper()
        raise ImageReadError(path, f"not a readable {kind} image ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:120] if str(exc) else 'truncated or corrupt'})") from None
    if arr.size == 0:
        raise ImageReadError(path, "image has no pixels")
    dtype = arr.dtype
    if np.issubdtype(dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageReadError(path, "float image contains NaN or Inf values; clean it first")
        value_range = (float(arr.min()), float(arr.max()))
        dtype = np.dtype(np.float32)
    elif dtype in (np.uint8, np.uint16, np.int16):
        info = np.iinfo(dtype)
        value_range = (float(info.min), float(info.max))
    elif dtype == np.bool_:
        arr, dtype = arr.astype(np.uint8) * 255, np.dtype(np.uint8)
        value_range = (0.0, 255.0)
    else:
        raise ImageReadError(path, f"unsupported pixel type {dtype}; convert to 8/16-bit or float32")
    return Image(frames=arr.astype(np.float64), dtype=np.dtype(dtype), value_range=value_range,
                 source=path, format=fmt)


# --------------------------------------------------------------------------- writing


def atomic_write(path: Path, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``; no partial file on any failure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise ImageWriteError(path, f"cannot write here ({exc.strerror}); choose a writable -o folder") from None
    try:
        write_fn(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ImageWriteError(path, f"write failed ({exc.strerror or exc}); nothing was written") from None
        raise


def to_stored(values: np.ndarray, dtype: np.dtype, value_range: tuple[float, float]) -> np.ndarray:
    """Round and clip modality values into ``dtype`` (float stays float). Works in place on a
    float32 ``values`` (one temporary at most), so large outputs are not copied several times."""
    lo, hi = value_range
    work = values if values.dtype == np.float32 else values.astype(np.float32)
    np.clip(work, lo, hi, out=work)
    if np.issubdtype(dtype, np.floating):
        return work.astype(dtype, copy=False)
    np.rint(work, out=work)
    return work.astype(dtype)


def write_raster(path: Path, frames: np.ndarray, image: Image) -> None:
    """Write PNG (8/16-bit), JPEG (8-bit) or TIFF (8/16-bit, float32; multi-page) keeping bit depth.

    A float32 ``frames`` is rounded in place (its memory is reused); pass a copy to keep it."""
    from PIL import Image as PILImage

    path = Path(path)
    suffix = path.suffix.lower()
    dtype = image.dtype
    if image.format == "dicom" or dtype == np.int16:
        # DICOM/HU or signed data into a raster file: 16-bit unsigned keeps the precision.
        dtype = np.dtype(np.uint16) if image.value_range[1] - image.value_range[0] > 255 else np.dtype(np.uint8)
        offset = image.value_range[0]
        frames = np.subtract(frames, np.float32(offset), dtype=np.float32)
        vr = (0.0, float(np.iinfo(dtype).max))
    else:
        vr = image.value_range
    data = to_stored(frames, dtype, vr)

    def write(tmp: Path) -> None:
        if suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, data if len(data) > 1 else data[0], photometric="minisblack")
            return
        if len(data) > 1:
            raise ImageWriteError(path, f"{len(data)} frames cannot go into one {suffix} file; use .tif or .dcm")
        frame = data[0]
        if suffix in (".jpg", ".jpeg"):
            if frame.dtype != np.uint8:
                raise ImageWriteError(path, "JPEG holds 8 bits only; write .png or .tif to keep 16 bits")
            PILImage.fromarray(frame).save(tmp, format="JPEG", quality=95)
        elif suffix == ".png":
            if np.issubdtype(frame.dtype, np.floating):
                raise ImageWriteError(path, "PNG cannot hold float pixels; write .tif")
            PILImage.fromarray(frame).save(tmp, format="PNG")
        else:
            raise ImageWriteError(path, f"unknown output type {suffix!r}; use .png, .tif, .jpg or .dcm")

    atomic_write(path, write)
