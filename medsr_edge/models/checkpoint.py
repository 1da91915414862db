"""Model files: safetensors weights + the config that rebuilds the network, in the file's metadata.

Loading never executes code from the file (safetensors, or ``torch.load(weights_only=True)`` for
training state).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..core.errors import ModelError
from ..core.files import atomic_write
from . import build_model

MODEL_FILE = "model.safetensors"


def save_model(path: str | Path, model: torch.nn.Module, config: dict[str, Any], meta: dict[str, Any],
               half: bool = False) -> Path:
    """Write ``model``'s weights (optionally fp16) with ``config`` and ``meta`` as JSON metadata."""
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"config": json.dumps(config),
                                                                         "meta": json.dumps(meta)}))
    return path


def resolve_model_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ModelError(f"{path}: no model file; give a model.safetensors or a training output folder")
    return path


def read_metadata(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, meta) stored in a model file."""
    path = resolve_model_path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            md = fh.metadata() or {}
        return json.loads(md["config"]), json.loads(md.get("meta", "{}"))
    except (KeyError, json.JSONDecodeError, Exception) as exc:  # noqa: BLE001
        raise ModelError(f"{path}: not a medsr-edge model file ({type(exc).__name__})") from None


MAX_CONFIG_INT = 1024  # largest width/depth a stored config may ask for (the full ESRGAN: 64 wide, 23 blocks)


def check_config(path: Path, config: Any) -> None:
    """Refuse a stored config that is not a known architecture with sensible sizes, before anything
    is built from it (a crafted file could ask for a network of many gigabytes)."""
    import inspect

    from . import ARCHS

    if not isinstance(config, dict) or config.get("type") not in ARCHS:
        known = ", ".join(ARCHS)
        raise ModelError(f"{path}: its config names no known architecture ({known}); not a medsr-edge model file")
    params = inspect.signature(ARCHS[config["type"]]).parameters
    for key, value in config.items():
        if key in ("type", "name"):
            continue
        if key not in params:
            raise ModelError(f"{path}: config key {key!r} is not a parameter of {config['type']}; the file is damaged")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
                isinstance(value, (int, float)) and not 0 <= value <= MAX_CONFIG_INT):
            raise ModelError(f"{path}: config {key}={value!r} is out of range (0..{MAX_CONFIG_INT}); the file is damaged")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, dict]:
    """Rebuild and load a network saved by :func:`save_model`; returns (model in eval mode, config, meta).
    The config is checked, and the network it describes is built on the meta device (no memory) and
    compared tensor by tensor with the file's shapes, before any real allocation."""
    path = resolve_model_path(path)
    config, meta = read_metadata(path)
    check_config(path, config)
    name = config.get("name", config["type"])
    try:
        with safe_open(str(path), framework="pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        with torch.device("meta"):
            probe = build_model(config)
            if meta.get("deploy"):
                probe.reparameterize()
        wanted = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged config fails anywhere in a constructor
        raise ModelError(f"{path}: config {name} cannot be built ({type(exc).__name__}); the file is damaged") from None
    if wanted != shapes:
        odd = sorted(set(wanted) ^ set(shapes)) or [k for k in wanted if wanted[k] != shapes.get(k)]
        raise ModelError(f"{path}: weights do not match config {name} (first difference: {odd[0]}); the file is damaged "
                         "or was saved by another version")
    model = build_model(config)
    if meta.get("deploy"):
        model.reparameterize()
    state = load_file(str(path))
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not match config {config.get('name', config['type'])} ({str(exc)[:120]})") from None
    return model.to(device).eval(), config, meta
