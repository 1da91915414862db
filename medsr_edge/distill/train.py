"""Training loops: ESRGAN teacher (``psnr`` stage with L1, ``gan`` stage with RaGAN + perceptual
+ L1 and an EMA generator) and the distillation of the teacher into the re-parameterizable student.

CPU for small configs, CUDA (bf16 autocast) when present, several GPUs with ``torchrun`` (DDP).
Every ``save_every`` iterations the full training state goes to ``OUT/ckpt/last.pt`` (resumed
automatically) and the EMA generator to ``OUT/model.safetensors``; ``OUT/log.csv`` and
``OUT/curves.png`` hold the losses and validation PSNR/SSIM.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel

from .. import __version__
from ..core.degradation import upscale_bicubic
from ..core.errors import MedsrError
from ..core.files import atomic_write
from ..core.metrics import psnr, ssim
from ..core.sysinfo import cpu_name
from ..models import build_model, count_params, resolve_config
from ..models.checkpoint import load_model, save_model
from ..runtime.io import count_by_modality
from .data import (
    BALANCE_CHOICES,
    TRAIN_DEGRADATIONS,
    AugmentConfig,
    CachedTripletSampler,
    PatchSampler,
    load_samples,
    validation_set,
)
from .losses import PerceptualLoss, ragan_d_loss, ragan_g_loss
from .pack import resolve_data
from .qat import learned_ranges, simulate_int8

log = logging.getLogger(__name__)

DEGRADATION_RANGES = ("per patch, core.degradation.draw_params: mr-kspace window none/hamming/tukey, partial Fourier "
                      "0.625-1, SNR 20-200 or none; ct-kernel PSF sigma 0.3-0.6 x scale HR px, noise 0-30 HU; "
                      "xr-detector MTF50 0.08-0.25 cyc/px, 1e3-1e5 photons, read noise 0-0.003; "
                      "mixed: half bicubic, half the family of the patch's modality")
LOG_EVERY = 50  # iterations between log rows (losses averaged over them)
ADVERSARIAL_LOSSES = ("loss_gan", "loss_d")  # RaGAN generator / discriminator losses, log 2 at chance
ADAM_BETAS = (0.9, 0.99)  # ESRGAN's / BasicSR's
COSINE_FLOOR = 0.01  # the cosine schedule ends at this fraction of the peak learning rate
INT8_STEP_LR = 1e-3  # Adam on log(step) of the INT8-aware run's activation grids: at most ~0.1 % a step
CACHE_TILE, CACHE_PAD = 128, 8  # teacher cache: LR tile side and the context around it, pixels


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """Shared options, validated on construction (MedsrError naming the option). Sizes in pixels
    of the high-resolution patch; ``lr`` is the learning rate."""

    data: Path
    out: Path
    scale: int = 4
    iters: int = 1000
    batch: int = 16
    patch: int = 128
    lr: float = 2e-4
    split: str | None = "train"
    val_split: str | None = "val"
    val_every: int = 250
    save_every: int = 250
    seed: int = 0
    threads: int | None = None
    denoise: str | None = None
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    limit_per_modality: int | None = None
    ema_decay: float = 0.999
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 0  # data-loading processes (0: batches made in the training process)
    edge_patches: float = 0.0  # fraction of patches centred on an image's strongest edges (PatchSampler)
    exclude_sources: tuple[str, ...] = ()  # <modality>/<source> names left out of training and validation
    balance: str = "modality"  # patch sampling: "modality", per modality then per source ("source"), or "image"
    sources: tuple[str, ...] = ()  # only these <modality>/<source> (or modalities); () = all
    degradation: str = "bicubic"  # LR model: bicubic, mr-kspace, ct-kernel, xr-detector or mixed (PatchSampler)
    max_seconds: float | None = None  # stop this process (with a checkpoint) after this long; re-run resumes
    channels_last: bool = False  # NHWC memory format for the networks (CUDA convolutions run faster)
    compile: bool = False  # torch.compile the generator

    def __post_init__(self) -> None:
        checks = [(self.scale in (2, 3, 4, 8), "--scale", "use 2, 3, 4 or 8"),
                  (self.iters >= 1 and self.batch >= 1, "--iters/--batch", "must be at least 1"),
                  (self.patch >= 8 * self.scale and self.patch % self.scale == 0, "--patch",
                   f"a multiple of --scale of at least {8 * self.scale} pixels"),
                  (self.lr >= 0, "--lr", "cannot be negative"),
                  (self.val_every >= 1 and self.save_every >= 1, "--val-every", "must be at least 1"),
                  (self.balance in BALANCE_CHOICES, "--balance", f"use {', '.join(BALANCE_CHOICES)}"),
                  (self.degradation in TRAIN_DEGRADATIONS, "--degradation", f"use {', '.join(TRAIN_DEGRADATIONS)}"),
                  (0.0 <= self.edge_patches <= 1.0, "--edge-patches", "a fraction in [0, 1]"),
                  (0.0 <= self.ema_decay < 1.0, "ema_decay", "in [0, 1)")]
        for ok, option, fix in checks:
            if not ok:
                raise MedsrError(f"{option}: {fix}")


# --------------------------------------------------------------------------- infrastructure


def ema_of(model: nn.Module, decay: float) -> AveragedModel:
    """EMA copy of ``model`` whose decay warms up as min(decay, (1 + n) / (10 + n)) after n
    updates, so short runs are not dominated by the random initial weights."""

    @torch.no_grad()
    def avg(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return AveragedModel(model, multi_avg_fn=avg, use_buffers=True)


class Context:
    """Device, distributed rank and autocast, set up once from the environment (torchrun)."""

    def __init__(self, threads: int | None, seed: int, channels_last: bool = False, compile: bool = False) -> None:
        self.channels_last, self.compile = channels_last, compile
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        else:
            self.device = torch.device("cpu")
            if threads:
                torch.set_num_threads(threads)
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(seed + self.rank)
        self.is_main = self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def wrap(self, model: nn.Module) -> nn.Module:
        """On the device (NHWC with ``channels_last``), in DDP under torchrun. ``compile`` compiles
        the forward in place, so ``unwrap`` still returns the module whose weights are saved."""
        model = model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        if self.compile:
            model.compile()
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def tensor(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).to(self.device, non_blocking=True)

    def close(self) -> None:
        if self.world > 1:
            torch.distributed.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class RunLog:
    """CSV log of losses and validation metrics, plus a PNG of the curves next to it.

    The log reads back as one run with increasing iterations: a row whose iteration is not past
    the one before it replaces the rows it overlaps (they came from a lineage abandoned at an
    earlier checkpoint), and :meth:`truncate` drops the rows past the checkpoint a run resumes from.
    """

    def __init__(self, out: Path, title: str) -> None:
        self.path, self.png, self.title = out / "log.csv", out / "curves.png", title
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with open(self.path) as fh:
                for r in csv.DictReader(fh):
                    row = {k: float(v) if v not in ("", None) else None for k, v in r.items()}
                    row["iter"] = int(row["iter"])
                    while self.rows and self.rows[-1]["iter"] >= row["iter"]:
                        self.rows.pop()
                    self.rows.append(row)

    def truncate(self, last_iter: int) -> None:
        """Forget rows past ``last_iter`` (the checkpoint a run resumes from); written with the next row."""
        self.rows = [r for r in self.rows if r["iter"] <= last_iter]

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, keys)
                w.writeheader()
                w.writerows(self.rows)

        atomic_write(self.path, write)

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        adversarial = [k for k in keys if k in ADVERSARIAL_LOSSES]
        loss_keys = [k for k in keys if k.startswith("loss") and k not in adversarial]
        fig, axes = plt.subplots(1, 3 if adversarial else 2, figsize=(16 if adversarial else 11, 4))
        a, b = axes[0], axes[1]
        if adversarial:  # near log 2 = chance: a linear axis shows whether the discriminator learns
            c = axes[2]
            for k in adversarial:
                pts = [(r["iter"], r[k]) for r in self.rows if r.get(k) is not None]
                if pts:
                    c.plot(*zip(*pts), label=k, lw=0.8)
            c.axhline(np.log(2), color="grey", ls=":", lw=1, label="log 2 (chance)")
            c.set_xlabel("iteration"), c.set_title("adversarial losses (linear)"), c.legend(fontsize=7)
        for k in loss_keys:
            pts = [(r["iter"], r[k]) for r in self.rows if r.get(k) is not None]
            if pts:
                a.plot(*zip(*pts), label=k, lw=0.8)
        a.set_yscale("log"), a.set_xlabel("iteration"), a.set_title("training losses"), a.legend(fontsize=7)
        val = [r for r in self.rows if r.get("val_psnr") is not None]
        if val:
            it = [r["iter"] for r in val]
            b.plot(it, [r["val_psnr"] for r in val], "o-", label="model PSNR")
            b.plot(it, [r["val_psnr_bicubic"] for r in val], "--", label="bicubic PSNR")
            b.set_ylabel("PSNR (dB)"), b.set_xlabel("iteration")
            b2 = b.twinx()
            b2.plot(it, [r["val_ssim"] for r in val], "s:", color="tab:green", label="model SSIM")
            b2.set_ylabel("SSIM")
            b.legend(loc="lower right", fontsize=7)
        b.set_title("validation (val split, border crop = scale)")
        fig.suptitle(self.title)
        fig.tight_layout()
        fig.savefig(self.png, dpi=90)
        plt.close(fig)


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


@torch.no_grad()
def evaluate(model: nn.Module, val: list, scale: int, device: torch.device) -> dict[str, float]:
    """Mean PSNR/SSIM (data range 1, border crop = scale) of ``model`` and bicubic on ``val``."""
    model.eval()
    res = {"val_psnr": [], "val_ssim": [], "val_psnr_bicubic": []}
    for lr, hr, _ in val:
        sr = model(torch.from_numpy(lr)[None, None].to(device)).float().clamp(0, 1)[0, 0].cpu().numpy()
        res["val_psnr"].append(psnr(sr, hr, scale))
        res["val_ssim"].append(ssim(sr, hr, scale))
        res["val_psnr_bicubic"].append(psnr(upscale_bicubic(lr, scale), hr, scale))
    model.train()
    return {k: float(np.mean(v)) for k, v in res.items()}


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
                                          sources=opts.sources, exclude_sources=held_out)
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
                            seed=int(seed), balance=o.balance, edge_fraction=o.edge_patches, degradation=o.degradation)

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


# --------------------------------------------------------------------------- teacher


def train_teacher(opts: TrainOptions, config: str | dict = "esrgan-small", stage: str = "psnr",
                  init: str | Path | None = None, pixel_weight: float | None = None,
                  perceptual_weight: float = 1.0, gan_weight: float = 5e-3, disc_config: str = "discriminator",
                  perceptual: str = "auto", disc_lr: float | None = None) -> Path:
    """Train the RRDBNet teacher. ``stage="psnr"``: L1 only. ``stage="gan"``: ESRGAN losses
    (pixel 1e-2, perceptual 1, RaGAN 5e-3 by default), initialised from ``init`` (the PSNR model).

    ``disc_lr``: the discriminator's learning rate (default ``opts.lr``; a larger one is the two
    time-scale update rule). Learning rates given now apply on resume too, so a stalled run can be
    continued with a faster discriminator."""
    if stage not in ("psnr", "gan"):
        raise ValueError("stage must be 'psnr' or 'gan'")
    cfg = resolve_config(config, scale=opts.scale)
    if init:
        gen, cfg, _ = load_model(init)
        gen.train()
    else:
        gen = build_model(cfg)
    # The GAN stage also fine-tunes students: the run is named after what it trains.
    run = Run(opts, f"{'teacher' if cfg['type'] == 'RRDBNet' else 'student'}-{stage}")
    ctx = run.ctx
    gen = ctx.wrap(gen)
    ema = ema_of(unwrap(gen), opts.ema_decay).to(ctx.device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=opts.lr, betas=ADAM_BETAS)
    modules: dict[str, Any] = {"gen": gen, "ema": ema, "opt_g": opt_g}
    if stage == "psnr":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, opts.iters, eta_min=opts.lr * COSINE_FLOOR)
        modules["sched"] = sched
        pixel_weight = 1.0 if pixel_weight is None else pixel_weight
    else:
        disc = ctx.wrap(build_model(disc_config))
        disc_lr = opts.lr if disc_lr is None else disc_lr
        opt_d = torch.optim.Adam(disc.parameters(), lr=disc_lr, betas=ADAM_BETAS)
        percep = PerceptualLoss(perceptual).to(ctx.device)
        modules.update(disc=disc, opt_d=opt_d)
        pixel_weight = 1e-2 if pixel_weight is None else pixel_weight
    start = run.resume(modules)
    if stage == "gan":  # no schedule in the GAN stage: the rates of this command win over the checkpoint's
        for opt, rate in ((opt_g, opts.lr), (opt_d, disc_lr)):
            for group in opt.param_groups:
                group["lr"] = rate
    if start >= opts.iters:
        log.info("%s already complete (%d iterations) in %s", run.kind, start, run.out)
        return run.out / "model.safetensors"
    batches = run.batches()
    if ctx.is_main:
        log.info("%s: %s, %d parameters, stage %s, iterations %d..%d", run.kind, cfg.get("name", cfg["type"]),
                 count_params(unwrap(gen)), stage, start, opts.iters)

    def step(it: int) -> dict[str, float]:
        lr_t, hr_t = next(batches)
        if stage == "psnr":
            with ctx.autocast():
                loss = F.l1_loss(gen(lr_t).float(), hr_t)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            sched.step()
            ema.update_parameters(unwrap(gen))
            return {"loss_l1": loss.item()}
        # GAN stage: generator step (D frozen), then discriminator step.
        disc.requires_grad_(False)
        with ctx.autocast():
            sr = gen(lr_t).float()
            real_logits, real_feats = unwrap(disc)(hr_t, return_features=True)
            fake_logits, fake_feats = unwrap(disc)(sr, return_features=True)
            l_pix = F.l1_loss(sr, hr_t)
            l_per = percep(sr, hr_t, fake_feats, real_feats)
            l_gan = ragan_g_loss(real_logits.detach().float(), fake_logits.float())
            loss_g = pixel_weight * l_pix + perceptual_weight * l_per + gan_weight * l_gan
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        ema.update_parameters(unwrap(gen))
        disc.requires_grad_(True)
        with ctx.autocast():
            loss_d = ragan_d_loss(disc(hr_t).float(), disc(sr.detach()).float())
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        return {"loss_pix": l_pix.item(), "loss_percep": l_per.item(), "loss_gan": l_gan.item(), "loss_d": loss_d.item()}

    extra = {"config": cfg, "stage": stage, "init": str(init) if init else None,
             "losses": ({"l1": 1.0} if stage == "psnr" else
                        {"pixel_l1": pixel_weight, "perceptual": perceptual_weight, "ragan": gan_weight,
                         "perceptual_mode": percep.mode}), "ema_decay": opts.ema_decay,
             **({"disc": disc_config, "disc_lr": disc_lr} if stage == "gan" else {})}
    run.loop(start, step, lambda: ema.module,
             lambda it: run.save(it, modules, ema.module, cfg, extra))
    return run.out / "model.safetensors"


# --------------------------------------------------------------------------- distillation


@torch.no_grad()
def transfer_weights(source: nn.Module, target: nn.Module) -> dict[str, list[str]]:
    """Copy every tensor of ``source`` into ``target`` whose name and shape match (the body of a
    network trained at another scale); the rest of ``target`` (the upsampling tail) stays as built.
    Returns the names copied and the names left fresh."""
    src = source.state_dict()
    copied, fresh = [], []
    for name, tensor in target.state_dict().items():
        if name in src and src[name].shape == tensor.shape:
            tensor.copy_(src[name])
            copied.append(name)
        else:
            fresh.append(name)
    return {"copied": copied, "fresh": fresh}


@torch.no_grad()
def _teacher_cache(teacher: nn.Module, samples, scale: int, device, tile: int = CACHE_TILE):
    """Degrade every training image once and super-resolve it with the teacher (tile by tile)."""
    from tqdm import tqdm

    from ..core.degradation import crop_to_multiple, degrade

    lrs, hrs, outs, mods = [], [], [], []
    for s in tqdm(samples, desc="teacher cache", mininterval=5):
        hr = crop_to_multiple(s.hr, scale)
        lr = degrade(hr, scale, step=s.step)
        out = np.empty_like(hr)
        pad = CACHE_PAD
        h, w = lr.shape
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                y0, x0 = max(y - pad, 0), max(x - pad, 0)
                y1, x1 = min(y + tile + pad, h), min(x + tile + pad, w)
                sr = teacher(torch.from_numpy(lr[y0:y1, x0:x1])[None, None].to(device)).float().clamp(0, 1)[0, 0].cpu().numpy()
                yy, xx = (y - y0) * scale, (x - x0) * scale
                th, tw = (min(y + tile, h) - y) * scale, (min(x + tile, w) - x) * scale
                out[y * scale:y * scale + th, x * scale:x * scale + tw] = sr[yy:yy + th, xx:xx + tw]
        lrs.append(lr), hrs.append(hr), outs.append(out), mods.append(s.modality)
    return lrs, hrs, outs, mods


PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"l1": F.l1_loss, "l2": F.mse_loss}


def distill_student(opts: TrainOptions, teacher_path: str | Path | None, config: str | dict = "student",
                    teacher_weight: float = 1.0, gt_weight: float = 1.0, cache_teacher: bool = True,
                    init: str | Path | None = None, pixel_loss: str = "l1", body_from: str | Path | None = None,
                    int8_aware: int | None = None) -> Path:
    """Train the student: ``pixel_loss`` (l1 or l2) to ground truth, plus ``teacher_weight`` x the
    same loss to the teacher's output when ``teacher_path`` is given (distillation). Without a
    teacher (``teacher_path=None``) it is plain supervised training with every augmentation.
    With ``cache_teacher`` the teacher runs once over the training images (flip/rotate-90
    augmentation only); without it, every batch (all augmentations). ``init``: a student
    checkpoint (training form) to fine-tune, with its own config and a fresh optimiser (the
    L1 -> L2 fine-tune of the efficient-SR challenges). ``body_from``: a student of any scale or
    size whose tensors of the same name and shape start the ``config`` network at ``opts.scale``
    (an x2 from an x4 body; a 2-block size from the first blocks of a 4-block one); the rest
    starts fresh. ``int8_aware``: fine-tune ``init`` for INT8 export, with every convolution that
    INT8 export quantizes (all in the body after the first ``int8_aware``, the number export keeps
    float with ``--int8-float-convs``) running on int8-rounded inputs and weights in training
    (:mod:`medsr_edge.distill.qat`)."""
    if pixel_loss not in PIXEL_LOSSES:
        raise ValueError(f"pixel_loss must be one of {sorted(PIXEL_LOSSES)}")
    loss_fn = PIXEL_LOSSES[pixel_loss]
    run = Run(opts, "distill" if teacher_path else "student")
    ctx = run.ctx
    teacher = None
    t_cfg: dict | None = None
    if teacher_path:
        teacher, t_cfg, t_meta = load_model(teacher_path, ctx.device)
        teacher.requires_grad_(False)
        if int(t_meta.get("scale", opts.scale)) != opts.scale:
            raise ValueError(f"teacher is x{t_meta.get('scale')} but --scale is {opts.scale}")
    else:
        teacher_weight, cache_teacher = 0.0, False
    transfer = None
    if init and body_from:
        raise ValueError("--init (fine-tune) and --body-from (start a new network) exclude each other")
    if init:
        start_model, cfg, i_meta = load_model(init, ctx.device)
        if int(i_meta.get("scale", opts.scale)) != opts.scale:
            raise ValueError(f"--init {init} is x{i_meta.get('scale')} but --scale is {opts.scale}; "
                             "--body-from starts a network of another scale from it")
        if i_meta.get("deploy"):
            raise ValueError(f"--init {init} is re-parameterized (deploy form); pass the training checkpoint")
        student = ctx.wrap(start_model.train())
    elif body_from:
        source, s_cfg, s_meta = load_model(body_from, ctx.device)
        if s_meta.get("deploy"):
            raise ValueError(f"--body-from {body_from} is re-parameterized (deploy form); pass the training checkpoint")
        cfg = resolve_config(config, scale=opts.scale)
        start_model = build_model(cfg).to(ctx.device)
        transfer = {"from": str(body_from), "from_config": s_cfg.get("name", s_cfg["type"]),
                    "from_scale": int(s_meta.get("scale", 0)), **transfer_weights(source, start_model)}
        if not transfer["copied"]:
            raise ValueError(f"--body-from {body_from}: no tensor has the name and shape of one in {cfg.get('name', cfg['type'])}")
        log.info("--body-from %s: %d tensors copied, %d left fresh (%s)", body_from, len(transfer["copied"]),
                 len(transfer["fresh"]), ", ".join(transfer["fresh"]) or "none")
        student = ctx.wrap(start_model.train())
    else:
        cfg = resolve_config(config, scale=opts.scale)
        student = ctx.wrap(build_model(cfg))
    groups: list[dict[str, Any]] = [{"params": list(student.parameters()), "lr": opts.lr}]
    grids = None
    if int8_aware is not None:
        if not init:
            raise ValueError("INT8-aware fine-tuning starts from a trained student: pass --init RUN_DIR")
        if ctx.world > 1:  # the activation grids live outside the DDP-wrapped module: not synchronised
            raise ValueError("INT8-aware fine-tuning runs in one process; start it without torchrun")
        grids = simulate_int8(unwrap(student), int8_aware).to(ctx.device)
        groups.append({"params": list(grids.parameters()), "lr": INT8_STEP_LR})
        log.info("INT8-aware fine-tuning: %d convolutions on int8-rounded inputs and weights (%s ... %s), "
                 "activation step sizes learned", len(grids.names), grids.names[0], grids.names[-1])
    ema = ema_of(unwrap(student), opts.ema_decay).to(ctx.device)
    opt = torch.optim.Adam(groups, betas=ADAM_BETAS)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, opts.iters, eta_min=opts.lr * COSINE_FLOOR)
    modules = {"student": student, "ema": ema, "opt": opt, "sched": sched, **({"int8_grids": grids} if grids is not None else {})}
    start = run.resume(modules)
    if start >= opts.iters:
        log.info("%s already complete (%d iterations) in %s", run.kind, start, run.out)
        return run.out / "model.safetensors"
    if cache_teacher:
        cached = CachedTripletSampler(*_teacher_cache(teacher, run.train_samples, opts.scale, ctx.device),
                                      patch=opts.patch, scale=opts.scale, seed=opts.seed * 1000 + ctx.rank)
    else:
        batches = run.batches()
    if ctx.is_main:
        log.info("%s: student %s, %d parameters (training form), teacher %s", run.kind, cfg.get("name", cfg["type"]),
                 count_params(unwrap(student)), teacher_path)
        if teacher is not None:
            t_val = evaluate(teacher, run.val, opts.scale, ctx.device)
            log.info("teacher on the validation crops: PSNR %.2f dB (bicubic %.2f), SSIM %.4f",
                     t_val["val_psnr"], t_val["val_psnr_bicubic"], t_val["val_ssim"])

    def step(it: int) -> dict[str, float]:
        t_out = None
        if cache_teacher:
            lr_np, hr_np, t_np = cached.batch(opts.batch)
            lr_t, hr_t, t_out = ctx.tensor(lr_np), ctx.tensor(hr_np), ctx.tensor(t_np)
        else:
            lr_t, hr_t = next(batches)
            if teacher is not None:
                with torch.no_grad(), ctx.autocast():
                    t_out = teacher(lr_t).float().clamp(0, 1)
        with ctx.autocast():
            sr = student(lr_t).float()
            l_gt = loss_fn(sr, hr_t)
            loss = gt_weight * l_gt
            if t_out is not None:
                l_kd = loss_fn(sr, t_out)
                loss = loss + teacher_weight * l_kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(unwrap(student))
        losses = {"loss_gt": l_gt.item()}
        if t_out is not None:
            losses["loss_kd"] = l_kd.item()
        return losses

    extra = {"config": cfg, "teacher": str(teacher_path) if teacher_path else None, "teacher_config": t_cfg,
             "init": str(init) if init else None,
             **({"body_from": {k: v for k, v in transfer.items() if k != "copied"} | {"copied": len(transfer["copied"])}}
                if transfer else {}),
             "losses": {f"{pixel_loss}_gt": gt_weight, f"{pixel_loss}_teacher": teacher_weight},
             "cache_teacher": cache_teacher, "ema_decay": opts.ema_decay}

    def int8_meta() -> dict:
        if grids is None:
            return {}
        return {"int8_aware": {"float_convs": int8_aware, "simulated": len(grids.names), "step_lr": INT8_STEP_LR,
                               "ranges": learned_ranges(grids)}}

    run.loop(start, step, lambda: ema.module,
             lambda it: run.save(it, modules, ema.module, cfg, extra | int8_meta()))
    return run.out / "model.safetensors"
