"""CI exercises the export path: re-export the default student from its training checkpoint (ONNX
FP32, and INT8 as the shipped file was made) into a temporary weights folder, bench the fresh and
the committed files on the same images, and fail when they differ by more than a tolerance. An
export regression cannot hide behind old files.

    python benchmarks/reexport_check.py --data ../shared/data [--run campaign/student-x4-v2] [--limit 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "medsr_edge" / "weights"


def bench(weights: Path, data: str, name: str, limit: int, out: Path) -> dict:
    subprocess.run(["medsr-edge", "bench", "--data", data, "--split", "test", "--limit", str(limit), "--models", name,
                    "--backends", "onnxruntime", "--threads", "2", "--latency-rounds", "0", "--json", str(out)],
                   check=True, env={**os.environ, "MEDSR_EDGE_WEIGHTS": str(weights)}, stdout=subprocess.DEVNULL)
    return {(r["format"], r["precision"]): r["psnr"] for r in json.loads(out.read_text())["rows"]
            if r["name"] == name and r["status"] == "ok"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--name", default="student-x4")
    ap.add_argument("--run", default=None, help="training output the shipped model came from (default: its card's)")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--tolerance", type=float, default=0.01, help="dB, float files")
    ap.add_argument("--int8-tolerance", type=float, default=0.05, help="dB, INT8 (calibration images may change with the data)")
    a = ap.parse_args()
    card = json.loads((WEIGHTS / f"{a.name}.json").read_text())
    run = a.run or card.get("training", {}).get("run")
    if not run:
        sys.exit(f"{a.name}.json names no training run; pass --run")
    int8 = card.get("int8", {})
    float_convs = sum(1 for n in int8.get("float_nodes", []) if "/body." in n)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh, committed = Path(tmp) / "fresh", Path(tmp) / "committed"
        fresh.mkdir(), committed.mkdir()
        for f in (f"{a.name}.onnx", f"{a.name}-int8.onnx", f"{a.name}.json"):
            if (WEIGHTS / f).is_file():
                shutil.copy(WEIGHTS / f, committed / f)
        shutil.copy(WEIGHTS / f"{a.name}.json", fresh / f"{a.name}.json")
        subprocess.run(["medsr-edge", "export", "--model", str(ROOT / run), "--format", "onnx", "--name", a.name,
                        "-o", str(fresh / f"{a.name}.onnx"), "--calib-data", a.data, "--calib-split", "val"], check=True)
        if (committed / f"{a.name}-int8.onnx").is_file():
            subprocess.run(["medsr-edge", "export", "--model", str(ROOT / run), "--format", "onnx-int8", "--name", a.name,
                            "-o", str(fresh / f"{a.name}-int8.onnx"), "--calib-data", a.data, "--calib-split", "val",
                            "--calib-method", int8.get("calibration", {}).get("method", "minmax"),
                            "--int8-float-convs", str(float_convs)], check=True)
        now = bench(fresh, a.data, a.name, a.limit, Path(tmp) / "fresh.json")
        then = bench(committed, a.data, a.name, a.limit, Path(tmp) / "committed.json")
    for key, psnr in then.items():
        got = now.get(key)
        line = f"{a.name} {key[0]}: committed {psnr:.3f} dB, re-exported {got if got is None else f'{got:.3f}'} dB"
        print(line)
        tolerance = a.int8_tolerance if key[1] == "int8" else a.tolerance
        if got is None or abs(got - psnr) > tolerance:
            failures.append(f"{line} (tolerance {tolerance} dB)")
    for f in failures:
        print(f"REGRESSION {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
