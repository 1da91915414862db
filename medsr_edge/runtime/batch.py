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
from pathlib import Path

from ..core.errors import ImageWriteError, MedsrError, NotAnImage, first_line
from ..core.files import sweep_stale_temporaries
from .enhancer import Enhancer, ModelChooser
from .io import find_image_files
from .pipeline import OUTPUT_SUFFIXES, PlanError, enhance_file, exclude_outputs, existing_output_action, plan_jobs

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


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def run_batch(enhancer: Enhancer | ModelChooser, inputs: list[str | Path], output: Path | None = None, to: str | None = None,
              overwrite: bool = False, skip_existing: bool = False, compress: str | None = None,
              progress: Callable[[list], object] | None = None,
              report: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
              uid_root: str | None = None) -> BatchSummary:
    """Enhance files and folders (searched recursively; DICOM found by content).

    Raises PlanError (nothing has run) when no input is found, ``to`` is not an output type, or two
    inputs would write one output. Otherwise every file is tried: a bad file becomes a line in
    ``errors`` and the batch goes on. Outputs whose paths medsr-edge chose are skipped when a
    complete one exists (resume); temporary files that an earlier, killed run left in the output
    folders are removed first. ``progress`` wraps the job list (e.g. ``tqdm``); ``report`` gets
    each line as it happens. SIGTERM acts as Ctrl-C: raises :class:`Interrupted`.
    """
    if to is not None and to.lstrip(".").lower() not in OUTPUT_TYPES:
        raise PlanError(f"--to {to!r}: not an output type; use one of {', '.join(OUTPUT_TYPES)}")
    found = find_image_files(inputs)
    summary = BatchSummary()
    for path, why in found.passed_over:
        summary.notes.append(f"{path}: not read: {why}")
    files = exclude_outputs(found.images, output)
    if not files:
        raise PlanError(f"no image files found in {', '.join(map(str, inputs))}")
    jobs = plan_jobs(files, [Path(p) for p in inputs], output, enhancer.scale, to.lstrip(".").lower() if to else None)
    for folder in sorted({j.dst.parent for j in jobs}):
        for stale in sweep_stale_temporaries(folder):
            summary.notes.append(f"{stale}: removed a temporary file left by an interrupted run")
    if len(summary.notes) > 5:
        hidden = len(summary.notes) - 5
        summary.notes = summary.notes[:5] + [f"... and {hidden} more files not read or removed"]
    for note in summary.notes:
        report(f"note: {note}")
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        for job in (progress(jobs) if progress else jobs):
            try:
                if existing_output_action(job, overwrite, skip_existing) == "skip":
                    summary.skipped.append(job.dst)
                    continue
                dst = enhance_file(enhancer, job, overwrite, compress, uid_root)
                summary.enhanced.append((job.src, dst))
                report(f"{job.src} -> {dst}")
            except NotAnImage as exc:  # a report, plan or presentation state in a study: listed, not a failure
                summary.not_images.append(str(exc))
                report(f"note: {exc}")
                continue
            except MedsrError as exc:
                summary.errors.append(f"error: {exc}")
            except MemoryError:
                summary.errors.append(f"error: {job.src}: out of memory; use a smaller --tile")
            except OSError as exc:
                summary.errors.append(f"error: {ImageWriteError(job.dst, f'{exc.strerror or exc}; check the disk and permissions')}")
            except Exception as exc:  # noqa: BLE001 - one bad file must not abort the batch
                summary.errors.append(f"error: {job.src}: unexpected {first_line(exc)}; please report it")
            else:
                continue
            report(summary.errors[-1])
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    return summary
