"""Option objects (issue 28): keyword-only, frozen, validated on construction with the option named."""

from pathlib import Path

import pytest

from medsr_edge.core.errors import MedsrError
from medsr_edge.eval.report import BenchRequest

pytest.importorskip("torch")
from medsr_edge.distill.options import TrainOptions  # noqa: E402
from medsr_edge.export.exporter import ExportOptions  # noqa: E402


@pytest.mark.parametrize("kw, named", [(dict(patch=30), "--patch"), (dict(patch=16), "--patch"), (dict(scale=5), "--scale"),
                                       (dict(balance="hospital"), "--balance"), (dict(degradation="jpeg"), "--degradation"),
                                       (dict(lr=-1.0), "--lr"), (dict(edge_patches=1.5), "--edge-patches"),
                                       (dict(iters=0), "--iters")])
def test_train_options_refuse_what_cannot_train(kw, named):
    with pytest.raises(MedsrError, match=named):
        TrainOptions(data=Path("d"), out=Path("o"), **kw)
    assert TrainOptions(data=Path("d"), out=Path("o")).patch == 128


@pytest.mark.parametrize("kw, named", [(dict(calib_method="kl"), "--calib-method"), (dict(calib_images=3), "--calib-images"),
                                       (dict(precision="int4"), "--precision"), (dict(max_shape="512"), "--max-shape"),
                                       (dict(opset=6), "--opset")])
def test_export_options_refuse_what_cannot_export(kw, named):
    with pytest.raises(MedsrError, match=named):
        ExportOptions(**kw)


def test_bench_request_refuses_and_options_are_keyword_only_and_frozen():
    ok = dict(data=Path("d"), scale=4, models=("student-x4",), backends=("onnxruntime",))
    for bad, named in ((dict(scale=3.5), "--scale"), (dict(degradation="jpeg"), "--degradation"), (dict(limit=0), "--limit")):
        with pytest.raises(MedsrError, match=named):
            BenchRequest(**{**ok, **bad})
    with pytest.raises(TypeError):
        BenchRequest(Path("d"), 4, ("student-x4",), ("onnxruntime",))  # positional: refused
    with pytest.raises(TypeError):
        TrainOptions(Path("d"), Path("o"))
    req = BenchRequest(**ok)
    with pytest.raises(AttributeError):
        req.scale = 2
