"""Leave-source-out protocol: score training recipes on sources they never saw.

The protocol and the recipes are in ``configs/heldout.toml``. For each recipe:

  train  `medsr-edge train student` from scratch with the held-out sources excluded (runs/heldout/RECIPE,
         resumable: the same command continues an interrupted run);
  score  export it to ONNX and run `medsr-edge bench` twice with the same model: on every image of the
         held-out sources (the held-out score) and on the test split of the other sources (the
         in-distribution score); the result goes to docs/heldout/RECIPE.json;
  table  docs/heldout.md: every scored recipe, held-out score, test score and the gap between them.

    python benchmarks/heldout.py run modality source source-intensity   # train + score, in turn
    python benchmarks/heldout.py table

The score of a recipe is the mean over modalities of the mean gain over bicubic (dB), as in the bench.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "heldout.toml"
RUNS = ROOT / "runs" / "heldout"
DOCS = ROOT / "docs" / "heldout"


def load(config: Path = CONFIG) -> tuple[dict, dict]:
    doc = tomllib.loads(config.read_text())
    return doc["protocol"], doc["recipes"]


PRIOR = ROOT / "runs" / "prior"  # the pre-training prior (medsr_edge.distill.prior), made on first use


def train_commands(protocol: dict, recipe: dict, name: str, data: str) -> list[list[str]]:
    """The training commands of a recipe. A recipe with ``pretrain_iters = N`` first trains N
    iterations on the non-medical prior, then the rest of the protocol's budget on the medical
    data from those weights (same total iterations as every other recipe). ``config`` names another
    architecture than the protocol's."""
    p = protocol
    common = ["--scale", str(p["scale"]), "--batch", str(p["batch"]), "--patch", str(p["patch"]), "--lr", str(p["lr"]),
              "--seed", str(p["seed"]), "--threads", str(p["threads"]), "--val-every", "500"]
    pre = int(recipe.get("pretrain_iters", 0))
    config = recipe.get("config", p["config"])  # a recipe may change the architecture (e.g. student-sinc)
    cmds = []
    main = ["medsr-edge", "train", "student", "--data", data, "--out", str(RUNS / name), "--iters", str(p["iters"] - pre),
            *common]
    if pre:
        if not (PRIOR / "prior").is_dir():
            from medsr_edge.distill.prior import write_prior

            print(f"prior: {write_prior(PRIOR)} images in {PRIOR}")
        stage = RUNS / f"prior-{config}-{pre}"  # one prior stage per network and length, shared by the recipes
        cmds.append(["medsr-edge", "train", "student", "--config", config, "--data", str(PRIOR), "--out", str(stage),
                     "--iters", str(pre), "--val-split", "", *common])
        main += ["--init", str(stage)]
    else:
        main += ["--config", config]
    for src in p["held_out"]:
        main += ["--exclude-source", src]
    return cmds + [main + list(recipe["args"])]


def bench(weights: Path, name: str, data: str, scale: int, threads: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = ["medsr-edge", "bench", "--data", data, "--scale", str(scale), "--models", name, "--backends", "onnxruntime",
               "--threads", str(threads), "--latency-rounds", "0", "--json", str(out), *extra]
        subprocess.run(cmd, check=True, env={**os.environ, "MEDSR_EDGE_WEIGHTS": str(weights)}, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def summary(doc: dict, name: str) -> dict:
    row = next(r for r in doc["rows"] if r["name"] == name and r["precision"] == "fp32" and r["format"] == "onnx")
    return {"gain": row["psnr_gain_vs_bicubic"], "psnr": row["psnr"], "images": doc["images"],
            "per_modality": {m: v["psnr_gain_vs_bicubic"] for m, v in row["per_modality"].items()},
            "per_source": {s: v["psnr_gain_vs_bicubic"] for s, v in row["per_source"].items()}}


def score(protocol: dict, recipe: dict, name: str, data: str) -> dict:
    run = RUNS / name
    scale, model = protocol["scale"], f"student-x{protocol['scale']}"
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp)
        shutil.copy(ROOT / "medsr_edge" / "weights" / f"teacher-x{scale}.onnx", weights)
        subprocess.run(["medsr-edge", "export", "--model", str(run), "--format", "onnx", "--name", model,
                        "-o", str(weights / f"{model}.onnx")], check=True, stdout=subprocess.DEVNULL)
        held = [a for s in protocol["held_out"] for a in ("--source", s)]
        excl = [a for s in protocol["held_out"] for a in ("--exclude-source", s)]
        threads = protocol["threads"]
        held_doc = bench(weights, model, data, scale, threads, held)
        test_doc = bench(weights, model, data, scale, threads, ["--split", "test", *excl])
    from medsr_edge.models.checkpoint import read_metadata

    meta = read_metadata(run)[1]
    result = {"recipe": name, "about": recipe.get("about", ""), "args": recipe["args"], "protocol": protocol,
              "iterations": meta["iterations"], "wall_time_s": meta["wall_time_s"], "train_sources": meta.get("train_sources"),
              "held_out": summary(held_doc, model), "test": summary(test_doc, model)}
    result["gap_db"] = round(result["test"]["gain"] - result["held_out"]["gain"], 4)
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{name}: held-out {result['held_out']['gain']:+.3f} dB, test {result['test']['gain']:+.3f} dB, gap {result['gap_db']:.3f}")
    return result


MIN_HELD_OUT_GAIN = 0.02  # dB a recipe must add on held-out sources over the baseline to be kept
MAX_TEST_DROP = 0.05  # dB it may lose on the in-distribution test split (a no-regression check only)


def verdict(row: dict, base: dict | None) -> str:
    """Keep a recipe only when its held-out score beats the recipe it is compared with (the one it
    builds on, else the baseline) by MIN_HELD_OUT_GAIN and its test score does not drop by more than
    MAX_TEST_DROP; the test split alone decides nothing."""
    if base is None or row["recipe"] == base["recipe"]:
        return "baseline"
    up = row["held_out"]["gain"] - base["held_out"]["gain"]
    drop = base["test"]["gain"] - row["test"]["gain"]
    if up >= MIN_HELD_OUT_GAIN and drop <= MAX_TEST_DROP:
        return f"keep ({up:+.3f} held-out)"
    return f"drop ({up:+.3f} held-out" + (f", test -{drop:.3f})" if drop > MAX_TEST_DROP else ")")


def compared_with(row: dict, rows: list[dict], recipes: dict, baseline: str) -> dict | None:
    """The scored row a recipe is judged against: ``builds_on`` in its recipe (the kept recipe it
    adds one choice to), else the protocol's baseline."""
    name = recipes.get(row["recipe"], {}).get("builds_on", baseline)
    return next((r for r in rows if r["recipe"] == name), None)


def table() -> str:
    rows = [json.loads(p.read_text()) for p in sorted(DOCS.glob("*.json"))]
    rows.sort(key=lambda r: -r["held_out"]["gain"])
    baseline = load()[0].get("baseline", "modality")
    mods = sorted({m for r in rows for m in r["held_out"]["per_modality"]})
    lines = ["# Leave-source-out scores of training recipes", "",
             "Made by `python benchmarks/heldout.py run RECIPE...` then `python benchmarks/heldout.py table`; "
             "protocol and recipes in `configs/heldout.toml`. Gains over bicubic in dB (x4, mean over modalities "
             "of the per-modality mean). *Held-out*: every image of sources excluded from training; *test*: the "
             "test split of the other sources; *gap* = test - held-out.", "",
             f"Rule: a recipe is kept when it beats the recipe it builds on (*vs*; else the baseline `{baseline}`) by "
             f"at least {MIN_HELD_OUT_GAIN} dB held-out and loses at most {MAX_TEST_DROP} dB on the test split.", "",
             "| recipe | held-out | " + " | ".join(f"held-out {m}" for m in mods) + " | test | gap | vs | verdict | iterations | flags |",
             "|---|---|" + "---|" * len(mods) + "---|---|---|---|---|---|"]
    recipes = load()[1]
    for r in rows:
        base = compared_with(r, rows, recipes, baseline)
        per = r["held_out"]["per_modality"]
        pre = int(recipes.get(r["recipe"], {}).get("pretrain_iters", 0))
        arch = recipes.get(r["recipe"], {}).get("config")
        flags = (f"`{arch}`; " if arch else "") + (f"{pre} it. on the prior, then " if pre else "") + f"`{' '.join(r['args'])}`"
        lines.append(f"| {r['recipe']} | {r['held_out']['gain']:+.3f} | "
                     + " | ".join(f"{per[m]:+.3f}" if m in per else "-" for m in mods)
                     + f" | {r['test']['gain']:+.3f} | {r['gap_db']:.3f} | {base['recipe'] if base else '-'} | {verdict(r, base)} "
                     f"| {r['protocol']['iters']} | {flags} |")
    if rows:
        lines += ["", "Held-out sources: " + ", ".join(f"`{s}`" for s in rows[0]["protocol"]["held_out"]) + "."]
    text = "\n".join(lines) + "\n"
    (ROOT / "docs" / "heldout.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["train", "score", "run", "table"])
    ap.add_argument("recipes", nargs="*")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    a = ap.parse_args()
    protocol, recipes = load()
    for name in a.recipes:
        if name not in recipes:
            sys.exit(f"heldout: no recipe {name!r} in {CONFIG}; the recipes are: {', '.join(recipes)}")
    for name in a.recipes:
        if a.action in ("train", "run"):
            for cmd in train_commands(protocol, recipes[name], name, a.data):
                subprocess.run(cmd, check=True)
        if a.action in ("score", "run"):
            score(protocol, recipes[name], name, a.data)
    if a.action == "table" or a.action == "run":
        print(table())


if __name__ == "__main__":
    main()
