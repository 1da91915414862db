"""Peak memory (RSS) of `medsr-edge enhance`, each case in a fresh process, on large images and
on memory bombs (small files whose headers ask for huge images).

    python benchmarks/memory.py --json docs/memory.json [--cases png2048 png4096 ct300 ...] [--model student-x4]

Cases (all generated here: synthetic phantoms and pydicom-data's CT, no patient data):
  png2048, png4096  16-bit greyscale PNGs of that side (x4 output: 8192 / 16384 pixels square)
  ct300             an enhanced CT of 300 frames of 512x512 (pydicom-data's eCT_Supplemental.dcm, frames repeated)
  bomb_png          a PNG of a few hundred KB that decodes to 12000x12000 pixels
  bomb_tiff         a 126-byte TIFF whose header asks for 50000x50000 32-bit pixels (9.3 GiB)
  bomb_dicom        a small CT DICOM whose header declares 300 frames of 16384x16384
  bomb_jpegls, bomb_jpeg, bomb_j2k, bomb_rle
                    pydicom-data's compressed files whose frame header (JPEG-LS SOF55, JPEG lossless
                    SOF3, JPEG 2000 SIZ, RLE segment count) disagrees with a small DICOM header:
                    32768x32768 (JPEG-LS), 30000x30000 (JPEG), 40000x40000 (J2K), 15 segments (RLE)
  bomb_deflate      a deflated CT whose dataset inflates to 1 GiB of zeros (about 1 MB on disk)
Each row: exit status (0 enhanced, 1 refused with a one-line error), wall time and the child's
own peak RSS (``getrusage(RUSAGE_SELF)`` at its exit).
"""

from __future__ import annotations

import argparse
import copy
import json
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

CHILD = """
import resource, sys
from medsr_edge.cli.main import app
try:
    app(sys.argv[2:])
finally:
    open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def png16(path: Path, size: int) -> None:
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 20000 + 15000 * np.sin(40 * xx) * np.cos(33 * yy) + 10000 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1)
    Image.fromarray(np.clip(img, 0, 65535).astype(np.uint16)).save(path)


def ct300(path: Path, frames: int = 300) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    arr = ds.pixel_array
    ds.PixelData = np.ascontiguousarray(np.resize(arr, (frames, *arr.shape[1:]))).tobytes()
    ds.NumberOfFrames = frames
    per = ds.PerFrameFunctionalGroupsSequence
    ds.PerFrameFunctionalGroupsSequence = [copy.deepcopy(per[i % len(per)]) for i in range(frames)]
    ds.save_as(path)


def bomb_png(path: Path, side: int = 12000) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\0" * ((side + 1) * side), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def bomb_tiff(path: Path) -> None:
    entries = [(256, 4, 1, 50000), (257, 4, 1, 50000), (258, 3, 1, 32), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, 1, 8), (278, 4, 1, 50000), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    path.write_bytes(struct.pack("<2sHI", b"II", 42, 24) + bytes(16) + ifd)


def bomb_dicom(path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 16384
    ds.NumberOfFrames = 300
    ds.save_as(path)


def lying_stream(name: str, marker: bytes, offset: int, value: bytes):
    def make(path: Path) -> None:
        from pydicom.data import get_testdata_file

        raw = bytearray(Path(get_testdata_file(name)).read_bytes())
        at = raw.index(marker, raw.index(b"\xe0\x7f\x10\x00"))
        raw[at + offset:at + offset + len(value)] = value
        path.write_bytes(bytes(raw))
    return make


def bomb_deflate(path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.filereader import _read_file_meta_info, read_preamble

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    ds.save_as(path, enforce_file_format=True)
    with open(path, "rb") as fh:
        read_preamble(fh, force=False)
        _read_file_meta_info(fh)
        head = path.read_bytes()[:fh.tell()]
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = b"".join(z.compress(bytes(1 << 24)) for _ in range(64)) + z.flush()
    path.write_bytes(head + body)


CASES = {
    "png2048": (".png", lambda p: png16(p, 2048)),
    "png4096": (".png", lambda p: png16(p, 4096)),
    "ct300": (".dcm", ct300),
    "bomb_png": (".png", bomb_png),
    "bomb_tiff": (".tif", bomb_tiff),
    "bomb_dicom": (".dcm", bomb_dicom),
    "bomb_jpegls": (".dcm", lying_stream("JPEGLSNearLossless_16.dcm", b"\xff\xf7", 5, struct.pack(">HH", 32768, 32768))),
    "bomb_jpeg": (".dcm", lying_stream("JPEG-LL.dcm", b"\xff\xc3", 5, struct.pack(">HH", 30000, 30000))),
    "bomb_j2k": (".dcm", lying_stream("MR_small_jp2klossless.dcm", b"\xff\x4f\xff\x51", 8, struct.pack(">II", 40000, 40000))),
    "bomb_rle": (".dcm", lying_stream("MR_small_RLE.dcm", b"\x02\x00\x00\x00\x40\x00", 0, struct.pack("<I", 15))),
    "bomb_deflate": (".dcm", bomb_deflate),
}


def measure(case: str, src: Path, dst: Path, model: str) -> dict:
    rss_file = src.with_suffix(".rss")
    t0 = time.time()
    res = subprocess.run([sys.executable, "-c", CHILD, str(rss_file), "enhance", str(src), "-o", str(dst), "--model", model],
                         capture_output=True, text=True)
    wall = time.time() - t0
    peak_mb = int(rss_file.read_text()) / 1024
    error = next((ln for ln in res.stderr.splitlines() if ln.startswith("error:")), "")
    return {"case": case, "input_bytes": src.stat().st_size, "exit": res.returncode, "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak_mb), "output_bytes": dst.stat().st_size if dst.exists() else 0,
            "error": error.replace(str(src), src.name)[:160]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--model", default="student-x4")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            suffix, make = CASES[case]
            src, dst = Path(tmp) / f"{case}{suffix}", Path(tmp) / f"{case}-out{suffix}"
            make(src)
            rows.append(measure(case, src, dst, args.model))
            dst.unlink(missing_ok=True)
            print(rows[-1], flush=True)
    print("| case | input bytes | exit | wall s | peak RSS MB | output bytes |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['input_bytes']:,} | {r['exit']} | {r['wall_s']} | {r['peak_rss_mb']} | {r['output_bytes']:,} |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
