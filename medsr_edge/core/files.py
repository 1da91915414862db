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

TEMP_MARK = ".medsr-"  # temporary outputs are ".NAME.medsr-RANDOM.part" beside the target


def _lock(fd: int, block: bool) -> bool:
    """An exclusive advisory lock (flock) on an open file; False when another holder has it.
    flock is shared by every process on the host, containers included, and Linux NFS clients
    map it to byte-range locks that the server arbitrates between hosts."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


def atomic_write(path: Path, write_fn, *, replace: bool = True) -> None:
    """Call ``write_fn(tmp_path)`` then move the temporary file onto ``path``; no partial file at
    ``path`` on any failure.

    The temporary file sits beside ``path`` and is locked (flock) while it is written, so a sweep by
    another run, process, container or host skips it (:func:`sweep_stale_temporaries`). With
    ``replace=False`` an existing ``path``, even one that a concurrent run created a moment ago, is
    never replaced: the file is published with a hard link, which fails when the name exists."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise ImageWriteError(path, f"cannot write here ({exc.strerror}); choose a writable -o folder") from None
    try:
        _lock(fd, block=True)
        write_fn(Path(tmp))
        os.chmod(tmp, 0o644)
        if replace:
            os.replace(tmp, path)
        else:
            _publish_no_replace(Path(tmp), path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise ImageWriteError(path, "output exists (another run wrote it meanwhile); pass --overwrite to replace it") from None
        if isinstance(exc, OSError):
            raise ImageWriteError(path, f"write failed ({exc.strerror or exc}); nothing was written") from None
        raise
    finally:
        os.close(fd)


def _publish_no_replace(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless that name exists (FileExistsError). A hard link is
    atomic and refuses an existing name; where the filesystem has no hard links, the name is
    claimed with O_EXCL first and then replaced by the complete file."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network or FUSE filesystems)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        os.replace(tmp, path)
        return
    tmp.unlink()


def sweep_stale_temporaries(folder: Path) -> list[Path]:
    """Delete this tool's temporary files in ``folder`` that no writer holds (left by a run killed
    by SIGKILL or a power cut); returns what was removed. A file whose lock another process holds,
    on this host or another, is being written and is left alone; other files are never touched."""
    removed: list[Path] = []
    try:
        candidates = list(Path(folder).glob(f".*{TEMP_MARK}*.part"))
    except OSError:
        return removed
    for f in candidates:
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd, block=False):  # nobody writes it: stale
                f.unlink()
                removed.append(f)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
