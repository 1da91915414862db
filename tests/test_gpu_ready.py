"""What a 30-minute GPU loan needs, checked on CPU: the data pack that travels, training in
resumable time-limited chunks, data-loader workers, DDP through torchrun (gloo here, NCCL on
GPUs), and the one-command session script end to end (--smoke; TensorRT steps skipped here)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medsr_edge.distill.options import TrainOptions  # noqa: E402
from medsr_edge.distill.pack import PACK_MANIFEST, pack_data, resolve_data  # noqa: E402
from medsr_edge.distill.train import distill_student  # noqa: E402
from medsr_edge.models.checkpoint import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_pack_respects_the_budget_and_keeps_val_first(phantom_dir, tmp_path):
    sizes = sorted(f.stat().st_size for f in phantom_dir.rglob("*.png"))
    budget_mib = (sum(sizes) * 0.6 + 8192) / (1 << 20)  # room for about half of train + val
    manifest = pack_data(phantom_dir, tmp_path / "pack.zip", budget_mib)
    assert (tmp_path / "pack.zip").stat().st_size <= budget_mib * (1 << 20)
    files = list(manifest["files"])
    assert all("/test/" not in f for f in files)
    for mod in ("ct", "mri"):  # both validation images of each modality made it, and some training images
        assert sum(f.startswith(f"{mod}/") and "/val/" in f for f in files) == 2
        assert any(f.startswith(f"{mod}/") and "/train/" in f for f in files)
    assert len(files) < 12  # the budget left some training images out
    with zipfile.ZipFile(tmp_path / "pack.zip") as zf:
        assert PACK_MANIFEST in zf.namelist()
    unpacked = resolve_data(tmp_path / "pack.zip")
    assert sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*.png")) == sorted(files)
    assert resolve_data(tmp_path / "pack.zip") == unpacked  # unpacked once, by content hash


def _opts(data, out, iters, **kw):
    return TrainOptions(data=data, out=out, iters=iters, batch=2, patch=32, val_every=2, save_every=2, threads=1, **kw)


def test_time_limited_chunks_resume_to_the_same_end(phantom_dir, tmp_path, monkeypatch):
    """A chunk that runs out of time stops with a checkpoint at the iteration it reached; the
    same call again resumes from there; the run ends at the iteration asked for. Trains from a pack."""
    monkeypatch.setenv("MEDSR_EDGE_CACHE", str(tmp_path / "cache"))
    pack_data(phantom_dir, tmp_path / "pack.zip", 5.0)
    out = tmp_path / "run"
    distill_student(_opts(tmp_path / "pack.zip", out, 6, max_seconds=0.0), None, "student-tiny")
    assert load_model(out)[2]["iterations"] == 1
    distill_student(_opts(tmp_path / "pack.zip", out, 6, max_seconds=0.0), None, "student-tiny")
    assert load_model(out)[2]["iterations"] == 2
    distill_student(_opts(tmp_path / "pack.zip", out, 6), None, "student-tiny")
    assert load_model(out)[2]["iterations"] == 6


def test_loader_workers_give_distinct_streams(phantom_dir, tmp_path):
    """With data-loader workers the batches come from worker processes, each with its own random
    stream (no two workers hand over the same patches)."""
    from medsr_edge.distill.run import BatchStream, Run

    run = Run(_opts(phantom_dir, tmp_path / "w", 2, workers=2), "student")
    loader = torch.utils.data.DataLoader(BatchStream(run, 3), batch_size=None, num_workers=2)
    it = iter(loader)
    first, second = next(it), next(it)  # one batch from each worker
    assert first[1].shape == (3, 1, 32, 32) and not torch.equal(first[1], second[1])
    out = distill_student(_opts(phantom_dir, tmp_path / "w2", 2, workers=2), None, "student-tiny")
    assert load_model(out)[2]["iterations"] == 2


def test_ddp_through_torchrun_on_cpu(phantom_dir, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "medsr_edge.cli.main", "train",
                          "student", "--config", "student-tiny", "--data", str(phantom_dir), "--out", str(out),
                          "--iters", "4", "--batch", "2", "--patch", "32", "--val-every", "2", "--threads", "1"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    model, cfg, meta = load_model(out)
    assert meta["world_size"] == 2 and meta["iterations"] == 4


def test_gpu_session_smoke_runs_the_whole_chain(phantom_dir, tmp_path):
    out = tmp_path / "session"
    env = {**os.environ, "MEDSR_DATA": str(phantom_dir), "OUTDIR": str(out),
           "MEDSR_EDGE_CACHE": str(tmp_path / "cache")}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), "--smoke"], capture_output=True,
                         text=True, timeout=900, env=env, cwd=ROOT)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "all done" in res.stdout
    bench = json.loads((out / "bench-test-x4.json").read_text())
    rows = {(r["name"], r["format"]): r for r in bench["rows"]}
    for fmt in ("onnx", "onnx-fp16", "onnx-int8"):
        assert rows[("student-x4", fmt)]["status"] == "ok"
    assert rows[("teacher-x4", "onnx")]["status"] == "ok"
    if shutil.which("nvidia-smi") is None:
        assert rows[("student-x4", "engine-int8")]["status"] == "skipped"
        assert (out / "done" / "engines").read_text().startswith("skipped:")
    for run in ("teacher-x4-psnr", "teacher-x4-gan", "student-x4"):
        assert (out / f"log-{run}.csv").is_file()
    # The 4-iteration GAN teacher is either exported (fidelity guard passed) or recorded as refused;
    # the chain goes on either way.
    assert (out / "weights" / "teacher-x4-gan.onnx").is_file() or \
        "fidelity guard" in (out / "export-teacher-x4-gan.err").read_text()
    card = json.loads((out / "weights" / "student-x4.json").read_text())
    assert card["training"]["iterations"] == 4
    # A second call finds every step done and does nothing.
    again = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), "--smoke"], capture_output=True,
                           text=True, timeout=300, env=env, cwd=ROOT)
    assert again.returncode == 0 and "all done" in again.stdout and "iter" not in again.stderr
    assert np.isfinite(rows[("student-x4", "onnx")]["psnr"])


def test_interrupt_keeps_the_iterations_since_the_last_checkpoint(phantom_dir, tmp_path, monkeypatch):
    """Ctrl-C (the campaign's stop) at iteration 3 of a run that checkpoints every 100 leaves a
    checkpoint at 3, and the next call resumes from there."""
    from medsr_edge.distill.data import PatchSampler

    real = PatchSampler.batch
    calls = {"n": 0}

    def batch(self, size):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, size)

    monkeypatch.setattr(PatchSampler, "batch", batch)
    opts = dataclasses.replace(_opts(phantom_dir, tmp_path / "run", 100), save_every=100, val_every=100)
    with pytest.raises(KeyboardInterrupt):
        distill_student(opts, None, "student-tiny")
    assert load_model(tmp_path / "run")[2]["iterations"] == 3
    monkeypatch.setattr(PatchSampler, "batch", real)
    opts = dataclasses.replace(opts, iters=5)
    distill_student(opts, None, "student-tiny")
    assert load_model(tmp_path / "run")[2]["iterations"] == 5


def test_sigterm_stops_a_background_training_run_with_a_checkpoint(phantom_dir, tmp_path):
    """A run started in the background by a script (SIGINT ignored, as a shell sets it) stops on
    SIGTERM (the campaign's stop) with exit 130 and a checkpoint of the iterations it did."""
    import re
    import signal
    import threading
    import time

    out = tmp_path / "bg"
    cmd = [sys.executable, "-c", "from medsr_edge.cli.main import app; app()", "train", "student", "--config",
           "student-tiny", "--data", str(phantom_dir), "--out", str(out), "--iters", "100000", "--batch", "2",
           "--patch", "32", "--val-every", "100000", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    # wait for the progress bar to count iterations (not a fixed sleep: a loaded machine imports slowly)
    deadline = time.monotonic() + 300
    while not re.search(rb"\b[1-9]\d*/100000", b"".join(chunks)) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    err = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert load_model(out)[2]["iterations"] > 0
