"""--device: a device that is not there is a one-line error naming what to install."""

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from medsr_edge.cli.main import app
from medsr_edge.core.errors import BackendUnavailable
from medsr_edge.runtime.backends import ort_providers, parse_device

runner = CliRunner()
CPU_ONLY = "CUDAExecutionProvider" not in ort.get_available_providers()


def test_device_names_are_parsed_or_refused_with_the_choices():
    assert parse_device("cuda:1") == ("cuda", 1) and parse_device("CPU") == ("cpu", 0)
    for bad in ("gpu", "cuda:x", "cpu:0", "tensorrt:2"):
        with pytest.raises(BackendUnavailable, match="auto, cpu, cuda, cuda:N, tensorrt"):
            parse_device(bad)
    assert ort_providers("cpu") == ["CPUExecutionProvider"]


@pytest.mark.skipif(not CPU_ONLY, reason="this onnxruntime has CUDA: the missing-device error cannot show")
@pytest.mark.parametrize("command", [["enhance", "x.png"], ["bench", "--data", "."]])
@pytest.mark.parametrize("device, package", [("cuda", "onnxruntime-gpu"), ("cuda:1", "onnxruntime-gpu"),
                                             ("tensorrt", "tensorrt")])
def test_a_missing_gpu_device_is_one_line_naming_the_package(tmp_path, ct_small, command, device, package):
    args = [command[0], str(ct_small) if command[0] == "enhance" else command[1], *([] if command[0] == "enhance" else [str(tmp_path)])]
    res = runner.invoke(app, [*args, "--device", device])
    assert res.exit_code == 2 and package in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_tensorrt_backend_at_fp32_says_which_precision_it_runs(ct_small):
    res = runner.invoke(app, ["enhance", str(ct_small), "--backend", "tensorrt"])
    assert res.exit_code == 2 and "runs fp16 or int8 models, not fp32: pass --precision fp16" in res.output
