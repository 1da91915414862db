"""Export a generator to ONNX with dynamic N/H/W and medsr metadata, verified against PyTorch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import torch

from .. import __version__
from ..core.errors import ModelError
from ..core.files import atomic_write, file_sha256
from ..models import count_params, gflops_per_output_mpx
from ..models.checkpoint import load_model, resolve_model_path
from ..runtime.backend_base import META_PREFIX
from ..runtime.models import weights_dir

log = logging.getLogger(__name__)
MAX_ABS_DIFF = 1e-4


def resolve_checkpoint(model: str | Path) -> Path:
    """A shipped name (``student-x4``) -> its safetensors; a path -> itself."""
    p = Path(model)
    if p.exists():
        return resolve_model_path(p)
    shipped = weights_dir() / f"{model}.safetensors"
    if shipped.is_file():
        return shipped
    raise ModelError(f"{model}: neither a checkpoint path nor a shipped model name")


def set_metadata(model: onnx.ModelProto, meta: dict) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in meta.items():
        k = META_PREFIX + key
        v = value if isinstance(value, str) else json.dumps(value)
        if k in existing:
            existing[k].value = v
        else:
            model.metadata_props.add(key=k, value=v)


def get_metadata(model: onnx.ModelProto) -> dict:
    out = {}
    for p in model.metadata_props:
        if p.key.startswith(META_PREFIX):
            try:
                out[p.key[len(META_PREFIX):]] = json.loads(p.value)
            except json.JSONDecodeError:
                out[p.key[len(META_PREFIX):]] = p.value
    return out


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = 17, name: str | None = None,
                verify_images: list[np.ndarray] | None = None) -> tuple[Path, dict]:
    """Export ``checkpoint`` (deploy form for the student) to ``out``; returns (path, report).

    The report holds the max abs difference ONNX Runtime vs PyTorch on random inputs (square and
    non-square) and on ``verify_images`` (LR images in [0, 1]); export fails above 1e-4.
    """
    ckpt = resolve_checkpoint(checkpoint)
    model, config, meta = load_model(ckpt)
    if hasattr(model, "reparameterize") and not getattr(model, "is_deploy", True):
        model.reparameterize()
    model.eval()
    out = Path(out)
    scale = int(meta.get("scale", config.get("scale", 4)))
    report: dict = {}

    def write(tmp: Path) -> None:  # exported, checked and verified before it is renamed onto ``out``
        dummy = torch.rand(1, 1, 32, 32)
        torch.onnx.export(model, (dummy,), str(tmp), input_names=["lr"], output_names=["sr"], opset_version=opset,
                          dynamic_axes={"lr": {0: "N", 2: "H", 3: "W"}, "sr": {0: "N", 2: "sH", 3: "sW"}},
                          dynamo=False)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        set_metadata(proto, {
            "scale": scale, "in_channels": 1, "precision": "fp32",
            "model_name": name or (ckpt.parent.name if ckpt.name == "model.safetensors" else ckpt.stem),
            "arch": config.get("type"), "config": config, "version": __version__,
            "normalisation": meta.get("normalisation", "per image to [0,1]"),
            "source_checkpoint": ckpt.name, "source_sha256": file_sha256(ckpt),
            "degradation": meta.get("degradation", {}), "iterations": meta.get("iterations"),
            "stage": meta.get("stage") or "psnr",  # "gan": GAN-trained (see Enhancer.describe)
            "params": count_params(model), "gflops_per_output_mpx": round(gflops_per_output_mpx(model, scale), 3),
        })
        onnx.save(proto, str(tmp))
        report.update(verify_onnx(model, tmp, verify_images))

    atomic_write(out, write)
    return out, report


def verify_onnx(model: torch.nn.Module, onnx_path: Path, images: list[np.ndarray] | None = None,
                tol: float = MAX_ABS_DIFF) -> dict:
    """Compare ONNX Runtime (CPU) with PyTorch; raise ModelError when any max abs diff > ``tol``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    cases = {"random 64x64": rng.random((1, 1, 64, 64), np.float32),
             "random 40x72 (non-square)": rng.random((1, 1, 40, 72), np.float32)}
    for i, img in enumerate(images or []):
        cases[f"image {i} {img.shape[0]}x{img.shape[1]}"] = img[None, None].astype(np.float32)
    report = {}
    for label, x in cases.items():
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"lr": x})[0]
        diff = float(np.abs(ref - got).max())
        report[label] = diff
        if diff > tol:
            raise ModelError(f"{onnx_path}: ONNX Runtime differs from PyTorch by {diff:.2e} on {label} (limit {tol:.0e})")
    return report
