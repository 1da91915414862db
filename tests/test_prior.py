"""The non-medical pre-training prior (medsr_edge.distill.prior): dead leaves and bundled photographs."""

import numpy as np
import pytest

pytest.importorskip("skimage")
from medsr_edge.distill.prior import dead_leaves, write_prior  # noqa: E402
from medsr_edge.runtime.io import data_files, read_image  # noqa: E402


def test_dead_leaves_cover_the_canvas_with_flat_discs_at_every_scale():
    img = dead_leaves(128, np.random.default_rng(1))
    assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    levels, counts = np.unique(img, return_counts=True)
    assert levels[0] > 0 or counts[0] < img.size * 0.01  # covered: (almost) no background left
    assert len(levels) > 100  # many leaves ...
    assert counts.max() > 128 * 128 * 0.02 and (counts < 20).sum() > 20  # ... large and small ones
    flat = np.mean(np.diff(img, axis=1) == 0)
    assert flat > 0.7  # interiors are flat; the signal is in the occlusion edges
    assert not np.array_equal(img, dead_leaves(128, np.random.default_rng(2)))


def test_write_prior_is_a_data_folder(tmp_path):
    counts = write_prior(tmp_path, dead_leaves_count=2, size=64)
    files = data_files(tmp_path, "train")
    assert {f.source for f in files} == {"prior/dead-leaves", "prior/skimage"} and counts["prior/dead-leaves"] == 2
    assert counts["prior/skimage"] >= 8  # the photographs scikit-image ships in its wheel
    leaf = read_image(next(f.path for f in files if f.source == "prior/dead-leaves"))
    assert leaf.dtype == np.uint16 and leaf.frames[0].max() > 255  # 16-bit, not 8-bit in disguise
