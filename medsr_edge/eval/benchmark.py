"""Quality vs latency of every deployable artifact against bicubic and the teacher (no torch needed).

Each image under ``--data`` is a ground truth; its LR version comes from
:func:`~medsr_edge.runtime.transforms.degrade`, the same function training uses. PSNR/SSIM are
computed on the normalised image (data range 1) with border crop = scale; headline figures are the
mean over modalities of each modality's mean (so 173 MRI slices do not drown 10 radiographs).
Latency is the median (and p90) over images of one timed run each, after a warm-up run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.degradation import (
    BENCH_DEGRADATIONS,
    FAMILY_OF_MODALITY,
    crop_to_multiple,
    kspace_upsample,
    upscale_bicubic,
    upscale_lanczos,
    upscale_sinc,
)
from ..core.errors import MedsrError, first_line
from ..core.fidelity import FIDELITY_MARGIN_DB, fidelity_failures, is_gan_model
from ..core.formats import FORMATS, Format
from ..core.metrics import psnr, ssim
from ..core.sysinfo import INT8_DOT_FLAGS, cpu_flags, cpu_name
from ..dataset import ground_truths, make_lr
from ..runtime.models import shipped_models, weights_dir


@dataclass
class BenchImage:
    name: str
    modality: str
    lr: np.ndarray
    hr: np.ndarray
    path: Path | None = None
    source: str = ""  # <modality>/<source> under the data folder


@dataclass
class Row:
    name: str
    format: str
    backend: str
    precision: str
    status: str = "ok"
    reason: str = ""
    size_mb: float | None = None
    params: int | None = None
    gflops_per_mpx: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    psnr_gain_vs_bicubic: float | None = None
    per_modality: dict = field(default_factory=dict)
    per_source: dict = field(default_factory=dict)  # <modality>/<source> -> n, psnr, ssim, gain over bicubic
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    images_per_s: float | None = None
    peak_mem_mb: float | None = None
    fid: float | None = None
    fd_vgg16: float | None = None
    frd: float | None = None
    per_image_psnr: list = field(default_factory=list)
    latency_rounds_ms: list = field(default_factory=list)  # interleaved pass: one median (ms) per round
    latency_rounds_cpu_ms: list = field(default_factory=list)  # the same calls in process CPU time (ms)


def load_bench_images(data: str | Path, scale: int, split: str | None = None, limit: int | None = None,
                      left_out: list[str] | None = None, *, sources: tuple[str, ...] | list[str] = (),
                      exclude_sources: tuple[str, ...] | list[str] = (), degradation: str = "bicubic") -> list[BenchImage]:
    """Ground truths (first frame, normalised per image) and their LR versions, tagged with modality
    and source; ``sources`` / ``exclude_sources`` select sources as :func:`~medsr_edge.runtime.io.data_files`
    does. ``degradation``: bicubic, an acquisition family at its fixed bench settings
    (:func:`~medsr_edge.core.degradation.bench_params`), or ``physics`` (each image under its
    modality's family); noise is drawn from a seed fixed per image index, so runs compare.
    Unreadable files are left out; their one-line errors are appended to ``left_out``."""
    if degradation not in BENCH_DEGRADATIONS:
        raise MedsrError(f"--degradation {degradation!r}: use {', '.join(BENCH_DEGRADATIONS)}")
    root = Path(data)
    out = []
    for gt in ground_truths(root, split, sources=sources, exclude_sources=exclude_sources, min_side=8 * scale,
                            limit_per_modality=limit, errors=left_out):
        hr = crop_to_multiple(gt.hr, scale)
        family = FAMILY_OF_MODALITY.get(gt.modality, "bicubic") if degradation == "physics" else degradation
        lr = make_lr(hr, scale, gt.step, family, np.random.default_rng(len(out)))
        out.append(BenchImage(str(gt.path.relative_to(root) if root.is_dir() else gt.path.name), gt.modality, lr, hr,
                              gt.path, gt.source))
    if not out:
        raise MedsrError(f"{data}: no readable images" + (f" in '{split}' folders" if split else ""))
    return out


class PeakRSS:
    """Peak resident memory (MB) of model calls above the level before the timed loop, from the
    kernel's high-water mark (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before each
    call and read after it): no sampling thread competes with the model for the cores, so memory
    is measured in the same pass as latency without disturbing it. None where Linux /proc is not
    there or not writable."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self.base = self._status("VmRSS") if self._reset() else None

    @staticmethod
    def _status(field: str) -> float | None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) / 1024.0  # kB -> MB
        except (OSError, ValueError):
            pass
        return None

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # 5: reset the peak RSS to the current RSS
            return True
        except OSError:
            return False

    def before_call(self) -> None:
        if self.base is not None:
            self._reset()

    def after_call(self) -> None:
        hwm = self._status("VmHWM") if self.base is not None else None
        if hwm is not None:
            self.peak = hwm if self.peak is None else max(self.peak, hwm)

    @property
    def extra_mb(self) -> float | None:
        return None if self.base is None or self.peak is None else round(max(self.peak - self.base, 0.0), 1)


def _group_scores(key, ps: list[float], ss: list[float], images: list[BenchImage], bicubic: list[float] | None) -> dict:
    """{group: n, mean PSNR, mean SSIM, mean gain over bicubic} with images grouped by ``key(image)``."""
    out = {}
    for g in sorted({key(im) for im in images}):
        idx = [i for i, im in enumerate(images) if key(im) == g]
        entry = {"n": len(idx), "psnr": round(float(np.mean([ps[i] for i in idx])), 4),
                 "ssim": round(float(np.mean([ss[i] for i in idx])), 5)}
        if bicubic is not None:
            entry["psnr_gain_vs_bicubic"] = round(float(np.mean([ps[i] - bicubic[i] for i in idx])), 4)
        out[g] = entry
    return out


def _score(row: Row, ps: list[float], ss: list[float], images: list[BenchImage], bicubic: list[float] | None) -> None:
    row.per_image_psnr = [round(p, 4) for p in ps]
    row.per_modality = _group_scores(lambda im: im.modality, ps, ss, images, bicubic)
    row.per_source = _group_scores(lambda im: im.source or im.modality, ps, ss, images, bicubic)
    row.psnr = round(float(np.mean([v["psnr"] for v in row.per_modality.values()])), 4)
    row.ssim = round(float(np.mean([v["ssim"] for v in row.per_modality.values()])), 5)
    if bicubic is not None:
        row.psnr_gain_vs_bicubic = round(float(np.mean([v["psnr_gain_vs_bicubic"] for v in row.per_modality.values()])), 4)


def _measure(fn, images: list[BenchImage], row: Row, scale: int, bicubic: list[float] | None, warmup: int = 1) -> None:
    """Time ``fn`` on every image (after ``warmup`` runs), score each output at once and drop it,
    so the peak memory is the model's working set, not a pile of kept outputs."""
    for im in images[:warmup]:
        fn(im.lr)
    times, ps, ss = [], [], []
    mem = PeakRSS()
    for im in images:
        mem.before_call()
        t0 = time.perf_counter()
        out = fn(im.lr)
        times.append((time.perf_counter() - t0) * 1000)
        mem.after_call()
        ps.append(psnr(out, im.hr, scale))
        ss.append(ssim(out, im.hr, scale))
        del out
    row.latency_ms_p50 = round(statistics.median(times), 3)
    row.latency_ms_p90 = round(float(np.percentile(times, 90)), 3)
    row.images_per_s = round(1000.0 / row.latency_ms_p50, 2) if row.latency_ms_p50 > 0 else None
    row.peak_mem_mb = mem.extra_mb
    _score(row, ps, ss, images, bicubic)


def timing_images(images: list[BenchImage], per_modality: int = 2) -> list[BenchImage]:
    """The images of the interleaved latency pass: per modality, the ``per_modality`` images
    whose LR pixel count is nearest that modality's median, so the pass is short and every row
    is timed on the same typical inputs."""
    picks = []
    for m in sorted({im.modality for im in images}):
        group = sorted((im for im in images if im.modality == m), key=lambda im: im.lr.size)
        mid = len(group) // 2
        lo = max(0, min(mid - per_modality // 2, len(group) - per_modality))
        picks += group[lo:lo + per_modality]
    return picks


def interleaved_latency(runners: list[tuple[Row, object]], images: list[BenchImage], rounds: int) -> None:
    """Time every row again in ``rounds`` interleaved rounds. A round warms every row up with one
    untimed call, then runs image after image through every row in turn (the order of the rows
    rotates from image to image and from round to round), and stores each row's median ms over the
    images in ``row.latency_rounds_ms`` (wall clock) and ``row.latency_rounds_cpu_ms`` (CPU time
    of the process). The calls of two rows on one image are next to each other in time, so a slow
    spell of the machine (another tenant, a frequency drop) slows both alike, and ratios between
    rows taken round by round (:func:`paired_ratio`) are steadier than two separately timed
    passes. With one inference thread the CPU time is the work itself: time the process spends
    descheduled by other tenants is not in it, which is why the CI gate runs with ``--threads 1``."""
    if not images:
        return
    n = len(runners)
    for k in range(rounds):
        for _, fn in runners:
            fn(images[0].lr)
        times: list[list[float]] = [[] for _ in runners]
        cpu: list[list[float]] = [[] for _ in runners]
        for i, im in enumerate(images):
            for j in range(n):
                idx = (j + k + i) % n
                t0, c0 = time.perf_counter(), time.process_time()
                runners[idx][1](im.lr)
                cpu[idx].append((time.process_time() - c0) * 1000)
                times[idx].append((time.perf_counter() - t0) * 1000)
        for (row, _), t, c in zip(runners, times, cpu):
            row.latency_rounds_ms.append(round(statistics.median(t), 4))
            row.latency_rounds_cpu_ms.append(round(statistics.median(c), 4))


def paired_ratio(a: dict, b: dict, clock: str = "wall") -> float:
    """Latency of row ``a`` over row ``b`` (JSON rows of one run): the median over rounds of the
    per-round ratio when both have interleaved rounds on ``clock`` ("wall" or "cpu"), else the
    ratio of their p50s."""
    field_name = "latency_rounds_cpu_ms" if clock == "cpu" else "latency_rounds_ms"
    ra, rb = a.get(field_name) or [], b.get(field_name) or []
    if ra and len(ra) == len(rb) and all(y > 0 for y in rb):
        return statistics.median(x / y for x, y in zip(ra, rb))
    return a["latency_ms_p50"] / b["latency_ms_p50"]


def gate_clock(current: dict, baseline: dict) -> str | None:
    """The clock the gate compares latency ratios on: "cpu" when both runs used one inference
    thread and timed CPU rounds (descheduling by other tenants then costs nothing), else "wall";
    None when the runs used different thread counts, whose ratios do not compare (a small model
    gains less from a second thread than the teacher does)."""
    def threads(doc: dict):
        return doc.get("environment", {}).get("threads")

    t_now, t_base = threads(current), threads(baseline)
    if t_now is not None and t_base is not None and t_now != t_base:
        return None
    has_cpu = all(any(r.get("latency_rounds_cpu_ms") for r in doc["rows"]) for doc in (current, baseline))
    return "cpu" if t_now == 1 and t_base == 1 and has_cpu else "wall"


def _add(scorer, image: np.ndarray, real: bool, modality: str) -> None:
    if hasattr(scorer, "by_modality"):  # scorers with per-modality values (fd_vgg16, frd; not FID)
        scorer.add(image, real=real, modality=modality)
    else:
        scorer.add(image, real=real)


def _frechet_pass(fn, images: list[BenchImage], row: Row, scorers: dict) -> None:
    """One Fréchet score per scorer (``{"fid": ..., "fd_vgg16": ..., "frd": ...}``) of ``fn``'s
    outputs, in a pass of its own so that the feature extractors never run inside the latency and
    memory timing; per-modality values go to ``row.per_modality[m][key]``."""
    for key, scorer in scorers.items():
        for im in images:
            _add(scorer, fn(im.lr), False, im.modality)
        setattr(row, key, round(scorer.compute(), 4))
        for m, value in getattr(scorer, "by_modality", {}).items():
            if m in row.per_modality:
                row.per_modality[m][key] = round(value, 4)


def default_rows(models: list[str], backends: list[str]) -> list[tuple[str, Format, Path]]:
    """(model, format, file) for every shipped artifact of ``models`` on ``backends``."""
    shipped = shipped_models()
    rows = []
    for model in models:
        for fmt in FORMATS:
            if fmt.backend not in backends:
                continue
            path = weights_dir() / f"{model}{fmt.suffix}"
            if path.is_file() or (model in shipped and fmt.backend == "tensorrt"):
                rows.append((model, fmt, path))
    return rows


# Interpolation rows besides bicubic. "sinc" is the anchor student-sinc adds its residual to.
BASELINES = {"lanczos": upscale_lanczos, "sinc": upscale_sinc, "zero-filled": kspace_upsample}


def baselines_for(degradation: str) -> tuple[str, ...]:
    """The interpolation rows of a bench under ``degradation``: none for bicubic; Lanczos and
    windowed sinc for the acquisition models, and zero-filled k-space (what an MR scanner does)
    for mr-kspace and physics."""
    if degradation == "bicubic":
        return ()
    return ("lanczos", "sinc", "zero-filled") if degradation in ("mr-kspace", "physics") else ("lanczos", "sinc")


def run_benchmark(images: list[BenchImage], scale: int, models: list[str], backends: list[str],
                  tile: int = 256, threads: int | None = None, progress=None, fid=None, fd_vgg16=None,
                  frd=None, latency_rounds: int = 9, baselines: tuple[str, ...] = (), device: str = "auto") -> list[Row]:
    """Bicubic first, then every (model, format) row; failures become rows with a reason. Then,
    with ``latency_rounds`` > 0, the rows that ran are timed again in that many interleaved
    rounds on :func:`timing_images` (the CI gate's latency ratios come from these).
    ``fid``: a :class:`medsr_edge.eval.fid.FrechetScorer` to add an FID per row, or None;
    ``fd_vgg16``: a :class:`medsr_edge.eval.fd_vgg16.VGG16FrechetScorer`, or None;
    ``frd``: a :class:`medsr_edge.eval.frd.FRDScorer`, or None. ``baselines``: more
    interpolation rows after bicubic, from :data:`BASELINES` (``lanczos``, ``sinc``, ``zero-filled``)."""
    from ..runtime.enhancer import Enhancer

    rows: list[Row] = []
    scorers = {k: v for k, v in (("fid", fid), ("fd_vgg16", fd_vgg16), ("frd", frd)) if v is not None}
    for scorer in scorers.values():
        for im in images:
            _add(scorer, im.hr, True, im.modality)
    bic = Row("bicubic", "-", "numpy", "fp32", params=0)
    _measure(lambda lr: upscale_bicubic(lr, scale), images, bic, scale, None)
    _frechet_pass(lambda lr: upscale_bicubic(lr, scale), images, bic, scorers)
    bic_psnr = bic.per_image_psnr
    rows.append(bic)
    runners: list[tuple[Row, object]] = [(bic, lambda lr: upscale_bicubic(lr, scale))]
    for name in baselines:
        fn = BASELINES[name]
        row = Row(name, "-", "numpy", "fp32", params=0)
        _measure(lambda lr, fn=fn: fn(lr, scale), images, row, scale, bic_psnr)
        rows.append(row)
    for model, fmt, path in default_rows(models, backends):
        row = Row(model, fmt.name, fmt.backend, fmt.precision)
        if progress:
            progress(f"{model} {fmt.name}")
        if not path.is_file():
            row.status, row.reason = "skipped", f"no {path.name}; build it with medsr-edge export --format {fmt.name}"
            rows.append(row)
            continue
        row.size_mb = round(path.stat().st_size / 1e6, 3)
        try:
            enh = Enhancer(path, fmt.backend, fmt.precision, tile=tile, device=device, threads=threads, scale=scale)
            meta = enh.backend.meta
            row.params = meta.get("params")
            row.gflops_per_mpx = meta.get("gflops_per_output_mpx")
            _measure(enh.enhance_array, images, row, scale, bic_psnr)
            _frechet_pass(enh.enhance_array, images, row, scorers)
            runners.append((row, enh.enhance_array))
        except MedsrError as exc:
            row.status, row.reason = "skipped", str(exc)
        except Exception as exc:  # noqa: BLE001 - a failing backend is a row, not a crash
            row.status, row.reason = "failed", first_line(exc, 160)
        rows.append(row)
    if latency_rounds > 0:
        if progress:
            progress(f"latency of {len(runners)} rows, {latency_rounds} interleaved rounds")
        interleaved_latency(runners, timing_images(images), latency_rounds)
    return rows


def environment(threads: int | None) -> dict:
    import onnxruntime as ort

    return {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(), "threads": threads or os.cpu_count(),
            "python": platform.python_version(), "medsr_edge": __version__, "onnxruntime": ort.__version__,
            "numpy": np.__version__, "platform": platform.platform()}


def to_json(rows: list[Row], meta: dict) -> dict:
    return {**meta, "rows": [asdict(r) for r in rows]}


def table(rows: list[Row], fid_skipped: bool = False) -> list[list[str]]:
    """Rows of the terminal/README table; the FID column reads "skipped" when ``fid_skipped``."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    out = []
    for r in rows:
        mods = " / ".join(f"{m} {v['psnr']:.2f}" for m, v in r.per_modality.items())
        out.append([r.name, r.format, r.backend, r.precision, r.status,
                    f(r.size_mb, ".2f"), f(r.params, ","), f(r.gflops_per_mpx, ".1f"), f(r.psnr, ".2f"),
                    f(r.psnr_gain_vs_bicubic, "+.2f"), f(r.ssim, ".4f"), mods or "-", f(r.latency_ms_p50, ".1f"),
                    f(r.latency_ms_p90, ".1f"), f(r.images_per_s, ".1f"), f(r.peak_mem_mb, ".0f"),
                    "skipped" if fid_skipped and r.status == "ok" else f(r.fid, ".2f"), f(r.fd_vgg16, ".2f"),
                    f(r.frd, ".2f")])
    return out


HEADERS = ["Model", "Format", "Backend", "Prec", "Status", "Size MB", "Params", "GFLOPs/MP", "PSNR dB",
           "vs bicubic", "SSIM", "PSNR per modality", "ms/img p50", "p90", "img/s", "peak MB", "FID", "FD-VGG16", "FRD"]


def fidelity_guard(rows: list[Row], margin_db: float = FIDELITY_MARGIN_DB) -> list[str]:
    """Flag every GAN-trained row (``gan`` in its name) whose PSNR in some modality is more than
    ``margin_db`` below bicubic's: hallucinated detail in a medical image is a defect, so such a
    model is marked ``refused`` (its numbers stay in the row) and each failure is returned."""
    bic = next((r for r in rows if r.name == "bicubic"), None)
    failures = []
    if bic is None:
        return failures
    for r in rows:
        if not is_gan_model(r.name) or r.status != "ok":
            continue
        low = fidelity_failures({m: (v["psnr"], bic.per_modality[m]["psnr"]) for m, v in r.per_modality.items()
                                 if m in bic.per_modality}, margin_db)
        if low:
            detail = ", ".join(f"{m} {a:.2f} vs bicubic {b:.2f} dB" for m, (a, b) in sorted(low.items()))
            r.status, r.reason = "refused", f"fidelity guard: more than {margin_db} dB below bicubic ({detail})"
            failures.append(f"{r.name} {r.format}: {r.reason}")
    return failures


def notes(rows: list[Row]) -> list[str]:
    """Why rows were skipped or failed, one line each."""
    return [f"{r.name} {r.format}: {r.status}: {r.reason}" for r in rows if r.status != "ok"]


def source_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the per-source view: one row per source (``<modality>/<source>``) with
    its image count, bicubic PSNR and each model row's gain over bicubic there, dB."""
    bic = next((r for r in rows if r.name == "bicubic"), None)
    scored = [r for r in rows if r.status == "ok" and r.per_source and r.name != "bicubic"]
    headers = ["Source", "Images", "bicubic PSNR"] + [f"{r.name} {r.precision}" for r in scored]
    out = []
    for src in sorted({s for r in rows for s in r.per_source}):
        n = next(r.per_source[src]["n"] for r in rows if src in r.per_source)
        bic_psnr = bic.per_source.get(src, {}).get("psnr") if bic else None
        gains = [r.per_source.get(src, {}).get("psnr_gain_vs_bicubic") for r in scored]
        out.append([src, str(n), "-" if bic_psnr is None else f"{bic_psnr:.2f}"]
                   + ["-" if g is None else f"{g:+.2f}" for g in gains])
    return headers, out


def markdown_table(rows: list[Row], fid_skipped: bool = False, by_source: bool = False) -> str:
    """The bench table in Markdown; with ``by_source`` followed by the per-source gains."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table(rows, fid_skipped)]
    if by_source:
        headers, cells = source_table(rows)
        lines += ["", "Gain over bicubic per source, dB:", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def plot(rows: list[Row], path: str | Path, title: str) -> None:
    """PSNR vs latency scatter, every row labelled, Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok" and r.psnr is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    offsets = [(6, 4), (6, -11), (6, 14), (6, -21), (6, 24)]  # staggered: coincident points stay readable
    for i, r in enumerate(ok):
        ax.scatter(r.latency_ms_p50, r.psnr, s=40)
        ax.annotate(f"{r.name} {r.format if r.format != '-' else ''} {r.precision}".replace("  ", " "),
                    (r.latency_ms_p50, r.psnr), textcoords="offset points", xytext=offsets[i % len(offsets)], fontsize=7)
    front, best = [], -np.inf
    for r in sorted(ok, key=lambda r: r.latency_ms_p50):
        if r.psnr > best:
            front.append(r)
            best = r.psnr
    if len(front) > 1:
        ax.plot([r.latency_ms_p50 for r in front], [r.psnr for r in front], "--", color="grey", lw=1, label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.2)  # room for the labels of the top and right-most points inside the axes
    ax.set_xlabel("latency per image, median (ms, log scale)")
    ax.set_ylabel("PSNR (dB, mean over modalities)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def key(r: dict) -> tuple:
    return (r["name"], r["format"], r["backend"], r["precision"])


def regression_gate(current: dict, baseline: dict, max_psnr_drop: float, max_latency_increase: float,
                    reference: str = "teacher-x4", max_int8_over_float: float = 0.1) -> tuple[list[str], list[str]]:
    """(failures, notes) of ``current`` against ``baseline``.

    PSNR: at most ``max_psnr_drop`` dB below the baseline, every row. Latency of float rows: as a
    ratio to the ``reference`` model's ONNX FP32 row measured in the same run (bicubic if absent;
    round by round from the interleaved pass where both rows have one, see :func:`paired_ratio`,
    in CPU time where both runs had one inference thread, see :func:`gate_clock`), at most
    ``max_latency_increase`` above the baseline's ratio, so a slower machine does not fail; not
    gated (a note) when the two runs used different thread counts.
    Latency of INT8 rows: at most ``max_int8_over_float`` above the same model's float row
    (FP32, else FP16) on the same backend in the same run. An INT8 row's own speed moves between
    processes far more than a float row's (student-x4 INT8 took 4.3 to 7.9 ms per image in
    separate runs of the same gate on one 2-core VM while FP32 stayed at 7.1 to 7.6 ms), but
    an INT8 model slower than its float twin is a regression wherever it runs. INT8 is not timed
    on a CPU whose int8 dot-product instructions (VNNI, AMX, dotprod) differ from the baseline's,
    or that has none: there INT8 can run at FP32 speed or below, which is the hardware; each such
    row is a note."""

    def ref_row(doc: dict) -> dict | None:
        for r in doc["rows"]:
            if r["name"] == reference and r["format"] == "onnx" and r["status"] == "ok":
                return r
        return next((r for r in doc["rows"] if r["name"] == "bicubic"), None)

    def int8_dot(doc: dict) -> list[str] | None:
        flags = doc.get("environment", {}).get("cpu_flags")
        return None if flags is None else sorted(INT8_DOT_FLAGS.intersection(flags))

    def float_twin(r: dict) -> dict | None:
        for precision in ("fp32", "fp16"):
            for t in current["rows"]:
                if (t["name"], t["backend"], t["precision"], t["status"]) == (r["name"], r["backend"], precision, "ok"):
                    return t
        return None

    base_rows = {key(r): r for r in baseline["rows"]}
    ref_now, ref_base = ref_row(current), ref_row(baseline)
    dot_now, dot_base = int8_dot(current), int8_dot(baseline)
    clock = gate_clock(current, baseline)
    on = " (CPU time)" if clock == "cpu" else ""
    failures, notes = [], []
    if clock is None:
        notes.append(f"latency not gated: {current['environment']['threads']} inference threads here, "
                     f"{baseline['environment']['threads']} in the baseline (pass --threads "
                     f"{baseline['environment']['threads']})")
    now_keys = {key(r) for r in current["rows"]}
    for k, b in base_rows.items():  # a row that vanished is a regression, not a pass
        if b["status"] == "ok" and k not in now_keys:
            failures.append(f"{b['name']} {b['format']} ({b['backend']}, {b['precision']}): in the baseline but "
                            "missing from this run")
    for r in current["rows"]:
        b = base_rows.get(key(r))
        label = f"{r['name']} {r['format']} ({r['backend']}, {r['precision']})"
        if b is None or b["status"] != "ok":
            continue
        if r["status"] != "ok":
            failures.append(f"{label}: was ok in the baseline, now {r['status']}: {r['reason']}")
            continue
        drop = b["psnr"] - r["psnr"]
        if drop > max_psnr_drop:
            failures.append(f"{label}: PSNR {r['psnr']:.3f} dB is {drop:.3f} dB below the baseline {b['psnr']:.3f} (max {max_psnr_drop})")
        if r["name"] == "bicubic":
            continue
        if r["precision"] == "int8":
            twin = float_twin(r)
            if r["backend"] == "onnxruntime" and (dot_now != dot_base or dot_now == []):
                notes.append(f"{label}: latency not gated: int8 dot-product instructions here "
                             f"{'/'.join(dot_now or []) or 'none'}, in the baseline {'/'.join(dot_base or []) or 'none'}")
            elif twin is None:
                notes.append(f"{label}: latency not gated: no float row of {r['name']} on {r['backend']} in this run")
            elif (ratio := paired_ratio(r, twin, clock or "wall")) > 1 + max_int8_over_float:
                failures.append(f"{label}: latency{on} {ratio:.2f}x its {twin['precision']} twin's ({r['latency_ms_p50']:.2f} vs "
                                f"{twin['latency_ms_p50']:.2f} ms p50), slower by more than {max_int8_over_float:.0%}")
            continue
        if not (ref_now and ref_base) or clock is None:
            continue
        now, then = paired_ratio(r, ref_now, clock), paired_ratio(b, ref_base, clock)
        if now > then * (1 + max_latency_increase):
            failures.append(f"{label}: latency{on} {now:.3f}x the reference, baseline {then:.3f}x (+{(now / then - 1) * 100:.0f}% > {max_latency_increase * 100:.0f}%)")
    return failures, notes


def gallery_picks(rows: list[Row], images: list[BenchImage], model: str = "student-x4") -> dict[str, list[tuple[str, int]]]:
    """Per modality, the (label, image index) of the best, median and worst PSNR gain of
    ``model`` (ONNX FP32) over bicubic."""
    bic = next(r for r in rows if r.name == "bicubic")
    row = next((r for r in rows if r.name == model and r.format == "onnx" and r.status == "ok"), None)
    if row is None:
        return {}
    gains = np.array(row.per_image_psnr) - np.array(bic.per_image_psnr)
    picks = {}
    for m in sorted({im.modality for im in images}):
        idx = sorted((i for i, im in enumerate(images) if im.modality == m), key=lambda i: gains[i])
        picks[m] = [("worst", idx[0]), ("median", idx[len(idx) // 2]), ("best", idx[-1])]
    return picks


def save_json(doc: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
