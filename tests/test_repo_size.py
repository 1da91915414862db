"""The repository-size rule's check (benchmarks/repo_size.py) on throwaway git repositories."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import repo_size  # noqa: E402

pytestmark = pytest.mark.skipif(not shutil.which("git"), reason="needs git")


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "r"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


def _commit(repo: Path, files: dict[str, bytes], day: str, msg: str = "c") -> None:
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
        subprocess.run(["git", "-C", str(repo), "add", "-f", name], check=True)
    env = {**os.environ, "GIT_AUTHOR_DATE": f"{day}T12:00:00", "GIT_COMMITTER_DATE": f"{day}T12:00:00",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", msg], check=True, env=env)


def _log(iters: int) -> bytes:
    return f"iteration,wall\n{iters},1.0\n".encode()


def test_a_live_run_once_a_day_keeps_the_rule(tmp_path):
    repo = _repo(tmp_path)
    tracked = b"campaign/a/ckpt/last.pt 1000\n"
    _commit(repo, {"campaign/TRACKED": tracked, "campaign/a/log.csv": _log(100), "campaign/a/ckpt/last.pt": b"x" * 1000},
            "2026-12-08")
    _commit(repo, {"campaign/a/log.csv": _log(200), "campaign/a/ckpt/last.pt": b"y" * 1000}, "2026-12-09")
    _commit(repo, {"README.md": b"hello"}, "2026-12-09")
    assert repo_size.check(repo, since="2026-12-01") == []


def test_breaches_are_named(tmp_path):
    repo = _repo(tmp_path)
    _commit(repo, {"campaign/TRACKED": b"campaign/a/ckpt/last.pt 300\n", "campaign/a/log.csv": _log(100),
                   "campaign/a/ckpt/last.pt": b"x" * 1000, "campaign/b/ckpt/last.pt": b"z"}, "2026-12-08")
    _commit(repo, {"campaign/a/ckpt/last.pt": b"w" * 1000}, "2026-12-08")  # twice on one day
    _commit(repo, {"campaign/a/log.csv": _log(300)}, "2026-12-09")  # the run finished: untrack its state
    _commit(repo, {"big.bin": os.urandom(3 * 2 ** 20)}, "2026-12-09")  # 4 commits, 3 MB: over 0.5 MB each
    breaches = "\n".join(repo_size.check(repo, since="2026-12-01", max_mean_mb=0.5, max_file_mb=2.0))
    assert "campaign/b/ckpt/last.pt: a tracked checkpoint not listed" in breaches
    assert "campaign/a/ckpt/last.pt: committed 2 times on 2026-12-08" in breaches
    assert "campaign/a/ckpt/last.pt: its run finished (300/300 iterations)" in breaches
    assert "big.bin is 3.0 MB, over 2.0 MB for one file" in breaches
    assert "4 commits since 2026-12-01 added" in breaches and "over 0.5 MB" in breaches
    assert repo_size.check(repo, since="2026-12-10", max_mean_mb=0.5)[:1] == [
        "campaign/b/ckpt/last.pt: a tracked checkpoint not listed in campaign/TRACKED; `git rm --cached "
        "campaign/b/ckpt/last.pt` (finished runs keep results, not checkpoints)"]


def test_this_repository_keeps_the_rule():
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists() or subprocess.run(["git", "-C", str(root), "rev-parse", "--is-shallow-repository"],
                                                      capture_output=True, text=True).stdout.strip() != "false":
        pytest.skip("not a full git clone")
    assert repo_size.check(root) == []
