"""DICOM in, derived DICOM out (pydicom).

Reading applies the modality LUT (RescaleSlope/Intercept, also from enhanced multi-frame
functional groups) so CT comes out in HU. Writing makes a derived image of the same IOD: 16-bit
stored values, Rows/Columns x scale, pixel spacing / scale, new Series/SOP Instance UIDs,
ImageType DERIVED\\SECONDARY, a DerivationDescription and a Source Image Sequence.
"""

from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path

import numpy as np

from .errors import ImageReadError, ImageWriteError
from .io import MAX_PIXELS, Image, atomic_write

DECODER_HINT = ("pip install 'medsr-edge[dicom]' (pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg) "
                "to decode {ts}")


def _rescale_params(ds) -> list[tuple[float, float]]:
    """(slope, intercept) per frame, from the top level or the functional groups."""
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return [(float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0))] * n

    def from_group(item):
        seq = item.get("PixelValueTransformationSequence")
        if seq:
            return float(seq[0].get("RescaleSlope", 1) or 1), float(seq[0].get("RescaleIntercept", 0) or 0)
        return None

    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and len(per_frame) == n and all(from_group(i) for i in per_frame):
        return [from_group(i) for i in per_frame]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and from_group(shared[0]):
        return [from_group(shared[0])] * n
    return [(1.0, 0.0)] * n


def read_dicom(path: Path) -> Image:
    """Read a DICOM file; any malformation becomes an ImageReadError naming the file."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on every odd value; errors are what matter
            return _read_dicom(path)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed header can fail anywhere in pydicom
        detail = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise ImageReadError(path, f"malformed DICOM ({type(exc).__name__}: {detail})") from None


def _read_dicom(path: Path) -> Image:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise ImageReadError(path, "not a DICOM file (no DICM preamble and no readable header)") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on truncated files
        raise ImageReadError(path, f"unreadable DICOM header ({type(exc).__name__}); file is truncated or corrupt") from None
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM has no pixel data (a report, SR or presentation state?)")
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(path, f"{photometric or 'unknown'} DICOM; only greyscale (MONOCHROME1/2) is supported")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits_alloc, bits_stored = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise ImageReadError(path, "DICOM lacks a valid Rows/Columns/BitsAllocated") from None
    if rows * cols * n_frames > MAX_PIXELS or rows <= 0 or cols <= 0:
        raise ImageReadError(path, f"DICOM header claims {n_frames}x{rows}x{cols} pixels; refusing")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None and not ts.is_compressed and ts.is_private is False:
        expected = rows * cols * n_frames * bits_alloc // 8
        if len(ds.PixelData) < expected:
            raise ImageReadError(path, f"pixel data has {len(ds.PixelData)} bytes, header needs {expected}; file truncated?")
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        msg = str(exc)
        name = ts.name if ts is not None else "this transfer syntax"
        if "plugin" in msg.lower() or "decoder" in msg.lower() or "missing" in msg.lower() or "available" in msg.lower():
            raise ImageReadError(path, "no decoder for " + name + "; " + DECODER_HINT.format(ts=name)) from None
        raise ImageReadError(path, f"cannot decode pixels ({msg.splitlines()[0][:120]})") from None
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(path, f"cannot decode pixels ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ImageReadError(path, f"unsupported DICOM pixel layout {arr.shape}")
    params = _rescale_params(ds)
    frames = np.stack([arr[i].astype(np.float64) * s + b for i, (s, b) in enumerate(params[: len(arr)])])
    lo_stored = -(2 ** (bits_stored - 1)) if signed else 0
    hi_stored = 2 ** (bits_stored - 1) - 1 if signed else 2 ** bits_stored - 1
    s0, b0 = params[0]
    value_range = tuple(sorted((lo_stored * s0 + b0, hi_stored * s0 + b0)))
    ds_nopix = ds.copy()
    del ds_nopix.PixelData
    return Image(frames=frames, dtype=np.dtype(np.int16 if signed else np.uint16),
                 value_range=value_range, source=path, format="dicom",
                 invert=photometric == "MONOCHROME1", dataset=ds_nopix,
                 meta={"modality": str(ds.get("Modality", "")), "bits_stored": bits_stored,
                       "rescale": params, "transfer_syntax": str(ts.name) if ts else ""})


PURPOSE_SOURCE = ("121322", "DCM", "Source image for image processing operation")
DERIVATION_CODE = ("113085", "DCM", "Spatial resampling")
# MR Pulse Sequence module attributes that are present only when Image Type value 1 is ORIGINAL/MIXED.
MR_ORIGINAL_ONLY = ("BulkMotionCompensationTechnique", "CoverageOfKSpace", "EchoPlanarPulseSequence",
                    "EchoPulseSequence", "GeometryOfKSpaceTraversal", "MRAcquisitionType", "MultiPlanarExcitation",
                    "NumberOfKSpaceTrajectories", "OversamplingPhase", "PhaseContrast", "PulseSequenceName",
                    "RectilinearPhaseEncodeReordering", "SaturationRecovery", "SegmentedKSpaceTraversal",
                    "SpectrallySelectedSuppression", "SteadyStatePulseSequence", "TimeOfFlightContrast")
SCALED_SPACING = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")


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


def derived_dataset(image: Image, frames: np.ndarray, scale: int, description: str):
    """A new pydicom Dataset for the enhanced ``frames`` (modality units, (F, H*s, W*s))."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    src = image.dataset
    ds = copy.deepcopy(src)  # a shallow copy would share (and so rewrite) the source's elements
    for elem in list(ds):  # overlays, icons and pixel statistics describe the old pixel grid
        if elem.tag.element == 0 or 0x6000 <= elem.tag.group <= 0x601E or elem.keyword in (
                "IconImageSequence", "SmallestImagePixelValue", "LargestImagePixelValue",
                "SmallestPixelValueInSeries", "LargestPixelValueInSeries", "PixelPaddingRangeLimit"):
            del ds[elem.tag]
    f, h, w = frames.shape
    ds.Rows, ds.Columns = h, w
    _scale_spacing(ds, scale)
    enhanced_iod = "Enhanced" in str(getattr(src.SOPClassUID, "name", ""))
    enhanced = bool(ds.get("SharedFunctionalGroupsSequence"))  # derivation goes in the functional groups
    for group in list(ds.get("SharedFunctionalGroupsSequence", []) or []) + list(ds.get("PerFrameFunctionalGroupsSequence", []) or []):
        _scale_spacing(group, scale)
        _derive_frame_types(group)
    image_type = list(ds.get("ImageType", []) or [])
    ds.ImageType = ["DERIVED", "PRIMARY" if enhanced_iod else "SECONDARY", *image_type[2:]]
    now = _dt.datetime.now()
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    if "InstanceCreationDate" in ds:
        ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    if "SeriesNumber" in ds and ds.SeriesNumber is not None:
        ds.SeriesNumber = int(ds.SeriesNumber) + 1000
    ds.SeriesDescription = (str(ds.get("SeriesDescription", "")) + f" SR x{scale}").strip()[:64]
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
    ds.BurnedInAnnotation = ds.get("BurnedInAnnotation", "NO") or "NO"
    # Pixels: 16-bit stored values, same BitsStored/sign, same rescale (HU kept).
    bits_stored = int(image.meta.get("bits_stored", 16))
    signed = image.dtype == np.int16
    lo = -(2 ** (bits_stored - 1)) if signed else 0
    hi = 2 ** (bits_stored - 1) - 1 if signed else 2 ** bits_stored - 1
    stored = np.empty((f, h, w), np.int16 if signed else np.uint16)
    for i, (slope, intercept) in enumerate(image.meta.get("rescale", [(1.0, 0.0)] * f)[:f]):
        stored[i] = np.clip(np.rint((frames[i] - intercept) / slope), lo, hi)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.SamplesPerPixel = 1
    if "NumberOfFrames" in ds or f > 1:
        ds.NumberOfFrames = f
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDSR_EDGE_01"
    ds.file_meta = meta
    ds.set_original_encoding(False, True)
    return ds


def write_derived_dicom(path: Path, image: Image, frames: np.ndarray, scale: int, description: str) -> None:
    """Write the derived DICOM atomically (never onto the input)."""
    if image.dataset is None:
        raise ImageWriteError(path, "DICOM output needs a DICOM input; write .png or .tif instead")
    ds = derived_dataset(image, frames, scale, description)
    atomic_write(Path(path), lambda tmp: ds.save_as(tmp, enforce_file_format=True))
