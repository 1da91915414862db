"""How much a float LR input flatters a model: PSNR gain over bicubic per modality with the LR
image left as floats (the old scoring) and rounded to its source's value grid (a real stored
image, what training, calibration and `bench` now use).

    python benchmarks/lr_rounding.py --model student-x4 --data ../shared/data --split test \
        --json docs/lr-rounding-x4.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from medsr_edge.core.degradation import crop_to_multiple, degrade, upscale_bicubic
from medsr_edge.core.metrics import psnr
from medsr_edge.runtime.enhancer import Enhancer
from medsr_edge.runtime.io import discover, read_image
from medsr_edge.runtime.transforms import Normalizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="student-x4")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    enh = Enhancer(args.model, "onnxruntime", "fp32", threads=args.threads)
    s = enh.scale
    gains: dict[str, dict[str, list[float]]] = {}
    for path, modality in discover(args.data, args.split):
        img = read_image(path)
        norm = Normalizer.of(img)
        hr = crop_to_multiple(norm.forward(img.frames[0]), s)
        for kind, step in (("float", 0.0), ("rounded", norm.grid_step(img.frames[0], img.dtype))):
            lr = degrade(hr, s, step=step)
            gain = psnr(enh.enhance_array(lr), hr, s) - psnr(upscale_bicubic(lr, s), hr, s)
            gains.setdefault(modality, {}).setdefault(kind, []).append(gain)
    table = {m: {k: round(float(np.mean(v)), 3) for k, v in g.items()} | {"n": len(g["float"])} for m, g in sorted(gains.items())}
    print(f"{args.model}, {args.split} split: mean PSNR gain over bicubic (dB)")
    print("| modality | n | float LR | rounded LR | difference |")
    print("|---|---|---|---|---|")
    for m, v in table.items():
        print(f"| {m} | {v['n']} | {v['float']:+.3f} | {v['rounded']:+.3f} | {v['rounded'] - v['float']:+.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "split": args.split, "gain_vs_bicubic_db": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
