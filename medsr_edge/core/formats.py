"""The one table of deployable formats. It drives ``export`` (what to build), the runtime (which
backend opens a file) and ``bench`` (which rows to measure), as Ultralytics' export table does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Format:
    name: str  # the ``--format`` value
    suffix: str  # file name ending
    backend: str  # runtime backend that opens it
    precision: str  # fp32 | fp16 | int8
    released: bool  # a release (``export --format release``) writes it; engines are built on the target


FORMATS: tuple[Format, ...] = (
    Format("pytorch", ".safetensors", "torch", "fp32", True),
    Format("onnx", ".onnx", "onnxruntime", "fp32", True),
    Format("onnx-fp16", "-fp16.onnx", "onnxruntime", "fp16", True),
    Format("onnx-int8", "-int8.onnx", "onnxruntime", "int8", True),
    Format("engine-fp16", "-fp16.engine", "tensorrt", "fp16", False),
    Format("engine-int8", "-int8.engine", "tensorrt", "int8", False),
)

RELEASED: tuple[Format, ...] = tuple(f for f in FORMATS if f.released)


def get_format(name: str) -> Format:
    for f in FORMATS:
        if f.name == name:
            return f
    raise KeyError(f"unknown format {name!r}; choose from {', '.join(f.name for f in FORMATS)}")


def format_for(backend: str, precision: str) -> Format:
    """The format a backend runs at a precision (e.g. onnxruntime + int8 -> onnx-int8)."""
    for f in FORMATS:
        if f.backend == backend and f.precision == precision:
            return f
    runs = [f.precision for f in FORMATS if f.backend == backend]
    if runs:
        raise KeyError(f"the {backend} backend runs {' or '.join(runs)} models, not {precision}: pass --precision "
                       f"{runs[0]}" + (" (TensorRT builds engines at reduced precision)" if backend == "tensorrt" else ""))
    raise KeyError(f"no format runs on {backend} at {precision}")


def format_of_file(path: str | Path) -> Format:
    """Guess the format of a model file from its name (longest matching suffix wins)."""
    name = Path(path).name
    matches = [f for f in FORMATS if name.endswith(f.suffix)]
    if not matches:
        raise KeyError(f"{path}: unknown model file type; expected one of "
                       f"{', '.join(sorted({f.suffix for f in FORMATS}))}")
    return max(matches, key=lambda f: len(f.suffix))


def artifact_name(model: str, fmt: Format) -> str:
    """File name of ``model`` (e.g. ``student-x4``) in ``fmt``: ``student-x4-int8.onnx``."""
    return model + fmt.suffix
