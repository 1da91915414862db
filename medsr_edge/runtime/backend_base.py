"""The interface every inference backend implements, and the model metadata it checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import ModelError

META_PREFIX = "medsr."


class Backend:
    name = "base"
    path: Path
    scale: int
    precision: str
    meta: dict
    device: str = "cpu"

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _check_meta(self, expected_scale: int | None) -> None:
        if "scale" not in self.meta:
            raise ModelError(f"{self.path}: model has no medsr.scale metadata; export it with `medsr-edge export`")
        try:
            self.scale = int(self.meta["scale"])
            channels = int(self.meta.get("in_channels", 1))
        except (TypeError, ValueError):
            raise ModelError(f"{self.path}: model metadata is damaged (scale {self.meta.get('scale')!r}, in_channels "
                             f"{self.meta.get('in_channels')!r}); re-export it with `medsr-edge export`") from None
        if self.scale not in (2, 3, 4, 8):
            raise ModelError(f"{self.path}: model metadata says scale {self.scale}; medsr-edge models are x2, x3, x4 or x8")
        if channels != 1:
            raise ModelError(f"{self.path}: model takes {self.meta['in_channels']} channels; medsr-edge needs 1")
        if expected_scale and expected_scale != self.scale:
            raise ModelError(f"{self.path}: model is x{self.scale}, but x{expected_scale} was asked for")


def parse_meta_value(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value
