"""File-level enhancement: read -> enhance -> write, with output naming and no data loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..core.errors import ImageReadError, ImageWriteError, MedsrError
from .dicom import output_compression, write_derived_dicom
from .enhancer import Enhancer
from .image import Image
from .io import read_image, write_raster

OUTPUT_SUFFIXES = {".dcm", ".png", ".tif", ".tiff", ".jpg", ".jpeg"}
# Image types medsr-edge does not write: `-o out.bmp` is refused, not taken for a folder name.
FOREIGN_IMAGE_SUFFIXES = {".bmp", ".gif", ".webp", ".jp2", ".j2k", ".jpx", ".jxl", ".heic", ".heif", ".avif", ".nii",
                          ".gz", ".nrrd", ".mha", ".mhd", ".dicom", ".ima", ".ppm", ".pgm", ".pnm", ".tga", ".exr",
                          ".svg", ".pdf"}
MIN_INPUT_SIDE = 8  # pixels: a smaller image has no structure for a network to restore
MAX_OUTPUT_FRAME_PIXELS = 2 ** 28  # one output frame as float32: 1 GiB (x4 of 8192^2, x8 of 4096^2 is 4x that)
MAX_DICOM_PIXEL_BYTES = 2 ** 32 - 2  # an uncompressed Pixel Data element's 32-bit length


def check_output_budget(job: Job, image, scale: int) -> None:
    """Refuse, before any work, an output the memory budget or the file format cannot hold: one
    output frame over :data:`MAX_OUTPUT_FRAME_PIXELS`, or a derived DICOM whose pixel data would
    pass DICOM's 4 GiB element length."""
    h, w = image.shape
    frames = len(image.frames)
    oh, ow = h * scale, w * scale
    if oh * ow > MAX_OUTPUT_FRAME_PIXELS:
        raise ImageReadError(job.src, f"x{scale} of {h}x{w} is {oh}x{ow} pixels a frame, over the "
                                      f"{MAX_OUTPUT_FRAME_PIXELS // 2 ** 20} MP output budget; crop the image or use a "
                                      "lower-scale model")
    if job.dst.suffix.lower() == ".dcm":
        nbytes = frames * oh * ow * int(image.meta.get("bits_allocated", 16)) // 8
        if nbytes > MAX_DICOM_PIXEL_BYTES:
            raise ImageWriteError(job.dst, f"{frames} frames of {oh}x{ow} would be {nbytes / 2 ** 30:.1f} GiB of pixel "
                                           "data, over DICOM's 4 GiB per file; split the frames into several files first")


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
    """The output type: ``to`` if given, else the input's (DICOM recognised by content -> .dcm)."""
    if to:
        return to if to.startswith(".") else "." + to
    suffix = src.suffix.lower()
    return ".dcm" if suffix == ".dicom" or suffix not in OUTPUT_SUFFIXES else suffix


def _with_type(name: str, suffix: str) -> str:
    """``IM0001`` -> ``IM0001.dcm``, ``1.2.840.5`` -> ``1.2.840.5.dcm`` (a UID is not a suffix),
    ``a.PNG`` -> ``a.png``."""
    p = Path(name)
    return (p.stem if p.suffix.lower() in OUTPUT_SUFFIXES | {".dicom"} else name) + suffix


class PlanError(MedsrError):
    """The inputs and ``-o`` cannot be mapped to distinct outputs; nothing has run."""


def plan_jobs(inputs: list[Path], roots: list[Path], output: Path | None, scale: int, to: str | None) -> list[Job]:
    """Map each input file to its output path, and refuse (PlanError) before anything runs when
    two inputs would write one output or an output would land on an input.

    One input file and ``output`` with an image suffix -> exactly that file. Otherwise ``output``
    is a folder: one input folder is mirrored into it; several inputs each get their own
    sub-folder named after the input folder (``enhance patientA/ patientB/ -o out`` writes
    ``out/patientA/...`` and ``out/patientB/...``); files named directly go to its top. With no
    ``output``, a file goes next to its input as ``NAME-sr-x4.EXT`` and a folder's files into
    ``FOLDER-sr-x4/``.
    """
    if output is not None and output.suffix.lower() in FOREIGN_IMAGE_SUFFIXES and not output.is_dir():
        raise PlanError(f"-o {output}: {output.suffix} is not an output type; use .dcm, .png, .tif or .jpg, "
                        "or a folder name without a suffix")
    if output is not None and output.suffix.lower() in OUTPUT_SUFFIXES and len(inputs) > 1:
        raise PlanError(f"{output}: one output file for {len(inputs)} inputs; give -o a folder (no image suffix)")
    jobs: list[Job] = []
    single_file = output is not None and output.suffix.lower() in OUTPUT_SUFFIXES
    dirs = [r for r in roots if r.is_dir()]
    mirror = len(roots) > 1
    for src in inputs:
        containing = [r for r in dirs if r == src.parent or r in src.parents]
        root = max(containing, key=lambda r: len(r.parts)) if containing else None
        suffix = output_suffix(src, to)
        if single_file:
            jobs.append(Job(src, output, named=True))
        elif root is not None:
            absolute = _absolute(root)
            name = absolute.name or "root"
            base = absolute.with_name(f"{name}-sr-x{scale}") if output is None else (output / name if mirror else output)
            rel = src.relative_to(root)
            jobs.append(Job(src, base / rel.parent / _with_type(rel.name, suffix)))
        elif output is None:
            stem = Path(_with_type(src.name, "")).name
            jobs.append(Job(src, src.parent / f"{stem}-sr-x{scale}{suffix}"))
        else:
            jobs.append(Job(src, output / _with_type(src.name, suffix)))
    check_collisions(jobs)
    return jobs


def _absolute(path: Path) -> Path:
    """``path`` made absolute with symlinks resolved where possible (a symlink loop is left as is)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: symlink loop (Python < 3.13)
        return path.absolute()


def _key(path: Path) -> str:
    """Identity of a path for collision checks: absolute, and case-folded (macOS/Windows shares)."""
    return str(_absolute(path)).casefold()


def check_collisions(jobs: list[Job]) -> None:
    """Raise PlanError naming the first clashes when two jobs share an output or an output is an input."""
    seen: dict[str, Path] = {}
    inputs = {_key(j.src): j.src for j in jobs}
    clashes = []
    for j in jobs:
        k = _key(j.dst)
        if k in seen:
            clashes.append(f"{seen[k]} and {j.src} both map to {j.dst}")
        elif k in inputs:
            clashes.append(f"the output of {j.src} would replace the input {inputs[k]}")
        seen.setdefault(k, j.src)
    if clashes:
        more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        raise PlanError("; ".join(clashes[:3]) + more + "; rename the files, enhance them separately, or choose another -o")


def exclude_outputs(files: list[Path], output: Path | None) -> list[Path]:
    """Drop files that lie inside the output folder, so ``enhance DIR -o DIR/sr`` run twice does not
    enhance its own outputs."""
    if output is None or output.suffix.lower() in OUTPUT_SUFFIXES:
        return files
    out = _absolute(output)
    return [f for f in files if out not in _absolute(f).parents]


def output_is_complete(path: Path) -> bool:
    """True when ``path`` holds a whole image, checked by decoding all of it: a DICOM parses,
    its pixel data decodes to Rows x Columns x NumberOfFrames (and, uncompressed, has exactly
    the bytes its header needs); a TIFF decodes every page; PNG/JPEG decode. Outputs are
    written by rename, so a file that medsr-edge wrote is always complete; this guards against
    files cut or copied in by other tools before a resume skips them."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            suffix = path.suffix.lower()
            if suffix == ".dcm":
                import pydicom

                ds = pydicom.dcmread(path)
                frames = int(ds.get("NumberOfFrames", 1) or 1)
                if not ds.file_meta.TransferSyntaxUID.is_compressed:
                    needed = ds.Rows * ds.Columns * frames * ds.BitsAllocated // 8
                    if len(ds.PixelData) not in (needed, needed + 1):
                        return False
                arr = ds.pixel_array
                return arr.shape[-2:] == (ds.Rows, ds.Columns) and (arr.shape[0] if arr.ndim == 3 else 1) == frames
            if suffix in (".tif", ".tiff"):
                import tifffile

                with tifffile.TiffFile(path) as tif:
                    for page in tif.pages:
                        page.asarray()
                return True
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


def enhance_file(enhancer: Enhancer | Callable[[Image], Enhancer], job: Job, overwrite: bool = False,
                 compress: str | None = None, uid_root: str | None = None, created: datetime | None = None) -> Path:
    """Enhance one file; raises MedsrError (one-line message) on any problem, writes nothing then.
    ``created``: the derived DICOM's ContentDate/Time (default: :func:`~.dicom.content_time`)."""
    src, dst = job.src, job.dst
    if _absolute(dst) == _absolute(src):
        raise ImageWriteError(dst, "output would replace the input; choose another -o")
    if dst.exists() and not overwrite:
        raise ImageWriteError(dst, "output exists; pass --overwrite to replace it")
    image = read_image(src)
    if not isinstance(enhancer, Enhancer):  # a chooser (ModelChooser): the model for this image
        enhancer = enhancer(image)
    if min(image.shape) < MIN_INPUT_SIDE:
        raise ImageReadError(src, f"{image.shape[0]}x{image.shape[1]} pixels is too small to super-resolve "
                                  f"(at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE})")
    check_output_budget(job, image, enhancer.scale)
    frames = enhancer.iter_enhance_image(image)  # consumed frame by frame by the writer
    # A file the user named is never replaced without --overwrite, even when a concurrent run
    # creates it while this one works; outputs whose paths medsr-edge chose may be (same content).
    replace = overwrite or not job.named
    if dst.suffix.lower() == ".dcm":
        if image.format != "dicom":
            raise ImageWriteError(dst, f"DICOM output needs a DICOM input ({src.name} is {image.format.upper()}); use --to png or tif")
        write_derived_dicom(dst, image, frames, enhancer.scale,
                            f"Super-resolution x{enhancer.scale} by medsr-edge, model {enhancer.describe()}",
                            identity=enhancer.identity, series_label=enhancer.model_name,
                            compress=output_compression(image, compress), uid_root=uid_root,
                            replace=replace, created=created)
    else:
        if compress not in (None, "auto", "none"):
            raise ImageWriteError(dst, "--compress applies to DICOM output only")
        write_raster(dst, frames, image, replace=replace)
    return dst


__all__ = ["Job", "MedsrError", "PlanError", "check_collisions", "enhance_file", "exclude_outputs", "existing_output_action", "plan_jobs"]
