"""Read and write medical images as float arrays in their own units (HU for CT).

:func:`read_image` returns an :class:`Image`: ``frames`` is float64 of shape (F, H, W) holding the
modality values (after RescaleSlope/Intercept for DICOM), plus what a writer needs to give the
output the same type, bit depth and meaning. Writers are atomic: they write a temporary file in
the target folder and rename it, so a crash never leaves a partial output and never touches an
input.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ImageReadError, ImageWriteError, MedsrError, first_line
from ..core.files import atomic_write
from .dicom import read_dicom
from .image import MAX_TOTAL_PIXELS, Image, check_pixel_budget, quiet_logger, to_stored

MAX_FLOAT_VALUE = 1e300  # float pixels beyond this make max - min overflow float64
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
IMAGE_SUFFIXES = RASTER_SUFFIXES | {".dcm", ".dicom"}
def looks_like_dicom(path: Path) -> bool:
    """True when the file's content is DICOM, whatever its name (``IM0001``, ``.IMA``, UID names).

    A Part 10 file has ``DICM`` at byte 128; a raw dataset without that preamble (old scanners,
    some PACS exports) starts with a group 0x0002 or 0x0008 tag in little endian and is confirmed
    by a forced parse of its first elements."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        return "SOPClassUID" in ds or "Modality" in ds
    except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
        return False


def is_image_file(path: Path) -> bool:
    """True for files whose suffix says PNG/JPEG/TIFF/DICOM or whose content is DICOM."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return looks_like_dicom(path)


def is_dicomdir(path: Path) -> bool:
    """True for a DICOMDIR (the index of a DICOM medium, not an image)."""
    return path.name.upper() == "DICOMDIR"


@dataclass
class FoundFiles:
    """What a folder search found: image files to enhance, and what it passed over (and why)."""

    images: list[Path]
    passed_over: list[tuple[Path, str]]


def find_image_files(paths, recursive: bool = True) -> FoundFiles:
    """Expand files and folders into a sorted list of image files (folders searched recursively,
    DICOM recognised by content), and list what was passed over in folders: DICOMDIR indexes and
    files that are not images. A path named directly is always returned, so the caller reports
    it as a per-file error if it cannot be read."""
    images: list[Path] = []
    passed: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if not p.is_dir():
            images.append(p)
            continue
        found = _walk(p, passed) if recursive else p.glob("*")
        for f in sorted(found):
            try:
                if not f.is_file():
                    continue
            except OSError:
                continue
            if is_dicomdir(f):
                passed.append((f, "DICOMDIR (an index of the medium, not an image)"))
            elif is_image_file(f):
                images.append(f)
            else:
                passed.append((f, "not an image file"))
    return FoundFiles(images, passed)


def _walk(folder: Path, passed: list[tuple[Path, str]]) -> list[Path]:
    """Every entry under ``folder``; a sub-folder that cannot be listed is named in ``passed``
    (never skipped silently). Symbolic links to folders are not followed (no loops)."""
    out: list[Path] = []

    def unreadable(err: OSError) -> None:
        passed.append((Path(err.filename or folder), f"folder not readable ({err.strerror or err}); its files were not searched"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        base = Path(dirpath)
        out += [base / d for d in dirnames] + [base / f for f in filenames]
    return out


def iter_image_files(paths, recursive: bool = True) -> list[Path]:
    """The image files of :func:`find_image_files`."""
    return find_image_files(paths, recursive).images


def source_of(rel_parts: tuple[str, ...]) -> str:
    """The source of a file from its path parts under a data root: ``<modality>/<source>`` for
    ``<modality>/<source>/<split>/<file>``; the modality alone (or "all") when the file is higher up."""
    if len(rel_parts) > 2:
        return f"{rel_parts[0]}/{rel_parts[1]}"
    return rel_parts[0] if len(rel_parts) > 1 else "all"


@dataclass(frozen=True)
class DataFile:
    """One image of a data folder: its path, modality (first folder) and source (``<modality>/<source>``)."""

    path: Path
    modality: str
    source: str


def data_files(root: str | Path, split: str | None = None, *, sources: tuple[str, ...] | list[str] = (),
               exclude_sources: tuple[str, ...] | list[str] = ()) -> list[DataFile]:
    """Every image under a data folder laid out ``<modality>/<source>/<split>/`` (``../shared/data``).

    split: only files inside a folder of that name (None: all). sources: only these sources
    (``<modality>/<source>``, or a whole modality); exclude_sources: all but these. A name that
    matches no source is refused (:class:`MedsrError` listing the sources), so a typo never
    silently trains on everything. A single file is its own data set."""
    root = Path(root)
    found, folders = [], {}
    for f in iter_image_files([root]):
        rel = f.relative_to(root).parts if root.is_dir() else (f.name,)
        found.append(DataFile(f, rel[0] if len(rel) > 1 else "all", source_of(rel)))
        folders[f] = rel[:-1]
    known = sorted({d.source for d in found})
    for flag, names in (("--source", sources), ("--exclude-source", exclude_sources)):
        for name in names:
            if not any(_in_source(name, s) for s in known):
                raise MedsrError(f"{flag} {name}: no such source under {root}; the sources are: {', '.join(known) or 'none'}")
    out = []
    for d in found:
        if split and split not in folders[d.path]:
            continue
        if sources and not any(_in_source(n, d.source) for n in sources):
            continue
        if any(_in_source(n, d.source) for n in exclude_sources):
            continue
        out.append(d)
    return out


def _in_source(name: str, source: str) -> bool:
    """``name`` selects ``source``: the same ``<modality>/<source>``, or its modality."""
    name = name.strip("/")
    return source == name or source.startswith(name + "/")


def discover(root: str | Path, split: str | None = None, **selection) -> list[tuple[Path, str]]:
    """(file, modality) pairs of :func:`data_files` (same arguments)."""
    return [(d.path, d.modality) for d in data_files(root, split, **selection)]


def count_by_modality(modalities) -> dict[str, int]:
    """{modality: count} of an iterable of modality names, in first-seen order."""
    counts: dict[str, int] = {}
    for m in modalities:
        counts[m] = counts.get(m, 0) + 1
    return counts


def read_image(path: str | os.PathLike) -> Image:
    """Read PNG, JPEG, TIFF or DICOM into an :class:`Image`; raise ImageReadError with the fix."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "no such file or folder; check the path")
    if path.is_dir():
        raise ImageReadError(path, "is a folder; pass the files in it or the folder to `enhance`")
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError(path, "not a regular file (a FIFO, socket or device); copy the image to a file first")
        size = st.st_size
        with open(path, "rb") as fh:
            head = fh.read(132)
    except PermissionError:
        raise ImageReadError(path, "permission denied; make the file readable (chmod +r)") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read ({exc.strerror})") from None
    if size == 0:
        raise ImageReadError(path, "file is empty")
    suffix = path.suffix.lower()
    if head[128:132] == b"DICM" or suffix in (".dcm", ".dicom") or (
            suffix not in RASTER_SUFFIXES and looks_like_dicom(path)):
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


def _png_header(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR chunk, or (0, -1) if it has none."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return 0, -1
    return head[24], head[25]


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        if not pages:
            raise ImageReadError(path, "TIFF has no pages")
        total = 0
        for page in pages:
            shape = tuple(page.shape)
            rows, cols = (shape[0], shape[1]) if len(shape) >= 2 else (1, shape[0] if shape else 0)
            check_pixel_budget(path, 1, rows, cols)
            total += int(np.prod(shape)) if shape else 0
        if total > MAX_TOTAL_PIXELS:
            raise ImageReadError(path, f"{len(pages)} pages hold {total} pixels, above the memory budget of "
                                       f"{MAX_TOTAL_PIXELS // 1_000_000} MP per file; split the file first")
        return np.stack([_to_grey(p.asarray(), path) for p in pages])


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    PILImage.MAX_IMAGE_PIXELS = None  # our own budget, checked on the header below
    bits, colour = _png_header(path)
    if bits == 16 and colour in (2, 4, 6):
        kind = {2: "RGB", 4: "grey+alpha", 6: "RGBA"}[colour]
        raise ImageReadError(path, f"16-bit {kind} PNG: Pillow would reduce it to 8 bits; save it as 16-bit greyscale PNG or TIFF")
    with PILImage.open(path) as opened:
        check_pixel_budget(path, getattr(opened, "n_frames", 1), opened.height, opened.width)
        if getattr(opened, "n_frames", 1) > 1:
            raise ImageReadError(path, f"animated image with {opened.n_frames} frames; only still images are enhanced "
                                       "(save the frames as separate files or as a multi-page TIFF)")
        from PIL import ImageOps

        im = ImageOps.exif_transpose(opened)  # pixels upright as viewers show them; the output carries no EXIF
        if im.mode == "CMYK":
            raise ImageReadError(path, "colour (CMYK) image; medsr-edge enhances single-channel (grey) images")
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "I;16B":
            im = im.convert("I;16")
        arr = np.asarray(im)
        if im.mode == "I":  # 16-bit PNG opened as int32
            arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() < 65536 else arr
    return _to_grey(arr, path)[None]


def _read_raster(path: Path) -> Image:
    suffix = path.suffix.lower()
    fmt = {".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}.get(suffix, "png")
    try:
        with quiet_logger("tifffile"):
            arr = _read_tiff(path) if fmt == "tiff" else _read_pil(path)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode it; crop or split the image first") from None
    except Exception as exc:  # noqa: BLE001 - Pillow/tifffile raise many types on corrupt files
        kind = "TIFF" if fmt == "tiff" else fmt.upper()
        raise ImageReadError(path, f"not a readable {kind} image ({first_line(exc)}); truncated or corrupt?") from None
    if arr.size == 0:
        raise ImageReadError(path, "image has no pixels")
    dtype = arr.dtype
    if np.issubdtype(dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageReadError(path, "float image contains NaN or Inf values; clean it first")
        value_range = (float(arr.min()), float(arr.max()))
        if max(abs(value_range[0]), abs(value_range[1])) > MAX_FLOAT_VALUE:
            raise ImageReadError(path, f"float values reach {max(map(abs, value_range)):.3g}, beyond +-{MAX_FLOAT_VALUE:g} "
                                       "where the range itself overflows; rescale the image first")
        dtype = np.dtype(np.float64 if dtype == np.float64 else np.float32)
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


def write_raster(path: Path, frames, image: Image, *, replace: bool = True) -> None:
    """Write PNG (8/16-bit), JPEG (8-bit) or TIFF (8/16-bit signed or not, float; multi-page)
    keeping the input's bit depth and type, atomically (``replace=False``: never onto an existing file).

    ``frames``: float32 (F, H, W) or an iterable of float32 (H, W) frames in modality units; a
    multi-page TIFF is written page by page, so only one output frame is in memory at a time.
    Float32 frames are rounded in place (their memory is reused); pass copies to keep them."""
    from PIL import Image as PILImage

    path = Path(path)
    suffix = path.suffix.lower()
    dtype = image.dtype
    offset = None
    if image.format == "dicom" or (dtype.kind == "i" and suffix not in (".tif", ".tiff")):
        # DICOM/HU (or signed data into PNG/JPEG): unsigned with an offset keeps the precision.
        dtype = np.dtype(np.uint16) if image.value_range[1] - image.value_range[0] > 255 else np.dtype(np.uint8)
        offset = image.value_range[0]
        vr = (0.0, float(np.iinfo(dtype).max))
    else:
        vr = image.value_range
    if suffix not in (".tif", ".tiff", ".png", ".jpg", ".jpeg"):
        raise ImageWriteError(path, f"unknown output type {suffix!r}; use .png, .tif, .jpg or .dcm")
    if suffix in (".jpg", ".jpeg") and dtype != np.uint8:
        raise ImageWriteError(path, "JPEG holds 8 bits only; write .png or .tif to keep the bit depth")
    if suffix == ".png" and dtype.kind == "f":
        raise ImageWriteError(path, "PNG cannot hold float pixels; write .tif")
    if suffix != ".tif" and suffix != ".tiff" and len(image.frames) > 1:
        raise ImageWriteError(path, f"{len(image.frames)} frames cannot go into one {suffix} file; use .tif or .dcm")

    def stored(frame: np.ndarray) -> np.ndarray:
        if offset is not None:
            frame = np.subtract(frame, np.float32(offset), dtype=np.float32)
        return to_stored(frame, dtype, vr)

    def write(tmp: Path) -> None:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffWriter(tmp) as tw:
                for frame in frames:
                    tw.write(stored(frame), photometric="minisblack")
            return
        frame = stored(next(iter(frames)))
        if suffix == ".png":
            PILImage.fromarray(frame).save(tmp, format="PNG")
        else:
            PILImage.fromarray(frame).save(tmp, format="JPEG", quality=95)

    atomic_write(path, write, replace=replace)
