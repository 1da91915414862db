"""Whole-path fuzzing worker: mutated DICOM/PNG/TIFF/JPEG files through read -> enhance (a tiny
model) -> write -> read back, in one process under an address-space limit and a per-case limit
of CPU time (not wall-clock time, which a loaded machine stretches).

    python tests/fuzz_worker.py SHARD CASES WORKDIR MODEL

Prints one JSON line: counts, the slowest case, and the first few failures. A failure is any
exception other than the project's MedsrError, a MedsrError whose message is not one line
naming the file, a wrong output shape, or a case over the CPU-time limit. Compressed seeds
(JPEG lossless, JPEG-LS, JPEG 2000, RLE) also get frame headers that lie about the image size.
"""

from __future__ import annotations

import io
import json
import resource
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ADDRESS_SPACE = 2 << 30  # bytes: a case that needs more fails with MemoryError, counted as a failure
CASE_SECONDS = 10  # CPU seconds per case (ITIMER_PROF: user + system time of the process)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def seeds() -> dict[str, bytes]:
    """Real files (pydicom's CT, RLE MR, JPEG 2000 CT made by our writer) and generated rasters."""
    import tifffile
    from PIL import Image
    from pydicom.data import get_testdata_file

    rng = np.random.default_rng(0)
    grey = (np.add.outer(np.arange(24), np.arange(24)) * 5 % 256).astype(np.uint8)
    out = {}
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_jp2klossless.dcm", "JPEG-LL.dcm"):
        out[name] = Path(get_testdata_file(name)).read_bytes()
    for fmt, arr, suffix in (("PNG", grey, ".png"), ("PNG", (grey.astype(np.uint16) * 257), "16.png"),
                             ("JPEG", grey, ".jpg")):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt)
        out[f"seed{suffix}"] = buf.getvalue()
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([grey.astype(np.uint16) * 100, rng.integers(0, 4000, (24, 24), np.uint16)]),
                     photometric="minisblack")
    out["seed.tif"] = buf.getvalue()
    return out


FRAME_HEADERS = ((b"\xff\xc3", 5, ">H"), (b"\xff\xf7", 5, ">H"), (b"\xff\x4f\xff\x51", 8, ">I"))  # marker, size offset, field


def lie_about_size(data: bytearray, rng: np.random.Generator) -> bool:
    """Write random sizes into the first compressed frame header (JPEG SOF3, JPEG-LS SOF55,
    JPEG 2000 SIZ) or RLE segment count after the Pixel Data tag; False when there is none."""
    pixel = data.find(b"\xe0\x7f\x10\x00")
    if pixel < 0:
        return False
    for marker, offset, field in FRAME_HEADERS:
        at = data.find(marker, pixel)
        if at >= 0:
            big = int(rng.choice([1, 2, 4096, 32768, 65535])) if field == ">H" else int(rng.choice([1, 65536, 1 << 20, 0xFFFFFFFF]))
            for k in range(2):
                pos = at + offset + k * (2 if field == ">H" else 4)
                data[pos:pos + (2 if field == ">H" else 4)] = big.to_bytes(2 if field == ">H" else 4, "big")
            return True
    rle = data.find(b"\x02\x00\x00\x00\x40\x00\x00\x00", pixel)
    if rle >= 0:
        data[rle:rle + 4] = int(rng.choice([0, 1, 3, 15, 0xFFFF])).to_bytes(4, "little")
        return True
    return False


def mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(raw)
    kind = int(rng.integers(7))
    if kind == 6 and lie_about_size(data, rng):
        return bytes(data)
    if kind == 6:
        kind = 0
    if kind == 0:  # flip bytes in the header region, where readers make their decisions
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(min(len(data), 2048)))] = int(rng.integers(256))
    elif kind == 1:  # flip bytes anywhere
        for _ in range(int(rng.integers(1, 17))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    elif kind == 2:  # truncate
        data = data[:int(rng.integers(1, len(data)))]
    elif kind == 3:  # extreme integers written over a 2- or 4-byte field
        pos = int(rng.integers(min(len(data), 1024) - 4))
        width = 2 if rng.integers(2) else 4
        value = int(rng.choice([0, 1, 0xFF, 0xFFFF, 0x7FFF, 0x8000, 0x7FFFFFFF, 0xFFFFFFFF]))
        data[pos:pos + width] = (value & (256 ** width - 1)).to_bytes(width, "little" if rng.integers(2) else "big")
    elif kind == 4:  # insert random bytes
        pos = int(rng.integers(len(data)))
        data[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 64)), np.uint8).tobytes()
    else:  # duplicate a chunk
        a = int(rng.integers(len(data)))
        b = min(len(data), a + int(rng.integers(1, 256)))
        pos = int(rng.integers(len(data)))
        data[pos:pos] = data[a:b]
    return bytes(data)


def run(shard: int, cases: int, work: Path, model: Path) -> dict:
    from medsr_edge.core.errors import MedsrError
    from medsr_edge.runtime.enhancer import Enhancer
    from medsr_edge.runtime.io import read_image
    from medsr_edge.runtime.pipeline import Job, enhance_file

    warnings.simplefilter("ignore")
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    signal.signal(signal.SIGPROF, _alarm)
    enhancer = Enhancer(model, threads=1, tile=64, overlap=8)
    pool = seeds()
    names = sorted(pool)
    rng = np.random.default_rng(1000 + shard)
    stats = {"cases": 0, "enhanced": 0, "refused": 0, "failures": [], "failure_count": 0, "slowest_s": 0.0,
             "by_seed": {n: 0 for n in names}}
    work.mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        seed = names[int(rng.integers(len(names)))]
        suffix = Path(seed).suffix if not seed.endswith(".dcm") or rng.integers(4) else ""  # some DICOM unnamed
        src = work / f"case{i}{suffix}"
        dst = work / f"case{i}-out{Path(seed).suffix}"
        src.write_bytes(mutate(pool[seed], rng))
        stats["cases"] += 1
        stats["by_seed"][seed] += 1
        t0 = time.process_time()
        signal.setitimer(signal.ITIMER_PROF, CASE_SECONDS)
        problem = None
        try:
            enhance_file(enhancer, Job(src, dst))
            back = read_image(dst)
            image = read_image(src)
            want = (image.frames.shape[0], image.shape[0] * 4, image.shape[1] * 4)
            if back.frames.shape != want:
                problem = f"output shape {back.frames.shape}, expected {want}"
            stats["enhanced"] += 1
        except MedsrError as exc:
            msg = str(exc)
            if "\n" in msg or (str(src) not in msg and str(dst) not in msg and str(model) not in msg):
                problem = f"error message not one line naming the file: {msg!r}"
            stats["refused"] += 1
        except Hang:
            problem = f"over {CASE_SECONDS} s of CPU time"
        except BaseException as exc:  # noqa: BLE001 - this is what the fuzzer looks for
            problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        stats["slowest_s"] = max(stats["slowest_s"], time.process_time() - t0)  # CPU seconds
        if problem:
            stats["failure_count"] += 1
            if len(stats["failures"]) < 5:
                keep = work / f"failure-{i}{suffix}"
                src.replace(keep)
                stats["failures"].append(f"{keep} (from {seed}): {problem}")
        for p in (src, dst):
            p.unlink(missing_ok=True)
    return stats


if __name__ == "__main__":
    shard, cases, work, model = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    print(json.dumps(run(shard, cases, work, model)))
