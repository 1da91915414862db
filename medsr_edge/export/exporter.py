"""The exporter: one entry point, driven by the format table (:mod:`medsr_edge.core.formats`).

>>> from medsr_edge.export.exporter import ExportOptions, export_model
>>> export_model("runs/student-x4", "onnx-int8", ExportOptions(calib_data=Path("../shared/data"), calib_split="val"))

Every artifact is verified on the way (ONNX against PyTorch; INT8 against FP32 and ground truth)
and written atomically; nothing is written when a check fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import BackendUnavailable, Int8Refused, ModelError
from ..core.fidelity import FIDELITY_MARGIN_DB, fidelity_failures, is_gan_model
from ..core.formats import RELEASED, artifact_name, get_format
from ..models.checkpoint import load_model, read_metadata, save_model
from .onnx_export import export_onnx, get_metadata, resolve_checkpoint
from .quantize import LOCAL_DIFF_LIMIT, convert_fp16, load_calibration_set, quantize_int8


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """Everything but the model and the format, validated on construction (ModelError naming the
    option). Shapes are TensorRT profile sizes, HxW; drops and differences in dB."""

    output: Path | None = None
    precision: str | None = None  # for "engine" (fp16 | int8) and "pytorch" (fp16 halves the file)
    calib_data: Path | None = None
    calib_split: str | None = None
    calib_method: str = "minmax"
    calib_images: int = 48
    max_gt_drop: float = 0.1
    min_psnr_vs_fp32: float = 40.0
    max_local_diff: float = LOCAL_DIFF_LIMIT
    int8_float_convs: int = 0
    int8_reference: Path | None = None  # FP32 ONNX the INT8 check compares with (default: the export's own)
    opset: int = 17
    min_shape: str = "16x16"
    opt_shape: str = "256x256"
    max_shape: str = "512x512"
    name: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.precision not in (None, "fp32", "fp16", "int8"):
            raise ModelError(f"--precision {self.precision!r}: use fp32, fp16 or int8")
        if self.calib_method not in ("minmax", "entropy", "percentile"):
            raise ModelError(f"--calib-method {self.calib_method!r}: use minmax, entropy or percentile")
        if self.calib_images < 4:
            raise ModelError(f"--calib-images {self.calib_images}: at least 4 (a quarter checks the others)")
        if self.int8_float_convs < 0 or self.max_gt_drop < 0 or self.max_local_diff < 0:
            raise ModelError("--int8-float-convs, --max-gt-drop and --max-local-diff cannot be negative")
        if not 7 <= self.opset <= 23:
            raise ModelError(f"--opset {self.opset}: use 7..23 (17 is tested)")
        for option, shape in (("--min-shape", self.min_shape), ("--opt-shape", self.opt_shape), ("--max-shape", self.max_shape)):
            h, sep, w = str(shape).lower().partition("x")
            if not (sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
                raise ModelError(f"{option} {shape!r}: use HxW in pixels, e.g. 256x256")


def check_output(out: Path, source: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output that is the source model, exists (without
    ``overwrite``) or lies in a folder that cannot be written."""
    if out.resolve() == Path(source).resolve():
        raise ModelError(f"{out}: output would replace the input model; choose another -o")
    if out.exists() and not overwrite:
        raise ModelError(f"{out}: output exists; pass --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise ModelError(f"{out}: cannot write here ({exc.strerror or exc}); choose a writable -o folder") from None


def resolve_format(format: str, precision: str | None):
    """The table's format for ``--format`` (``engine`` + ``--precision`` -> engine-fp16/int8)."""
    if format == "engine":
        if precision not in ("fp16", "int8"):
            raise ModelError("--format engine needs --precision fp16 or int8")
        format = f"engine-{precision}"
    try:
        return get_format(format)
    except KeyError as exc:
        raise ModelError(str(exc.args[0])) from None


def export_model(model: str | Path, format: str, opts: ExportOptions,
                 report: Callable[[str], None] = print) -> Path:
    """Export ``model`` (a shipped name or a checkpoint) to ``format``; returns the written file.
    Raises ModelError/BackendUnavailable (nothing written) with a one-line reason."""
    ckpt = resolve_checkpoint(model)
    base = opts.name or (Path(model).name if not Path(model).exists()
                         else (ckpt.parent.name if ckpt.name == "model.safetensors" else ckpt.stem))
    if is_gan_model(base, read_metadata(ckpt)[1]):
        report(fidelity_check(ckpt, base, opts))
    if format == "pytorch":
        return _export_pytorch(ckpt, base, opts)
    fmt = resolve_format(format, opts.precision)
    if fmt.backend == "tensorrt":
        from ..runtime.tensorrt_backend import import_tensorrt

        try:
            import_tensorrt()  # fail fast, before any work, with the package to install
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"--format {fmt.name}: {exc}") from None
    if fmt.precision == "int8" and opts.calib_data is None:
        raise ModelError("INT8 is calibrated on real images: pass --calib-data DIR (e.g. ../shared/data with --calib-split val)")
    if opts.opset < 17:
        raise ModelError("--opset must be >= 17")
    if opts.int8_reference is not None and fmt.precision != "int8":
        raise ModelError("--int8-reference is for INT8 formats (onnx-int8, engine-int8)")
    if opts.int8_reference is not None and not Path(opts.int8_reference).is_file():
        raise ModelError(f"{opts.int8_reference}: --int8-reference file not found; pass the FP32 .onnx the INT8 model ships beside")
    out = opts.output or Path(base + fmt.suffix)
    check_output(out, ckpt, opts.overwrite)
    calib = None
    if opts.calib_data is not None:
        scale = int(read_metadata(ckpt)[1].get("scale", 4))
        calib = load_calibration_set(opts.calib_data, scale, opts.calib_images, split=opts.calib_split)
    aware = read_metadata(ckpt)[1].get("int8_aware") or {}
    if fmt.precision == "int8" and aware.get("ranges") and aware["float_convs"] != opts.int8_float_convs:
        raise ModelError(f"{ckpt}: its INT8-aware run learned activation ranges with --int8-float-convs "
                         f"{aware['float_convs']}; export it with --int8-float-convs {aware['float_convs']}")
    q = dict(max_gt_drop_db=opts.max_gt_drop, min_psnr_vs_fp32=opts.min_psnr_vs_fp32, float_convs=opts.int8_float_convs,
             reference=opts.int8_reference, max_local_diff=opts.max_local_diff, ranges=aware.get("ranges"))
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = out if fmt.name == "onnx" else Path(tmp) / f"{base}.onnx"
        fp32, verified = export_onnx(ckpt, fp32, opts.opset, base, calib.check_lr if calib else None)
        report(f"ONNX FP32 verified against PyTorch (max abs diff): {json.dumps(verified)}")
        if fmt.name == "onnx-fp16":
            convert_fp16(fp32, out)
        elif fmt.name == "onnx-int8":
            _, checked = quantize_int8(fp32, out, calib, opts.calib_method, **q)
            report(f"INT8 check: {json.dumps(checked)}")
        elif fmt.backend == "tensorrt":
            _build_engine(fp32, out, fmt.precision, base, Path(tmp), calib, opts, q, report)
    return out


def export_release(model: str | Path, folder: Path, opts: ExportOptions,
                   report: Callable[[str], None] = print) -> dict[str, str]:
    """Every format a release ships (the table's ``released`` rows: FP32 safetensors, ONNX FP32,
    FP16, INT8) of ``model`` into ``folder``, named as the weights folder names them
    (``NAME.onnx``, ``NAME-int8.onnx`` ...; NAME is ``opts.name``). All are exported and verified
    first, then moved in together, so the folder never holds a mix of two releases. Returns
    {format: file name}, or for an INT8 export its gate refused {"onnx-int8": "refused: <reason>"}:
    that model ships without INT8 (an older NAME-int8.onnx in the folder is removed). Any other
    refusal raises (ModelError, BackendUnavailable) and the folder is left as it was."""
    if not opts.name:
        raise ModelError("--format release needs --name (the shipped name, e.g. student-x4)")
    if opts.output is not None:
        raise ModelError("export_release: the folder is its own argument; leave ExportOptions.output unset")
    if opts.precision is not None:
        raise ModelError("--format release writes each format at its own precision: leave --precision out")
    if opts.calib_data is None:
        raise ModelError("a release includes INT8, calibrated on real images: pass --calib-data DIR (e.g. "
                         "../shared/data with --calib-split val)")
    folder = Path(folder)
    targets = {fmt: folder / artifact_name(opts.name, fmt) for fmt in RELEASED}
    for out in targets.values():
        check_output(out, resolve_checkpoint(model), opts.overwrite)
    written: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=folder, prefix=".release-") as tmp:
        for fmt, out in targets.items():
            try:
                export_model(model, fmt.name, replace(opts, output=Path(tmp) / out.name), report)
            except Int8Refused as exc:
                if fmt.precision != "int8":
                    raise
                report(f"{fmt.name} refused by its gate, released without it: {exc}")
                written[fmt.name] = f"refused: {exc}"
                continue
            written[fmt.name] = out.name
        for fmt, out in targets.items():
            if written[fmt.name].startswith("refused"):
                out.unlink(missing_ok=True)
            else:
                os.replace(Path(tmp) / out.name, out)
                report(f"{out} ({out.stat().st_size / 1e6:.2f} MB, {fmt.name})")
    return written


def fidelity_check(ckpt: Path, name: str, opts: ExportOptions) -> str:
    """The fidelity guard for GAN-trained models: on the held-back calibration images, PSNR per
    modality must not fall more than FIDELITY_MARGIN_DB below bicubic's. Raises ModelError
    (nothing is written) on a failure or when there are no real images to check on."""
    import numpy as np
    import torch

    from ..core.degradation import upscale_bicubic
    from ..core.metrics import psnr

    if opts.calib_data is None:
        raise ModelError(f"{name} is GAN-trained: its fidelity guard needs real images; pass --calib-data DIR "
                         "(e.g. ../shared/data with --calib-split val)")
    scale = int(read_metadata(ckpt)[1].get("scale", 4))
    calib = load_calibration_set(opts.calib_data, scale, opts.calib_images, split=opts.calib_split)
    net = load_model(ckpt)[0].eval()
    scores: dict[str, tuple[list[float], list[float]]] = {}
    with torch.no_grad():
        for lr, hr, modality in zip(calib.check_lr, calib.check_hr, calib.check_modalities):
            sr = net(torch.from_numpy(lr)[None, None]).clamp(0, 1)[0, 0].numpy()
            mine, bic = scores.setdefault(modality, ([], []))
            mine.append(psnr(sr, hr, scale)), bic.append(psnr(np.clip(upscale_bicubic(lr, scale), 0, 1), hr, scale))
    per_modality = {m: (float(np.mean(a)), float(np.mean(b))) for m, (a, b) in scores.items()}
    detail = ", ".join(f"{m} {a:.2f} vs bicubic {b:.2f} dB" for m, (a, b) in sorted(per_modality.items()))
    low = fidelity_failures(per_modality)
    if low:
        raise ModelError(f"{name}: fidelity guard: more than {FIDELITY_MARGIN_DB} dB below bicubic in "
                         f"{', '.join(sorted(low))} ({detail}) on {len(calib.check_lr)} held-back images; nothing written")
    return f"fidelity guard passed on {len(calib.check_lr)} held-back images: {detail}"


def _export_pytorch(ckpt: Path, base: str, opts: ExportOptions) -> Path:
    net, config, meta = load_model(ckpt)
    out = opts.output or Path(base + ".safetensors")
    check_output(out, ckpt, opts.overwrite)
    half = opts.precision == "fp16"
    save_model(out, net, config, {**meta, "model_name": opts.name or meta.get("model_name"),
                                  "stored_as": "fp16" if half else "fp32"}, half=half)
    return out


def _build_engine(fp32: Path, out: Path, precision: str, base: str, tmp: Path, calib, opts: ExportOptions,
                  q: dict, report: Callable[[str], None]) -> None:
    """A strongly typed engine from the precision-typed ONNX: FP16 ONNX, or symmetric int8 QDQ."""
    import onnx

    from .tensorrt_build import ShapeProfile, build_engine

    if precision == "fp16":
        src = convert_fp16(fp32, tmp / f"{base}-fp16.onnx")
    else:  # TensorRT explicit quantization: symmetric int8 QDQ
        src, checked = quantize_int8(fp32, tmp / f"{base}-qdq-s8.onnx", calib, opts.calib_method, activation="int8",
                                     symmetric=True, **q)
        report(f"INT8 (symmetric QDQ for TensorRT) check: {json.dumps(checked)}")
    profile = ShapeProfile.from_hw(opts.min_shape, opts.opt_shape, opts.max_shape)
    build_engine(src, out, precision, profile, get_metadata(onnx.load(str(src))))
