"""Writing files so that nothing partial is ever left, and hashing them.

Every file medsr-edge writes (images, DICOM, models, engines, logs, checkpoints, packs) goes
through :func:`atomic_write`: a temporary file beside the target, renamed onto it when complete.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import ImageWriteError

TEMP_MARK = ".medsr-"  # temporary outputs are ".NAME.medsr-PID-RANDOM.part" beside the target


def atomic_write(path: Path, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then rename onto ``path``; no partial file on any failure.

    The temporary file sits beside ``path`` and carries this process's id, so a later run can
    tell a file that a killed run left (:func:`sweep_stale_temporaries`) from one that a
    concurrent run is still writing."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-", suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise ImageWriteError(path, f"cannot write here ({exc.strerror}); choose a writable -o folder") from None
    try:
        write_fn(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ImageWriteError(path, f"write failed ({exc.strerror or exc}); nothing was written") from None
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(folder: Path) -> list[Path]:
    """Delete this tool's temporary files in ``folder`` whose writing process is gone (killed by
    SIGKILL, a power cut); returns what was removed. Other files are never touched."""
    removed: list[Path] = []
    try:
        candidates = list(Path(folder).glob(f".*{TEMP_MARK}*.part"))
    except OSError:
        return removed
    for f in candidates:
        try:
            pid = int(f.name.rsplit(TEMP_MARK, 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            try:
                f.unlink()
                removed.append(f)
            except OSError:
                pass
    return removed


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
