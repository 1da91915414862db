"""DICOM in, derived DICOM out (pydicom).

Reading applies the modality LUT (RescaleSlope/Intercept, also from enhanced multi-frame
functional groups) so CT comes out in HU. Writing makes a derived image of the same IOD: 16-bit
stored values, Rows/Columns x scale, pixel spacing / scale, new Series/SOP Instance UIDs,
ImageType DERIVED\\SECONDARY, a DerivationDescription and a Source Image Sequence.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import ImageReadError, ImageWriteError, MedsrError, NotAnImage, first_line, printable
from ..core.files import atomic_write
from .codestream import FAMILIES, JPEG_2000, JPEG_LS, RLE, check_frame
from .image import MAX_TOTAL_PIXELS, Image, check_pixel_budget, quiet_logger

DECODER_HINT = ("pip install 'medsr-edge[dicom]' (pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg) "
                "to decode {ts}")


def _rescale_params(ds) -> list[tuple[float, float]]:
    """(slope, intercept) per frame, from the top level or the functional groups."""
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    def value(item, keyword: str, default: float) -> float:
        v = item.get(keyword)
        return default if v is None or v == "" else float(v)  # an explicit 0 stays 0 (and is refused)

    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return [(value(ds, "RescaleSlope", 1.0), value(ds, "RescaleIntercept", 0.0))] * n

    def from_group(item):
        seq = item.get("PixelValueTransformationSequence")
        if seq:
            return value(seq[0], "RescaleSlope", 1.0), value(seq[0], "RescaleIntercept", 0.0)
        return None

    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and len(per_frame) == n and all(from_group(i) for i in per_frame):
        return [from_group(i) for i in per_frame]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and from_group(shared[0]):
        return [from_group(shared[0])] * n
    return [(1.0, 0.0)] * n


# SOP classes whose pixels are not an image to super-resolve, with the reason given to the user.
NOT_ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a segmentation (SEG) holds label masks",
    "1.2.840.10008.5.1.4.1.1.66.7": "a label map segmentation holds label masks",
    "1.2.840.10008.5.1.4.1.1.481.2": "an RT Dose holds a dose grid, not an image",
    "1.2.840.10008.5.1.4.1.1.30": "a parametric map holds computed values, not an image",
    "1.2.840.10008.1.3.10": "a DICOMDIR is an index of the medium, not an image",
}


def check_enhanceable(ds, path: Path) -> None:
    """Refuse, with the reason, what medsr-edge does not enhance: objects without pixels,
    segmentations, dose grids, float or colour pixels, and pixel formats other than one sample of
    8 or 16 bits (BitsAllocated 1, 12 or 32 would be written back wrongly)."""
    sop = str(ds.get("SOPClassUID", ""))
    if sop in NOT_ENHANCED_SOP_CLASSES:
        raise NotAnImage(path, f"not an image, not read: {NOT_ENHANCED_SOP_CLASSES[sop]}")
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise NotAnImage(path, "not an image, not read: float pixel data (a parametric map?); only integer images are enhanced")
    if "PixelData" not in ds:
        name = printable(getattr(ds.get("SOPClassUID"), "name", "") or sop or "no SOP class")
        if "Image" in name or not sop:  # an image object without its pixels was cut short
            raise ImageReadError(path, f"truncated: the {name} has no pixel data; get a complete copy of the file")
        raise NotAnImage(path, f"not an image, not read: {name}")
    samples = ds.get("SamplesPerPixel", 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if samples not in (1, None) or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(path, f"not enhanced: colour pixels ({printable(photometric, 16) or 'unknown'}, "
                                   f"{printable(samples, 8)} samples per pixel); "
                                   "only greyscale MONOCHROME1/2 with one sample per pixel is supported")
    bits = ds.get("BitsAllocated")
    if bits not in (8, 16):
        raise ImageReadError(path, f"not enhanced: BitsAllocated {bits}; only 8- and 16-bit pixels are supported")


def check_compressed_frames(path: Path, ds, ts: str, n_frames: int, rows: int, cols: int, bits_alloc: int) -> None:
    """Refuse encapsulated pixel data whose frames' own headers disagree with the DICOM header,
    before a decoder allocates what a frame declares (see :mod:`.codestream`)."""
    from pydicom.encaps import generate_frames

    family = FAMILIES[ts]
    segments = int(ds.get("SamplesPerPixel", 1) or 1) * (bits_alloc // 8)
    try:
        for i, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=n_frames)):
            problem = check_frame(family, frame, rows, cols, segments)
            if problem:
                where = f"frame {i + 1} of {n_frames}" if n_frames > 1 else "the compressed frame"
                raise ImageReadError(path, f"{where} does not match the DICOM header: {problem}; the file is "
                                           "inconsistent or crafted, re-export it from the source")
            if i + 1 >= n_frames:
                break
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises several types on broken encapsulation
        raise ImageReadError(path, f"encapsulated pixel data is malformed ({first_line(exc, typed=False)}); "
                                   "the file is truncated or corrupt") from None


def read_dicom(path: Path) -> Image:
    """Read a DICOM file; any malformation becomes an ImageReadError naming the file."""
    import warnings

    import pydicom  # noqa: F401 - imported before quiet_logger: its import-time setup would reset the level

    try:
        with warnings.catch_warnings(), quiet_logger("pydicom"):  # a failing decoder plugin logs a traceback
            warnings.simplefilter("ignore")  # pydicom warns on every odd value; errors are what matter
            return _read_dicom(path)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - a malformed header can fail anywhere in pydicom
        raise ImageReadError(path, f"malformed DICOM ({first_line(exc)})") from None


MAX_INFLATED_BYTES = MAX_TOTAL_PIXELS * 2 + (64 << 20)  # a deflated dataset: every pixel 16-bit, plus headers
DEFLATED = "1.2.840.10008.1.2.1.99"


def check_inflated_size(path: Path) -> None:
    """A deflated dataset is inflated whole by pydicom: count what it inflates to first, in
    1 MiB steps without keeping it, and refuse a stream that grows past the pixel budget."""
    import zlib

    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(path, "rb") as fh:
        try:
            read_preamble(fh, force=True)
            meta = _read_file_meta_info(fh)
        except Exception:  # noqa: BLE001 - no readable file meta: not deflated; dcmread says what is wrong
            return
        if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
            return
        inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while chunk := fh.read(1 << 16):
            try:
                data = inflater.decompress(chunk, 1 << 20)
                while data:
                    total += len(data)
                    if total > MAX_INFLATED_BYTES:
                        raise ImageReadError(path, f"deflated dataset inflates past {MAX_INFLATED_BYTES >> 20} MiB, above "
                                                   "the memory budget; a deflate bomb or a corrupt file")
                    data = inflater.decompress(inflater.unconsumed_tail, 1 << 20)
            except zlib.error:
                raise ImageReadError(path, "deflated dataset is corrupt; get a fresh copy of the file") from None


def _read_dicom(path: Path) -> Image:
    import pydicom
    from pydicom.errors import InvalidDicomError

    check_inflated_size(path)
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise ImageReadError(path, "not a DICOM file (no DICM preamble and no readable header)") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on truncated files
        raise ImageReadError(path, f"unreadable DICOM header ({type(exc).__name__}); file is truncated or corrupt") from None
    check_enhanceable(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits_alloc, bits_stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise ImageReadError(path, "DICOM lacks a valid Rows/Columns/BitsAllocated") from None
    if not 1 <= bits_stored <= bits_alloc:
        raise ImageReadError(path, f"BitsStored {bits_stored} does not fit BitsAllocated {bits_alloc}; header is corrupt")
    check_pixel_budget(path, n_frames, rows, cols)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None and str(ts) in FAMILIES:
        check_compressed_frames(path, ds, str(ts), n_frames, rows, cols, bits_alloc)
    if ts is not None and not ts.is_compressed and ts.is_private is False:
        expected = rows * cols * n_frames * bits_alloc // 8
        if len(ds.PixelData) < expected:
            raise ImageReadError(path, f"pixel data has {len(ds.PixelData)} bytes, header needs {expected}; file truncated?")
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        msg = str(exc)
        name = ts.name if ts is not None else "this transfer syntax"
        if "missing dependencies" in msg or "no pixel data decoders" in msg.lower() or isinstance(exc, NotImplementedError):
            raise ImageReadError(path, "no decoder for " + name + "; " + DECODER_HINT.format(ts=name)) from None
        if "raised by all available plugins" in msg:
            raise ImageReadError(path, f"compressed pixel data is corrupt: every installed {name} decoder failed "
                                       "on it; get a fresh copy of the file") from None
        raise ImageReadError(path, f"cannot decode pixels ({first_line(exc, typed=False)})") from None
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(path, f"cannot decode pixels ({first_line(exc)})") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ImageReadError(path, f"unsupported DICOM pixel layout {arr.shape}")
    params = _rescale_params(ds)
    if not all(np.isfinite(v) for sb in params for v in sb) or any(sl == 0 for sl, _ in params):
        raise ImageReadError(path, "RescaleSlope/RescaleIntercept is zero, NaN or infinite; fix the header")
    lo_stored = -(2 ** (bits_stored - 1)) if signed else 0
    hi_stored = 2 ** (bits_stored - 1) - 1 if signed else 2 ** bits_stored - 1
    for s, b in params:  # the writer maps float32 modality values back to stored ones
        reach = max(abs(lo_stored * s + b), abs(hi_stored * s + b))
        if reach > MAX_MODALITY_VALUE or abs(b) > MAX_INTERCEPT_STEPS * abs(s):
            raise ImageReadError(path, f"RescaleSlope {s:g} / RescaleIntercept {b:g} put values out of what medsr-edge "
                                       f"maps back exactly (|value| <= {MAX_MODALITY_VALUE:g}, |intercept| <= "
                                       f"{MAX_INTERCEPT_STEPS:g} x slope); fix the header")
    frames = np.stack([arr[i].astype(np.float64) * s + b for i, (s, b) in enumerate(params[: len(arr)])])
    padding = _padding_mask(ds, arr)
    s0, b0 = params[0]
    value_range = tuple(sorted((lo_stored * s0 + b0, hi_stored * s0 + b0)))
    ds_nopix = ds.copy()
    del ds_nopix.PixelData
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}[(bits_alloc, signed)]
    return Image(frames=frames, dtype=np.dtype(dtype),
                 value_range=value_range, source=path, format="dicom",
                 invert=photometric == "MONOCHROME1", dataset=ds_nopix,
                 meta={"modality": str(ds.get("Modality", "")), "bits_stored": bits_stored,
                       "bits_allocated": bits_alloc, "rescale": params,
                       "transfer_syntax": str(ts.name) if ts else "", "transfer_syntax_uid": str(ts) if ts else "",
                       **({"padding": padding, "padding_values": [float(ds.PixelPaddingValue) * sl + b for sl, b in params]}
                          if padding is not None else {})})


def _padding_mask(ds, stored: np.ndarray) -> np.ndarray | None:
    """(F, H, W) True where a pixel is padding (PixelPaddingValue, up to PixelPaddingRangeLimit:
    the area outside a CT's reconstruction circle), or None when the image has none. The values
    compared are the stored ones, before the rescale, as the standard defines them."""
    value = ds.get("PixelPaddingValue")
    if value is None or isinstance(value, (list, tuple, bytes)):
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if isinstance(limit, int):
        lo, hi = sorted((int(value), limit))
        mask = (stored >= lo) & (stored <= hi)
    else:
        mask = stored == int(value)
    return mask if mask.any() and not mask.all() else None


MAX_MODALITY_VALUE = 1e30  # float32 holds modality values up to 3.4e38
MAX_INTERCEPT_STEPS = 2.0 ** 22  # float32 (24-bit mantissa) still resolves one slope step next to the intercept
SPOOL_ROWS = 256  # output rows converted to stored values at a time
PURPOSE_SOURCE = ("121322", "DCM", "Source image for image processing operation")
DERIVATION_CODE = ("113085", "DCM", "Spatial resampling")
# MR Pulse Sequence module attributes that are present only when Image Type value 1 is ORIGINAL/MIXED.
MR_ORIGINAL_ONLY = ("BulkMotionCompensationTechnique", "CoverageOfKSpace", "EchoPlanarPulseSequence",
                    "EchoPulseSequence", "GeometryOfKSpaceTraversal", "MRAcquisitionType", "MultiPlanarExcitation",
                    "NumberOfKSpaceTrajectories", "OversamplingPhase", "PhaseContrast", "PulseSequenceName",
                    "RectilinearPhaseEncodeReordering", "SaturationRecovery", "SegmentedKSpaceTraversal",
                    "SpectrallySelectedSuppression", "SteadyStatePulseSequence", "TimeOfFlightContrast")
SCALED_SPACING = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")


def lo_safe(text: str) -> str:
    """Text fit for an LO/SH value: no backslash (the VM separator) and no control characters."""
    return re.sub(r"[\\\x00-\x1f\x7f]", "_", text)


def _code(ds_cls, value: tuple[str, str, str]):
    item = ds_cls()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value
    return item


def _scale_spacing(item, scale: int) -> None:
    for kw in SCALED_SPACING:
        if kw in item and item[kw].value:
            item[kw].value = [f"{float(v) / scale:.10g}" for v in item[kw].value]
    for seq_kw in ("PixelMeasuresSequence",):
        for sub in item.get(seq_kw, []) or []:
            _scale_spacing(sub, scale)


def _derive_frame_types(item) -> None:
    for kw in ("CTImageFrameTypeSequence", "MRImageFrameTypeSequence", "XRayImageFrameTypeSequence"):
        for sub in item.get(kw, []) or []:
            if "FrameType" in sub and len(sub.FrameType) >= 2:
                sub.FrameType = ["DERIVED", "PRIMARY", *list(sub.FrameType)[2:]]


def _vector(item, keyword: str, n: int) -> np.ndarray | None:
    """A numeric multi-value attribute as a float array of length ``n``, or None if absent/malformed."""
    try:
        v = np.array([float(x) for x in item[keyword].value], float)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return v if v.shape == (n,) and np.isfinite(v).all() else None


def _first(*items_keyword):
    for item, keyword in items_keyword:
        if item is not None and item.get(keyword):
            return item[keyword][0]
    return None


def _origin_shift(orientation: np.ndarray, spacing: np.ndarray, scale: int) -> np.ndarray:
    """Patient-space offset (mm) from the centre of the first input pixel to the centre of the
    first output pixel of a pixel-centre-aligned xS upsampling: -(1 - 1/S)/2 of a pixel along the
    row and the column direction. ``orientation`` is ImageOrientationPatient (row cosines, then
    column cosines), ``spacing`` is PixelSpacing (row spacing, then column spacing)."""
    row_dir, col_dir = orientation[:3], orientation[3:]
    half = (1.0 - 1.0 / scale) / 2.0
    return -half * (row_dir * spacing[1] + col_dir * spacing[0])


def _set_position(item, new: np.ndarray) -> None:
    item.ImagePositionPatient = [f"{v:.10g}"[:16] for v in new]


def shift_origin(ds, scale: int) -> None:
    """Move ImagePositionPatient (top level, and every per-frame PlanePositionSequence of an
    enhanced IOD) from the first input pixel centre to the first output pixel centre, so the
    derived grid lies exactly on the source anatomy. Must run before the spacing is divided."""
    ipp, iop, spacing = _vector(ds, "ImagePositionPatient", 3), _vector(ds, "ImageOrientationPatient", 6), _vector(ds, "PixelSpacing", 2)
    if ipp is not None and iop is not None and spacing is not None:
        _set_position(ds, ipp + _origin_shift(iop, spacing, scale))
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    groups = list(ds.get("PerFrameFunctionalGroupsSequence", []) or [])
    if shared is not None and shared.get("PlanePositionSequence"):
        groups.append(shared)
    for item in groups:
        pos = _first((item, "PlanePositionSequence"))
        orient = _first((item, "PlaneOrientationSequence"), (shared, "PlaneOrientationSequence"))
        measures = _first((item, "PixelMeasuresSequence"), (shared, "PixelMeasuresSequence"))
        if pos is None or orient is None or measures is None:
            continue
        ipp, iop, spacing = (_vector(pos, "ImagePositionPatient", 3), _vector(orient, "ImageOrientationPatient", 6),
                             _vector(measures, "PixelSpacing", 2))
        if ipp is not None and iop is not None and spacing is not None:
            _set_position(pos, ipp + _origin_shift(iop, spacing, scale))


def check_uid_root(root: str) -> str:
    """A site's UID root for derived UIDs: digits and dots, no leading zeros in a component, ending
    with a dot, at most 40 characters (room for the 24+ digits of the hash part)."""
    if not re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.", root or "") or len(root) > 40:
        raise MedsrError(f"--uid-root {root!r}: a UID root is digits and dots ending with a dot, no leading zeros, "
                         "at most 40 characters (e.g. 1.2.826.0.1.3680043.10.1234.)")
    return root


def content_time(created: _dt.datetime | None = None) -> _dt.datetime:
    """When a derived image was made: ``created`` if given, else the time in the environment
    variable SOURCE_DATE_EPOCH (seconds since 1970, UTC; the reproducible-builds convention, for
    byte-identical re-runs), else now (local time, as scanners write it)."""
    if created is not None:
        return created
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc).replace(tzinfo=None)
        except (ValueError, OverflowError, OSError):
            raise MedsrError(f"SOURCE_DATE_EPOCH={printable(epoch, 40)!r}: not a whole number of seconds since "
                             "1970; unset it or give e.g. 1767225600") from None
    return _dt.datetime.now()


def derived_dataset(image: Image, frames, scale: int, description: str, identity: str | None = None,
                    series_label: str = "medsr-edge", spool_dir: str | Path | None = None, uid_root: str | None = None,
                    created: _dt.datetime | None = None):
    """A new pydicom Dataset for the enhanced ``frames``: float (F, H*s, W*s) in modality units,
    or an iterable of (H*s, W*s) frames, consumed one at a time. Its PixelData is a temporary
    file in ``spool_dir`` (pydicom streams it when saving); close ``ds.PixelData`` when done.

    ``identity`` (default ``description``) names the model, its version and how it ran; the new
    Series/SOP Instance UIDs are derived from it and the source UIDs. ``series_label`` goes into
    the SeriesDescription ("... [SR x4 student-x4]"). ``uid_root``: the site's UID root for the
    derived UIDs (default pydicom's). ``created``: the ContentDate/Time (see :func:`content_time`);
    a batch passes one for all its files."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    identity = identity or description
    src = image.dataset
    ds = copy.deepcopy(src)  # a shallow copy would share (and so rewrite) the source's elements
    for elem in list(ds):  # overlays, icons and pixel statistics describe the old pixel grid
        if elem.tag.element == 0 or 0x6000 <= elem.tag.group <= 0x601E or elem.keyword in (
                "IconImageSequence", "SmallestImagePixelValue", "LargestImagePixelValue",
                "SmallestPixelValueInSeries", "LargestPixelValueInSeries", "PixelPaddingRangeLimit"):
            del ds[elem.tag]
    f, (h, w) = len(image.frames), (image.shape[0] * scale, image.shape[1] * scale)
    ds.Rows, ds.Columns = h, w
    shift_origin(ds, scale)
    _scale_spacing(ds, scale)
    enhanced_iod = "Enhanced" in str(getattr(src.SOPClassUID, "name", ""))
    enhanced = bool(ds.get("SharedFunctionalGroupsSequence"))  # derivation goes in the functional groups
    for group in list(ds.get("SharedFunctionalGroupsSequence", []) or []) + list(ds.get("PerFrameFunctionalGroupsSequence", []) or []):
        _scale_spacing(group, scale)
        _derive_frame_types(group)
    image_type = list(ds.get("ImageType", []) or [])
    ds.ImageType = ["DERIVED", "PRIMARY" if enhanced_iod else "SECONDARY", *image_type[2:]]
    now = content_time(created)
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    if "InstanceCreationDate" in ds:
        ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    # Deterministic UIDs: every slice of one source series lands in one derived series, whether
    # the slices are enhanced in one run or several, by one process or many; the same slice and
    # model give the same instance UID, so a re-run replaces rather than duplicates.
    src_series = str(src.get("SeriesInstanceUID", "") or "")
    src_sop = str(src.get("SOPInstanceUID", "") or "")
    prefix = uid_root or pydicom.uid.PYDICOM_ROOT_UID
    ds.SeriesInstanceUID = generate_uid(prefix, entropy_srcs=["medsr-edge series", src_series or str(image.source.parent), identity])
    ds.SOPInstanceUID = generate_uid(prefix, entropy_srcs=["medsr-edge instance", src_series, src_sop or str(image.source), identity])
    if ds.get("SeriesNumber") is not None:
        ds.SeriesNumber = (int(ds.SeriesNumber) + 1000) % 2 ** 31
    label = f"SR x{scale} {lo_safe(series_label)}".strip()
    original = str(ds.get("SeriesDescription", "") or "").strip()
    ds.SeriesDescription = (f"{original[:64 - len(label) - 3]} [{label}]" if original else f"DERIVED [{label}]")[:64]
    source = Dataset()
    source.ReferencedSOPClassUID = src.SOPClassUID
    source.ReferencedSOPInstanceUID = src.SOPInstanceUID
    source.PurposeOfReferenceCodeSequence = Sequence([_code(Dataset, PURPOSE_SOURCE)])
    if enhanced:
        deriv = Dataset()
        deriv.DerivationDescription = description[:1024]
        deriv.DerivationCodeSequence = Sequence([_code(Dataset, DERIVATION_CODE)])
        deriv.SourceImageSequence = Sequence([source])
        ds.SharedFunctionalGroupsSequence[0].DerivationImageSequence = Sequence([deriv])
        for item in ds.get("PerFrameFunctionalGroupsSequence", []) or []:
            if "DerivationImageSequence" in item:
                del item.DerivationImageSequence
        ref_sop = Dataset()
        ref_sop.ReferencedSOPClassUID = src.SOPClassUID
        ref_sop.ReferencedSOPInstanceUID = src.SOPInstanceUID
        ref_series = Dataset()
        ref_series.SeriesInstanceUID = src.SeriesInstanceUID
        ref_series.ReferencedSOPSequence = Sequence([ref_sop])
        evidence = Dataset()
        evidence.StudyInstanceUID = src.StudyInstanceUID
        evidence.ReferencedSeriesSequence = Sequence([ref_series])
        ds.SourceImageEvidenceSequence = Sequence([evidence])
    else:
        ds.DerivationDescription = description[:1024]
        ds.DerivationCodeSequence = Sequence([_code(Dataset, DERIVATION_CODE)])
        ds.SourceImageSequence = Sequence([source])
    if enhanced_iod:
        tags = {pydicom.datadict.tag_for_keyword(kw) for kw in MR_ORIGINAL_ONLY}
        ds.walk(lambda d, elem: d.__delitem__(elem.tag) if elem.tag in tags else None)
    # BurnedInAnnotation and every other source attribute are copied as they are (deepcopy above):
    # the writer asserts nothing the source did not (radiographs often carry burned-in text).
    # Pixels: the input's BitsAllocated/BitsStored/sign and rescale (so HU stay HU).
    bits_alloc = int(image.meta.get("bits_allocated", 16))
    bits_stored = int(image.meta.get("bits_stored", bits_alloc))
    signed = np.dtype(image.dtype).kind == "i"
    lo = -(2 ** (bits_stored - 1)) if signed else 0
    hi = 2 ** (bits_stored - 1) - 1 if signed else 2 ** bits_stored - 1
    stored_dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_alloc // 8}")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_alloc, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.SamplesPerPixel = 1
    if "NumberOfFrames" in ds or f > 1:
        ds.NumberOfFrames = f
    # Frame by frame into a spool file that pydicom streams into the output: peak memory is one
    # frame, whatever the number of frames.
    spool = tempfile.TemporaryFile(dir=spool_dir)
    rescale = image.meta.get("rescale", [(1.0, 0.0)] * f)
    count = 0
    for i, frame in enumerate(frames):
        if i >= f or frame.shape != (h, w):
            spool.close()
            raise ValueError(f"frame {i} has shape {frame.shape}, expected {f} frames of {(h, w)}")
        slope, intercept = rescale[i]
        for r in range(0, h, SPOOL_ROWS):  # in row blocks: no full-frame temporary
            values = np.asarray(frame[r:r + SPOOL_ROWS], np.float32) - np.float32(intercept)
            values /= np.float32(slope)
            np.rint(values, out=values)
            np.clip(values, lo, hi, out=values)
            spool.write(values.astype(stored_dtype).tobytes())
        count += 1
    if count != f:
        spool.close()
        raise ValueError(f"{count} frames enhanced, expected {f}")
    if (f * h * w * stored_dtype.itemsize) % 2:
        spool.write(b"\0")
    spool.seek(0)
    ds.PixelData = spool
    ds["PixelData"].VR = "OW" if bits_alloc > 8 else "OB"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDSR_EDGE_01"
    ds.file_meta = meta
    ds.set_original_encoding(False, True)
    return ds


COMPRESSION = {  # --compress name -> (transfer syntax keyword, pydicom encoding plugin, pip package)
    "rle": ("RLELossless", "pydicom", "pydicom"),
    "jpeg-ls": ("JPEGLSLossless", "pyjpegls", "pyjpegls"),
    "jpeg2000": ("JPEG2000Lossless", "pylibjpeg", "pylibjpeg pylibjpeg-openjpeg"),
}


# The lossless encoder of each compressed family, for outputs that follow their source (--compress auto).
# JPEG (baseline/extended/lossless) has no encoder here: such sources give uncompressed outputs.
FOLLOW_SOURCE = {RLE: "rle", JPEG_LS: "jpeg-ls", JPEG_2000: "jpeg2000"}
ENCODER_MODULE = {"rle": None, "jpeg-ls": "jpeg_ls", "jpeg2000": "openjpeg"}


def output_compression(image: Image, requested: str | None) -> str | None:
    """The compression of a derived DICOM: ``"none"`` -> uncompressed; a family name -> that
    family, lossless; ``None``/``"auto"`` -> the source's family, lossless (a lossy JPEG 2000 or
    JPEG-LS source gives a lossless output of its family, never a second lossy one), or
    uncompressed when the source is uncompressed, JPEG, or its encoder is not installed."""
    if requested not in (None, "auto"):
        return None if requested == "none" else requested
    family = FOLLOW_SOURCE.get(FAMILIES.get(str(image.meta.get("transfer_syntax_uid", "")), ""))
    if family is None:
        return None
    import importlib.util

    module = ENCODER_MODULE[family]
    return family if module is None or importlib.util.find_spec(module) is not None else None


MAX_COMPRESS_BYTES = 1 << 30  # encoders need the whole pixel data in memory


def _compress(ds, path: Path, compress: str) -> None:
    """Compress the pixel data losslessly in place and prove it: decoding gives back every value."""
    import pydicom.uid

    if compress not in COMPRESSION:
        raise ImageWriteError(path, f"unknown --compress {compress!r}; use {', '.join(COMPRESSION)}")
    keyword, plugin, package = COMPRESSION[compress]
    spool = ds.PixelData
    if spool.seek(0, 2) > MAX_COMPRESS_BYTES:
        raise ImageWriteError(path, f"output is over {MAX_COMPRESS_BYTES >> 20} MiB, too large to compress in memory; "
                                    "leave out --compress")
    spool.seek(0)
    ds.PixelData = spool.read()
    spool.close()
    original = ds.pixel_array.copy()
    try:
        ds.compress(getattr(pydicom.uid, keyword), encoding_plugin=plugin)
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        raise ImageWriteError(path, f"cannot encode {compress} ({first_line(exc, typed=False)}); "
                                    f"pip install {package}, or leave out --compress") from None
    if not np.array_equal(ds.pixel_array, original):
        raise ImageWriteError(path, f"{compress} round trip changed pixel values; nothing was written")


def write_derived_dicom(path: Path, image: Image, frames: np.ndarray, scale: int, description: str,
                        identity: str | None = None, series_label: str = "medsr-edge",
                        compress: str | None = None, replace: bool = True, uid_root: str | None = None,
                        created: _dt.datetime | None = None) -> None:
    """Write the derived DICOM atomically (never onto the input). ``compress``: None
    (uncompressed), "rle", "jpeg-ls" or "jpeg2000", all lossless and verified by decoding.
    ``replace=False``: an existing ``path`` is never replaced (see :func:`atomic_write`).
    Any failure (a malformed source header, an encoder, the disk) is an ImageWriteError that
    names the output and the cause, and leaves no file."""
    import warnings

    path = Path(path)
    if image.dataset is None:
        raise ImageWriteError(path, "DICOM output needs a DICOM input; write .png or .tif instead")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(path, f"cannot create the output folder ({exc.strerror}); choose a writable -o folder") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = derived_dataset(image, frames, scale, description, identity, series_label, spool_dir=path.parent,
                                 uid_root=uid_root, created=created)
            if compress:
                _compress(ds, path, compress)
    except MedsrError:  # a model error met while the frames are made, or our own write error
        raise
    except OSError as exc:  # the spool beside the output: disk full, read-only, permission denied
        raise ImageWriteError(path, f"cannot write ({exc.strerror or exc}); free disk space or choose a writable "
                                    "-o folder; nothing was written") from None
    except Exception as exc:  # noqa: BLE001 - a malformed source element can fail anywhere in pydicom
        raise ImageWriteError(path, f"cannot build the derived DICOM from {image.source.name} ({first_line(exc)}); "
                                    "the input header is malformed") from None

    def save(tmp: Path) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.save_as(tmp, enforce_file_format=True)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - pydicom raises ValueError/TypeError on bad values
            raise ImageWriteError(path, f"cannot encode the derived DICOM ({first_line(exc)}); nothing was written") from None

    try:
        atomic_write(path, save, replace=replace)
    finally:
        if hasattr(ds.PixelData, "close"):
            ds.PixelData.close()
