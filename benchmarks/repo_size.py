"""The repository-size rule (README, "Contributing"), checked on the git history:

1. the only tracked checkpoints (``*.pt``, anything in a ``ckpt/`` folder) are those listed in
   ``campaign/TRACKED`` (one path per line, ``#`` comments), and each listed one belongs to a run
   that is still going (the last iteration of its ``log.csv`` is below the schedule given on its line);
2. since the rule began (``--since``, a date), a tracked checkpoint changes in at most one commit a day;
3. since then, commits add on average less than ``--max-mean-mb`` MB of new blobs, and no single new
   file is over ``--max-file-mb``.

    python benchmarks/repo_size.py            # exit 1 with one line per breach
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

RULE_SINCE = "2026-12-07"  # the rule is checked on commits from this date (history is never rewritten)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def tracked_checkpoints(repo: Path) -> list[str]:
    return [p for p in git(repo, "ls-files").splitlines() if p.endswith(".pt") or "/ckpt/" in f"/{p}"]


def listed(repo: Path) -> dict[str, int]:
    """{checkpoint path: the iterations of its run's schedule} from campaign/TRACKED ("PATH ITERS")."""
    f = repo / "campaign" / "TRACKED"
    out = {}
    for line in (f.read_text().splitlines() if f.is_file() else []):
        line = line.split("#", 1)[0].strip()
        if line:
            path, iters = line.split()
            out[path] = int(iters)
    return out


def last_iteration(log: Path) -> int:
    try:
        rows = [r for r in csv.reader(log.open()) if r and r[0].isdigit()]
    except OSError:
        return 0
    return int(rows[-1][0]) if rows else 0


def commits_since(repo: Path, since: str) -> list[tuple[str, str]]:
    """(sha, YYYY-MM-DD) of the commits on HEAD from ``since`` on, oldest first."""
    out = git(repo, "log", "--reverse", f"--since={since}T00:00:00", "--format=%H %cd", "--date=short")
    return [tuple(line.split()) for line in out.splitlines() if line]


def new_blobs(repo: Path, sha: str) -> list[tuple[str, int]]:
    """(path, bytes) of the blobs a commit adds or changes."""
    out = git(repo, "diff-tree", "-r", "--root", "--no-commit-id", "-z", "--diff-filter=AM", sha)
    fields = out.split("\0")
    items = []
    for meta, path in zip(fields[0::2], fields[1::2]):
        if meta:
            items.append((path, meta.split()[3]))
    if not items:
        return []
    sizes = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-check=%(objectsize)"], check=True,
                           capture_output=True, text=True, input="\n".join(b for _, b in items) + "\n").stdout
    return [(p, int(s)) for (p, _), s in zip(items, sizes.split())]


def check(repo: Path, since: str = RULE_SINCE, max_mean_mb: float = 2.0, max_file_mb: float = 20.0) -> list[str]:
    """Every breach of the rule, one line each (empty: the repository keeps it)."""
    breaches = []
    allowed = listed(repo)
    for path in tracked_checkpoints(repo):
        if path not in allowed:
            breaches.append(f"{path}: a tracked checkpoint not listed in campaign/TRACKED; "
                            f"`git rm --cached {path}` (finished runs keep results, not checkpoints)")
    for path, iters in allowed.items():
        done = last_iteration(repo / Path(path).parent.parent / "log.csv")
        if done >= iters:
            breaches.append(f"{path}: its run finished ({done}/{iters} iterations); untrack the checkpoint "
                            "(`git rm --cached`) and drop its line from campaign/TRACKED")
    commits = commits_since(repo, since)
    per_day: Counter = Counter()
    total = 0
    for sha, day in commits:
        for path, size in new_blobs(repo, sha):
            total += size
            if path in allowed or path.endswith(".pt"):
                per_day[(path, day)] += 1
            if size > max_file_mb * 2 ** 20:
                breaches.append(f"{sha[:10]}: {path} is {size / 2 ** 20:.1f} MB, over {max_file_mb} MB for one file")
    for (path, day), n in sorted(per_day.items()):
        if n > 1:
            breaches.append(f"{path}: committed {n} times on {day}; a live run's state goes in at most once a day")
    if commits and total / len(commits) > max_mean_mb * 2 ** 20:
        breaches.append(f"{len(commits)} commits since {since} added {total / len(commits) / 2 ** 20:.2f} MB each on "
                        f"average, over {max_mean_mb} MB")
    return breaches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--since", default=RULE_SINCE)
    ap.add_argument("--max-mean-mb", type=float, default=2.0)
    ap.add_argument("--max-file-mb", type=float, default=20.0)
    a = ap.parse_args()
    if git(a.repo, "rev-parse", "--is-shallow-repository").strip() == "true":
        print("repo_size: a shallow clone has no history to check; skipped")
        return
    breaches = check(a.repo, a.since, a.max_mean_mb, a.max_file_mb)
    for b in breaches:
        print(f"error: {b}", file=sys.stderr)
    n = len(commits_since(a.repo, a.since))
    print(f"repo_size: {len(tracked_checkpoints(a.repo))} tracked checkpoints, {n} commits since {a.since}: "
          + ("rule kept" if not breaches else f"{len(breaches)} breaches"))
    sys.exit(1 if breaches else 0)


if __name__ == "__main__":
    main()
