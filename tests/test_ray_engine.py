"""`enhance --engine ray` (issue 30): against a real local Ray cluster (a head and a second node,
separate processes on loopback, started here), outputs byte for byte those of a local run, a worker
killed mid-run loses nothing, a killed driver resumes. Skipped with the reason when Ray is absent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medsr_edge.cli.main import app
from medsr_edge.core.errors import MedsrError
from medsr_edge.runtime.cluster import ClusterOptions, make_tasks, memory_needed, run_batch_ray
from medsr_edge.runtime.enhancer import EnhancerSpec
from medsr_edge.runtime.pipeline import Job

runner = CliRunner()
EPOCH = "1767225600"  # 2026-01-01: the same ContentDate/Time in every run, so bytes can be compared
CLI = [str(Path(sys.executable).parent / "medsr-edge")]  # the installed entry point


def _series(folder: Path, n: int, side: int = 64) -> str:
    """``n`` slices of CT_small.dcm resampled to ``side`` pixels, one series in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for i in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        px = ds.pixel_array
        reps = -(-side // px.shape[0])
        ds.PixelData = np.tile(px, (reps, reps))[:side, :side].astype(px.dtype).tobytes()
        ds.Rows = ds.Columns = side
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-100.0, -120.0, 2.5 * i]
        ds.save_as(folder / f"IM{i + 1:04d}.dcm")
    return uid


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- without a cluster: planning and bad input -------------------------------------------------------------

def test_tasks_follow_series_and_declare_the_largest_image(tmp_path):
    _series(tmp_path / "a", 5, side=32)
    _series(tmp_path / "b", 2, side=64)
    jobs = [Job(p, tmp_path / "out" / p.name) for p in sorted(tmp_path.rglob("*.dcm"))]
    tasks = make_tasks(jobs, 4, files_per_task=2)
    assert [len(t.jobs) for t in tasks] == [2, 2, 1, 2]  # series a in chunks of 2, then series b
    assert {j.src.parent.name for j in tasks[0].jobs} == {"a"} and {j.src.parent.name for j in tasks[3].jobs} == {"b"}
    assert tasks[0].memory == memory_needed(1, 32, 32, 4) < tasks[3].memory == memory_needed(1, 64, 64, 4)
    assert memory_needed(1, 512, 512, 4) - memory_needed(1, 0, 0, 4) == 512 * 512 * 8 + 512 * 512 * 16 * 12
    with pytest.raises(MedsrError, match="files-per-task"):
        make_tasks(jobs, 4, files_per_task=0)


def test_engine_ray_without_the_extra_names_it(tmp_path, monkeypatch, tiny_onnx):
    _series(tmp_path / "s", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    res = runner.invoke(app, ["enhance", str(tmp_path / "s"), "-o", str(tmp_path / "o"), "-m", str(tiny_onnx),
                              "--engine", "ray"])
    assert res.exit_code == 2 and "pip install 'medsr-edge[ray]'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


def test_ray_options_need_the_ray_engine(tmp_path, tiny_onnx):
    _series(tmp_path / "s", 1)
    res = runner.invoke(app, ["enhance", str(tmp_path / "s"), "-m", str(tiny_onnx), "--workers", "2"])
    assert res.exit_code == 2 and "--engine ray" in res.output


def test_unreachable_address_is_one_line_quickly(tmp_path, tiny_onnx):
    pytest.importorskip("ray", reason="Ray not installed: pip install 'medsr-edge[ray]'")
    _series(tmp_path / "s", 1)
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = runner.invoke(app, ["enhance", str(tmp_path / "s"), "-o", str(tmp_path / "o"), "-m", str(tiny_onnx),
                              "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"])
    assert res.exit_code == 2, res.output
    assert f"--ray-address 127.0.0.1:{port}: nothing answers there" in res.output
    assert "Traceback" not in res.output and not list((tmp_path / "o").rglob("*.dcm"))
    res = runner.invoke(app, ["enhance", str(tmp_path / "s"), "-m", str(tiny_onnx), "--engine", "ray",
                              "--ray-address", "headnode"])
    assert res.exit_code == 2 and "use auto, HOST:PORT or ray://HOST:PORT" in res.output


# ---- a real cluster: a head and one more node, separate processes on loopback -------------------------------

@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray", reason="Ray not installed: pip install 'medsr-edge[ray]'")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 2 ** 20})
    c.add_node(num_cpus=1, object_store_memory=80 * 2 ** 20)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def _ray_cli(args, **kw):
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([*CLI, "enhance", *map(str, args)], capture_output=True, text=True, env=env, **kw)


pytestmark_slow = pytest.mark.slow  # a cluster start costs ~20 s; CI runs them with -m slow


@pytestmark_slow
def test_outputs_equal_a_local_run_byte_for_byte(tmp_path, cluster, tiny_onnx, monkeypatch):
    for name in ("s1", "s2"):
        _series(tmp_path / "in" / name, 3)
    local = _ray_cli([tmp_path / "in", "-o", tmp_path / "local", "-m", tiny_onnx])
    assert local.returncode == 0, local.stderr
    res = _ray_cli([tmp_path / "in", "-o", tmp_path / "ray", "-m", tiny_onnx, "--engine", "ray",
                    "--ray-address", cluster.address, "--files-per-task", "2"])
    assert res.returncode == 0, res.stderr
    assert "6 enhanced, 0 skipped, 0 failed" in res.stderr and "Traceback" not in res.stderr
    a, b = _outputs(tmp_path / "local"), _outputs(tmp_path / "ray")
    assert len(a) == 6 and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    # a re-run resumes: every output is complete, nothing is redone
    res = _ray_cli([tmp_path / "in", "-o", tmp_path / "ray", "-m", tiny_onnx, "--engine", "ray",
                    "--ray-address", cluster.address])
    assert res.returncode == 0 and "0 enhanced, 6 skipped" in res.stderr, res.stderr


def _worker_pids() -> list[int]:
    """Ray worker processes running our task (Ray names them ray::enhance_task)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ray::enhance_task" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _wait_for(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytestmark_slow
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, cluster, tiny_onnx):
    _series(tmp_path / "in", 16, side=192)
    out = tmp_path / "out"
    proc = subprocess.Popen([*CLI, "enhance", str(tmp_path / "in"), "-o", str(out), "-m", str(tiny_onnx), "--engine", "ray",
                             "--ray-address", cluster.address, "--files-per-task", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: len(list(out.glob("*.dcm"))) >= 1 and _worker_pids()), "no worker ran"
    killed = _worker_pids()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert killed and proc.returncode == 0, err
    outs = sorted(out.glob("*.dcm"))
    assert [p.name for p in outs] == [f"IM{i:04d}.dcm" for i in range(1, 17)]  # each once, at its own name
    assert not [p for p in out.iterdir() if p.suffix != ".dcm"]  # no temporary left behind
    for p in outs:
        assert pydicom.dcmread(p).pixel_array.shape == (768, 768)


@pytestmark_slow
def test_a_killed_driver_resumes(tmp_path, cluster, tiny_onnx):
    _series(tmp_path / "in", 16, side=192)
    out = tmp_path / "out"
    args = [*CLI, "enhance", str(tmp_path / "in"), "-o", str(out), "-m", str(tiny_onnx), "--engine", "ray",
            "--ray-address", cluster.address, "--files-per-task", "1", "--workers", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: len(list(out.glob("*.dcm"))) >= 2)
    proc.kill()
    proc.wait()
    done_before = len(list(out.glob("*.dcm")))
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    outs = sorted(out.glob("*.dcm"))
    assert len(outs) == 16 and not [p for p in out.iterdir() if p.suffix != ".dcm"]
    assert f"{16 - done_before} enhanced" in res.stderr or "skipped" in res.stderr
    skipped = int(res.stderr.split(" skipped")[0].rsplit(", ", 1)[-1])
    assert skipped >= min(done_before, 2)  # what the killed driver finished is not redone
    for p in outs:
        assert pydicom.dcmread(p).pixel_array.shape == (768, 768)


@pytestmark_slow
def test_an_unwritable_output_fails_its_tasks_by_name_and_the_others_go_on(tmp_path, cluster, tiny_onnx):
    _series(tmp_path / "in" / "a", 2)
    _series(tmp_path / "in" / "b", 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a").write_text("a file where the output folder should be")  # fails as root too
    summary = run_batch_ray(EnhancerSpec(model=str(tiny_onnx)), [tmp_path / "in"], tmp_path / "out",
                            cluster=ClusterOptions(address=cluster.address), report=lambda line: None)
    assert len(summary.enhanced) == 2 and summary.failed == 2, summary.errors
    assert all(str(tmp_path / "out" / "a") in e for e in summary.errors)
    assert {d.parent.name for _, d in summary.enhanced} == {"b"}


def test_the_local_engine_imports_no_ray(tmp_path, tiny_onnx):
    _series(tmp_path / "s", 2)
    code = ("import sys; from typer.testing import CliRunner; from medsr_edge.cli.main import app; "
            f"r = CliRunner().invoke(app, ['enhance', {str(tmp_path / 's')!r}, '-o', {str(tmp_path / 'o')!r}, "
            f"'-m', {str(tiny_onnx)!r}]); assert r.exit_code == 0, r.output; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
