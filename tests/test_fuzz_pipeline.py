"""Whole-path fuzzing: 10,000 mutated DICOM/PNG/TIFF/JPEG files (from pydicom's CT, MR and RLE
MR, and generated 8/16-bit PNG, JPEG and 2-page TIFF seeds) through read -> enhance with a tiny
model -> write -> read back. Four shards of 2,500, each in its own process under a 2 GiB
address-space limit and a 10-second alarm per file (see fuzz_worker.py). Every file must end as
an output of the right shape or as the project's one-line error naming the file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("fuzz_worker.py")
CASES_PER_SHARD = 2500


@pytest.mark.parametrize("shard", range(4))
def test_whole_path_fuzz(tmp_path, tiny_onnx, shard):
    res = subprocess.run([sys.executable, str(WORKER), str(shard), str(CASES_PER_SHARD), str(tmp_path / "work"),
                          str(tiny_onnx)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["cases"] == CASES_PER_SHARD
    assert stats["failure_count"] == 0, "\n".join(stats["failures"])
    # The mutations must exercise both outcomes, and every seed type must be drawn.
    assert stats["enhanced"] > CASES_PER_SHARD // 10 and stats["refused"] > CASES_PER_SHARD // 10
    assert min(stats["by_seed"].values()) > CASES_PER_SHARD // 20
    assert stats["slowest_s"] < 10
    assert "Traceback" not in res.stderr
