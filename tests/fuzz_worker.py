"""Whole-path fuzzing worker: mutated DICOM/PNG/TIFF/JPEG files through read -> enhance (a tiny
model) -> write -> read back, in one process under an address-space limit and a per-case alarm.

    python tests/fuzz_worker.py SHARD CASES WORKDIR MODEL

Prints one JSON line: counts, the slowest case, and the first few failures. A failure is any
exception other than the project's MedsrError, a MedsrError whose message is not one line
naming the file, a wrong output shape, or a case over the time limit.
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
CASE_SECONDS = 10


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
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "MR_small.dcm"):
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


def mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(raw)
    kind = int(rng.integers(6))
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
    signal.signal(signal.SIGALRM, _alarm)
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
        t0 = time.perf_counter()
        signal.alarm(CASE_SECONDS)
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
            problem = f"over {CASE_SECONDS} s"
        except BaseException as exc:  # noqa: BLE001 - this is what the fuzzer looks for
            problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            signal.alarm(0)
        stats["slowest_s"] = max(stats["slowest_s"], time.perf_counter() - t0)
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
