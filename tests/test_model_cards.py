import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cards_module():
    spec = importlib.util.spec_from_file_location("model_cards", ROOT / "benchmarks" / "model_cards.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_card_rows_are_the_shipped_artifacts_only(tmp_path, monkeypatch):
    """A format the bench measured but that does not ship (student-x4-gan's INT8) is no card row;
    TensorRT rows stay (engines are built on the target)."""
    cards = _cards_module()
    monkeypatch.setattr(cards, "WEIGHTS", tmp_path)
    (tmp_path / "m-x4.onnx").write_bytes(b"x")

    def row(fmt, backend, precision):
        return {"name": "m-x4", "format": fmt, "backend": backend, "precision": precision, "status": "ok"}

    bench = {"rows": [row("onnx", "onnxruntime", "fp32"), row("onnx-int8", "onnxruntime", "int8"),
                      row("engine-fp16", "tensorrt", "fp16"), {**row("onnx-fp16", "onnxruntime", "fp16"), "status": "skipped"}]}
    assert [r["format"] for r in cards.bench_rows(bench, "m-x4")] == ["onnx", "engine-fp16"]
    (tmp_path / "m-x4-int8.onnx").write_bytes(b"x")
    assert [r["format"] for r in cards.bench_rows(bench, "m-x4")] == ["onnx", "onnx-int8", "engine-fp16"]
