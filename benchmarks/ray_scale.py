"""`enhance --engine ray` on this machine: slices/min of a 512x512 CT series with the local engine and
with Ray (1 and 2 worker processes), Ray's cost per task, and where a slice's time goes (DICOM
decode, model, DICOM encode), for the projection in docs/cluster.md. Medians of repeated runs.

    python benchmarks/ray_scale.py --slices 24 --repeats 3 --json docs/cluster.json

Each run is the whole command (process start, model load, Ray start for --engine ray). The series is
made from pydicom-data's 693_UNCR.dcm (benchmarks/throughput.py); no patient data.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import make_series  # noqa: E402


def run(series: Path, out: Path, model: str, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "medsr_edge.cli.main", "enhance", str(series), "-o", str(out), "--model", model,
           "--compress", "none", "--overwrite", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    return time.perf_counter() - t0


def stages(series: Path, model: str, threads: int, repeats: int) -> dict:
    """Median seconds per slice of read (decode), enhance (model) and write (encode), in process."""
    from medsr_edge.runtime import Enhancer
    from medsr_edge.runtime.dicom import write_derived_dicom
    from medsr_edge.runtime.io import read_image

    enh = Enhancer(model, threads=threads)
    src = sorted(series.glob("*.dcm"))[0]
    t: dict[str, list[float]] = {"read": [], "enhance": [], "write": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            t0 = time.perf_counter()
            image = read_image(src)
            t1 = time.perf_counter()
            frames = list(enh.iter_enhance_image(image))
            t2 = time.perf_counter()
            write_derived_dicom(Path(tmp) / "o.dcm", image, frames, enh.scale, enh.describe(), identity=enh.identity)
            t3 = time.perf_counter()
            t["read"].append(t1 - t0), t["enhance"].append(t2 - t1), t["write"].append(t3 - t2)
        out_bytes = (Path(tmp) / "o.dcm").stat().st_size
    return {**{f"{k}_s": round(statistics.median(v), 4) for k, v in t.items()},
            "in_bytes": src.stat().st_size, "out_bytes": out_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="student-x4")
    ap.add_argument("--slices", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    configs = {  # name: extra CLI flags; every configuration uses one ONNX Runtime thread per worker
        "local, 1 thread": ["--threads", "1"],
        "local, 2 threads": ["--threads", "2"],
        "ray, 1 worker": ["--engine", "ray", "--workers", "1", "--threads", "1"],
        "ray, 2 workers": ["--engine", "ray", "--workers", "2", "--threads", "1"],
        "ray, 1 worker, 1 file per task": ["--engine", "ray", "--workers", "1", "--threads", "1",
                                           "--files-per-task", "1"],
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "series"
        series.mkdir()
        make_series(series, a.slices)
        times: dict[str, list[float]] = {k: [] for k in configs}
        for _ in range(a.repeats):  # interleaved, so a slow minute of the machine hits every configuration
            for name, extra in configs.items():
                times[name].append(run(series, Path(tmp) / "out", a.model, extra))
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append({"config": name, "slices": a.slices, "seconds": [round(t, 2) for t in ts],
                         "median_s": round(med, 2), "slices_per_min": round(60 * a.slices / med, 1)})
            print(f"{name}: {rows[-1]['slices_per_min']} slices/min (median {med:.1f} s for {a.slices} slices)", flush=True)
        med = {r["config"]: r["median_s"] for r in rows}
        per_task = (med["ray, 1 worker, 1 file per task"] - med["ray, 1 worker"]) / (a.slices - -(-a.slices // 16))
        print(f"Ray cost per extra task: {per_task * 1000:.0f} ms", flush=True)
        stage = stages(series, a.model, 1, max(3, a.repeats))
        print(f"one slice, 1 thread: read {stage['read_s']:.3f} s, enhance {stage['enhance_s']:.3f} s, "
              f"write {stage['write_s']:.3f} s; {stage['in_bytes'] / 2**20:.2f} MiB in, "
              f"{stage['out_bytes'] / 2**20:.2f} MiB out", flush=True)
    if a.json:
        from medsr_edge.core.sysinfo import cpu_name

        doc = {"cpu": cpu_name(), "cores": os.cpu_count(), "model": a.model, "rows": rows,
               "ray_seconds_per_extra_task": round(per_task, 4), "slice_stages_1_thread": stage}
        a.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
