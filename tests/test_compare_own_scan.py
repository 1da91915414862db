"""`medsr-edge compare IN OUT`: before/after of one's own scan, on a region inside the body, and the
HTML slider page, loaded by a real headless Chromium."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from medsr_edge.cli.main import app

runner = CliRunner()


@pytest.fixture
def pair(tmp_path, ct_small, tiny_onnx):
    out = tmp_path / "ct-sr.dcm"
    res = runner.invoke(app, ["enhance", str(ct_small), "-o", str(out), "--model", str(tiny_onnx)])
    assert res.exit_code == 0, res.output
    return ct_small, out


def test_before_after_figure_and_page(tmp_path, pair):
    fig, page = tmp_path / "ba.png", tmp_path / "ba.html"
    res = runner.invoke(app, ["compare", str(pair[0]), str(pair[1]), "-o", str(fig), "--html", str(page)])
    assert res.exit_code == 0, res.output
    assert "x4, frame 0" in res.output
    with PILImage.open(fig) as im:
        assert im.width >= 5 * 256  # five panels, the region at 1:1 output pixels
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2 and "slider" in text  # self-contained


def test_the_region_is_inside_the_body_not_on_the_table():
    from medsr_edge.eval.before_after import body_mask, body_roi

    yy, xx = np.mgrid[:256, :256]
    img = np.zeros((256, 256))
    img[np.hypot(yy - 110, xx - 128) < 80] = 0.5
    img += 0.05 * np.sin(xx / 3.0) * (np.hypot(yy - 110, xx - 128) < 80)  # soft texture in the body
    img[220:226, 20:236] = 1.0  # the scanner table: the sharpest edges in the image, apart from the body
    x, y, w, h = body_roi(img, 64)
    assert body_mask(img)[y:y + h, x:x + w].mean() > 0.95
    assert y + h < 200


def test_a_pair_that_is_not_input_and_output_is_refused(tmp_path, ct_small):
    other = tmp_path / "other.png"
    PILImage.fromarray(np.zeros((100, 90), np.uint8)).save(other)
    res = runner.invoke(app, ["compare", str(ct_small), str(other), "-o", str(tmp_path / "f.png")])
    assert res.exit_code == 2 and "not an integer multiple" in res.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium (Debian) to run the browser test")
def test_the_page_renders_both_images_in_a_real_browser(tmp_path, pair):
    page = tmp_path / "ba.html"
    res = runner.invoke(app, ["compare", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "ba.png"), "--html", str(page)])
    assert res.exit_code == 0, res.output
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = dom[dom.index("<body"):dom.index(">", dom.index("<body"))]
    assert 'data-ready="2"' in body  # both images loaded and decoded
    assert 'data-before-width="512"' in body and 'data-after-width="512"' in body  # same grid: 128 x4
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, "--window-size=800,600", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    pixels = np.asarray(PILImage.open(shot).convert("L"), np.float64)[60:, :]
    assert pixels.std() > 10  # the images are drawn, not an empty dark page
