"""Comparison figures a radiologist can judge: LR, bicubic, student (FP32/INT8), teacher and
ground truth side by side with a zoomed inset, PSNR/SSIM under each, and absolute-error maps on
one shared colour scale (so invented or lost structure shows). numpy + matplotlib, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.degradation import DEGRADATIONS, crop_to_multiple, upscale_bicubic
from ..core.errors import MedsrError
from ..core.metrics import psnr, ssim
from ..dataset import make_lr
from ..runtime.image import Image
from ..runtime.transforms import Normalizer

# (centre, width) in HU, as radiology workstations define them.
WINDOW_PRESETS = {"lung": (-600.0, 1500.0), "soft-tissue": (40.0, 400.0), "bone": (400.0, 1800.0),
                  "brain": (40.0, 80.0)}


@dataclass
class Panel:
    title: str
    image: np.ndarray  # [0, 1], HR grid
    error: bool = True  # draw an error map for it


def in_window(gt: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Pixels strictly inside the display ``window`` (vmin, vmax in [0, 1]): not saturated on screen."""
    return (gt > window[0]) & (gt < window[1])


def detail_roi(gt: np.ndarray, size: int, window: tuple[float, float] = (0.0, 1.0)) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the ``size`` square with the most detail as displayed: mean gradient
    magnitude of ``gt`` clipped to ``window`` (vmin, vmax in [0, 1]), each pixel's capped at the
    99th percentile so that texture spread over the square beats one sharp object (a burned-in
    marker), weighted by the squared fraction of pixels strictly inside the window, so that air,
    saturated bone and the field-of-view edge do not win."""
    lo, hi = window
    shown = np.clip((gt.astype(np.float64) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    g = ndimage.gaussian_gradient_magnitude(shown, 1.0)
    inside = in_window(gt, window)
    if inside.any():
        g = np.minimum(g, np.percentile(g[inside], 99))
    energy = (ndimage.uniform_filter(g, size=size, mode="constant")
              * ndimage.uniform_filter(inside.astype(np.float64), size=size, mode="constant") ** 2)
    h, w = gt.shape
    half = size // 2
    inner = energy[half:h - half, half:w - half] if h > size and w > size else energy
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(x), int(y), size, size


def display_window(image: Image, norm: Normalizer, preset: str | None) -> tuple[float, float]:
    """(vmin, vmax) in the normalised [0, 1] space: a preset, the DICOM window, or the full range."""
    centre = width = None
    if preset:
        centre, width = WINDOW_PRESETS[preset]
    elif image.dataset is not None and "WindowCenter" in image.dataset and "WindowWidth" in image.dataset:
        wc, ww = image.dataset.WindowCenter, image.dataset.WindowWidth
        centre = float(wc[0] if hasattr(wc, "__len__") and not isinstance(wc, str) else wc)
        width = float(ww[0] if hasattr(ww, "__len__") and not isinstance(ww, str) else ww)
    if centre is None:
        return 0.0, 1.0
    lo, hi = norm.forward(np.array([centre - width / 2, centre + width / 2]))
    lo, hi = sorted((float(lo), float(hi)))
    return lo, hi if hi > lo else lo + 1e-3


def error_scale(errors: list[np.ndarray], gt: np.ndarray, window: tuple[float, float], margin: int) -> float:
    """Top of the shared error colour scale: the 99.9th percentile of all errors over the pixels
    whose ground truth lies inside the display ``window`` ([0, 1] units) and at least ``margin``
    pixels from any pixel outside it. The tissue being read sets the scale; the far larger errors
    at edges the window saturates (bone/air, the field of view) clip at the top."""
    inside = in_window(gt, window)
    if margin > 0:  # scipy erodes until nothing changes when iterations < 1
        inside = ndimage.binary_erosion(inside, iterations=margin)
    if inside.sum() < 64:
        inside = np.ones_like(gt, bool)
    return max(float(np.percentile(e[inside], 99.9)) for e in errors) or 1e-6


def error_units(image: Image) -> str:
    """Name of the modality units of ``image``: HU for CT DICOM, stored grey levels otherwise."""
    ds = image.dataset
    if ds is not None and getattr(ds, "Modality", "") == "CT" and "RescaleIntercept" in ds:
        return "HU"
    return "grey levels"


def comparison_figure(image: Image, enhancers: dict, scale: int, out: str | Path, roi=None,
                      window: str | None = None, title: str | None = None, degradation: str = "bicubic") -> dict:
    """Render the comparison PNG for the first frame of ``image``; returns the metrics per panel.

    enhancers: {label: Enhancer} (e.g. "student FP32", "student INT8", "teacher").
    roi: (x, y, w, h) in ground-truth pixels, or None to pick the most detailed region.
    degradation: how the LR is made from the ground truth: ``bicubic``, or an acquisition family
    (``mr-kspace``, ``ct-kernel``, ``xr-detector``) at the bench's settings and noise seed, with the
    bench's interpolation baselines for it as panels (sinc, Lanczos; zero-filled k-space for MR).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    norm = Normalizer.of(image)
    from .benchmark import BASELINES, baselines_for

    if degradation not in DEGRADATIONS:
        raise MedsrError(f"--degradation {degradation!r}: use one of {', '.join(DEGRADATIONS)}")
    gt = crop_to_multiple(norm.forward(image.frames[0]), scale)
    lr = make_lr(gt, scale, norm.grid_step(image.frames[0], image.dtype), degradation, np.random.default_rng(0))
    how = "" if degradation == "bicubic" else f", {degradation}"
    panels = [Panel(f"LR input (1/{scale}{how})", np.kron(lr, np.ones((scale, scale), np.float32)), error=False),
              Panel("bicubic", np.clip(upscale_bicubic(lr, scale), 0, 1))]
    panels += [Panel(name, np.clip(BASELINES[name](lr, scale), 0, 1)) for name in baselines_for(degradation)]
    panels += [Panel(label, enh.enhance_array(lr)) for label, enh in enhancers.items()]
    panels.append(Panel("ground truth", gt, error=False))
    h, w = gt.shape
    vmin, vmax = display_window(image, norm, window)
    if roi is None:
        roi = detail_roi(gt, max(min(h, w) // 5, 16), (vmin, vmax))
    x, y, rw, rh = roi
    metrics, errors = {}, []
    units = float(norm.hi - norm.lo)  # [0, 1] -> modality units (HU for CT)
    for p in panels:
        if p.title != "ground truth" and p.error:
            metrics[p.title] = {"psnr": round(psnr(p.image, gt, scale), 3), "ssim": round(ssim(p.image, gt, scale), 4)}
            errors.append((p.title, np.abs(p.image - gt) * units))
    err_max = error_scale([e for _, e in errors], gt, (vmin, vmax), margin=2 * scale)
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.8), gridspec_kw={"height_ratios": [1, 1]})
    for ax, p in zip(axes[0], panels):
        ax.imshow(p.image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.add_patch(Rectangle((x, y), rw, rh, fill=False, edgecolor="yellow", lw=0.8))
        inset = ax.inset_axes([0.55, 0.0, 0.45, 0.45])
        inset.imshow(p.image[y:y + rh, x:x + rw], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        inset.set_xticks([]), inset.set_yticks([])
        for s in inset.spines.values():
            s.set_edgecolor("yellow")
        m = metrics.get(p.title)
        ax.set_title(p.title, fontsize=9)
        ax.set_xlabel(f"{m['psnr']:.2f} dB / SSIM {m['ssim']:.3f}" if m else " ", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    err_axes = [ax for ax, p in zip(axes[1], panels) if p.title in dict(errors)]
    for ax in axes[1]:
        ax.axis("off")
    im = None
    shown = in_window(gt, (vmin, vmax))  # errors where the display saturates are not what the reader sees
    cmap = plt.get_cmap("inferno").with_extremes(bad="0.55")
    for ax, (label, e) in zip(err_axes, errors):
        ax.axis("on")
        im = ax.imshow(np.ma.masked_where(~shown, e), cmap=cmap, vmin=0, vmax=err_max, interpolation="nearest")
        ax.set_title(f"|{label} - GT|", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=list(axes[1]), fraction=0.02, pad=0.01, extend="max", label=f"|error| ({error_units(image)})")
        axes[1][0].text(0.0, 0.5, "error maps:\npixels the display\nwindow saturates\nare grey", fontsize=8,
                        transform=axes[1][0].transAxes, va="center")
    fig.suptitle(title or f"{image.source.name}: x{scale} super-resolution (PSNR/SSIM vs ground truth, border {scale})", fontsize=10)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return {"roi": list(roi), "panels": metrics}
