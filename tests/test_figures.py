import numpy as np
import pytest

pytest.importorskip("matplotlib")

from medsr_edge.eval.figures import comparison_figure, detail_roi, display_window  # noqa: E402
from medsr_edge.runtime.enhancer import Enhancer  # noqa: E402
from medsr_edge.runtime.io import read_image  # noqa: E402
from medsr_edge.runtime.transforms import Normalizer  # noqa: E402


def test_detail_roi_finds_the_textured_region():
    img = np.zeros((128, 128), np.float32)
    img[80:110, 20:50] = np.random.default_rng(0).random((30, 30))
    x, y, w, h = detail_roi(img, 24)
    assert 10 <= x <= 50 and 70 <= y <= 110 and w == h == 24


def test_detail_roi_prefers_tissue_in_the_window_over_saturated_edges():
    """A head CT in a brain window: the skull/air edge is the strongest raw gradient, but it is
    saturated on screen; the ROI must land on the (weaker) texture inside the window."""
    yy, xx = np.mgrid[:160, :160]
    img = np.where((yy - 80) ** 2 + (xx - 80) ** 2 < 70 ** 2, 0.9, 0.0).astype(np.float32)  # bright "skull"
    img[20:60, 60:100] = 0.45 + 0.04 * np.random.default_rng(1).standard_normal((40, 40))  # "brain" texture
    assert not (35 <= detail_roi(img, 24)[1] <= 60)  # raw gradient energy picks the disk edge
    x, y, w, h = detail_roi(img, 24, window=(0.35, 0.55))
    assert 50 <= x <= 90 and 10 <= y <= 50


def test_comparison_figure_is_deterministic_and_panels_differ(tmp_path, tiny_onnx, ct_small):
    from PIL import Image as PILImage

    image = read_image(ct_small)
    enh = {"model A": Enhancer(tiny_onnx), "model A again": Enhancer(tiny_onnx)}
    r1 = comparison_figure(image, enh, 4, tmp_path / "a.png", window="soft-tissue")
    r2 = comparison_figure(image, enh, 4, tmp_path / "b.png", window="soft-tissue")
    assert r1 == r2 and (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    fig = np.asarray(PILImage.open(tmp_path / "a.png").convert("L"), np.float32)
    assert fig.shape[0] > 400 and fig.shape[1] > 1000
    # identical models give identical panels; bicubic differs from them
    assert r1["panels"]["model A"] == r1["panels"]["model A again"]
    assert r1["panels"]["bicubic"]["psnr"] != r1["panels"]["model A"]["psnr"]
    n = Normalizer.for_image(image.frames, image.dtype)
    lo, hi = display_window(image, n, "bone")
    assert 0 <= lo < hi <= 1.5


def test_error_scale_is_set_by_the_tissue_in_the_window():
    """Huge errors on a saturated edge must not flatten the colour scale of the tissue being read."""
    from medsr_edge.eval.figures import error_scale

    gt = np.full((96, 96), 0.5, np.float32)
    gt[:, :20] = 1.0  # saturated "bone"
    err = np.full_like(gt, 2.0)
    err[:, 15:25] = 500.0  # edge error
    assert error_scale([err], gt, (0.4, 0.6), margin=8) == pytest.approx(2.0)
    assert error_scale([err], gt, (0.0, 1.01), margin=0) == pytest.approx(500.0)


def test_compare_cli_adds_the_gan_panel_when_a_gan_model_is_shipped(tmp_path, tiny_onnx, ct_small, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from medsr_edge.cli.main import app

    weights = tmp_path / "w"
    weights.mkdir()
    for name in ("student-x4", "teacher-x4"):
        shutil.copy(tiny_onnx, weights / f"{name}.onnx")
    monkeypatch.setenv("MEDSR_EDGE_WEIGHTS", str(weights))
    res = CliRunner().invoke(app, ["compare", str(ct_small), "-o", str(tmp_path / "a.png")])
    assert res.exit_code == 0, res.output
    assert "GAN student" not in res.stdout and "teacher" in res.stdout
    shutil.copy(tiny_onnx, weights / "student-x4-gan.onnx")
    res = CliRunner().invoke(app, ["compare", str(ct_small), "-o", str(tmp_path / "b.png")])
    assert res.exit_code == 0, res.output
    assert "GAN student" in res.stdout
    res = CliRunner().invoke(app, ["compare", str(ct_small), "--gan", "", "-o", str(tmp_path / "c.png")])
    assert res.exit_code == 0 and "GAN student" not in res.stdout


def test_comparison_under_mr_physics_shows_the_scanner_baselines(tmp_path, tiny_onnx):
    """--degradation mr-kspace: the LR is a k-space truncation (not bicubic), and the panels hold
    the bench's baselines for it; zero-filled k-space beats bicubic on that LR, as on a scanner."""
    from pydicom.data import get_testdata_file

    image = read_image(get_testdata_file("MR_small.dcm"))
    r = comparison_figure(image, {"model": Enhancer(tiny_onnx)}, 4, tmp_path / "mr.png", degradation="mr-kspace")
    assert list(r["panels"]) == ["bicubic", "lanczos", "sinc", "zero-filled", "model"]
    assert r["panels"]["zero-filled"]["psnr"] > r["panels"]["bicubic"]["psnr"]
    plain = comparison_figure(image, {"model": Enhancer(tiny_onnx)}, 4, tmp_path / "b.png")
    assert list(plain["panels"]) == ["bicubic", "model"] and plain["panels"]["bicubic"] != r["panels"]["bicubic"]
    from medsr_edge.core.errors import MedsrError

    with pytest.raises(MedsrError, match="mr-kspace"):
        comparison_figure(image, {}, 4, tmp_path / "x.png", degradation="gibbs")
