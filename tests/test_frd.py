"""The FRD column: frd-score's FRD v1, computed from per-image features the way
``frd_score.compute_frd`` computes it from files."""

import numpy as np
import pytest
from conftest import phantom
from PIL import Image

pytest.importorskip("frd_score")
pytest.importorskip("radiomics")

from medsr_edge.eval.frd import FRDScorer  # noqa: E402


def _sets(tmp_path, n=5):
    from scipy.ndimage import gaussian_filter

    real, fake, files = [], [], ([], [])
    for i in range(n):
        gt = (phantom(160, seed=i) * 255).round().astype(np.uint8)
        blurred = np.clip(gaussian_filter(gt.astype(np.float32), 1.5), 0, 255).round().astype(np.uint8)
        for k, img in enumerate((gt, blurred)):
            path = tmp_path / f"{'ab'[k]}{i}.png"
            Image.fromarray(img).save(path)
            files[k].append(str(path))
        real.append(gt / 255.0), fake.append(blurred / 255.0)
    return real, fake, files


def test_frd_equals_frd_score_on_the_same_images(tmp_path):
    import frd_score

    real, fake, files = _sets(tmp_path)
    reference = frd_score.compute_frd([files[0], files[1]], frd_version="v1", num_workers=1)
    scorer = FRDScorer()
    for r, f in zip(real, fake):
        scorer.add(r, real=True, modality="ct")
        scorer.add(f, real=False, modality="ct")
    assert scorer.compute() == pytest.approx(reference, rel=1e-3, abs=1e-3)
    assert scorer.by_modality["ct"] == pytest.approx(reference, rel=1e-3, abs=1e-3)
    for r in real:  # the ground truths against themselves: far closer than the blurred set
        scorer.add(r, real=False, modality="ct")
    assert scorer.compute() < reference - 1.0


def test_bench_frd_column_overall_and_per_modality(phantom_dir, tmp_path, monkeypatch):
    import json

    from test_bench import _bench_weights
    from typer.testing import CliRunner

    from medsr_edge.cli.main import app

    _bench_weights(tmp_path, monkeypatch)
    res = CliRunner().invoke(app, ["bench", "--data", str(phantom_dir), "--models", "student-x4", "--backends", "onnxruntime",
                                   "--frd", "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads((tmp_path / "b.json").read_text())["rows"]}
    for name in ("bicubic", "student-x4"):
        assert np.isfinite(rows[name]["frd"])
        assert {m: np.isfinite(v["frd"]) for m, v in rows[name]["per_modality"].items()} == {"ct": True, "mri": True}
    assert "FRD" in (tmp_path / "b.md").read_text().splitlines()[0]
