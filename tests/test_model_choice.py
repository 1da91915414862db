"""With no --model, each image gets the model of its acquisition family (from the DICOM Modality,
or --modality for rasters) when one is shipped, else the default; the choice is printed and recorded."""

import numpy as np
import onnx
import pydicom
import pytest
from conftest import make_tiny_onnx
from PIL import Image as PILImage
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from medsr_edge.cli.main import app

runner = CliRunner()


@pytest.fixture
def weights(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    for name, seed in (("student-x4", 0), ("student-x4-mr", 1)):
        model = onnx.load(str(make_tiny_onnx(tmp_path / f"{name}-raw.onnx", seed=seed)))
        for prop in model.metadata_props:
            if prop.key == "medsr.model_name":
                prop.value = name
        onnx.save(model, str(folder / f"{name}.onnx"))
    monkeypatch.setenv("MEDSR_EDGE_WEIGHTS", str(folder))
    return folder


def _label(path):
    return pydicom.dcmread(path).SeriesDescription


def test_each_dicom_gets_its_family_model_and_says_so(tmp_path, weights, ct_small):
    mr = get_testdata_file("MR_small.dcm")
    res = runner.invoke(app, ["enhance", str(mr), str(ct_small), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert ": MR -> student-x4-mr" in res.output and ": CT -> student-x4" in res.output
    outs = {p.name: p for p in (tmp_path / "out").rglob("*.dcm")}
    assert "student-x4-mr" in _label(outs["MR_small.dcm"])
    assert "student-x4-mr" not in _label(outs["CT_small.dcm"]) and "student-x4" in _label(outs["CT_small.dcm"])
    assert "student-x4-mr" in pydicom.dcmread(outs["MR_small.dcm"]).DerivationDescription


def test_unknown_modality_falls_back_to_the_default_once_per_series(tmp_path, weights, ct_small):
    ds = pydicom.dcmread(ct_small)
    ds.Modality = "OT"
    for i in range(2):
        ds.SOPInstanceUID = f"1.2.3.{i}"
        ds.save_as(tmp_path / f"ot{i}.dcm")
    res = runner.invoke(app, ["enhance", str(tmp_path / "ot0.dcm"), str(tmp_path / "ot1.dcm"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert res.output.count("Modality OT has no acquisition family; using the default student-x4") == 1


def test_rasters_follow_modality_and_model_always_wins(tmp_path, weights):
    png = tmp_path / "a.png"
    PILImage.fromarray((np.arange(256).reshape(16, 16)).astype(np.uint8)).save(png)
    res = runner.invoke(app, ["enhance", str(png), "-o", str(tmp_path / "mr.png"), "--modality", "MR"])
    assert res.exit_code == 0 and "a.png: MR -> student-x4-mr" in res.output
    res = runner.invoke(app, ["enhance", str(png), "-o", str(tmp_path / "plain.png")])
    assert res.exit_code == 0 and "a.png: no modality -> student-x4" in res.output
    assert not np.array_equal(np.asarray(PILImage.open(tmp_path / "mr.png")), np.asarray(PILImage.open(tmp_path / "plain.png")))
    res = runner.invoke(app, ["enhance", str(get_testdata_file("MR_small.dcm")), "-o", str(tmp_path / "m.dcm"),
                              "--model", "student-x4"])
    assert res.exit_code == 0 and "student-x4-mr" not in _label(tmp_path / "m.dcm")
    res = runner.invoke(app, ["enhance", str(png), "--modality", "PET"])
    assert res.exit_code == 2 and "use MR, CT or XR" in res.output


def test_an_opt_in_family_model_is_named_but_not_picked(tmp_path, weights, ct_small):
    """A family model whose card says auto_pick false (it costs the bicubic protocol) is not chosen
    by Modality; the note names it and how to use it, and --model still does."""
    import json

    (weights / "student-x4-mr.json").write_text(json.dumps({"name": "student-x4-mr", "auto_pick": False}))
    mr = get_testdata_file("MR_small.dcm")
    res = runner.invoke(app, ["enhance", mr, "-o", str(tmp_path / "auto.dcm")])
    assert res.exit_code == 0, res.output
    assert ": MR -> student-x4 (student-x4-mr" in res.output and "is opt-in: --model student-x4-mr" in res.output
    assert "student-x4-mr" not in _label(tmp_path / "auto.dcm")
    res = runner.invoke(app, ["enhance", mr, "-o", str(tmp_path / "opt.dcm"), "--model", "student-x4-mr"])
    assert res.exit_code == 0 and "student-x4-mr" in _label(tmp_path / "opt.dcm")
    assert "physics, opt-in: --model student-x4-mr" in runner.invoke(app, ["info"]).output
