"""What every training loop shares: data and batches, validation, logging, checkpoints, resume and
the iteration loop (:class:`Run`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..core.files import atomic_write
from ..core.sysinfo import cpu_name
from ..models.checkpoint import save_model
from ..runtime.io import count_by_modality
from .context import Context, unwrap
from .data import (
    PatchSampler,
    load_samples,
    validation_set,
)
from .options import TrainOptions
from .pack import resolve_data
from .runlog import LOG_EVERY, RunLog
from .validation import evaluate

log = logging.getLogger(__name__)


DEGRADATION_RANGES = ("per patch, core.degradation.draw_params: mr-kspace window none/hamming/tukey, partial Fourier "
                      "0.625-1, SNR 20-200 or none; ct-kernel PSF sigma 0.3-0.6 x scale HR px, noise 0-30 HU; "
                      "xr-detector MTF50 0.08-0.25 cyc/px, 1e3-1e5 photons, read noise 0-0.003; "
                      "mixed: half bicubic, half the family of the patch's modality")


class BatchStream(torch.utils.data.IterableDataset):
    """Endless batches from a run's PatchSampler; each DataLoader worker draws its own stream."""

    def __init__(self, run: Run, batch: int) -> None:
        self.run, self.batch = run, batch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        sampler = self.run.sampler(worker=1 + (info.id if info else 0))
        while True:
            lr_np, hr_np = sampler.batch(self.batch)
            yield torch.from_numpy(lr_np), torch.from_numpy(hr_np)


class Run:
    """What every training loop shares: data, validation, logging, checkpoints and resume."""

    def __init__(self, opts: TrainOptions, kind: str) -> None:
        self.opts, self.kind = opts, kind
        self.ctx = Context(opts.threads, opts.seed, opts.channels_last, opts.compile)
        self.out = Path(opts.out)
        self.ckpt = self.out / "ckpt" / "last.pt"
        if self.ctx.is_main:
            (self.out / "ckpt").mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.out, kind) if self.ctx.is_main else None
        t0 = time.time()
        self.data = resolve_data(opts.data)  # a folder, or a pack made by `medsr-edge pack-data`
        held_out = tuple(opts.exclude_sources)
        self.train_samples = load_samples(self.data, opts.split, opts.denoise, opts.limit_per_modality,
                                          sources=opts.sources, exclude_sources=held_out,
                                          lossy_downscale=opts.lossy_downscale)
        val_samples = (load_samples(self.data, opts.val_split, None, 4, sources=opts.sources, exclude_sources=held_out)
                       if opts.val_split else self.train_samples)
        self.val = validation_set(val_samples, opts.scale, degradation=opts.degradation)
        self.modality_counts = count_by_modality(s.modality for s in self.train_samples)
        if self.ctx.is_main:
            log.info("loaded %d training images %s in %.0fs; %d validation crops", len(self.train_samples),
                     self.modality_counts, time.time() - t0, len(self.val))
        self.start_time = time.time()
        self.elapsed_before = 0.0
        self.resumed_at = 0
        self.last_done = 0

    def sampler(self, worker: int = 0) -> PatchSampler:
        o = self.opts
        # A resumed run draws new patches: the stream depends on the iteration it resumed at.
        seed = np.random.SeedSequence([o.seed, self.ctx.rank, worker, self.resumed_at]).generate_state(1)[0]
        return PatchSampler(self.train_samples, o.patch, o.scale, o.augment, o.blur_sigma, o.noise_sigma,
                            seed=int(seed), balance=o.balance, edge_fraction=o.edge_patches, degradation=o.degradation,
                            native_weight=o.native_weight)

    def batches(self):
        """Endless (lr, hr) batches as tensors on the device. With ``opts.workers`` they are made in
        worker processes (each its own random stream) and handed over in pinned memory, so a GPU
        step does not wait for the cubic warps; otherwise in this process."""
        o = self.opts
        if o.workers <= 0:
            sampler = self.sampler()
            while True:
                lr_np, hr_np = sampler.batch(o.batch)
                yield self.ctx.tensor(lr_np), self.ctx.tensor(hr_np)
        stream = BatchStream(self, o.batch)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=o.workers,
                                             pin_memory=self.ctx.device.type == "cuda", prefetch_factor=4,
                                             persistent_workers=True)
        for lr_t, hr_t in loader:
            yield lr_t.to(self.ctx.device, non_blocking=True), hr_t.to(self.ctx.device, non_blocking=True)

    def resume(self, modules: dict[str, Any]) -> int:
        """Load ``OUT/ckpt/last.pt`` into modules/optimizers if present; return the next iteration."""
        if not self.ckpt.exists():
            return 0
        state = torch.load(self.ckpt, map_location=self.ctx.device, weights_only=True)
        for name, obj in modules.items():
            unwrap(obj).load_state_dict(state[name]) if isinstance(obj, nn.Module) else obj.load_state_dict(state[name])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.resumed_at = int(state["iter"])
        if self.log:
            self.log.truncate(self.resumed_at)
        log.info("resumed from %s at iteration %d", self.ckpt, state["iter"])
        return self.resumed_at

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.start_time

    def save(self, it: int, modules: dict[str, Any], export: nn.Module, config: dict, extra: dict) -> None:
        if not self.ctx.is_main:
            return
        state = {n: (unwrap(o).state_dict()) for n, o in modules.items()}
        state.update(iter=it, elapsed_s=self.elapsed())
        atomic_write(self.ckpt, lambda tmp: torch.save(state, tmp))
        meta = self.meta(it, extra)
        save_model(self.out / "model.safetensors", export, config, meta)

    def meta(self, it: int, extra: dict) -> dict:
        o = self.opts
        last_val = next((r for r in reversed(self.log.rows) if r.get("val_psnr") is not None), {}) if self.log else {}
        return {"kind": self.kind, "scale": o.scale, "in_channels": 1, "iterations": it,
                "wall_time_s": round(self.elapsed()), "batch": o.batch, "patch": o.patch, "lr": o.lr,
                **({"edge_patches": o.edge_patches} if o.edge_patches else {}),
                "data": str(o.data), "split": o.split, "train_images": self.modality_counts,
                "train_sources": count_by_modality(s.source for s in self.train_samples),
                "sources": list(o.sources), "exclude_sources": list(o.exclude_sources), "balance": o.balance,
                **({"lossy_downscale": o.lossy_downscale} if o.lossy_downscale > 1 else {}),
                **({"native_weight": o.native_weight} if o.native_weight != 1.0 else {}),
                "augment": asdict(o.augment),
                "hardware": f"{cpu_name()}, {torch.get_num_threads()} threads"
                            + (f", {torch.cuda.get_device_name()} x{self.ctx.world}" if self.ctx.device.type == "cuda" else ""),
                "world_size": self.ctx.world, "torch": torch.__version__, "medsr_edge": __version__,
                "normalisation": "per image to [0,1]: 8-bit 0..255, else image min..max; MONOCHROME1 inverted",
                "degradation": {"kind": "bicubic-antialias" if o.degradation == "bicubic" else o.degradation,
                                "blur_sigma": o.blur_sigma, "noise_sigma": o.noise_sigma, "lr_rounding": "source value grid",
                                **({"ranges": DEGRADATION_RANGES} if o.degradation != "bicubic" else {})},
                "val_psnr": last_val.get("val_psnr"), "val_ssim": last_val.get("val_ssim"),
                "val_psnr_bicubic": last_val.get("val_psnr_bicubic"), **extra}

    def loop(self, start: int, step: Callable[[int], dict[str, float]], eval_model: Callable[[], nn.Module],
             checkpoint: Callable[[int], None]) -> None:
        """Run ``step(it)`` from ``start`` to ``opts.iters`` with progress bar, logging, validation."""
        from tqdm import tqdm

        bar = tqdm(range(start, self.opts.iters), initial=start, total=self.opts.iters, disable=not self.ctx.is_main,
                   desc=self.kind, dynamic_ncols=True, mininterval=5)
        acc: dict[str, list[float]] = {}
        started = time.time()
        try:
            self._iterate(bar, step, eval_model, checkpoint, acc, started)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: keep what was trained since the last checkpoint
            if self.ctx.is_main and self.last_done > start:
                checkpoint(self.last_done)
                bar.write(f"[{self.kind}] interrupted at iteration {self.last_done}; checkpoint saved, run again to resume")
            raise
        finally:
            self.ctx.close()

    def _iterate(self, bar, step, eval_model, checkpoint, acc, started) -> None:
        o = self.opts
        for it in bar:
            losses = step(it)
            for k, v in losses.items():
                acc.setdefault(k, []).append(v)
            done = it + 1
            if self.ctx.is_main and (done % LOG_EVERY == 0 or done == o.iters):
                row = {"iter": done, "time_s": round(self.elapsed(), 1), **{k: float(np.mean(v)) for k, v in acc.items()}}
                acc = {}
                if done % o.val_every == 0 or done == o.iters:
                    row.update(evaluate(eval_model(), self.val, o.scale, self.ctx.device))
                    bar.write(f"[{self.kind}] iter {done}: val PSNR {row['val_psnr']:.2f} dB "
                              f"(bicubic {row['val_psnr_bicubic']:.2f}), SSIM {row['val_ssim']:.4f}")
                self.log.add(row)
                bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k.startswith("loss")})
                if "val_psnr" in row:
                    self.log.plot()
            out_of_time = o.max_seconds is not None and time.time() - started > o.max_seconds
            if self.ctx.world > 1 and o.max_seconds is not None:  # every rank stops at the same iteration
                flag = torch.tensor([float(out_of_time)], device=self.ctx.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if done % o.save_every == 0 or done == o.iters or out_of_time:
                checkpoint(done)
            self.last_done = done
            if out_of_time and done < o.iters:
                bar.write(f"[{self.kind}] time limit reached at iteration {done}; run the same command to resume")
                break
