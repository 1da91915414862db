"""File-level enhancement: read -> enhance -> write, with output naming and no data loss."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .dicom import write_derived_dicom
from .enhancer import Enhancer
from .errors import ImageWriteError, MedsrError
from .io import read_image, write_raster

OUTPUT_SUFFIXES = {".dcm", ".png", ".tif", ".tiff", ".jpg", ".jpeg"}


@dataclass
class Job:
    """One input file and its output path. ``named`` is True when the user gave this exact output
    file with ``-o``; such a file is never replaced without ``--overwrite``. Outputs whose paths
    medsr-edge chose (default names, files inside an output folder) are skipped when a complete
    one exists, so re-running an interrupted batch resumes it."""

    src: Path
    dst: Path
    named: bool = False


def output_suffix(src: Path, to: str | None) -> str:
    if to:
        return to if to.startswith(".") else "." + to
    return src.suffix.lower() if src.suffix else ".dcm"


def plan_jobs(inputs: list[Path], roots: list[Path], output: Path | None, scale: int, to: str | None) -> list[Job]:
    """Map each input file to its output path.

    One input file and ``output`` with an image suffix -> exactly that file. Otherwise ``output``
    is a folder (mirroring the layout under each input folder); with no ``output``, a file goes
    next to its input as ``NAME-sr-x4.EXT`` and a folder's files into ``FOLDER-sr-x4/``.
    """
    jobs: list[Job] = []
    single_file = output is not None and output.suffix.lower() in OUTPUT_SUFFIXES and len(inputs) == 1
    for src in inputs:
        root = next((r for r in roots if r.is_dir() and (r == src.parent or r in src.parents)), None)
        suffix = output_suffix(src, to)
        if single_file:
            jobs.append(Job(src, output, named=True))
            continue
        elif root is not None:
            base = output if output is not None else root.with_name(f"{root.name}-sr-x{scale}")
            dst = (base / src.relative_to(root)).with_suffix(suffix)
        else:
            base = output if output is not None else src.parent
            dst = base / f"{src.stem}-sr-x{scale}{suffix}" if output is None else base / f"{src.stem}{suffix}"
        jobs.append(Job(src, dst))
    return jobs


def exclude_outputs(files: list[Path], output: Path | None) -> list[Path]:
    """Drop files that lie inside the output folder, so ``enhance DIR -o DIR/sr`` run twice does not
    enhance its own outputs."""
    if output is None or output.suffix.lower() in OUTPUT_SUFFIXES:
        return files
    out = output.resolve()
    return [f for f in files if out not in f.resolve().parents]


def output_is_complete(path: Path) -> bool:
    """True when ``path`` holds a whole image: the DICOM pixel data has every byte its header
    needs, or PIL verifies the PNG/TIFF/JPEG. Outputs are written by rename, so a file that
    medsr-edge wrote is always complete; this guards against files copied in by other tools."""
    try:
        if path.suffix.lower() == ".dcm":
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            return path.stat().st_size >= ds.Rows * ds.Columns * frames * ds.BitsAllocated // 8
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 - any failure to read means "not a complete output"
        return False


def existing_output_action(job: Job, overwrite: bool, skip_existing: bool) -> str | None:
    """What to do about an output that exists: None (it does not, or ``overwrite``); "skip" for
    a named output with ``skip_existing`` or a complete output whose path medsr-edge chose;
    otherwise raise ImageWriteError."""
    if overwrite or not job.dst.exists():
        return None
    if job.named:
        if skip_existing:
            return "skip"
        raise ImageWriteError(job.dst, "output exists; pass --overwrite to replace it or --skip-existing to keep it")
    if output_is_complete(job.dst):
        return "skip"
    raise ImageWriteError(job.dst, "exists but is not a complete image; delete it or pass --overwrite")


def enhance_file(enhancer: Enhancer, job: Job, overwrite: bool = False) -> Path:
    """Enhance one file; raises MedsrError (one-line message) on any problem, writes nothing then."""
    src, dst = job.src, job.dst
    try:
        if dst.resolve() == src.resolve():
            raise ImageWriteError(dst, "output would replace the input; choose another -o")
    except OSError:
        pass
    if dst.exists() and not overwrite:
        raise ImageWriteError(dst, "output exists; pass --overwrite to replace it")
    image = read_image(src)
    frames, _ = enhancer.enhance_image(image)
    if dst.suffix.lower() == ".dcm":
        if image.format != "dicom":
            raise ImageWriteError(dst, f"DICOM output needs a DICOM input ({src.name} is {image.format.upper()}); use --to png or tif")
        write_derived_dicom(dst, image, frames, enhancer.scale,
                            f"Super-resolution x{enhancer.scale} by medsr-edge, model {enhancer.describe()}")
    else:
        write_raster(dst, frames, image)
    return dst


__all__ = ["Job", "MedsrError", "enhance_file", "exclude_outputs", "existing_output_action", "plan_jobs"]
