"""Throughput of the training input pipeline alone and of full training steps, on this CPU.

    python benchmarks/loader_speed.py --data ../shared/data [--config student] [--batch 12] [--patch 160] [--threads 1]

Loader: batches/s of ``PatchSampler.batch`` (crop, rotation/zoom/elastic warps cut from a window
around the patch, flips, bicubic degradation) on up to 100 training images per modality. Step:
iterations/s of forward + L1 + backward + Adam of the student config on those batches.
"""

from __future__ import annotations

import argparse
import time

import torch

from medsr_edge.distill.data import PatchSampler, load_samples
from medsr_edge.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default="student")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--patch", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sampler = PatchSampler(load_samples(a.data, "train", limit_per_modality=100), a.patch, 4, seed=0)
    t0 = time.perf_counter()
    batches = [sampler.batch(a.batch) for _ in range(a.n)]
    loader = a.n / (time.perf_counter() - t0)
    model = build_model(a.config, scale=4)
    opt = torch.optim.Adam(model.parameters())
    t0 = time.perf_counter()
    for lr, hr in batches:
        loss = torch.nn.functional.l1_loss(model(torch.from_numpy(lr)), torch.from_numpy(hr))
        opt.zero_grad()
        loss.backward()
        opt.step()
    steps = a.n / (time.perf_counter() - t0)
    print(f"loader: {loader:.1f} batches/s ({1000 / loader:.0f} ms per {a.batch}x{a.patch}x{a.patch} batch); "
          f"training step ({a.config}, {a.threads} thread(s)): {steps:.2f} it/s")


if __name__ == "__main__":
    main()
