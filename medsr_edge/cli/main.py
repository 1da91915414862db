"""``medsr-edge``: enhance, info, train, distill, export, bench.

Heavy packages (torch, onnx, TensorRT) are imported inside the commands that need them, so
``enhance`` and ``info`` run on an edge box with numpy + onnxruntime only.
"""

from __future__ import annotations

import logging
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from .. import __version__
from ..runtime.errors import MedsrError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Super-resolution of medical images (MRI, CT, X-ray; DICOM first) for edge devices.")
train_app = typer.Typer(no_args_is_help=True, help="Train the ESRGAN teacher.")
app.add_typer(train_app, name="train")


class BackendChoice(str, Enum):
    auto = "auto"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"
    torch = "torch"


class PrecisionChoice(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)


@app.command()
def enhance(
    inputs: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively): DICOM, PNG, JPEG, TIFF."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (one input) or folder. Default: NAME-sr-x4.EXT next to each file, FOLDER-sr-x4/ for folders."),
    model: str = typer.Option("student-x4", "--model", "-m", help="Shipped model name (student-x4, teacher-x4) or a .onnx/.engine/.safetensors path."),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend."),
    precision: PrecisionChoice = typer.Option(PrecisionChoice.fp32, help="Precision of the shipped model to use."),
    tile: int = typer.Option(256, help="Tile side in input pixels (0: whole image at once)."),
    overlap: int = typer.Option(16, help="Input pixels shared by neighbouring tiles."),
    to: Optional[str] = typer.Option(None, help="Output type for folder/default outputs: dcm, png, tif, jpg. Default: same as input."),
    overwrite: bool = typer.Option(False, help="Replace outputs that exist."),
    skip_existing: bool = typer.Option(False, help="Leave outputs that exist as they are (resume a batch)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for ONNX Runtime (default: all)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Enhance images: DICOM in -> derived DICOM out (16-bit, HU kept, new UIDs), PNG/TIFF keep bit depth."""
    _setup_logging(verbose)
    from tqdm import tqdm

    from ..runtime.enhancer import Enhancer
    from ..runtime.io import iter_image_files
    from ..runtime.pipeline import enhance_file, plan_jobs

    try:
        enhancer = Enhancer(model, backend.value, precision.value, tile=tile, overlap=overlap, threads=threads)
    except MedsrError as exc:
        fail(str(exc))
    files = iter_image_files(inputs)
    if not files:
        fail(f"no image files found in {', '.join(map(str, inputs))}")
    jobs = plan_jobs(files, [Path(p) for p in inputs], output, enhancer.scale, to)
    failed = skipped = 0
    bar = tqdm(jobs, desc=f"enhance x{enhancer.scale}", unit="img", disable=len(jobs) < 2, file=sys.stderr)
    try:
        for job in bar:
            if skip_existing and job.dst.exists() and not overwrite:
                skipped += 1
                continue
            try:
                dst = enhance_file(enhancer, job, overwrite)
                bar.write(f"{job.src} -> {dst}", file=sys.stderr) if len(jobs) > 1 else typer.echo(str(dst))
            except MedsrError as exc:
                failed += 1
                bar.write(f"error: {exc}", file=sys.stderr)
            except MemoryError:
                failed += 1
                bar.write(f"error: {job.src}: out of memory; use a smaller --tile", file=sys.stderr)
            except Exception as exc:  # noqa: BLE001 - one bad file must not abort the batch
                failed += 1
                bar.write(f"error: {job.src}: unexpected {type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}", file=sys.stderr)
                if verbose:
                    logging.exception("details")
    except KeyboardInterrupt:
        typer.echo("interrupted: finished outputs are complete, no partial file was left", err=True)
        raise typer.Exit(130)
    done = len(jobs) - failed - skipped
    if len(jobs) > 1 or failed:
        typer.echo(f"{done} enhanced, {skipped} skipped, {failed} failed ({enhancer.describe()})", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def info() -> None:
    """Version, shipped models, available backends and devices."""
    import importlib.util
    import platform

    import onnxruntime as ort

    from ..runtime.models import WEIGHTS_DIR, model_card, shipped_models

    typer.echo(f"medsr-edge {__version__} (Python {platform.python_version()}, {platform.machine()})")
    typer.echo(f"models in {WEIGHTS_DIR}:")
    models = shipped_models()
    if not models:
        typer.echo("  none")
    for name, files in models.items():
        card = model_card(name)
        res = card.get("results", {}).get("mean", {})
        summary = f"  PSNR {res['psnr']:.2f} dB / SSIM {res['ssim']:.4f} on the test split" if res else ""
        typer.echo(f"  {name}: " + ", ".join(f"{f.name} ({f.stat().st_size / 1e6:.2f} MB)" for f in files) + summary)
    typer.echo("backends:")
    typer.echo(f"  onnxruntime {ort.__version__}: providers {', '.join(ort.get_available_providers())}")
    trt = importlib.util.find_spec("tensorrt") is not None
    typer.echo("  tensorrt: " + ("installed" if trt else "not installed (pip install 'medsr-edge[tensorrt]' on NVIDIA)"))
    if importlib.util.find_spec("torch") is not None:
        import torch

        cuda = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU only"
        typer.echo(f"  torch {torch.__version__}: {cuda}")
    else:
        typer.echo("  torch: not installed (training/export need pip install 'medsr-edge[train]')")


def _train_options(data, out, scale, iters, batch, patch, lr, split, val_split, val_every, seed, threads, denoise,
                   blur, noise, limit):
    from ..distill.train import TrainOptions

    if not Path(data).is_dir():
        fail(f"{data}: data folder not found")
    return TrainOptions(data=Path(data), out=Path(out), scale=scale, iters=iters, batch=batch, patch=patch, lr=lr,
                        split=split or None, val_split=val_split or None, val_every=val_every,
                        save_every=val_every, seed=seed, threads=threads, denoise=denoise, blur_sigma=blur,
                        noise_sigma=noise, limit_per_modality=limit)


_common = dict(
    data=typer.Option(..., help="Folder of PNG/JPEG/TIFF/DICOM (e.g. ../shared/data)."),
    out=typer.Option(..., help="Output folder: model.safetensors, log.csv, curves.png, ckpt/ (resumed)."),
)


@train_app.command("teacher")
def train_teacher_cmd(
    data: Path = _common["data"], out: Path = _common["out"],
    config: str = typer.Option("esrgan-small", help="esrgan-full (64f/23b, GPU), esrgan-small, esrgan-tiny."),
    stage: str = typer.Option("psnr", help="psnr (L1) or gan (RaGAN + perceptual + L1, EMA)."),
    init: Optional[Path] = typer.Option(None, help="Checkpoint (or folder) to start from; the PSNR model for --stage gan."),
    iters: int = 2500, batch: int = 16, patch: int = typer.Option(128, help="HR patch side, pixels."),
    scale: int = typer.Option(4, help="2 or 4."), lr: float = typer.Option(2e-4, help="Learning rate."),
    split: str = typer.Option("train", help="Use only files in folders of this name ('' = all)."),
    val_split: str = typer.Option("val", help="Validation folder name ('' = training images)."),
    val_every: int = 250, seed: int = 0, threads: Optional[int] = None,
    denoise: Optional[str] = typer.Option(None, help="median or gaussian clean-up of the ground truth."),
    blur: float = typer.Option(0.0, help="Degradation blur sigma, HR pixels."),
    noise: float = typer.Option(0.0, help="Degradation noise sigma, [0,1] units."),
    limit: Optional[int] = typer.Option(None, help="At most this many images per modality."),
    disc: str = typer.Option("discriminator", help="Discriminator config for --stage gan."),
) -> None:
    """Train the RRDBNet teacher (stage psnr, then stage gan)."""
    _setup_logging(True)
    if stage == "gan" and init is None:
        fail("--stage gan starts from the PSNR model: pass --init RUN_DIR")
    from ..distill.train import train_teacher

    opts = _train_options(data, out, scale, iters, batch, patch, lr, split, val_split, val_every, seed, threads,
                          denoise, blur, noise, limit)
    try:
        path = train_teacher(opts, config, stage, init, disc_config=disc)
    except (MedsrError, FileNotFoundError, KeyError, ValueError) as exc:
        fail(str(exc))
    typer.echo(str(path))


@app.command()
def distill(
    teacher: Path = typer.Option(..., help="Teacher checkpoint or training folder."),
    data: Path = _common["data"], out: Path = _common["out"],
    config: str = typer.Option("student", help="Student config: student, student-tiny."),
    iters: int = 10000, batch: int = 16, patch: int = 128, scale: int = 4, lr: float = 1e-3,
    split: str = "train", val_split: str = "val", val_every: int = 500, seed: int = 0,
    threads: Optional[int] = None, denoise: Optional[str] = None, limit: Optional[int] = None,
    teacher_weight: float = typer.Option(1.0, help="Weight of L1(student, teacher)."),
    cache_teacher: bool = typer.Option(True, help="Run the teacher once over the data (fast, flips/rot90 only)."),
) -> None:
    """Distil a teacher into the re-parameterizable student."""
    _setup_logging(True)
    from ..distill.train import distill_student

    opts = _train_options(data, out, scale, iters, batch, patch, lr, split, val_split, val_every, seed, threads,
                          denoise, 0.0, 0.0, limit)
    try:
        path = distill_student(opts, teacher, config, teacher_weight=teacher_weight, cache_teacher=cache_teacher)
    except (MedsrError, FileNotFoundError, KeyError, ValueError) as exc:
        fail(str(exc))
    typer.echo(str(path))


if __name__ == "__main__":  # pragma: no cover
    app()
