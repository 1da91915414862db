"""Write the model cards of the shipped models from what the runs and the benchmark measured.

    python benchmarks/model_cards.py --bench docs/bench-test-x4.json \
        --run teacher-x4=runs/teacher-x4-psnr --run student-x4=runs/student-x4 \
        [--run student-x4-gan=campaign/student-x4-gan] [--init-run student-x4=runs/student-x4] \
        [--perceptual docs/bench-perceptual-x4.json] --data ../shared/data

``--init-run NAME=RUN``: the run that NAME's run was initialised from (``distill --init``), so that
the card states both stages. ``--perceptual``: a bench JSON with the ``fd_vgg16``/``frd`` columns,
whose rows go into the cards of the models it measured (GAN and PSNR students against bicubic).
``--rescore NAME``: keep NAME's card as it is (training, data) and replace only what the new bench
measured (results, INT8 check, benchmark machine), for a shipped model whose run is gone.

Every figure in a card is copied from the training run's own metadata (iterations, wall time,
hardware, validation) or from the benchmark JSON (test split PSNR/SSIM per modality); nothing is
typed by hand. Output: medsr_edge/weights/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import onnx

from medsr_edge.core.formats import FORMATS
from medsr_edge.export.onnx_export import get_metadata
from medsr_edge.models.checkpoint import read_metadata

WEIGHTS = Path(os.environ.get("MEDSR_EDGE_WEIGHTS") or Path(__file__).resolve().parents[1] / "medsr_edge" / "weights")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def data_sources(data: Path, split: str = "train", trained: dict | None = None) -> list[dict]:
    """The sources a run trained on: from its own metadata (``train_sources``: folder -> images,
    which honours --source/--exclude-source) with each folder's modality, origin and licence from
    the MANIFEST; for older runs without it, every source of the split."""
    manifest = data / "MANIFEST.tsv"
    if not manifest.is_file():
        return []
    if trained:
        info: dict[str, dict] = {}
        with open(manifest) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                folder = "/".join(row["relative_path"].split("/")[:2])
                info.setdefault(folder, {"modality": row["modality"], "source": row["source"].split(" In/")[0],
                                         "license": row["license"]})
        return [{**info.get(folder, {"modality": folder.split("/")[0], "source": folder, "license": "?"}),
                 "folder": folder, "images": n} for folder, n in sorted(trained.items())]
    groups: dict[tuple, int] = {}
    with open(manifest) as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["split"] == split:
                k = (row["modality"], row["source"], row["license"])
                groups[k] = groups.get(k, 0) + 1
    return [{"modality": m, "source": s, "license": lic, "images": n} for (m, s, lic), n in sorted(groups.items())]


def bench_rows(bench: dict, name: str) -> list[dict]:
    """The ok rows of ``name`` whose artifact ships in the weights folder (TensorRT engines are
    built on the target, so their rows stay): a format the bench made on the fly is no card row."""
    suffix = {fmt.name: fmt.suffix for fmt in FORMATS}
    return [r for r in bench["rows"] if r["name"] == name and r["status"] == "ok"
            and (r["backend"] == "tensorrt" or (WEIGHTS / f"{name}{suffix[r['format']]}").is_file())]


TRAINING_KEYS = ("kind", "stage", "iterations", "wall_time_s", "hardware", "batch", "patch", "lr", "losses", "ema_decay",
                 "teacher", "init", "torch", "degradation", "normalisation", "val_psnr", "val_ssim", "val_psnr_bicubic",
                 "train_images", "disc", "disc_lr", "body_from", "widen_from", "edge_patches", "int8_aware", "balance", "augment")


def training(meta: dict) -> dict:
    out = {k: meta.get(k) for k in TRAINING_KEYS}
    if out["int8_aware"]:  # the learned ranges themselves live in the checkpoint and the INT8 file
        out["int8_aware"] = {k: v for k, v in out["int8_aware"].items() if k != "ranges"}
    return out


def perceptual(bench: dict | None, name: str) -> dict | None:
    """{row name: {fd_vgg16, frd, per_modality}} of the bicubic, PSNR-student and ``name`` rows."""
    if not bench or not bench_rows(bench, name):
        return None
    keep = {"bicubic", name, f"student-x{bench.get('scale', 4)}"}
    return {"images": bench.get("images"), "split": bench.get("split"),
            "rows": {r["name"]: {"fd_vgg16": r.get("fd_vgg16"), "frd": r.get("frd"),
                                 "per_modality": {m: {k: v.get(k) for k in ("fd_vgg16", "frd")} for m, v in r["per_modality"].items()}}
                     for r in bench["rows"] if r["name"] in keep and r["status"] == "ok" and r["format"] in ("-", "onnx")}}


def distillation_verdict() -> str:
    """The equal-iteration distillation ablation (issue 24, item 5) in one sentence, from its two
    trial files (``benchmarks/promote.py RUN student-x4 --trial``), or why students have no teacher."""
    arms = {arm: DOCS / "promotions" / f"kd-ablation-{arm}-trial.json" for arm in ("teacher", "ctrl")}
    if not all(p.is_file() for p in arms.values()):
        return "The shipped CPU teacher has not been shown to beat the students on held-out sources."
    trial = {arm: json.loads(p.read_text()) for arm, p in arms.items()}
    kd, ctrl = trial["teacher"]["candidate"], trial["ctrl"]["candidate"]
    diff = kd["held_out"]["gain"] - ctrl["held_out"]["gain"]
    bar = trial["teacher"]["rule"]["min_held_out_gain_db"]
    return (f"Distillation from teacher-x4 was measured against an equal-iteration control (1,000 iterations each "
            f"from the default, `configs/kd-ablation-teacher.toml` and `configs/kd-ablation-ctrl.toml`): held-out "
            f"{kd['held_out']['gain']:+.3f} dB against {ctrl['held_out']['gain']:+.3f} ({diff:+.3f}; "
            + ("a win" if diff >= bar else f"under the {bar} dB bar, so no teacher")
            + f"), test {kd['test']['gain']:+.3f} against {ctrl['test']['gain']:+.3f}")


def card(name: str, run: Path, bench: dict, data: Path, init_run: Path | None = None, percep: dict | None = None) -> dict:
    config, meta = read_metadata(run)
    rows = bench_rows(bench, name)
    bicubic = next(r for r in bench["rows"] if r["name"] == "bicubic")
    teacher_name = f"teacher-x{bench.get('scale', 4)}"
    teacher = next((r for r in bench["rows"] if r["name"] == teacher_name and r["format"] == "onnx" and r["status"] == "ok"), None)
    main = next((r for r in rows if r["format"] == "onnx"), rows[0] if rows else None)
    results = {}
    if main:
        results = {
            "split": bench.get("split"), "images": bench.get("images"), "scale": bench.get("scale"),
            "metrics": bench.get("metrics"),
            "mean": {"psnr": main["psnr"], "ssim": main["ssim"], "psnr_gain_vs_bicubic": main["psnr_gain_vs_bicubic"]},
            "per_modality": main["per_modality"],
            "bicubic": {"psnr": bicubic["psnr"], "ssim": bicubic["ssim"], "per_modality": bicubic["per_modality"]},
            "artifacts": {r["format"]: {"psnr": r["psnr"], "ssim": r["ssim"], "latency_ms_p50": r["latency_ms_p50"],
                                        "size_mb": r["size_mb"]} for r in rows},
        }
        if teacher and name != teacher_name:
            results["teacher"] = {"psnr": teacher["psnr"], "ssim": teacher["ssim"], "per_modality": teacher["per_modality"],
                                  "student_minus_teacher_db": round(main["psnr"] - teacher["psnr"], 4)}
    int8 = WEIGHTS / f"{name}-int8.onnx"
    int8_meta = get_metadata(onnx.load(str(int8))) if int8.is_file() else {}
    quant = int8_meta.get("quantization")
    if quant and quant.get("reference_fp32"):  # quantized from an INT8-aware fine-tune of this model
        quant = {**quant, "fine_tune_iterations": int8_meta.get("iterations")}
    return {
        "int8": quant,
        "name": name, "architecture": config.get("type"), "config": config, "scale": meta.get("scale"),
        "training": {"run": str(run), **training(meta)},
        "initialised_from": {"run": str(init_run), **training(read_metadata(init_run)[1])} if init_run else None,
        "data": {"root": meta.get("data"), "split": meta.get("split"), "sources": data_sources(data, trained=meta.get("train_sources")),
                 "excluded_sources": meta.get("exclude_sources") or []},
        "results": results,
        "fidelity_guard": bench.get("fidelity_guard") if meta.get("stage") == "gan" else None,
        "perceptual": perceptual(percep, name),
        "benchmark_environment": bench.get("environment"),
    }


def physics_section(result: dict, name: str) -> dict:
    """The card keys of an acquisition family model: ``auto_pick`` (whether enhance chooses it by
    Modality; runtime.models.family_model) and ``physics`` (gains over bicubic per setting, verdict)."""
    v = result["verdict"]
    return {"auto_pick": v["auto_pick"],
            "physics": {"family": result["family"], "degradation": result["degradation"], "verdict": v,
                        "command": f"python benchmarks/physics_eval.py --run {result['run']} --family {result['family']}",
                        "settings": {label: {"images": s["images"], "bicubic_psnr": s["rows"]["bicubic"]["psnr"],
                                             "gains": {k: r["gain"] for k, r in s["rows"].items() if k != "bicubic"}}
                                     for label, s in result["settings"].items()}}}


def f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown(c: dict) -> str:
    t, r = c["training"], c["results"]
    lines = [f"# Model card: {c['name']}", "",
             f"- Architecture: {c['architecture']} ({', '.join(f'{k}={v}' for k, v in c['config'].items() if k not in ('type', 'name'))})",
             f"- Scale: x{c['scale']}, single channel, input normalised per image to [0, 1] ({t.get('normalisation')})",
             f"- Training: {t.get('kind')}, {t.get('iterations')} iterations, batch {t.get('batch')}, HR patch {t.get('patch')}, "
             f"wall time {round((t.get('wall_time_s') or 0) / 60)} min on {t.get('hardware')} (torch {t.get('torch')}), "
             f"training images {', '.join(f'{m} {n}' for m, n in (t.get('train_images') or {}).items())}",
             f"- Losses: {json.dumps(t.get('losses'))}; EMA decay {t.get('ema_decay')}",
             f"- Degradation: {json.dumps(t.get('degradation'))}"]
    first = c.get("initialised_from")
    if first:
        images = ", ".join(f"{m} {n}" for m, n in (first.get("train_images") or {}).items())
        lines.insert(4, f"- First stage ({first['run']}): {first.get('kind')}, {first.get('iterations')} iterations, batch {first.get('batch')}, "
                        f"HR patch {first.get('patch')}, wall time {round((first.get('wall_time_s') or 0) / 60)} min, "
                        f"training images {images}, val PSNR {first.get('val_psnr') or 0:.2f} dB"
                        + (f" (itself a fine-tune of {first['init']})" if first.get("init") else "") + ". Then, from those weights:")
    if t.get("stage") == "gan":
        lines.insert(2, "")
        lines.insert(2, f"GAN-trained, opt-in (`--model {c['name']}`): sharper texture, lower PSNR than the default student. "
                        "Its output may contain detail that is not in the patient; use it for viewing, not measurement.")
        lines.append(f"- GAN stage from {t.get('init')}: relativistic average GAN with the {t.get('disc')} discriminator "
                     f"(learning rate {t.get('disc_lr')}, generator {t.get('lr')})")
    ph = c.get("physics")
    if ph:
        v = ph["verdict"]
        from medsr_edge.runtime.models import FAMILY_MODALITIES

        modalities = ", ".join(FAMILY_MODALITIES.get(ph["family"], ()))
        use = (f"`enhance` picks it for every DICOM of Modality {modalities} and for `--modality "
               f"{ph['family'].upper()}`; `--model` overrides" if c.get("auto_pick")
               else f"opt-in (`--model {c['name']}`): `enhance` does not pick it by Modality, because it costs the "
                    "bicubic protocol")
        lines[2:2] = [f"Acquisition family model ({ph['family'].upper()}, trained under `{ph['degradation']}` physics): "
                      f"{use}. {v['why']}.", ""]
    if t.get("body_from"):
        b = t["body_from"]
        lines.append(f"- Started from {b['from']} ({b['from_config']}, x{b['from_scale']}): {b['copied']} tensors of the same "
                     f"name and shape copied, {len(b['fresh'])} started fresh")
    if t.get("int8_aware"):
        a = t["int8_aware"]
        lines.append(f"- INT8-aware fine-tune (`train student --int8-aware {a['float_convs']}`, learning rate {t.get('lr')}): the "
                     f"{a['simulated']} convolutions that INT8 runs in 8 bits trained on int8-rounded inputs, weights and outputs"
                     + (f", their activation step sizes learned (LSQ, learning rate {a['step_lr']}); INT8 export uses those ranges"
                        if a.get("step_lr") else ""))
    if t.get("edge_patches"):
        lines.append(f"- Edge-centred patches (`--edge-patches {t['edge_patches']}`): that share of the training patches centred on "
                     "an image's strongest edges (burned-in text, image borders, metal, bone)")
    if t.get("widen_from"):
        w = t["widen_from"]
        lines.append(f"- Started as a function-preserving widening of {w['from']} ({w['from_config']}; `train student "
                     f"--widen-from`, noise {w['noise']} of each tensor's spread), then trained on with its recipe")
    if t.get("teacher"):
        lines.append(f"- Distilled from: {t['teacher']}")
    elif c["name"].startswith("student") and t.get("stage") != "gan":
        lines.append("- Trained on the ground truth alone, with no teacher. " + distillation_verdict())
    lines += ["", "## Data (training split of ../shared/data)", "", "| modality | folder | origin | licence | images |",
              "|---|---|---|---|---|"]
    lines += [f"| {s['modality']} | {s.get('folder', '')} | {s['source']} | {s['license']} | {s['images']} |"
              for s in c["data"]["sources"]]
    if c["data"].get("excluded_sources"):
        lines += ["", "Held out of training (never seen; the leave-source-out score is measured on them): "
                  + ", ".join(f"`{x}`" for x in c["data"]["excluded_sources"]) + "."]
    if r:
        lines += ["", f"## Results on the `{r['split']}` split, x{r['scale']} ({r['metrics']})", "",
                  "| modality | n | bicubic PSNR | this model PSNR | gain | SSIM (bicubic -> model)" + (" | teacher PSNR |" if "teacher" in r else " |"),
                  "|---|---|---|---|---|---|" + ("---|" if "teacher" in r else "")]
        for m, v in r["per_modality"].items():
            b = r["bicubic"]["per_modality"][m]
            row = f"| {m} | {v['n']} | {b['psnr']:.2f} | {v['psnr']:.2f} | {v['psnr_gain_vs_bicubic']:+.2f} | {b['ssim']:.4f} -> {v['ssim']:.4f} |"
            if "teacher" in r:
                row += f" {r['teacher']['per_modality'][m]['psnr']:.2f} |"
            lines.append(row)
        mean = r["mean"]
        lines += ["", f"Mean over modalities: PSNR {mean['psnr']:.2f} dB (bicubic {r['bicubic']['psnr']:.2f}, "
                      f"gain {mean['psnr_gain_vs_bicubic']:+.2f} dB), SSIM {mean['ssim']:.4f} (bicubic {r['bicubic']['ssim']:.4f})."]
        if "teacher" in r:
            lines.append(f"Student minus teacher: {r['teacher']['student_minus_teacher_db']:+.2f} dB.")
        lines += ["", "| artifact | PSNR | SSIM | ms/img (median) | size MB |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['psnr']:.2f} | {v['ssim']:.4f} | {v['latency_ms_p50']:.1f} | {v['size_mb']:.2f} |" for k, v in r["artifacts"].items()]
    if ph:
        lines += ["", f"## Under acquisition physics (`{ph['command']}`)", "",
                  "| setting | images | bicubic PSNR | gains over bicubic |", "|---|---|---|---|"]
        lines += [f"| {label} | {sum(st['images'].values()) if isinstance(st['images'], dict) else st['images']} | "
                  f"{st['bicubic_psnr']:.2f} | " + ", ".join(f"{k} {g:+.2f}" for k, g in st["gains"].items()) + " |"
                  for label, st in ph["settings"].items()]
    guard = c.get("fidelity_guard")
    if guard is not None:
        lines += ["", f"Fidelity guard (bench and export refuse a GAN model more than {guard['margin_db']} dB below bicubic "
                      f"in any modality): {'refused: ' + '; '.join(guard['refused']) if guard['refused'] else 'passed'} on this split."]
    pc = c.get("perceptual")
    if pc:
        mods = sorted(next(iter(pc["rows"].values()))["per_modality"])
        lines += ["", f"## Perceptual distances on the `{pc['split']}` split ({', '.join(f'{m} {n}' for m, n in pc['images'].items())} images; lower is closer to the ground truth)", "",
                  "| model | FD-VGG16 | FRD | " + " | ".join(f"FD-VGG16 {m} | FRD {m}" for m in mods) + " |",
                  "|---|---|---|" + "---|---|" * len(mods)]
        for label, v in pc["rows"].items():
            lines.append(f"| {label} | {f(v['fd_vgg16'])} | {f(v['frd'])} | "
                         + " | ".join(f"{f(v['per_modality'][m]['fd_vgg16'])} | {f(v['per_modality'][m]['frd'])}" for m in mods) + " |")
    q = c.get("int8")
    if q:
        cal = q["calibration"]
        ranges = (f"the ranges of {q['learned_ranges']} activation tensors learned in the INT8-aware fine-tune, the others "
                  if q.get("learned_ranges") else "")
        local = (f"; at most 1 output pixel in 10,000 off FP32 by over {q['p99_99_abs_diff_vs_fp32']:.3f} of the range"
                 if q.get("p99_99_abs_diff_vs_fp32") is not None else "")
        lines += ["", f"INT8 artifact: static QDQ, per-channel weights, {cal['activation']} activations: {ranges}calibrated ({cal['method']}) on "
                      f"{cal['images']} val images (half of them contrast-inverted copies); kept in float: {', '.join(q['float_nodes'])}. "
                      f"Export check on {cal['check_images']} held-back val images: {q['psnr_int8_vs_fp32_db']:.1f} dB from FP32, "
                      f"{q['psnr_int8_vs_gt_db']:.3f} dB vs ground truth (FP32 {q['psnr_fp32_vs_gt_db']:.3f}){local}."]
        if q.get("reference_fp32"):
            lines[-1] += (f" The INT8 weights come from an INT8-aware fine-tune of this model ({q['fine_tune_iterations']} "
                          "iterations of `medsr-edge train student --int8-aware`, the convolutions that INT8 runs in "
                          f"8 bits trained on int8-rounded inputs and weights); those checks compare with the shipped FP32 "
                          f"model ({q['reference_fp32']}).")
    env = c.get("benchmark_environment") or {}
    lines += ["", f"Benchmark machine: {env.get('cpu')} ({env.get('threads')} threads), onnxruntime {env.get('onnxruntime')}.",
              "", "Written by `benchmarks/model_cards.py` from the run's own metadata and the `medsr-edge bench` JSON "
                  "(the README shows the commands).",
              "", "Intended use: research and engineering evaluation of super-resolution on edge devices. Not a medical device;",
              "not validated for diagnosis. Enhanced images are derived (DICOM ImageType DERIVED) and must not replace the originals."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", type=Path, required=True)
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR_OR_SAFETENSORS")
    ap.add_argument("--init-run", action="append", default=[], help="NAME=RUN_DIR the NAME run was initialised from")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--perceptual", type=Path, help="bench JSON with fd_vgg16/frd columns")
    ap.add_argument("--rescore", action="append", default=[], help="NAME: new results in NAME's existing card")
    ap.add_argument("--physics", action="append", default=[],
                    help="NAME=JSON: an acquisition family model's benchmarks/physics_eval.py result (its scores under "
                         "the family's physics and under bicubic, and whether enhance picks it by Modality)")
    args = ap.parse_args()
    bench = json.loads(args.bench.read_text())
    percep = json.loads(args.perceptual.read_text()) if args.perceptual else None
    inits = dict(spec.split("=", 1) for spec in args.init_run)
    physics = {name: json.loads(Path(f).read_text()) for name, f in (spec.split("=", 1) for spec in args.physics)}
    for spec in args.run:
        name, run = spec.split("=", 1)
        c = card(name, Path(run), bench, args.data, Path(inits[name]) if name in inits else None, percep)
        if name in physics:
            c.update(physics_section(physics[name], name))
        write(name, c)
    for name in args.rescore:
        old = json.loads((WEIGHTS / f"{name}.json").read_text())
        new = card(name, WEIGHTS / f"{name}.safetensors", bench, args.data)
        write(name, {**old, **{k: new[k] for k in ("results", "int8", "benchmark_environment")}})


def write(name: str, c: dict) -> None:
    (WEIGHTS / f"{name}.json").write_text(json.dumps(c, indent=2) + "\n")
    (WEIGHTS / f"{name}.md").write_text(markdown(c))
    print(f"wrote {WEIGHTS / name}.json/.md")


if __name__ == "__main__":
    main()
