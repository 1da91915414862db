"""Promote a training run to a shipped model on the leave-source-out rule (issue 24).

    python benchmarks/promote.py RUN NAME [--data ../shared/data]   # e.g. runs/student-x4-v2 student-x4
    python benchmarks/promote.py RUN NAME --trial docs/FILE.json    # the same comparison, nothing replaced

The candidate (RUN exported to ONNX FP32 and INT8, as shipping would) and the shipped NAME are
benched alike, the same way (x4 or x2 bicubic LR, one thread, ONNX Runtime): on every image of the
held-out sources of ``configs/heldout.toml`` (sources neither model was trained on) and on the test
split of the other sources. The candidate replaces NAME only when

- its held-out gain beats the shipped model's by at least ``MIN_HELD_OUT_GAIN`` dB, and
- it loses at most ``MAX_TEST_DROP`` dB on the test split (a no-regression check; the test split
  alone decides nothing), and
- its INT8 export passed the export gate (within 0.1 dB of its FP32 on real images), or neither
  it nor the shipped model has an INT8 export.

A NAME not shipped yet is released from RUN, its scores recorded. The exports are those of
`medsr-edge export --format release` (one function, medsr_edge.export.exporter.export_release).

Either way the comparison goes to ``docs/promotions/NAME.json``; on promotion every artifact of NAME
(ONNX FP32, FP16, INT8, safetensors) is replaced at once, and the cards are rebuilt with
``python benchmarks/model_cards.py``. This is the one release function; campaign.sh calls it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout import MAX_TEST_DROP, MIN_HELD_OUT_GAIN, bench, load, summary  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "medsr_edge" / "weights"
MAX_INT8_DROP = 0.1  # dB, the export gate's bound; checked again here on the held-out images


def export_all(run: str, name: str, out: Path, data: str) -> dict[str, str]:
    """Every released format of ``name`` from ``run`` into ``out`` (medsr_edge.export.exporter.
    export_release, as `medsr-edge export --format release` does): {format: file, or "refused: why"}."""
    from medsr_edge.export.exporter import ExportOptions, export_release

    opts = ExportOptions(name=name, calib_data=Path(data), calib_split="val", calib_method="minmax", int8_float_convs=3)
    return export_release(run, out, opts, report=lambda line: None)


def scores(weights: Path, name: str, data: str, scale: int, held_out: list[str], threads: int) -> dict:
    held = [a for s in held_out for a in ("--source", s)]
    excl = [a for s in held_out for a in ("--exclude-source", s)]
    h = bench(weights, name, data, scale, threads, held)
    t = bench(weights, name, data, scale, threads, ["--split", "test", *excl])
    result = {"held_out": summary(h, name), "test": summary(t, name)}
    int8 = [r for r in h["rows"] if r["name"] == name and r["format"] == "onnx-int8"]
    if int8:
        result["held_out_int8_gain"] = int8[0]["psnr_gain_vs_bicubic"]
    result["gap_db"] = round(result["test"]["gain"] - result["held_out"]["gain"], 4)
    return result


def decide(candidate: dict, shipped: dict) -> tuple[bool, str]:
    """The rule of the module docstring. A candidate whose INT8 its gate refused cannot replace a
    shipped model that has one (users of --precision int8 would lose it)."""
    up = candidate["held_out"]["gain"] - shipped["held_out"]["gain"]
    drop = shipped["test"]["gain"] - candidate["test"]["gain"]
    if "held_out_int8_gain" not in candidate:
        why = f"held-out {up:+.3f} dB, test {-drop:+.3f} dB, no INT8"
        ok = "held_out_int8_gain" not in shipped and up >= MIN_HELD_OUT_GAIN and drop <= MAX_TEST_DROP
        return ok, why + ("" if "held_out_int8_gain" not in shipped else " (the shipped model has one)")
    int8_drop = candidate["held_out"]["gain"] - candidate["held_out_int8_gain"]
    why = f"held-out {up:+.3f} dB, test {-drop:+.3f} dB, INT8 -{int8_drop:.3f} dB vs its FP32"
    ok = up >= MIN_HELD_OUT_GAIN and drop <= MAX_TEST_DROP and int8_drop <= MAX_INT8_DROP
    return ok, why


def promote(run: str, name: str, data: str, threads: int = 1, trial: Path | None = None) -> bool:
    """Export ``run`` as ``name``, bench it and the shipped ``name`` alike, replace the shipped
    artifacts only when the rule above says so. Returns whether it did (or, for a ``trial``, would
    have: nothing is replaced and the comparison goes to that JSON file instead)."""
    protocol, _ = load()
    held_out = protocol["held_out"]
    from medsr_edge.models.checkpoint import read_metadata

    scale = int(read_metadata(run)[1]["scale"])
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        cand, ship = Path(tmp) / "candidate", Path(tmp) / "shipped"
        cand.mkdir(), ship.mkdir()
        released = export_all(run, name, cand, data)
        for folder in (cand, ship):  # the weights folder of a bench holds its teacher (as heldout.py's)
            shutil.copy(WEIGHTS / f"teacher-x{scale}.onnx", folder)
        for f in WEIGHTS.glob(f"{name}*.onnx"):
            if f.stem in (name, f"{name}-int8"):
                shutil.copy(f, ship)
        result = {"run": run, "name": name, "rule": {"min_held_out_gain_db": MIN_HELD_OUT_GAIN,
                                                     "max_test_drop_db": MAX_TEST_DROP, "max_int8_drop_db": MAX_INT8_DROP},
                  "held_out_sources": held_out, "released": released,
                  "candidate": scores(cand, name, data, scale, held_out, threads)}
        if (ship / f"{name}.onnx").is_file():
            result["shipped"] = scores(ship, name, data, scale, held_out, threads)
            ok, why = decide(result["candidate"], result["shipped"])
        else:  # a first release: nothing to beat, but its scores are recorded all the same
            ok, why = True, f"{name} was not shipped yet: first release"
        result.update(promoted=ok and trial is None, why=why, wall_time_s=round(time.time() - t0),
                      **({"trial": True} if trial else {}))
        if ok and trial is None:
            for f in cand.glob(f"{name}*"):
                shutil.copy(f, WEIGHTS / f.name)
            if released["onnx-int8"].startswith("refused"):  # never an INT8 of another run beside the new FP32
                (WEIGHTS / f"{name}-int8.onnx").unlink(missing_ok=True)
    out = trial or ROOT / "docs" / "promotions" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    c = result["candidate"]
    shipped = (f"; shipped: held-out {result['shipped']['held_out']['gain']:+.3f} dB, test "
               f"{result['shipped']['test']['gain']:+.3f} dB" if "shipped" in result else "")
    print(f"{name}: candidate {run}: held-out {c['held_out']['gain']:+.3f} dB, test {c['test']['gain']:+.3f} dB{shipped}")
    if trial:
        print(f"trial ({out}): {'would replace' if ok else 'would not replace'} the shipped {name} ({why})")
    else:
        print(("promoted: medsr_edge/weights/%s.* replaced; rebuild the cards: python benchmarks/model_cards.py" if ok
               else "not promoted: the shipped %s stays") % name + f" ({why})")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("name")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trial", type=Path, metavar="JSON",
                    help="compare only: replace nothing, write the comparison here (e.g. a teacher against "
                         "student-quality-x4, or the arms of an ablation against the default)")
    a = ap.parse_args()
    sys.exit(0 if promote(a.run, a.name, a.data, a.threads, a.trial) else 3)


if __name__ == "__main__":
    main()
