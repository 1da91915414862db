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


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, dict]:
    """Rebuild and load a network saved by :func:`save_model`; returns (model in eval mode, config, meta)."""
    path = resolve_model_path(path)
    config, meta = read_metadata(path)
    model = build_model(config)
    if meta.get("deploy"):
        model.reparameterize()
    state = load_file(str(path))
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not match config {config.get('name', config['type'])} ({str(exc)[:120]})") from None
    return model.to(device).eval(), config, meta
