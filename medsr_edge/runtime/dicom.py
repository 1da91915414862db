"""DICOM in, derived DICOM out (pydicom).

Reading applies the modality LUT (RescaleSlope/Intercept, also from enhanced multi-frame
functional groups) so CT comes out in HU. Writing makes a derived image of the same IOD: 16-bit
stored values, Rows/Columns x scale, pixel spacing / scale, new Series/SOP Instance UIDs,
ImageType DERIVED\\SECONDARY, a DerivationDescription and a Source Image Sequence.
"""

from __future__ import annotations

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
