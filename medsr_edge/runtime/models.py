"""Shipped models: names such as ``student-x4`` resolve to files in ``medsr_edge/weights``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import ModelError
from ..core.formats import FORMATS, artifact_name, format_for, format_of_file

PACKAGED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_MODEL = "student-x4"


def weights_dir() -> Path:
    """Folder of shipped models: ``$MEDSR_EDGE_WEIGHTS`` if set, else the package's ``weights/``."""
    return Path(os.environ.get("MEDSR_EDGE_WEIGHTS") or PACKAGED_WEIGHTS)


def shipped_models() -> dict[str, list[Path]]:
    """{model name: [artifact files]} for everything in the weights folder."""
    out: dict[str, list[Path]] = {}
    if not weights_dir().is_dir():
        return out
    for f in sorted(weights_dir().iterdir()):
        for fmt in sorted(FORMATS, key=lambda x: -len(x.suffix)):
            if f.name.endswith(fmt.suffix):
                out.setdefault(f.name[: -len(fmt.suffix)], []).append(f)
                break
    return out


# Acquisition families (how each modality is acquired; see core.degradation) and the DICOM
# Modality values of each. A family model is named after the default: student-x4-mr, -ct, -xr.
FAMILY_MODALITIES = {"mr": ("MR",), "ct": ("CT",), "xr": ("CR", "DX", "DR", "MG", "RF", "XA", "PX", "IO")}
FAMILIES = tuple(FAMILY_MODALITIES)


def family_of(modality: str) -> str | None:
    """The acquisition family of a DICOM Modality value (MR, CT, CR ...) or of a family name
    (mr, ct, xr); None when it has none."""
    m = (modality or "").strip()
    if m.lower() in FAMILY_MODALITIES:
        return m.lower()
    return next((f for f, values in FAMILY_MODALITIES.items() if m.upper() in values), None)


def family_model(default: str, family: str | None, *, opt_in: bool = False) -> str | None:
    """The shipped family model of ``default`` for ``family`` (``student-x4`` + ``mr`` ->
    ``student-x4-mr``) that is picked automatically, or None. A family model whose card says
    ``"auto_pick": false`` (it costs the bicubic protocol; ``--model NAME`` uses it) is returned only
    with ``opt_in=True``."""
    if family is None:
        return None
    name = f"{default}-{family}"
    if name not in shipped_models():
        return None
    return name if opt_in or model_card(name).get("auto_pick", True) else None


def model_card(name: str) -> dict:
    """The JSON model card of a shipped model ({} when there is none)."""
    path = weights_dir() / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def resolve_model(model: str | Path, backend: str, precision: str) -> Path:
    """File for a model name or path. A path is returned as is (after a check that it exists);
    a name picks the artifact of ``backend`` at ``precision``, e.g. student-x4 + onnxruntime + int8
    -> ``weights/student-x4-int8.onnx``."""
    p = Path(model)
    if p.suffix and (p.exists() or p.parent != Path(".")):
        if not p.is_file():
            raise ModelError(f"{p}: model file not found")
        return p
    try:
        fmt = format_for(backend, precision)
    except KeyError as exc:
        raise ModelError(str(exc.args[0])) from None
    path = weights_dir() / artifact_name(str(model), fmt)
    if not path.is_file():
        known = shipped_models()
        if str(model) not in known:
            raise ModelError(f"unknown model {model!r}; shipped: {', '.join(known) or 'none'}; or give a file path")
        have = ", ".join(format_of_file(f).name for f in known[str(model)])
        raise ModelError(f"{model} has no {fmt.name} artifact (has: {have}); "
                         f"build it with `medsr-edge export --model {model} --format {fmt.name}`")
    return path
