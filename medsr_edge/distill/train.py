"""Training loops: ESRGAN teacher (``psnr`` stage with L1, ``gan`` stage with RaGAN + perceptual
+ L1 and an EMA generator) and the distillation of the teacher into the re-parameterizable student.

CPU for small configs, CUDA (bf16 autocast) when present, several GPUs with ``torchrun`` (DDP).
Every ``save_every`` iterations the full training state goes to ``OUT/ckpt/last.pt`` (resumed
automatically) and the EMA generator to ``OUT/model.safetensors``; ``OUT/log.csv`` and
``OUT/curves.png`` hold the losses and validation PSNR/SSIM.

The shared parts live beside this file, one job each: :mod:`.options` (TrainOptions), :mod:`.context`
(device, seed, EMA), :mod:`.run` (data, batches, checkpoint/resume, the iteration loop), :mod:`.validation`
and :mod:`.runlog` (log.csv, curves.png).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models import build_model, count_params, resolve_config
from ..models.checkpoint import load_model
from ..models.widen import widen
from .context import ema_of, unwrap
from .data import CachedTripletSampler
from .losses import PerceptualLoss, ragan_d_loss, ragan_g_loss
from .options import TrainOptions
from .qat import learned_ranges, simulate_int8
from .run import Run
from .validation import evaluate

log = logging.getLogger(__name__)


ADAM_BETAS = (0.9, 0.99)  # ESRGAN's / BasicSR's
COSINE_FLOOR = 0.01  # the cosine schedule ends at this fraction of the peak learning rate
WIDEN_NOISE = 1e-3  # --widen-from: noise on the widened weights, relative to each tensor's std
INT8_STEP_LR = 1e-3  # Adam on log(step) of the INT8-aware run's activation grids: at most ~0.1 % a step
CACHE_TILE, CACHE_PAD = 128, 8  # teacher cache: LR tile side and the context around it, pixels


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
                    int8_aware: int | None = None, widen_from: str | Path | None = None) -> Path:
    """Train the student: ``pixel_loss`` (l1 or l2) to ground truth, plus ``teacher_weight`` x the
    same loss to the teacher's output when ``teacher_path`` is given (distillation). Without a
    teacher (``teacher_path=None``) it is plain supervised training with every augmentation.
    With ``cache_teacher`` the teacher runs once over the training images (flip/rotate-90
    augmentation only); without it, every batch (all augmentations). ``init``: a student
    checkpoint (training form) to fine-tune, with its own config and a fresh optimiser (the
    L1 -> L2 fine-tune of the efficient-SR challenges). ``body_from``: a student of any scale or
    size whose tensors of the same name and shape start the ``config`` network at ``opts.scale``
    (an x2 from an x4 body; a 2-block size from the first blocks of a 4-block one); the rest
    starts fresh. ``widen_from``: a RepPFANet of the same depth whose function the wider
    ``config`` network starts from (:func:`medsr_edge.models.widen.widen`, channels copied, a
    little noise, WIDEN_NOISE). ``int8_aware``: fine-tune ``init`` for INT8 export, with every convolution that
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
    transfer = widened = None
    if sum(x is not None for x in (init, body_from, widen_from)) > 1:
        raise ValueError("--init (fine-tune), --body-from and --widen-from (start a new network) exclude each other")
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
    elif widen_from:
        source, s_cfg, s_meta = load_model(widen_from, ctx.device)
        if s_meta.get("deploy") or int(s_meta.get("scale", opts.scale)) != opts.scale:
            raise ValueError(f"--widen-from {widen_from}: pass the training checkpoint of an x{opts.scale} network")
        cfg = resolve_config(config, scale=opts.scale)
        start_model = widen(source.cpu(), build_model(cfg), noise=WIDEN_NOISE, seed=opts.seed).to(ctx.device)
        widened = {"from": str(widen_from), "from_config": s_cfg.get("name", s_cfg["type"]), "noise": WIDEN_NOISE}
        log.info("--widen-from %s: %s widened to %s (function kept, noise %g)", widen_from,
                 s_cfg.get("name", s_cfg["type"]), cfg.get("name", cfg["type"]), WIDEN_NOISE)
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
             **({"widen_from": widened} if widened else {}),
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
