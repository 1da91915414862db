"""The size a compressed DICOM frame declares in its own header, read before anything is decoded.

A decoder allocates what the compressed stream says, not what the DICOM header says: a 10 KB
JPEG-LS frame that declares 32768 x 32768 behind a 64 x 64 header costs gigabytes before it fails.
So the frame headers (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ, the RLE segment table) are parsed
here, in pure Python, and compared with the DICOM header first.
"""

from __future__ import annotations

import struct

# Transfer syntax UID -> codec family
JPEG = "jpeg"
JPEG_LS = "jpeg-ls"
JPEG_2000 = "jpeg2000"
RLE = "rle"
FAMILIES = {
    "1.2.840.10008.1.2.4.50": JPEG, "1.2.840.10008.1.2.4.51": JPEG, "1.2.840.10008.1.2.4.57": JPEG,
    "1.2.840.10008.1.2.4.70": JPEG,
    "1.2.840.10008.1.2.4.80": JPEG_LS, "1.2.840.10008.1.2.4.81": JPEG_LS,
    "1.2.840.10008.1.2.4.90": JPEG_2000, "1.2.840.10008.1.2.4.91": JPEG_2000,
    "1.2.840.10008.1.2.4.201": JPEG_2000, "1.2.840.10008.1.2.4.202": JPEG_2000, "1.2.840.10008.1.2.4.203": JPEG_2000,
    "1.2.840.10008.1.2.5": RLE,
}
# JPEG start-of-frame markers (SOF0-SOF15 without DHT C4, JPG C8, DAC CC) and JPEG-LS SOF55
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: markers without a length
SCAN_LIMIT = 1 << 20  # bytes searched for a frame header: tables before SOF are small


class StreamHeaderError(ValueError):
    """The compressed frame's own header is missing or unreadable."""


def jpeg_frame_size(data: bytes) -> tuple[int, int]:
    """(rows, columns) from a JPEG or JPEG-LS stream's start-of-frame segment."""
    if data[:2] != b"\xff\xd8":
        raise StreamHeaderError("no JPEG start-of-image marker")
    i, end = 2, min(len(data), SCAN_LIMIT)
    while i + 4 <= end:
        if data[i] != 0xFF:
            raise StreamHeaderError(f"no JPEG marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            if i + 9 > len(data):
                break
            rows, cols = struct.unpack(">HH", data[i + 5:i + 9])
            return rows, cols
        if marker == 0xDA or length < 2:  # a scan before any frame header, or a broken segment
            break
        i += 2 + length
    raise StreamHeaderError("no JPEG frame header (SOF) before the image data")


def j2k_frame_size(data: bytes) -> tuple[int, int]:
    """(rows, columns) from a JPEG 2000 codestream's SIZ segment (bare or inside a JP2 box)."""
    at = data.find(b"\xff\x4f\xff\x51", 0, SCAN_LIMIT)
    if at < 0 or at + 4 + 2 + 2 + 16 > len(data):
        raise StreamHeaderError("no JPEG 2000 SIZ segment")
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[at + 8:at + 24])
    if xosiz > xsiz or yosiz > ysiz:
        raise StreamHeaderError("JPEG 2000 SIZ offsets exceed the image size")
    return ysiz - yosiz, xsiz - xosiz


def rle_segments(data: bytes) -> int:
    """The number of segments an RLE frame header declares (one per byte of each sample)."""
    if len(data) < 64:
        raise StreamHeaderError("RLE frame shorter than its 64-byte header")
    (n,) = struct.unpack("<I", data[:4])
    return n


def check_frame(family: str, data: bytes, rows: int, cols: int, segments: int) -> str | None:
    """What is wrong with one compressed frame against the DICOM header (None: consistent).
    ``segments``: the RLE segment count the header implies (samples x bytes per sample)."""
    try:
        if family == RLE:
            n = rle_segments(data)
            return None if n == segments else f"its RLE header declares {n} segments, the DICOM header needs {segments}"
        got = j2k_frame_size(data) if family == JPEG_2000 else jpeg_frame_size(data)
    except StreamHeaderError as exc:
        return str(exc)
    except struct.error:
        return "its frame header is truncated"
    if got != (rows, cols):
        return f"its {family} stream declares {got[0]}x{got[1]} pixels, the DICOM header {rows}x{cols}"
    return None
