"""ONNX Runtime FP16 and INT8 (static QDQ, per-channel weights) calibrated on real medical images.

INT8 is checked on held-back calibration images against ground truth and against FP32; export
refuses rather than ship a degraded model. The first convolution and the output path (last
convolution, anchor residual, pixel shuffle) stay in float by default: an 8-bit output tensor
would band 16-bit images and shift intensities, the known INT8 failure modes of SR.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..core.degradation import crop_to_multiple
from ..core.errors import Int8Refused, ModelError
from ..core.files import atomic_write
from ..core.metrics import psnr
from .onnx_export import get_metadata, set_metadata

log = logging.getLogger(__name__)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Only convolutions run in int8 (where the time is); the element-wise ops between them (ReLU/SiLU,
# the attention's Sigmoid and Mul, Add, Concat) stay float: 8-bit steps on an attention gate or a
# residual sum cost PSNR (0.3 dB for RepPFANet) for no speed.
QUANTIZED_OPS = ("Conv",)
# The local check: on no held-back image may more than 1 output pixel in 10,000 (LOCAL_QUANTILE)
# differ from FP32 by over LOCAL_DIFF_LIMIT of the [0, 1] range (5 %: 51 grey levels of 8 bits).
LOCAL_QUANTILE, LOCAL_DIFF_LIMIT = 0.9999, 0.05


@dataclass
class CalibrationSet:
    """LR inputs (float32 (H, W) in [0, 1]) and their HR ground truth, split into calib / check."""

    calib: list[np.ndarray]
    check_lr: list[np.ndarray]
    check_hr: list[np.ndarray]
    sources: list[str]
    check_modalities: list[str] = field(default_factory=list)  # one per check image


def load_calibration_set(data: str | Path, scale: int, max_images: int = 48, crop: int | None = None,
                         split: str | None = None, holdout: float = 0.25) -> CalibrationSet:
    """Up to ``max_images`` real images (modality-balanced), degraded as in training. Whole images
    by default: their borders, where zero padding meets bright background (MONOCHROME1 radiographs),
    set activation ranges that centre crops miss. ``crop`` takes centre crops of that side instead."""
    from ..dataset import make_lr, read_ground_truths
    from ..runtime.io import data_files

    by_mod: dict[str, list] = {}
    for found in data_files(data, split):
        by_mod.setdefault(found.modality, []).append(found)
    chosen: list = []
    i = 0
    while len(chosen) < max_images and any(i < len(v) for v in by_mod.values()):
        for m in sorted(by_mod):  # round robin: every modality is represented
            step = max(len(by_mod[m]) // max(max_images // max(len(by_mod), 1), 1), 1)
            if i * step < len(by_mod[m]) and len(chosen) < max_images:
                chosen.append(by_mod[m][i * step])
        i += 1
    lrs, hrs, names, mods = [], [], [], []
    for gt in read_ground_truths(chosen):
        hr = gt.hr
        h, w = hr.shape
        if crop:
            c = min(crop, h, w) // scale * scale
            hr = hr[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
        hr = crop_to_multiple(hr, scale)
        lrs.append(make_lr(hr, scale, gt.step)), hrs.append(hr), names.append(str(gt.path)), mods.append(gt.modality)
    if len(lrs) < 4:
        raise ModelError(f"{data}: need at least 4 readable calibration images, found {len(lrs)}")
    n_check = max(int(len(lrs) * holdout), 2)
    # Each calibration image also in inverted contrast: bright borders and backgrounds (collimated
    # radiographs, MONOCHROME1 displays) then fall inside the calibrated activation ranges.
    calib = [x for lr in lrs[n_check:] for x in (lr, 1.0 - lr)]
    return CalibrationSet(calib, lrs[:n_check], hrs[:n_check], names, mods[:n_check])


def calibration_tiles(images: list[np.ndarray], side: int = 64) -> list[np.ndarray]:
    """Three ``side`` x ``side`` tiles of each image (top-left corner, centre, bottom-right corner;
    edge-padded when smaller), for histogram calibrators that need equal shapes. The corners keep
    the image borders, where zero padding meets the background, in the calibrated ranges."""
    tiles = []
    for im in images:
        h, w = im.shape
        if h < side or w < side:
            im = np.pad(im, ((0, max(side - h, 0)), (0, max(side - w, 0))), mode="edge")
            h, w = im.shape
        for y, x in ((0, 0), ((h - side) // 2, (w - side) // 2), (h - side, w - side)):
            tiles.append(im[y:y + side, x:x + side])
    return tiles


class _Reader:
    """onnxruntime CalibrationDataReader over a list of LR arrays."""

    def __init__(self, name: str, images: list[np.ndarray]) -> None:
        self.name, self.images, self.i = name, images, 0

    def get_next(self):
        if self.i >= len(self.images):
            return None
        self.i += 1
        return {self.name: self.images[self.i - 1][None, None].astype(np.float32)}

    def rewind(self) -> None:
        self.i = 0


def _run(path: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [np.clip(sess.run(None, {name: x[None, None]})[0][0, 0], 0, 1) for x in images]


def float_nodes(model: onnx.ModelProto, extra_convs: int = 0) -> list[str]:
    """Nodes kept in float: the first convolution (its 1-channel input also feeds the anchor), the
    next ``extra_convs`` convolutions, the node that feeds the last convolution (the long skip's
    Add, or RepPFANet's 1x1 fusion convolution) and everything from the last convolution on (tail
    conv, anchor residual add, pixel shuffle). The tail's input is then a float tensor: as an 8-bit
    tensor it carried half of RepPFANet's INT8 loss. The output of a medical SR model must not pass
    through an 8-bit tensor either: 16-bit images would band. Each extra float convolution lowers
    the 8-bit noise floor (the early features carry it through every later layer) at some cost in
    speed. A sinc anchor's nodes (``/anchor/...``) stay float too: its output is added to the
    result as it is."""
    nodes = list(model.graph.node)
    anchor = [n.name for n in nodes if n.name.startswith("/anchor/")]  # the fixed sinc interpolation
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv" and n.name not in anchor]
    if not convs:
        return []
    last = nodes[convs[-1]]
    feeding = [n.name for n in nodes[:convs[-1]] if last.input[0] in n.output and n.name and n.name != nodes[convs[0]].name]
    early = [nodes[i].name for i in convs[1:1 + extra_convs] if i != convs[-1] and nodes[i].name not in feeding]
    after = [n.name for n in nodes[convs[-1]:] if n.name and n.name not in anchor]
    return [nodes[convs[0]].name] + early + feeding + after + anchor


def keep_float_tensors_float(model: onnx.ModelProto) -> int:
    """Let the float operations read the float tensors again; returns how many inputs were rewired.

    ONNX Runtime's QDQ quantizer rounds a tensor that feeds a quantized convolution for *every*
    reader: the residual stream of each block (its input, read by the next block's first
    convolution and by the residual Add) and the features that the fusion concatenates would pass
    through 8 bits at every block, and those roundings add up along the stream (8-block quality
    size: 0.286 dB lost against ground truth with them, 0.261 without). Here each DequantizeLinear whose QuantizeLinear rounds a tensor
    made by a float node (or a graph input) keeps only its quantized-Conv readers; the other readers
    take the float tensor. The int8 convolutions are unchanged (same QLinearConv fusion, same
    speed). A quantized convolution's own output stays 8-bit for all its readers: QLinearConv
    only writes uint8. In place.
    """
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    quantize_of = {n.output[0]: n for n in nodes if n.op_type == "QuantizeLinear"}
    rewired = 0
    for dq in (n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in quantize_of):
        source = quantize_of[dq.input[0]].input[0]
        made_by = producer.get(source)
        if made_by is not None and made_by.op_type == "Conv" and producer.get(made_by.input[0], made_by).op_type == "DequantizeLinear":
            continue  # the output of an int8 convolution: only its 8-bit form exists at run time
        for reader in nodes:
            if reader.op_type == "Conv" and producer.get(reader.input[1], reader).op_type == "DequantizeLinear":
                continue  # an int8 convolution: it reads the 8-bit tensor
            for i, name in enumerate(reader.input):
                if name == dq.output[0]:
                    reader.input[i] = source
                    rewired += 1
    return rewired


def conv_module_name(node_name: str) -> str:
    """The PyTorch module name of an exported convolution node: ``/body.1/c2/fused/Conv`` -> ``body.1.c2``."""
    return node_name.strip("/").removesuffix("/Conv").removesuffix("/fused").replace("/", ".")


def learned_range_overrides(model: onnx.ModelProto, ranges: dict[str, dict[str, list[float]]],
                            excluded: list[str]) -> dict[str, list[dict[str, float]]]:
    """ONNX Runtime ``TensorQuantOverrides`` that set the input and output tensor ranges of each
    quantized convolution to an INT8-aware run's learned ones. Raises ModelError when the ranges
    were learned for other convolutions than those this export quantizes (another
    ``--int8-float-convs`` or another network)."""
    quantized = {conv_module_name(n.name): n for n in model.graph.node if n.op_type == "Conv" and n.name not in excluded}
    if set(quantized) != set(ranges):
        raise ModelError(f"the INT8-aware run learned ranges for {len(ranges)} convolutions but this export quantizes "
                         f"{len(quantized)} others; export with the --int8-float-convs the run was trained for")
    overrides: dict[str, list[dict[str, float]]] = {}
    for name, node in quantized.items():
        for side, tensor in (("input", node.input[0]), ("output", node.output[0])):
            low, high = ranges[name][side]
            overrides[tensor] = [{"rmin": np.float32(min(low, 0.0)), "rmax": np.float32(max(high, 0.0))}]
    return overrides


def quantize_int8(fp32_onnx: str | Path, out: str | Path, calib: CalibrationSet, method: str = "minmax",
                  activation: str = "uint8", symmetric: bool = False, keep_float_ends: bool = True,
                  max_gt_drop_db: float = 0.1, min_psnr_vs_fp32: float = 40.0, float_convs: int = 0,
                  reference: str | Path | None = None, max_local_diff: float = LOCAL_DIFF_LIMIT,
                  float_paths: bool = True, ranges: dict[str, dict[str, list[float]]] | None = None) -> tuple[Path, dict]:
    """Static QDQ INT8 with per-channel weights, checked on held-back real images.

    ``minmax`` calibrates on whole images; ``entropy`` and ``percentile`` (histograms, which need
    equal shapes) on :func:`calibration_tiles` of them.
    ``activation="int8", symmetric=True`` is what TensorRT's explicit quantization needs;
    ``uint8`` asymmetric suits ONNX Runtime on CPU. ``keep_float_ends`` keeps the first conv and
    the output path in float, and ``float_convs`` more convolutions after the first (see :func:`float_nodes`). Refuses (ModelError, nothing written)
    when PSNR against ground truth drops more than ``max_gt_drop_db`` below FP32 or the output is
    further than ``min_psnr_vs_fp32`` dB from FP32, or when any check image has more than one output
    pixel in 10,000 off FP32 by over ``max_local_diff`` (a fraction of the [0, 1] range): a mean can
    hide a bright structure that clipped activation ranges darken. ``reference``: the FP32 ONNX those checks
    compare with, when it is not ``fp32_onnx`` itself: the shipped FP32 model, when ``fp32_onnx``
    comes from an INT8-aware fine-tune of it (``medsr-edge train student --int8-aware``).
    ``ranges``: that fine-tune's learned ranges (``{convolution: {"input"|"output": [low, high]}}``,
    its checkpoint's ``int8_aware.ranges``), used for those tensors instead of calibrating them.
    ``float_paths``: let float operations read float tensors (:func:`keep_float_tensors_float`).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}")
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    cal_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[method]
    meta = get_metadata(onnx.load(str(fp32_onnx)))
    border = int(meta.get("scale", 4))
    ref = _run(Path(reference) if reference else fp32_onnx, calib.check_lr)
    with tempfile.TemporaryDirectory() as tmpdir:
        pre = Path(tmpdir) / "pre.onnx"
        quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        excluded = float_nodes(pre_model, float_convs) if keep_float_ends else []
        overrides = learned_range_overrides(pre_model, ranges, excluded) if ranges else {}
        q_path = Path(tmpdir) / "int8.onnx"
        images = calib.calib if method == "minmax" else calibration_tiles(calib.calib)
        quantize_static(str(pre), str(q_path), _Reader(pre_model.graph.input[0].name, images),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
                        calibrate_method=cal_method, nodes_to_exclude=excluded, op_types_to_quantize=list(QUANTIZED_OPS),
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                       "TensorQuantOverrides": overrides})
        q_model = onnx.load(str(q_path))
        rewired = keep_float_tensors_float(q_model) if float_paths else 0
        onnx.save(q_model, str(q_path))
        got = _run(q_path, calib.check_lr)
        fp32_gt = float(np.mean([psnr(r, h, border) for r, h in zip(ref, calib.check_hr)]))
        int8_gt = float(np.mean([psnr(g, h, border) for g, h in zip(got, calib.check_hr)]))
        vs_fp32 = float(np.mean([psnr(g, r, border) for g, r in zip(got, ref)]))
        local = float(max(np.quantile(np.abs(g - r), LOCAL_QUANTILE) for g, r in zip(got, ref)))
        report = {
            "calibration": {"method": method, "images": len(calib.calib), "check_images": len(calib.check_lr),
                            "activation": activation, "symmetric": symmetric},
            "float_nodes": excluded,
            "learned_ranges": len(overrides),
            "float_reads_restored": rewired,
            "reference_fp32": Path(reference).name if reference else None,
            "psnr_int8_vs_fp32_db": round(vs_fp32, 3),
            "psnr_fp32_vs_gt_db": round(fp32_gt, 3),
            "psnr_int8_vs_gt_db": round(int8_gt, 3),
            "p99_99_abs_diff_vs_fp32": round(local, 5),
            "max_abs_diff_vs_fp32": round(float(max(np.abs(g - r).max() for g, r in zip(got, ref))), 5),
            "mean_shift_vs_fp32": round(float(np.mean([(g - r).mean() for g, r in zip(got, ref)])), 6),
        }
        log.info("INT8 (%s, %d float nodes): %.2f dB vs FP32, %.3f dB vs GT (FP32 %.3f)", method, len(excluded),
                 vs_fp32, int8_gt, fp32_gt)
        if fp32_gt - int8_gt > max_gt_drop_db or vs_fp32 < min_psnr_vs_fp32:
            raise Int8Refused(f"{out}: INT8 loses {fp32_gt - int8_gt:.2f} dB against ground truth (limit {max_gt_drop_db}) "
                             f"and is {vs_fp32:.1f} dB from FP32 (limit {min_psnr_vs_fp32}); nothing written. Try more "
                             "--int8-float-convs, more calibration images, or an INT8-aware fine-tune "
                             "(medsr-edge train student --init RUN --int8-aware N) exported with --int8-float-convs N")
        if local > max_local_diff:
            raise Int8Refused(f"{out}: INT8 changes more than 1 output pixel in 10,000 by over {max_local_diff} of the range "
                             f"(worst check image: {local:.3f}); nothing written. Try --calib-method minmax (it does not "
                             "clip bright structures) or more --int8-float-convs"
                             + (f"; the comparison is with {Path(reference).name}, so the fine-tune's own changes to the "
                                "float model count too: when that model is better on the test split, ship it as the FP32 "
                                "model as well (benchmarks/campaign.sh promote)" if reference else ""))
        set_metadata(q_model, {**meta, "precision": "int8", "quantization": report})
        atomic_write(out, lambda tmp: onnx.save(q_model, str(tmp)))
        return out, report


def convert_fp16(fp32_onnx: str | Path, out: str | Path) -> Path:
    """FP16 weights and activations for GPU execution providers; inputs/outputs stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_onnx))
    meta = get_metadata(model)
    half = convert_float_to_float16(model, keep_io_types=True)
    set_metadata(half, {**meta, "precision": "fp16"})
    out = Path(out)
    atomic_write(out, lambda tmp: onnx.save(half, str(tmp)))
    return out
