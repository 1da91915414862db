"""Before and after of one's own scan: the image `enhance` read and the one it wrote, side by side.

No ground truth is needed: the input is shown upsampled by nearest neighbour (its real pixels) and
by bicubic interpolation (what a viewer shows), next to the output and the difference output -
bicubic (what the network added), at full output resolution on a region inside the body. Plus a
self-contained HTML page with a slider between before and after and synchronised zoom and pan.
numpy, scipy and matplotlib; no torch.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.degradation import upscale_bicubic
from ..core.errors import MedsrError
from ..core.files import atomic_write
from ..runtime.image import Image
from ..runtime.transforms import Normalizer
from .figures import display_window

ROI_OUTPUT_PIXELS = 384  # side of the default region, output pixels (shown 1:1)


def pair_scale(before: Image, after: Image) -> int:
    """The integer factor between an input and its output; refuse a pair that is not one."""
    (h, w), (oh, ow) = before.shape, after.shape
    if oh % h or ow % w or oh // h != ow // w or oh // h < 1:
        raise MedsrError(f"{after.source}: {oh}x{ow} is not an integer multiple of {before.source}'s {h}x{w}; "
                         "give the file enhance read and the file it wrote")
    if len(before.frames) != len(after.frames):
        raise MedsrError(f"{after.source}: {len(after.frames)} frames, {before.source} has {len(before.frames)}; "
                         "not an input/output pair")
    return oh // h


def body_mask(img: np.ndarray) -> np.ndarray:
    """Pixels of the patient in a [0, 1] image: above an Otsu threshold, the largest connected
    region (so a scanner table or a marker separated by air is left out), holes filled, then
    eroded by 2 % of the side so a region never touches the outside."""
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(img.astype(np.float64), 2.0)
    try:
        fg = smooth > threshold_otsu(smooth)
    except ValueError:  # a flat image
        return np.ones(img.shape, bool)
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.ones(img.shape, bool)
    largest = labels == (1 + int(np.argmax(ndimage.sum(fg, labels, range(1, n + 1)))))
    body = ndimage.binary_fill_holes(largest)
    margin = max(1, int(0.02 * min(img.shape)))
    inner = ndimage.binary_erosion(body, iterations=margin)
    return inner if inner.any() else body


def body_roi(img: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the ``size`` square with the most detail (mean gradient) among squares
    that lie inside the body for at least 95 % of their pixels (the most inside ones if none)."""
    h, w = img.shape
    size = min(size, h, w)
    mask = body_mask(img)
    inside = ndimage.uniform_filter(mask.astype(np.float64), size=size, mode="constant")
    detail = ndimage.uniform_filter(ndimage.gaussian_gradient_magnitude(img.astype(np.float64), 1.0), size=size,
                                    mode="constant")
    half = size // 2
    valid = np.zeros_like(mask)
    valid[half:h - (size - half) + 1, half:w - (size - half) + 1] = True
    ok = valid & (inside >= 0.95)
    score = np.where(ok, detail, -np.inf) if ok.any() else np.where(valid, inside, -np.inf)
    cy, cx = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(cx - half), int(cy - half), size, size


def _window(image: Image, norm: Normalizer, preset: str | None, frame: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) in [0, 1]: a preset (HU) or the DICOM window (:func:`display_window`), else the
    0.5-99.5 percentiles of the frame."""
    if preset or (image.dataset is not None and "WindowCenter" in image.dataset and "WindowWidth" in image.dataset):
        return display_window(image, norm, preset)
    lo, hi = np.percentile(norm.forward(frame), [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1e-3


def _panels(before: Image, after: Image, frame: int, preset: str | None):
    scale = pair_scale(before, after)
    norm = Normalizer.of(before)  # one mapping for both: grey levels compare
    lr = norm.forward(before.frames[frame])
    out = norm.forward(after.frames[frame])
    nearest = np.repeat(np.repeat(lr, scale, 0), scale, 1)
    bicubic = upscale_bicubic(lr, scale)
    return scale, norm, lr, nearest, bicubic, out, _window(before, norm, preset, before.frames[frame])


def before_after_figure(before: Image, after: Image, out_png: str | Path, *, frame: int | None = None,
                        roi: tuple[int, int, int, int] | None = None, window: str | None = None) -> dict:
    """Write the figure: the whole output with the region marked, then input (nearest), input
    (bicubic), output and output - bicubic on the region at 1:1 output pixels. ``roi``: (x, y, w, h)
    in output pixels (default: :func:`body_roi`). Returns scale, roi and the window used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    frame = len(before.frames) // 2 if frame is None else frame
    if not 0 <= frame < len(before.frames):
        raise MedsrError(f"--frame {frame}: {before.source} has frames 0..{len(before.frames) - 1}")
    scale, norm, _, nearest, bicubic, out, (lo, hi) = _panels(before, after, frame, window)
    shown = np.clip((out - lo) / (hi - lo), 0, 1)
    x, y, w, h = roi or body_roi(shown, ROI_OUTPUT_PIXELS)
    H, W = out.shape
    if not (0 <= x < W and 0 <= y < H and w > 0 and h > 0):
        raise MedsrError(f"--roi {x},{y},{w},{h} is outside the {W}x{H} output")
    w, h = min(w, W - x), min(h, H - y)
    crop = (slice(y, y + h), slice(x, x + w))
    diff = (out - bicubic)[crop] * (norm.hi - norm.lo)  # modality units
    body = body_mask(shown)[crop]
    dmax = float(np.percentile(np.abs(diff[body] if body.any() else diff), 99.5)) or 1.0
    panel_px = max(w, 256)
    dpi = 100
    fig = plt.figure(figsize=(5 * panel_px / dpi, (h * panel_px / w + 40) / dpi), dpi=dpi)
    axes = [fig.add_axes((i / 5, 0, 1 / 5, 1 - 40 / (h * panel_px / w + 40))) for i in range(5)]
    axes[0].imshow(out, cmap="gray", vmin=lo, vmax=hi, interpolation="lanczos")
    axes[0].add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="yellow", linewidth=1.5))
    axes[0].set_title(f"output, whole (x{scale})", fontsize=9)
    for ax, img, title in ((axes[1], nearest, "input (nearest)"), (axes[2], bicubic, "input (bicubic)"),
                           (axes[3], out, "output")):
        ax.imshow(img[crop], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    axes[4].imshow(diff, cmap="RdBu_r", vmin=-dmax, vmax=dmax, interpolation="nearest")
    axes[4].set_title(f"output - bicubic (+-{dmax:.3g})", fontsize=9)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    try:
        atomic_write(Path(out_png), lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, facecolor="white"))
    finally:
        plt.close(fig)
    return {"scale": scale, "roi": (x, y, w, h), "window": (lo, hi), "frame": frame, "difference_range": dmax}


def _png_data_uri(img01: np.ndarray) -> str:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray((np.clip(img01, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medsr-edge: {title}</title>
<style>
body {{ margin: 0; background: #111; color: #ddd; font: 14px sans-serif; }}
#bar {{ padding: 6px 10px; }} #bar input {{ width: 40%; vertical-align: middle; }}
#view {{ position: relative; overflow: hidden; width: 100vw; height: calc(100vh - 40px); cursor: grab; }}
#view img {{ position: absolute; left: 0; top: 0; transform-origin: 0 0; image-rendering: pixelated; }}
</style></head>
<body data-ready="0">
<div id="bar">before (input, nearest) <input id="slider" type="range" min="0" max="100" value="50"> after (output)
&nbsp; {title} &nbsp; wheel: zoom, drag: pan, 0: reset</div>
<div id="view"><img id="before" alt="before" src="{before}"><img id="after" alt="after" src="{after}"></div>
<script>
const view = document.getElementById("view"), imgs = [document.getElementById("before"), document.getElementById("after")];
const slider = document.getElementById("slider");
let zoom = 1, px = 0, py = 0, loaded = 0, drag = null;
function apply() {{
  for (const im of imgs) im.style.transform = `translate(${{px}}px, ${{py}}px) scale(${{zoom}})`;
  const cut = px + zoom * imgs[1].naturalWidth * slider.value / 100;
  imgs[1].style.clipPath = `inset(0 0 0 ${{Math.max(0, (cut - px) / zoom)}}px)`;
  document.body.dataset.zoom = zoom.toFixed(3);
}}
function fit() {{ zoom = Math.min(view.clientWidth / imgs[1].naturalWidth, view.clientHeight / imgs[1].naturalHeight) || 1; px = py = 0; apply(); }}
for (const im of imgs) im.addEventListener("load", () => {{
  loaded += 1; document.body.dataset[im.id + "Width"] = im.naturalWidth; document.body.dataset.ready = loaded;
  if (loaded === 2) fit();
}});
slider.addEventListener("input", apply);
view.addEventListener("wheel", e => {{ e.preventDefault(); const f = e.deltaY < 0 ? 1.25 : 0.8;
  px = e.offsetX - f * (e.offsetX - px); py = e.offsetY - f * (e.offsetY - py); zoom *= f; apply(); }});
view.addEventListener("mousedown", e => {{ drag = [e.clientX - px, e.clientY - py]; }});
window.addEventListener("mouseup", () => {{ drag = null; }});
window.addEventListener("mousemove", e => {{ if (drag) {{ px = e.clientX - drag[0]; py = e.clientY - drag[1]; apply(); }} }});
window.addEventListener("keydown", e => {{ if (e.key === "0") fit(); }});
</script></body></html>
"""


def before_after_html(before: Image, after: Image, out_html: str | Path, *, frame: int | None = None,
                      window: str | None = None) -> Path:
    """A self-contained page (both images inside it as PNG): the input (nearest-upsampled, so its
    real pixels show) and the output on one grid, a slider between them, and one zoom and pan for
    both. Windowed like the figure."""
    frame = len(before.frames) // 2 if frame is None else frame
    _, _, _, nearest, _, out, (lo, hi) = _panels(before, after, frame, window)
    title = f"{Path(before.source).name} -> {Path(after.source).name}, frame {frame}"
    page = HTML.format(title=title.replace("<", "&lt;"), before=_png_data_uri((nearest - lo) / (hi - lo)),
                       after=_png_data_uri((out - lo) / (hi - lo)))
    path = Path(out_html)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
