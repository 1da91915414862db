"""Whole-path fuzzing: mutated DICOM/PNG/TIFF/JPEG files (from pydicom's CT, MR, RLE, JPEG-LS,
JPEG 2000 and JPEG lossless files, and generated 8/16-bit PNG, JPEG and 2-page TIFF seeds; the
compressed ones also with frame headers that lie about the size) through read -> enhance with a
tiny model -> write -> read back, each shard in its own process under a 2 GiB address-space limit
and 10 CPU seconds per file (see fuzz_worker.py). Every file must end as an output of the right
shape or as the project's one-line error naming the file. The default run fuzzes 1,000 files;
``-m slow`` (in .ci/run) four shards of 2,500."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("fuzz_worker.py")
CASES_PER_SHARD = 2500


def _fuzz(tmp_path, tiny_onnx, shard: int, cases: int) -> None:
    res = subprocess.run([sys.executable, str(WORKER), str(shard), str(cases), str(tmp_path / "work"),
                          str(tiny_onnx)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["cases"] == cases
    assert stats["failure_count"] == 0, "\n".join(stats["failures"])
    # The mutations must exercise both outcomes, and every seed type must be drawn.
    assert stats["enhanced"] > cases // 10 and stats["refused"] > cases // 10
    assert min(stats["by_seed"].values()) > cases // 30
    assert stats["slowest_s"] < 10  # CPU seconds, not wall-clock time
    assert "Traceback" not in res.stderr


def test_whole_path_fuzz_quick(tmp_path, tiny_onnx):
    _fuzz(tmp_path, tiny_onnx, 100, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(4))
def test_whole_path_fuzz(tmp_path, tiny_onnx, shard):
    _fuzz(tmp_path, tiny_onnx, shard, CASES_PER_SHARD)
