"""`medsr-edge enhance --engine ray`: the local batch (:func:`.batch.run_batch`) spread over a Ray
cluster, for archives one box would take weeks over.

The driver finds the files, plans the jobs exactly as a local run does, groups them into tasks (the
slices of one DICOM series, at most ``files_per_task`` per task; other files by folder) and sends
the tasks to Ray. Each worker process builds the enhancer once (:class:`EnhancerSpec`) and runs
:func:`.batch.run_job` on its files, writing atomically into the output folder, which every node
must see (a shared filesystem). So outputs are byte for byte those of a local run with the same
ContentDate/Time (one per batch, chosen by the driver), a re-run skips complete outputs, and a
task whose worker dies is run again by Ray (``max_retries``) without a partial file at any final
name. Each task declares to Ray the memory its largest image needs, so no node is overcommitted.

Ray is imported only here, and only when this engine runs: ``pip install 'medsr-edge[ray]'``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from ..core.errors import MedsrError, first_line, printable
from ..core.files import sweep_stale_temporaries
from .batch import BatchSummary, Interrupted, Outcome, plan_batch, record, run_job, sigterm_as_interrupt
from .dicom import content_time
from .enhancer import Enhancer, EnhancerSpec, ModelChooser
from .pipeline import Job

RAY_EXTRA = "pip install 'medsr-edge[ray]'"
WORKER_BASE_BYTES = 512 * 2 ** 20  # a worker process with ONNX Runtime and one student loaded
CONNECT_TIMEOUT_S = 10.0  # a TCP answer from --ray-address within this, or a one-line error


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """Where and how wide. ``address``: None starts a Ray instance on this machine for the run;
    ``auto`` joins the cluster this machine belongs to; ``HOST:PORT`` (the head's GCS port) or
    ``ray://HOST:PORT`` (Ray Client) joins that one. ``workers``: at most this many tasks at once
    (default: every CPU of the cluster, one task per CPU). ``files_per_task``: 1..10000, lowered for a small batch so that every worker gets at least two tasks.
    ``max_retries``: times Ray re-runs a task whose worker process or node died."""

    address: str | None = None
    workers: int | None = None
    files_per_task: int = 16
    max_retries: int = 3


@dataclass(frozen=True)
class Task:
    jobs: tuple[Job, ...]
    memory: int  # bytes, declared to Ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MedsrError(f"--engine ray needs Ray: {RAY_EXTRA} (on every node of the cluster)") from None
    return ray


def _header(path: Path) -> tuple[str, int, int, int]:
    """(group key, frames, rows, columns) from the header alone; a file that does not say gets its
    folder as the key and zero size (it fails in its task with the local run's message)."""
    folder = str(path.parent)
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=False,
                             specific_tags=["SeriesInstanceUID", "Rows", "Columns", "NumberOfFrames"])
        series = str(ds.get("SeriesInstanceUID", "") or "")
        return (f"series {series}" if series else folder, int(ds.get("NumberOfFrames", 1) or 1),
                int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    except Exception:  # noqa: BLE001 - not DICOM, or a header pydicom cannot parse: try a raster
        pass
    try:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            w, h = im.size
            return folder, int(getattr(im, "n_frames", 1)), int(h), int(w)
    except Exception:  # noqa: BLE001
        return folder, 1, 0, 0


def memory_needed(frames: int, rows: int, cols: int, scale: int) -> int:
    """Bytes a worker needs for one image: the process and model, the input as float32, and three
    float32 copies of one output frame (network output, blend, stored frame)."""
    return WORKER_BASE_BYTES + frames * rows * cols * 4 * 2 + rows * cols * scale * scale * 4 * 3


def make_tasks(jobs: list[Job], scale: int, files_per_task: int) -> list[Task]:
    """Group ``jobs`` by DICOM series (other files by folder), in plan order, at most
    ``files_per_task`` per task, each with the memory its largest image needs."""
    if not 1 <= files_per_task <= 10000:
        raise MedsrError(f"--files-per-task {files_per_task}: use 1..10000")
    groups: dict[str, list[tuple[Job, int]]] = {}
    for job in jobs:
        key, frames, rows, cols = _header(job.src)
        groups.setdefault(key, []).append((job, memory_needed(frames, rows, cols, scale)))
    tasks = []
    for members in groups.values():
        for i in range(0, len(members), files_per_task):
            chunk = members[i:i + files_per_task]
            tasks.append(Task(tuple(j for j, _ in chunk), max(m for _, m in chunk)))
    return tasks


_WORKER_ENHANCERS: dict[EnhancerSpec, Enhancer | ModelChooser] = {}


def enhance_task(spec: EnhancerSpec, jobs: tuple[Job, ...], write: dict) -> tuple[list[Outcome], list[str]]:
    """Runs in a Ray worker process: the jobs of one task, with the enhancer this process built for
    ``spec`` on its first task (models load once per worker, not once per task). Returns the
    outcomes and the chooser's notes (which model each series got)."""
    lines: list[str] = []
    enhancer = _WORKER_ENHANCERS.get(spec)
    if enhancer is None:
        enhancer = _WORKER_ENHANCERS[spec] = spec.build()
    if isinstance(enhancer, ModelChooser):
        enhancer.report = lines.append
    return [run_job(enhancer, job, **write) for job in jobs], lines


def _check_reachable(address: str) -> None:
    """A one-line error within :data:`CONNECT_TIMEOUT_S` when nothing answers at ``address``."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise MedsrError(f"--ray-address {printable(address, 80)!r}: use auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise MedsrError(f"--ray-address {address}: nothing answers there ({exc.strerror or first_line(exc)}); "
                         "start the head with `ray start --head` or fix the address") from None


def _connect(ray, cluster: ClusterOptions, threads: int) -> None:
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    try:
        if cluster.address is None:
            ray.init(num_cpus=(cluster.workers or os.cpu_count() or 1) * threads, include_dashboard=False, **quiet)
            return
        if cluster.address != "auto":
            _check_reachable(cluster.address)
        ray.init(address=cluster.address, **quiet)
    except MedsrError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError ...
        where = cluster.address or "a local Ray instance"
        raise MedsrError(f"--ray-address {where}: cannot join the cluster ({first_line(exc)}); "
                         "check that `ray status` works on this machine") from None


def _largest_node_memory(ray) -> int:
    return max((int(n.get("Resources", {}).get("memory", 0)) for n in ray.nodes() if n.get("Alive")), default=0)


def run_batch_ray(spec: EnhancerSpec, inputs: list[str | Path], output: Path | None = None, *, to: str | None = None,
                  overwrite: bool = False, skip_existing: bool = False, compress: str | None = None,
                  uid_root: str | None = None, cluster: ClusterOptions = ClusterOptions(),
                  progress: Callable[[int], object] | None = None,
                  report: Callable[[str], None] = lambda line: None, scale: int | None = None,
                  created: datetime | None = None) -> BatchSummary:
    """:func:`.batch.run_batch` on a Ray cluster, same arguments, same outputs, same summary.
    ``scale`` (default: the spec's model built once on the driver) plans the output names;
    ``progress(n)`` is called with the number of jobs, and returns an object with ``update(k)``
    (e.g. a tqdm). Raises PlanError as the local run, MedsrError (one line) when Ray is missing or
    the cluster cannot be joined, :class:`.batch.Interrupted` on Ctrl-C or SIGTERM (finished
    outputs are complete; re-run to resume)."""
    ray = _import_ray()
    if scale is None:
        scale = spec.build().scale
    jobs, notes = plan_batch(inputs, output, scale, to)
    summary = BatchSummary(notes=notes)
    for note in notes:
        report(f"note: {note}")
    threads = spec.threads or 1
    spec = EnhancerSpec(**{**asdict(spec), "threads": threads})
    write = dict(overwrite=overwrite, skip_existing=skip_existing, compress=compress, uid_root=uid_root,
                 created=created or content_time())
    bar = progress(len(jobs)) if progress else None
    told: set[str] = set()
    previous = signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    _connect(ray, cluster, threads)
    try:
        node_memory = _largest_node_memory(ray)
        limit = cluster.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        # at least two tasks per worker when the batch is small, so no worker waits for a series
        per_task = min(cluster.files_per_task, max(1, -(-len(jobs) // (2 * limit))))
        tasks = make_tasks(jobs, scale, per_task)
        remote = ray.remote(num_cpus=threads, max_retries=cluster.max_retries, retry_exceptions=False)(enhance_task)
        spec_ref = ray.put(spec)
        queue, pending = list(reversed(tasks)), {}
        while queue or pending:
            while queue and len(pending) < limit:
                task = queue.pop()
                if node_memory and task.memory > node_memory:
                    for job in task.jobs:
                        record(summary, Outcome(job.src, job.dst, "error",
                                                f"error: {job.src}: needs {task.memory / 2 ** 30:.1f} GiB, more than "
                                                f"any node offers ({node_memory / 2 ** 30:.1f} GiB); use a smaller "
                                                "--tile or a larger node"), report)
                    bar and bar.update(len(task.jobs))
                    continue
                pending[remote.options(memory=task.memory).remote(spec_ref, task.jobs, write)] = task
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    outcomes, lines = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the task failed after its retries (node lost ...)
                    why = first_line(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    outcomes, lines = [Outcome(j.src, j.dst, "error", f"error: {j.src}: the Ray task failed after "
                                               f"{cluster.max_retries} retries ({why}); run again to resume")
                                       for j in task.jobs], []
                for line in lines:
                    if line not in told:
                        told.add(line)
                        report(line)
                for outcome in outcomes:
                    record(summary, outcome, report)
                bar and bar.update(len(task.jobs))
    except KeyboardInterrupt:
        raise Interrupted() from None
    except MedsrError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray itself failed (cluster lost ...): one line, outputs so far kept
        raise MedsrError(f"--engine ray: {first_line(exc)}; finished outputs are complete, run again to resume") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        ray.shutdown()
    for folder in sorted({j.dst.parent for j in jobs}):  # what killed workers left (no writer holds them)
        for stale in sweep_stale_temporaries(folder):
            report(f"note: {stale}: removed a temporary file left by a worker that died")
    return summary


__all__ = ["ClusterOptions", "RAY_EXTRA", "make_tasks", "memory_needed", "run_batch_ray"]
