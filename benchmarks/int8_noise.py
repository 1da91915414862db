"""INT8 noise in Hounsfield units where a narrow CT window shows it.

PSNR on the full [0, 1] range hides INT8 noise that a brain window (W80) makes visible: this prints,
for each shipped student, the RMS difference INT8 - FP32 and the RMS error FP32 - ground truth in HU
over the pixels of brain tissue (0..80 HU) of pydicom-data's 693_UNCR.dcm CT slice (degraded as in
training, then super-resolved).

    python benchmarks/int8_noise.py [--scales 2 4] [--int8 PATH --fp32 PATH]
"""

from __future__ import annotations

import argparse

import numpy as np
from pydicom.data import get_testdata_file

from medsr_edge.core.degradation import crop_to_multiple, degrade, upscale_bicubic
from medsr_edge.runtime.enhancer import Enhancer
from medsr_edge.runtime.io import read_image
from medsr_edge.runtime.transforms import Normalizer


def rms(v: np.ndarray) -> float:
    return float(np.sqrt(np.mean(v ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--int8", help="An INT8 .onnx to measure instead of the shipped one (one scale).")
    ap.add_argument("--fp32", help="The FP32 .onnx that INT8 was made from, instead of the shipped one (one scale).")
    args = ap.parse_args()
    img = read_image(get_testdata_file("693_UNCR.dcm", download=False))
    frame = img.frames[0]
    lo, hi = float(frame.min()), float(frame.max())
    norm = Normalizer.of(img)
    x, step = norm.forward(frame), norm.grid_step(frame, img.dtype)
    print("| scale | brain pixels | RMS HU bicubic - GT | RMS HU FP32 - GT | RMS HU INT8 - FP32 |")
    print("|---|---|---|---|---|")
    for s in args.scales:
        hr = crop_to_multiple(x, s)
        lr = degrade(hr, s, step=step)
        fp32 = Enhancer(args.fp32 or f"student-x{s}", "onnxruntime", "fp32", scale=s).enhance_array(lr) * (hi - lo) + lo
        int8 = Enhancer(args.int8 or f"student-x{s}", "onnxruntime", "int8", scale=s).enhance_array(lr) * (hi - lo) + lo
        bic = upscale_bicubic(lr, s) * (hi - lo) + lo
        gt = hr * (hi - lo) + lo
        brain = (gt > 0) & (gt < 80)
        print(f"| x{s} | {int(brain.sum())} | {rms((bic - gt)[brain]):.2f} | {rms((fp32 - gt)[brain]):.2f} | "
              f"{rms((int8 - fp32)[brain]):.2f} |")


if __name__ == "__main__":
    main()
