"""Throughput of `medsr-edge enhance` on a 512x512 CT series: slices per minute, whole command
(read, enhance, write DICOM), FP32 and INT8 of a shipped model, median of repeated runs.

    python benchmarks/throughput.py --slices 20 --repeats 3 --threads 2 --json docs/throughput.json

The series is made here from pydicom-data's 512x512 CT (693_UNCR.dcm; no patient data), one copy per
slice with its own SOP Instance UID and position, so the run is a real folder of a real series.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_series(folder: Path, slices: int) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    series = generate_uid()
    for i in range(slices):
        ds = src.copy()
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        if "ImagePositionPatient" in ds:
            ds.ImagePositionPatient = [*list(ds.ImagePositionPatient)[:2], float(i)]
        ds.save_as(folder / f"IM{i:04d}.dcm")


def run_once(series: Path, out: Path, model: str, precision: str, threads: int) -> float:
    cmd = [sys.executable, "-m", "medsr_edge.cli.main", "enhance", str(series), "-o", str(out), "--model", model,
           "--precision", precision, "--threads", str(threads), "--compress", "none", "--overwrite"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="student-x4")
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "series"
        series.mkdir()
        make_series(series, a.slices)
        for precision in a.precisions:
            times = [run_once(series, Path(tmp) / f"out-{precision}", a.model, precision, a.threads)
                     for _ in range(a.repeats)]
            med = statistics.median(times)
            rows.append({"model": a.model, "precision": precision, "slices": a.slices, "threads": a.threads,
                         "seconds": [round(t, 2) for t in times], "median_s": round(med, 2),
                         "slices_per_min": round(60 * a.slices / med, 1)})
            print(f"{a.model} {precision}: {rows[-1]['slices_per_min']} slices/min (median of {a.repeats} runs of "
                  f"{a.slices} 512x512 CT slices, {a.threads} threads, whole command)", flush=True)
    if a.json:
        from medsr_edge.core.sysinfo import cpu_name

        a.json.write_text(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
