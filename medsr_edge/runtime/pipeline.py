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
    src: Path
    dst: Path


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
    jobs = []
    single_file = output is not None and output.suffix.lower() in OUTPUT_SUFFIXES and len(inputs) == 1
    for src in inputs:
        root = next((r for r in roots if r.is_dir() and (r == src.parent or r in src.parents)), None)
        suffix = output_suffix(src, to)
        if single_file:
            dst = output
        elif root is not None:
            base = output if output is not None else root.with_name(f"{root.name}-sr-x{scale}")
            dst = (base / src.relative_to(root)).with_suffix(suffix)
        else:
            base = output if output is not None else src.parent
            dst = base / f"{src.stem}-sr-x{scale}{suffix}" if output is None else base / f"{src.stem}{suffix}"
        jobs.append(Job(src, dst))
    return jobs


def enhance_file(enhancer: Enhancer, job: Job, overwrite: bool = False) -> Path:
    """Enhance one file; raises MedsrError (one-line message) on any problem, writes nothing then."""
    src, dst = job.src, job.dst
    try:
        if dst.resolve() == src.resolve():
            raise ImageWriteError(dst, "output would replace the input; choose another -o")
    except OSError:
        pass
    if dst.exists() and not overwrite:
        raise ImageWriteError(dst, "output exists; pass --overwrite to replace it or --skip-existing")
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


__all__ = ["Job", "MedsrError", "enhance_file", "plan_jobs"]
