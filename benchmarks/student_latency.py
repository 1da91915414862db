"""Latency of every student size (and the teacher) at 128x128 -> 512x512 and 512x512 -> 2048x2048,
ONNX Runtime on this CPU, all in one process, as ratios to the first student (student-v1).

    python benchmarks/student_latency.py --threads 2 --json docs/student-latency-x4.json

The graphs are the deploy (re-parameterized) forms exported exactly as `medsr-edge export` does;
latency does not depend on the weights, so untrained networks of each config are timed. Each
size runs ``--repeats`` times after a warm-up; the median is reported.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from medsr_edge.core.sysinfo import cpu_flags, cpu_name
from medsr_edge.models import build_model, count_params, gflops_per_output_mpx

CONFIGS = ("student-v1", "student-fast", "student", "student-quality", "esrgan-small")


def session(model: torch.nn.Module, threads: int) -> ort.InferenceSession:
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.rand(1, 1, 32, 32),), buf, input_names=["lr"], output_names=["sr"], opset_version=17,
                      dynamic_axes={"lr": {2: "H", 3: "W"}, "sr": {2: "sH", 3: "sW"}}, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def median_ms(sess: ort.InferenceSession, size: int, repeats: int) -> float:
    x = np.random.default_rng(0).random((1, 1, size, size), np.float32)
    sess.run(None, {"lr": x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"lr": x})
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    sizes = {"128x128": 128, "512x512": 512}
    rows = []
    for name in CONFIGS:
        model = build_model(name, scale=a.scale).eval()
        if hasattr(model, "reparameterize"):
            model.reparameterize()
        sess = session(model, a.threads)
        lat = {k: round(median_ms(sess, s, a.repeats if s <= 128 else max(a.repeats // 3, 3)), 2) for k, s in sizes.items()}
        rows.append({"config": name, "params": count_params(model), "gflops_per_output_mpx": round(gflops_per_output_mpx(model, a.scale), 2),
                     "ms": lat})
        print(rows[-1], flush=True)
    base = rows[0]["ms"]
    for r in rows:
        r["ratio_to_student_v1"] = {k: round(v / base[k], 2) for k, v in r["ms"].items()}
    doc = {"scale": a.scale, "threads": a.threads, "repeats": a.repeats, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
           "cpu_flags": cpu_flags(), "onnxruntime": ort.__version__, "rows": rows}
    print(f"| config | params | GFLOPs/MP | ms 128->{128 * a.scale} | x v1 | ms 512->{512 * a.scale} | x v1 |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['params']:,} | {r['gflops_per_output_mpx']} | {r['ms']['128x128']} | {r['ratio_to_student_v1']['128x128']} "
              f"| {r['ms']['512x512']} | {r['ratio_to_student_v1']['512x512']} |")
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
