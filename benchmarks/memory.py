"""Peak memory (RSS) of `medsr-edge enhance` on large 16-bit images, each in a fresh process.

    python benchmarks/memory.py --sizes 2048 4096 [--model student-x4] [--tile 256]

Writes a synthetic 16-bit PNG of each size (a generated phantom: no patient data), runs the CLI on it
under /usr/bin/time-like accounting (resource.getrusage of the child), and prints a table of
input size, output size, wall time and peak RSS in MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

Image.MAX_IMAGE_PIXELS = None  # the outputs here are deliberately huge (up to 16384x16384)


def make_image(path: Path, size: int) -> None:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 20000 + 15000 * np.sin(40 * xx) * np.cos(33 * yy) + 10000 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1)
    Image.fromarray(np.clip(img, 0, 65535).astype(np.uint16)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--model", default="student-x4")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            src, dst = Path(tmp) / f"in{size}.png", Path(tmp) / f"out{size}.png"
            make_image(src, size)
            t0 = time.time()
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            subprocess.run([sys.executable, "-m", "medsr_edge.cli.main", "enhance", str(src), "-o", str(dst),
                            "--model", args.model, "--tile", str(args.tile)], check=True, stdout=subprocess.DEVNULL)
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            if peak <= before:
                raise SystemExit("peak RSS of the child could not be told apart from an earlier child; run one size per call")
            out = Image.open(dst)
            rows.append({"input": f"{size}x{size} 16-bit", "output": f"{out.width}x{out.height} {out.mode}",
                         "tile": args.tile, "wall_s": round(time.time() - t0, 1), "peak_rss_mb": round(peak / 1024, 0)})
            print(rows[-1], flush=True)
    print("| input | output | tile | wall s | peak RSS MB |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['output']} | {r['tile']} | {r['wall_s']} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
