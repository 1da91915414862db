"""The reusable inference class: model loading, normalisation, tiling with feathered blending.

>>> enh = Enhancer("student-x4")               # shipped model, ONNX Runtime on the CPU
>>> sr01 = enh.enhance_array(lr01)              # float32 (H, W) in [0, 1] -> (4H, 4W)
>>> frames, norm = enh.enhance_image(image)     # an Image from runtime.io, in its own units
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.errors import ModelError, printable
from ..core.fidelity import is_gan_model
from ..core.files import file_sha256
from .backends import Backend, open_backend
from .image import Image
from .models import DEFAULT_MODEL, resolve_model
from .transforms import Normalizer


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering [0, length) with at least ``overlap``."""
    if length <= tile:
        return [0]
    step = max(tile - overlap, 1)
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def blend_weights(length: int, starts: list[int], tile: int, overlap: int) -> list[np.ndarray]:
    """1-D weights per tile that sum to exactly 1 at every position (a partition of unity).

    Inside a tile the raw weight is 1, falling linearly to ~0 across the outer ``overlap`` pixels
    of every edge shared with another tile (the outer half is ~0: those outputs see zero padding).
    The 2-D weight of a tile is the outer product of its row and column weights, so the blended
    output needs no extra normalisation buffer.
    """
    eps = 1e-6
    raw = []
    for s in starts:
        e = min(s + tile, length)
        x = np.arange(s, e, dtype=np.float64)
        w = np.ones(e - s)
        if s > 0:
            w = np.minimum(w, np.clip((x - s - overlap / 2 + 0.5) / max(overlap / 2, 1), eps, 1))
        if e < length:
            w = np.minimum(w, np.clip((e - x - overlap / 2 - 0.5) / max(overlap / 2, 1), eps, 1))
        raw.append(w)
    total = np.zeros(length)
    for s, w in zip(starts, raw):
        total[s:s + len(w)] += w
    return [(w / total[s:s + len(w)]).astype(np.float32) for s, w in zip(starts, raw)]


# Inputs up to 512x512 run whole (a CT or MR slice in one call: about 0.5 GB peak with the default
# student); larger ones in 256-pixel tiles (about 0.35 GB for a 1024x1024 X-ray, 1.7 GB if whole).
AUTO_WHOLE_IMAGE_PIXELS = 512 * 512
AUTO_TILE = 256
MAX_THREADS = 256


class Enhancer:
    """Super-resolve single-channel images with an exported model.

    model: a shipped name (``student-x4``, ``teacher-x4``) or a path to .onnx/.engine/.safetensors.
    backend: auto | onnxruntime | tensorrt | torch. precision: fp32 | fp16 | int8 (for names).
    tile: tile side in input pixels (0 = whole image at once; None = whole image up to
    ``AUTO_WHOLE_IMAGE_PIXELS``, ``AUTO_TILE`` tiles above); overlap: input pixels shared by
    neighbouring tiles (>= the network's receptive radius gives seamless output).
    """

    def __init__(self, model: str | Path = DEFAULT_MODEL, backend: str = "auto", precision: str = "fp32",
                 tile: int | None = None, overlap: int = 32, device: str = "auto", threads: int | None = None,
                 scale: int | None = None) -> None:
        if tile is not None and tile < 0:
            raise ModelError(f"tile {tile}: must be >= 0 (0 = whole image)")
        if overlap < 0:
            raise ModelError(f"overlap {overlap}: must be >= 0")
        if threads is not None and not 1 <= threads <= MAX_THREADS:
            raise ModelError(f"threads {threads}: must be 1..{MAX_THREADS}")
        chosen = "onnxruntime" if backend == "auto" else backend
        self.model_path = resolve_model(model, chosen, precision)
        self.backend: Backend = open_backend(self.model_path, backend if Path(str(model)).suffix else chosen,
                                             device, threads, scale)
        self.scale = self.backend.scale
        self.tile, self.overlap = (None if tile is None else int(tile)), int(overlap)
        self.model_name = str(self.backend.meta.get("model_name", Path(self.model_path).stem))
        self._identity: str | None = None

    @property
    def precision(self) -> str:
        return self.backend.precision

    @property
    def identity(self) -> str:
        """What made an output: model name, version, file hash, backend, precision, scale, and the
        tiling (tile side and overlap change pixels at tile seams). Derived DICOM UIDs come from it,
        so one model run the same way gives one series, and outputs that differ never share a UID."""
        if self._identity is None:
            self._identity = "|".join([self.model_name, str(self.backend.meta.get("version", "")),
                                       file_sha256(self.model_path)[:16],
                                       self.backend.name, self.precision, f"x{self.scale}",
                                       f"tile={'auto' if self.tile is None else self.tile}", f"overlap={self.overlap}"])
        return self._identity

    def describe(self) -> str:
        """'student-x4 0.1.0 (onnxruntime, int8)' for DerivationDescription and logs; a GAN-trained
        model says so, since its texture may be synthesized rather than restored."""
        text = f"{self.model_name} {self.backend.meta.get('version', '')} ({self.backend.name}, {self.precision})".replace("  ", " ")
        if is_gan_model(self.model_name, self.backend.meta):
            text += "; GAN-trained: fine texture may be synthesized, not measured"
        return text

    def _run(self, lr: np.ndarray) -> np.ndarray:
        out = self.backend.run(lr[None, None])
        h, w = lr.shape
        if out.ndim != 4 or out.shape[:2] != (1, 1) or out.shape[2:] != (h * self.scale, w * self.scale):
            raise ModelError(f"{self.model_path}: output shape {tuple(out.shape)} for a {h}x{w} input is not "
                             f"x{self.scale} as its metadata says; re-export the model (medsr-edge export)")
        if not np.isfinite(out).all():
            raise ModelError(f"{self.model_path}: produced NaN or infinite values; the model file is damaged")
        return out[0, 0]

    def enhance_array(self, lr: np.ndarray) -> np.ndarray:
        """float (H, W) in [0, 1] -> float32 (H*scale, W*scale), clipped to [0, 1]."""
        lr = np.ascontiguousarray(lr, np.float32)
        if lr.ndim != 2:
            raise ValueError(f"expected a 2-D image, got shape {lr.shape}")
        h, w = lr.shape
        s, t = self.scale, self.tile
        if t is None:  # auto: tile only above the memory budget
            t = 0 if h * w <= AUTO_WHOLE_IMAGE_PIXELS else AUTO_TILE
        if t <= 0 or (h <= t and w <= t):
            return np.clip(self._run(lr), 0.0, 1.0)
        ov = min(self.overlap, t // 2)
        ys, xs = tile_starts(h, t, ov), tile_starts(w, t, ov)
        wy = blend_weights(h * s, [y * s for y in ys], t * s, ov * s)
        wx = blend_weights(w * s, [x * s for x in xs], t * s, ov * s)
        out = np.zeros((h * s, w * s), np.float32)
        for y, wyy in zip(ys, wy):
            for x, wxx in zip(xs, wx):
                sr = self._run(lr[y:y + t, x:x + t])
                th, tw = sr.shape
                out[y * s:y * s + th, x * s:x * s + tw] += sr * wyy[:, None] * wxx[None, :]
        return np.clip(out, 0.0, 1.0, out=out)

    def iter_enhance_image(self, image: Image) -> Iterator[np.ndarray]:
        """Enhance the frames of an Image one at a time: yields float32 (sH, sW) in modality
        units, so a writer can store each frame before the next is made (memory of one frame).

        Padding (DICOM PixelPaddingValue: outside a CT's reconstruction circle) is not image: the
        network sees it filled with the lowest real value, the normalisation ignores it, and the
        output holds the padding value exactly where the (nearest-upsampled) padding was."""
        padding = image.meta.get("padding")
        if padding is None:
            norm = Normalizer.of(image)
            for frame in image.frames:
                yield norm.inverse(self.enhance_array(norm.forward(frame)), inplace=True)
            return
        real = image.frames[~padding]
        filled = replace(image, frames=np.where(padding, real.min(), image.frames))
        norm = Normalizer.of(filled)
        s = self.scale
        for frame, mask, value in zip(filled.frames, padding, image.meta["padding_values"]):
            out = norm.inverse(self.enhance_array(norm.forward(frame)), inplace=True)
            out[np.repeat(np.repeat(mask, s, 0), s, 1)] = value
            yield out

    def enhance_image(self, image: Image) -> tuple[np.ndarray, Normalizer]:
        """Enhance every frame of an Image; returns (frames (F, sH, sW) float32 in modality units, the normaliser)."""
        norm = Normalizer.of(image)
        return np.stack(list(self.iter_enhance_image(image))), norm


class ModelChooser:
    """The model for each image when the user named none: the family model of its acquisition
    (``student-x4-mr`` for an MR DICOM, from its Modality; ``modality`` for PNG/JPEG/TIFF) when it
    is shipped, else the default. Each model is loaded once; ``report`` hears once per DICOM series
    (once per model for other files) which model was chosen and why."""

    def __init__(self, default: str = DEFAULT_MODEL, modality: str | None = None, report=print, **options) -> None:
        from .models import family_of

        if modality is not None and family_of(modality) is None:
            raise ModelError(f"--modality {modality!r}: use MR, CT or XR")
        self.default, self.modality, self.report, self.options = default, modality, report, options
        self.loaded: dict[str, Enhancer] = {}
        self.told: set[str] = set()
        self.scale = self.enhancer(default).scale

    def enhancer(self, name: str) -> Enhancer:
        if name not in self.loaded:
            self.loaded[name] = Enhancer(name, **self.options)
        return self.loaded[name]

    def describe(self) -> str:
        return "; ".join(e.describe() for e in self.loaded.values())

    def __call__(self, image: Image) -> Enhancer:
        from .models import family_model, family_of

        ds = image.dataset
        dicom_modality = printable(ds.get("Modality", "") or "", 16) if ds is not None else ""
        stated = dicom_modality or self.modality or ""
        family = family_of(stated)
        name = family_model(self.default, family) or self.default
        key = (printable(ds.get("SeriesInstanceUID", "")) if ds is not None else "") or name
        if key not in self.told:
            self.told.add(key)
            where = f"series {key}" if ds is not None else Path(image.source).name
            if ds is not None and family is None:
                self.report(f"note: {where}: Modality {dicom_modality or 'missing'} has no acquisition family; "
                            f"using the default {name}")
            else:
                other = family_model(self.default, family, opt_in=True)
                self.report(f"note: {where}: {stated or 'no modality'} -> {name}"
                            + (f" ({other}, trained on {family.upper()} acquisition physics, is opt-in: --model {other})"
                               if other and other != name else ""))
        return self.enhancer(name)


@dataclass(frozen=True, kw_only=True)
class EnhancerSpec:
    """How to build the enhancer of a batch, picklable (a Ray worker builds it once): ``model`` a
    shipped name or a path (None: the family model per image, :class:`ModelChooser`); the rest as
    :class:`Enhancer` (``threads`` None: all cores; the Ray engine runs one per task)."""

    model: str | None = None
    modality: str | None = None
    backend: str = "auto"
    precision: str = "fp32"
    tile: int | None = None
    overlap: int = 32
    device: str = "auto"
    threads: int | None = None

    def build(self, report: Callable[[str], None] = lambda line: None) -> Enhancer | ModelChooser:
        options = dict(backend=self.backend, precision=self.precision, tile=self.tile, overlap=self.overlap,
                       device=self.device, threads=self.threads)
        if self.model is None:
            return ModelChooser(modality=self.modality, report=report, **options)
        return Enhancer(self.model, **options)
