"""Wall time of the `medsr-edge enhance` command, end to end (process start, model load, read,
enhance, write), on one 512x512 CT and on a folder of 100 of them, for one or more code trees.

    python benchmarks/enhance_timing.py --tree now=. --tree before=/path/to/old/checkout --json docs/enhance-timing.json

The CT is pydicom-data's ``693_UNCR.dcm`` (no ../shared image); the folder holds 100 copies with
their own SOP Instance UIDs. Each case runs ``--repeats`` times per tree, trees interleaved, and
the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_inputs(root: Path) -> tuple[Path, Path]:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ct = Path(get_testdata_file("693_UNCR.dcm"))
    one = root / "one"
    one.mkdir()
    shutil.copy(ct, one / "ct.dcm")
    folder = root / "folder"
    folder.mkdir()
    ds = pydicom.dcmread(ct)
    for i in range(100):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.save_as(folder / f"IM{i + 1:04d}.dcm")
    return one / "ct.dcm", folder


def run(tree: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", "from medsr_edge.cli.main import app; app()", "enhance", *args],
                         env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{tree}: enhance failed: {res.stderr[-500:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", required=True, help="LABEL=PATH of a checkout to time")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    trees = dict(t.split("=", 1) for t in a.tree)
    results: dict[str, dict[str, list[float]]] = {label: {"ct_512": [], "folder_100": []} for label in trees}
    with tempfile.TemporaryDirectory() as tmp:
        ct, folder = make_inputs(Path(tmp))
        for r in range(a.repeats):
            for label, path in trees.items():
                out = Path(tmp) / f"out-{label}-{r}"
                results[label]["ct_512"].append(run(Path(path), [str(ct), "-o", str(out / "ct.dcm"), "--threads", str(a.threads)]))
                results[label]["folder_100"].append(run(Path(path), [str(folder), "-o", str(out / "folder"),
                                                                     "--threads", str(a.threads)]))
    doc = {"cpu_count": os.cpu_count(), "threads": a.threads, "repeats": a.repeats,
           "median_s": {label: {k: round(statistics.median(v), 2) for k, v in cases.items()} for label, cases in results.items()},
           "all_s": {label: {k: [round(x, 2) for x in v] for k, v in cases.items()} for label, cases in results.items()}}
    print(json.dumps(doc["median_s"], indent=1))
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
