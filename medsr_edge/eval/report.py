"""The bench as a report: measure (see :mod:`.benchmark`), print the table, write JSON / CSV /
Markdown / plot, and the gallery of best, median and worst images. A plain Python entry point;
``medsr-edge bench`` only parses options and applies the CI gate to the returned document."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import MedsrError
from ..runtime.io import count_by_modality
from . import benchmark as bm

METRICS_NOTE = "PSNR/SSIM on [0,1], border crop = scale, SSIM gaussian 11/1.5; mean over modalities"


@dataclass(frozen=True, kw_only=True)
class BenchRequest:
    """What to measure and where to write it (None: not written); validated on construction."""

    data: Path
    scale: int
    models: tuple[str, ...]
    backends: tuple[str, ...]
    split: str | None = None
    limit: int | None = None
    tile: int = 256
    threads: int | None = None
    json_path: Path | None = None
    csv_path: Path | None = None
    plot_path: Path | None = None
    markdown: Path | None = None
    gallery: Path | None = None
    fid_weights: Path | None = None
    fd_vgg16: bool = False  # Fréchet distance on VGG16 features (slow on a CPU: VGG16 per 240-pixel crop)
    frd: bool = False  # Fréchet Radiomics Distance v1 (frd-score; about 1 s per image on a CPU)
    latency_rounds: int = 9  # interleaved timing rounds after the quality pass (0: none)
    sources: tuple[str, ...] = ()  # only these <modality>/<source> (or modalities); () = all
    exclude_sources: tuple[str, ...] = ()  # all but these
    by_source: bool = False  # print and write the gain over bicubic per source too
    degradation: str = "bicubic"  # LR model (core.degradation.BENCH_DEGRADATIONS)
    device: str = "auto"  # where ONNX Runtime runs (runtime.backends.parse_device)

    def __post_init__(self) -> None:
        from ..core.degradation import BENCH_DEGRADATIONS

        if self.scale not in (2, 3, 4, 8):
            raise MedsrError(f"--scale {self.scale}: use 2, 3, 4 or 8")
        if not self.models or not self.backends:
            raise MedsrError("bench needs at least one model and one backend")
        if (self.limit is not None and self.limit < 1) or self.tile < 0 or self.latency_rounds < 0:
            raise MedsrError("--limit is at least 1; --tile and --latency-rounds cannot be negative")
        if self.degradation not in BENCH_DEGRADATIONS:
            raise MedsrError(f"--degradation {self.degradation!r}: use {', '.join(BENCH_DEGRADATIONS)}")


def bench_report(req: BenchRequest, console) -> dict:
    """Run the bench, print it on ``console`` (rich), write the requested files; returns the JSON
    document (the CI gate's input). Raises MedsrError when there is no readable image."""
    from ..runtime.backends import ort_providers
    from .fid import FidUnavailable, fid_scorer

    ort_providers(req.device)  # a wrong or missing --device is an error before any image is read
    if not Path(req.data).exists():
        raise MedsrError(f"{req.data}: data folder not found")
    left_out: list[str] = []
    images = bm.load_bench_images(req.data, req.scale, req.split, req.limit, left_out, sources=req.sources,
                                  exclude_sources=req.exclude_sources, degradation=req.degradation)
    if left_out:
        console.print(f"{len(left_out)} unreadable files left out, first: {left_out[0]}", style="yellow", soft_wrap=True)
    mods = count_by_modality(im.modality for im in images)
    what = "antialiased bicubic" if req.degradation == "bicubic" else f"{req.degradation} (fixed bench settings)"
    console.print(f"{len(images)} images {mods}, x{req.scale}, degradation: {what}")
    env = bm.environment(req.threads)
    console.print(f"{env['cpu']}, {env['cpu_count']} cores, {env['threads']} threads; "
                  f"kernel flags: {' '.join(env['cpu_flags']) or 'unknown'}", style="dim")
    try:
        fid, fid_info = fid_scorer(req.fid_weights), {"status": "ok", "weights": str(req.fid_weights or "$MEDSR_FID_WEIGHTS")}
    except FidUnavailable as exc:
        fid, fid_info = None, {"status": "skipped", "reason": str(exc)}
    fd = None
    if req.fd_vgg16:
        from .fd_vgg16 import VGG16FrechetScorer

        try:
            fd = VGG16FrechetScorer(req.threads)
        except FidUnavailable as exc:
            console.print(f"  fd_vgg16 skipped: {exc}", style="dim")
    frd = None
    if req.frd:
        from .frd import FRDScorer

        try:
            frd = FRDScorer()
        except FidUnavailable as exc:
            console.print(f"  frd skipped: {exc}", style="dim")
    rows = bm.run_benchmark(images, req.scale, req.models, req.backends, req.tile, req.threads,
                            progress=lambda s: console.print(f"  measuring {s} ...", style="dim"), fid=fid, fd_vgg16=fd,
                            frd=frd, latency_rounds=req.latency_rounds, baselines=bm.baselines_for(req.degradation),
                            device=req.device)
    if fid is not None:
        fid_info["real_crops"] = fid.real_crops
    guard = bm.fidelity_guard(rows)
    _print_table(rows, req, console, fid_info)
    doc = bm.to_json(rows, {"data": str(req.data), "split": req.split, "scale": req.scale, "limit": req.limit,
                            "sources": list(req.sources), "exclude_sources": list(req.exclude_sources),
                            "degradation": req.degradation,
                            "images": mods, "images_per_source": count_by_modality(im.source for im in images), "tile": req.tile, "environment": env, "fid": fid_info,
                            "metrics": METRICS_NOTE, "fidelity_guard": {"margin_db": bm.FIDELITY_MARGIN_DB,
                                                                        "refused": guard}})
    _write_files(rows, doc, req, fid is None, len(images))
    if req.gallery:
        _gallery(rows, images, req, console)
    return doc


def _print_table(rows, req: BenchRequest, console, fid_info: dict) -> None:
    from rich.table import Table

    skipped = fid_info["status"] != "ok"
    t = Table(title=f"medsr-edge bench x{req.scale} on {req.data}" + (f" ({req.split})" if req.split else ""))
    for h in bm.HEADERS:
        t.add_column(h, overflow="fold")
    for cells in bm.table(rows, skipped):
        t.add_row(*cells)
    console.print(t)
    for note in bm.notes(rows) + ([f"FID skipped: {fid_info['reason']}"] if skipped else []):
        console.print(f"  {note}", style="dim", soft_wrap=True)
    if req.by_source:
        headers, cells = bm.source_table(rows)
        t = Table(title="gain over bicubic per source, dB")
        for h in headers:
            t.add_column(h, overflow="fold")
        for c in cells:
            t.add_row(*c)
        console.print(t)


def _write_files(rows, doc: dict, req: BenchRequest, fid_skipped: bool, n_images: int) -> None:
    if req.json_path:
        bm.save_json(doc, req.json_path)
    if req.csv_path:
        with open(req.csv_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(bm.HEADERS)
            w.writerows(bm.table(rows, fid_skipped))
        if req.by_source:  # beside it: NAME-by-source.csv
            headers, cells = bm.source_table(rows)
            with open(Path(req.csv_path).with_name(Path(req.csv_path).stem + "-by-source.csv"), "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(headers)
                w.writerows(cells)
    if req.markdown:
        Path(req.markdown).write_text(bm.markdown_table(rows, fid_skipped, req.by_source) + "\n")
    if req.plot_path:
        where = f"{Path(req.data).name}" + (f"/{req.split}" if req.split else "")
        bm.plot(rows, req.plot_path, f"x{req.scale} on {where}, {n_images} images")


def _gallery(rows, images, req: BenchRequest, console) -> None:
    """Comparison figures of the best, median and worst student gain over bicubic per modality."""
    from ..runtime.enhancer import Enhancer
    from ..runtime.io import read_image
    from .figures import comparison_figure

    student, teacher = f"student-x{req.scale}", f"teacher-x{req.scale}"
    req.gallery.mkdir(parents=True, exist_ok=True)
    enh = {}
    for label, model, prec in (("student FP32", student, "fp32"), ("student INT8", student, "int8"), ("teacher", teacher, "fp32")):
        try:
            enh[label] = Enhancer(model, "onnxruntime", prec, tile=req.tile, device=req.device, threads=req.threads,
                                  scale=req.scale)
        except MedsrError as exc:
            console.print(f"  gallery: {label} left out: {exc}", style="dim")
    for modality, picks in bm.gallery_picks(rows, images, student).items():
        for label, i in picks:
            out = req.gallery / f"{modality}-{label}.png"
            comparison_figure(read_image(images[i].path), enh, req.scale, out,
                              title=f"{modality}, {label} student gain: {images[i].name}")
            console.print(f"  gallery: {out}")
