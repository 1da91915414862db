"""A diversity prior for pre-training (issue 24): images that are not medical and need no download.

- **Dead leaves**: occluding discs with power-law radii (density ~ r^-3 between ``r_min`` and
  ``r_max`` pixels) and uniform grey levels, stored at 16 bits. Their statistics (scale invariance,
  sharp occlusion edges, flat interiors) match those of natural images, and they are a known
  training prior for restoration networks (Baradad et al. 2021; Achddou et al. 2021).
- **Natural photographs** that scikit-image ships inside its wheel (8-bit greyscale).

:func:`write_prior` lays them out as a data folder (``prior/<source>/train/*.png``), so
``medsr-edge train student --data OUT`` pre-trains on them and ``--init`` fine-tunes on medical data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# scikit-image images bundled in its wheel (no pooch download); colour ones are made grey.
SKIMAGE_IMAGES = ("camera", "moon", "coins", "text", "page", "brick", "grass", "gravel", "astronaut", "chelsea",
                  "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "horse", "clock")


def dead_leaves(size: int, rng: np.random.Generator, r_min: float = 2.0, r_max: float = 200.0,
                max_discs: int = 20000) -> np.ndarray:
    """A ``size`` x ``size`` dead-leaves image, float32 in [0, 1]: discs drawn front to back until
    the canvas is covered (or ``max_discs``), radii from the r^-3 law on [r_min, r_max]."""
    img = np.zeros((size, size), np.float32)
    covered = np.zeros((size, size), bool)
    yy, xx = np.mgrid[0:size, 0:size]
    # inverse CDF of p(r) ~ r^-3 on [r_min, r_max]
    a, b = r_min ** -2, r_max ** -2
    for _ in range(max_discs):
        r = (a - rng.random() * (a - b)) ** -0.5
        cy, cx = rng.uniform(-r, size + r, 2)
        y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, size)
        x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, size)
        if y0 >= y1 or x0 >= x1:
            continue
        disc = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        new = disc & ~covered[y0:y1, x0:x1]  # front to back: only what is not hidden yet
        img[y0:y1, x0:x1][new] = rng.random()
        covered[y0:y1, x0:x1] |= disc
        if covered.all():
            break
    return img


def skimage_greys() -> dict[str, np.ndarray]:
    """{name: uint8 (H, W)} of the bundled scikit-image photographs that load offline."""
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.util import img_as_ubyte

    out = {}
    for name in SKIMAGE_IMAGES:
        try:
            im = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a data file this install lacks (or would download): left out
            continue
        if im.ndim == 3:
            im = rgb2gray(im[..., :3])
        out[name] = img_as_ubyte(im)
    return out


def write_prior(out: str | Path, dead_leaves_count: int = 64, size: int = 384, seed: int = 0) -> dict[str, int]:
    """Write the prior as a data folder: ``OUT/prior/dead-leaves/train/*.png`` (16-bit) and
    ``OUT/prior/skimage/train/*.png`` (8-bit). Returns {source: images}."""
    from PIL import Image

    out = Path(out)
    rng = np.random.default_rng(seed)
    leaves = out / "prior" / "dead-leaves" / "train"
    leaves.mkdir(parents=True, exist_ok=True)
    for i in range(dead_leaves_count):
        img = dead_leaves(size, rng)
        Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(leaves / f"{i:04d}.png")
    photos = out / "prior" / "skimage" / "train"
    photos.mkdir(parents=True, exist_ok=True)
    greys = skimage_greys()
    for name, im in greys.items():
        Image.fromarray(im).save(photos / f"{name}.png")
    return {"prior/dead-leaves": dead_leaves_count, "prior/skimage": len(greys)}


if __name__ == "__main__":  # python -m medsr_edge.distill.prior OUT: the data folder for --data OUT
    import sys

    print(write_prior(sys.argv[1]))
