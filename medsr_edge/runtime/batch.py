"""Batch enhancement as a hospital disk holds it: folders of thousands of files, interruptions,
re-runs. A plain Python entry point; the CLI only parses options and prints.

>>> from medsr_edge.runtime import Enhancer, run_batch
>>> summary = run_batch(Enhancer("student-x4"), ["series_folder/"], output=Path("out"))
>>> summary.enhanced, summary.failed
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..core.errors import ImageWriteError, MedsrError, NotAnImage, first_line
from ..core.files import sweep_stale_temporaries
from .dicom import content_time
from .enhancer import Enhancer, ModelChooser
from .io import find_image_files
from .pipeline import OUTPUT_SUFFIXES, Job, PlanError, enhance_file, exclude_outputs, existing_output_action, plan_jobs

OUTPUT_TYPES = tuple(sorted(s.lstrip(".") for s in OUTPUT_SUFFIXES))


@dataclass
class BatchSummary:
    """What a batch did. ``errors`` and ``notes`` are complete one-line messages."""

    enhanced: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)  # non-image objects found (reports, plans ...), not read
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors)


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; finished outputs are complete and a re-run resumes."""


def sigterm_as_interrupt(signum, frame) -> None:
    """SIGTERM handler: stop a batch as Ctrl-C does."""
    raise KeyboardInterrupt


@dataclass(frozen=True)
class Outcome:
    """What became of one job: ``kind`` is enhanced, skipped (a complete output exists), not-image
    (a report, plan or presentation state: listed, not a failure) or error; ``message`` is the
    one-line report."""

    src: Path
    dst: Path
    kind: str
    message: str = ""


def plan_batch(inputs: list[str | Path], output: Path | None, scale: int, to: str | None = None) -> tuple[list[Job], list[str]]:
    """Find the image files of ``inputs`` and plan one job per file; also remove the temporary
    files an earlier, killed run left in the output folders. Returns the jobs and the notes
    (files not read, temporaries removed; at most 6 lines). Raises PlanError when nothing is
    found, ``to`` is not an output type, or two inputs would write one output."""
    if to is not None and to.lstrip(".").lower() not in OUTPUT_TYPES:
        raise PlanError(f"--to {to!r}: not an output type; use one of {', '.join(OUTPUT_TYPES)}")
    found = find_image_files(inputs)
    notes = [f"{path}: not read: {why}" for path, why in found.passed_over]
    files = exclude_outputs(found.images, output)
    if not files:
        raise PlanError(f"no image files found in {', '.join(map(str, inputs))}")
    jobs = plan_jobs(files, [Path(p) for p in inputs], output, scale, to.lstrip(".").lower() if to else None)
    for folder in sorted({j.dst.parent for j in jobs}):
        for stale in sweep_stale_temporaries(folder):
            notes.append(f"{stale}: removed a temporary file left by an interrupted run")
    if len(notes) > 5:
        notes = notes[:5] + [f"... and {len(notes) - 5} more files not read or removed"]
    return jobs, notes


def run_job(enhancer: Enhancer | ModelChooser, job: Job, *, overwrite: bool = False, skip_existing: bool = False,
            compress: str | None = None, uid_root: str | None = None, created: datetime | None = None) -> Outcome:
    """Enhance one planned file; never raises for a bad file (the error is the outcome)."""
    try:
        if existing_output_action(job, overwrite, skip_existing) == "skip":
            return Outcome(job.src, job.dst, "skipped")
        dst = enhance_file(enhancer, job, overwrite, compress, uid_root, created)
        return Outcome(job.src, dst, "enhanced", f"{job.src} -> {dst}")
    except NotAnImage as exc:
        return Outcome(job.src, job.dst, "not-image", f"note: {exc}")
    except MedsrError as exc:
        return Outcome(job.src, job.dst, "error", f"error: {exc}")
    except MemoryError:
        return Outcome(job.src, job.dst, "error", f"error: {job.src}: out of memory; use a smaller --tile")
    except OSError as exc:
        why = f"{exc.strerror or exc}; check the disk and permissions"
        return Outcome(job.src, job.dst, "error", f"error: {ImageWriteError(job.dst, why)}")
    except Exception as exc:  # noqa: BLE001 - one bad file must not abort the batch
        return Outcome(job.src, job.dst, "error", f"error: {job.src}: unexpected {first_line(exc)}; please report it")


def record(summary: BatchSummary, outcome: Outcome, report: Callable[[str], None]) -> None:
    """Add ``outcome`` to ``summary`` and report its line (skips are counted, not reported)."""
    if outcome.kind == "skipped":
        summary.skipped.append(outcome.dst)
        return
    if outcome.kind == "enhanced":
        summary.enhanced.append((outcome.src, outcome.dst))
    elif outcome.kind == "not-image":
        summary.not_images.append(outcome.message.removeprefix("note: "))
    else:
        summary.errors.append(outcome.message)
    report(outcome.message)


def run_batch(enhancer: Enhancer | ModelChooser, inputs: list[str | Path], output: Path | None = None, to: str | None = None,
              overwrite: bool = False, skip_existing: bool = False, compress: str | None = None,
              progress: Callable[[list], object] | None = None,
              report: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
              uid_root: str | None = None) -> BatchSummary:
    """Enhance files and folders (searched recursively; DICOM found by content), one after the
    other in this process (``--engine ray`` spreads the same jobs over a cluster:
    :mod:`medsr_edge.runtime.cluster`).

    Raises PlanError (nothing has run) when no input is found, ``to`` is not an output type, or two
    inputs would write one output. Otherwise every file is tried: a bad file becomes a line in
    ``errors`` and the batch goes on. Outputs whose paths medsr-edge chose are skipped when a
    complete one exists (resume); temporary files that an earlier, killed run left in the output
    folders are removed first. All derived DICOMs of one batch share one ContentDate/Time.
    ``progress`` wraps the job list (e.g. ``tqdm``); ``report`` gets each line as it happens.
    SIGTERM acts as Ctrl-C: raises :class:`Interrupted`.
    """
    jobs, notes = plan_batch(inputs, output, enhancer.scale, to)
    summary = BatchSummary(notes=notes)
    for note in notes:
        report(f"note: {note}")
    created = content_time()
    previous = signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    try:
        for job in (progress(jobs) if progress else jobs):
            record(summary, run_job(enhancer, job, overwrite=overwrite, skip_existing=skip_existing, compress=compress,
                                    uid_root=uid_root, created=created), report)
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return summary
