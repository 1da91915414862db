"""Write docs/results.md from the bench JSON files, so every number in it comes from a command.

    medsr-edge bench --data ../shared/data --split test --backends onnxruntime --backends tensorrt --threads 2 \
        --json docs/bench-test-x4.json --csv docs/bench-test-x4.csv --markdown docs/bench-test-x4.md --plot docs/bench-test-x4.png
    medsr-edge bench --data ../shared/data --split test --scale 2 ... --json docs/bench-test-x2.json ...
    medsr-edge bench --data ../shared/data --source SRC ... (the held-out sources of configs/heldout.toml) \
        --backends onnxruntime --threads 2 --latency-rounds 0 --by-source --json docs/bench-heldout-x4.json
    python benchmarks/results_doc.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MODALITIES = ("ct", "mri", "xray")


def load(name: str) -> dict | None:
    p = DOCS / name
    return json.loads(p.read_text()) if p.is_file() else None


def fp32(doc: dict, model: str) -> dict | None:
    return next((r for r in doc["rows"] if r["name"] == model and r["format"] == "onnx" and r["status"] == "ok"), None)


def gains(row: dict) -> str:
    pm = row["per_modality"]
    return " / ".join(f"{pm[m]['psnr_gain_vs_bicubic']:+.2f}" if pm.get(m, {}).get("psnr_gain_vs_bicubic") is not None
                      else "-" for m in MODALITIES)


def summary(doc: dict, models: list[str], default: str) -> list[str]:
    b = next(r for r in doc["rows"] if r["name"] == "bicubic")
    ref = fp32(doc, default) or {}

    def ratio(r: dict) -> str:
        a, d = r.get("latency_rounds_ms") or [], ref.get("latency_rounds_ms") or []
        return f"{statistics.median(x / y for x, y in zip(a, d)):.2f}" if a and d and len(a) == len(d) else "-"

    out = ["| model | params | GFLOPs/MP | PSNR dB | gain over bicubic | CT / MRI / X-ray gain | INT8 vs FP32 dB | FP32 ms p50 | x default |",
           "|---|---|---|---|---|---|---|---|---|",
           f"| bicubic | 0 | - | {b['psnr']:.2f} | - | - | - | {b['latency_ms_p50']:.1f} | {ratio(b)} |"]
    for m in models:
        f = fp32(doc, m)
        if f is None:
            continue
        i8 = next((r for r in doc["rows"] if r["name"] == m and r["format"] == "onnx-int8" and r["status"] == "ok"), None)
        int8 = f"{i8['psnr'] - f['psnr']:+.2f}" if i8 else "-"
        out.append(f"| `{m}`{' (default)' if m == default else ''} | {f['params']:,} | {f['gflops_per_mpx']:.1f} | "
                   f"{f['psnr']:.2f} | {f['psnr_gain_vs_bicubic']:+.2f} | {gains(f)} | {int8} | {f['latency_ms_p50']:.1f} | {ratio(f)} |")
    return out


def images(doc: dict) -> str:
    return ", ".join(f"{m.upper() if m != 'xray' else 'X-ray'} {n}" for m, n in doc["images"].items())


def heldout(doc: dict, test: dict, models: list[str]) -> list[str]:
    out = ["| model | held-out gain | CT / MRI / X-ray held-out | test gain | gap (test - held-out) |",
           "|---|---|---|---|---|"]
    for m in models:
        h, t = fp32(doc, m), fp32(test, m)
        if h is None or t is None:
            continue
        out.append(f"| `{m}` | {h['psnr_gain_vs_bicubic']:+.2f} | {gains(h)} | {t['psnr_gain_vs_bicubic']:+.2f} | "
                   f"{t['psnr_gain_vs_bicubic'] - h['psnr_gain_vs_bicubic']:.2f} |")
    sources = sorted({s for r in doc["rows"] for s in r.get("per_source", {})})
    out += ["", "Per held-out source (gain over bicubic, dB):", "",
            "| model | " + " | ".join(f"`{s}`" for s in sources) + " |", "|---|" + "---|" * len(sources)]
    for m in models:
        h = fp32(doc, m)
        if h is not None:
            ps = h.get("per_source", {})
            out.append(f"| `{m}` | " + " | ".join(f"{ps[s]['psnr_gain_vs_bicubic']:+.2f}" if s in ps else "-"
                                                 for s in sources) + " |")
    return out


def provenance(models: list[str]) -> list[str]:
    out = []
    for m in models:
        card = ROOT / "medsr_edge" / "weights" / f"{m}.json"
        if not card.is_file():
            continue
        doc = json.loads(card.read_text())
        t, init = doc["training"], doc.get("initialised_from") or {}
        loss = " + ".join(k for k, v in (t.get("losses") or {}).items()
                          if isinstance(v, (int, float)) and v and not k.endswith("teacher"))
        n = init.get("iterations")
        body = (t.get("body_from") or {}).get("from")
        wide = (t.get("widen_from") or {}).get("from")
        start = ((f"`{init['run']}`" + (f" ({n:,})" if n else "")) if init.get("run") else f"`{t['init']}`" if t.get("init")
                 else f"the body of `{body}`" if body else f"`{wide}` widened" if wide else "scratch")
        wall = f"{t['wall_time_s'] / 60:.0f} min" if t.get("wall_time_s") else "-"
        out.append(f"| `{m}` | {t.get('kind', '')}{' ' + t['stage'] if t.get('stage') else ''} | {t.get('iterations') or 0:,} | "
                   f"{wall} | {loss or '-'} | {t.get('batch')} x {t.get('patch')} | {t.get('lr') or '-'} | {start} |")
    return out


def main() -> None:
    x4, x2, held = load("bench-test-x4.json"), load("bench-test-x2.json"), load("bench-heldout-x4.json")
    m4 = ["teacher-x4", "student-x4", "student-fast-x4", "student-quality-x4", "student-x4-gan"]
    m2 = ["teacher-x2", "student-x2", "student-fast-x2"]
    env = x4["environment"]
    lines = ["# Results", "",
             "Written by `python benchmarks/results_doc.py` from the bench JSON files named below; each was made by the "
             "command in that script's docstring. PSNR on the per-image normalised [0, 1] image (data range 1), SSIM with "
             "an 11x11 Gaussian window (sigma 1.5), border crop = scale. Each ground truth's LR input is the antialiased "
             "bicubic downscale rounded to its source's value grid (a real LR image is stored, never floats). "
             "\"PSNR\" and \"gain\" are the mean over modalities of each modality's mean. Latency: median per image, "
             "whole image through the 256-pixel tiler, ONNX Runtime, one timed pass after a warm-up; the CI gate "
             "uses the interleaved rounds in the JSON instead, because this shared machine's speed moves between runs.",
             "", f"Machine: {env.get('cpu', '?')} ({', '.join(env.get('cpu_flags') or []) or 'no SIMD flags read'}), "
             f"{env.get('threads', '?')} threads, onnxruntime {env.get('onnxruntime', '?')}. TensorRT rows are skipped "
             "here (no GPU). The lent machine changes between sessions (with and without AVX-512) and is shared, so "
             "compare latencies only within one bench, as ratios: *x default* is the median over the interleaved "
             "rounds of the per-round ratio to the default model.", "",
             "## x4, test split (the training collections)", "",
             f"`docs/bench-test-x4.json`: {sum(x4['images'].values())} images ({images(x4)}).", "",
             *summary(x4, m4, "student-x4"), "",
             "Every row and format (FP16, INT8, TensorRT): [bench-test-x4.md](bench-test-x4.md); PSNR against "
             "latency: [bench-test-x4.png](bench-test-x4.png).", ""]
    if held:
        lines += ["## x4, sources never seen in training", "",
                  f"`docs/bench-heldout-x4.json`: every image of the sources that the leave-source-out protocol "
                  f"holds out ({images(held)}; no shipped model saw them). This is the score that decides "
                  "promotions ([heldout.md](heldout.md), `benchmarks/promote.py`); the test split is a "
                  "no-regression check.", "", *heldout(held, x4, m4[1:] + m4[:1]), ""]
    promos = [json.loads(p.read_text()) for p in sorted((DOCS / "promotions").glob("*.json"))]
    if promos:
        lines += ["## Promotions: sources never seen decide", "",
                  "`python benchmarks/promote.py RUN NAME` benches a candidate and the shipped model alike on every "
                  "image of the held-out sources of `configs/heldout.toml` (neither trained on them) and on the test "
                  "split; the candidate ships only with a held-out gain and no test regression "
                  "([promotions/](promotions/)). Gains over bicubic, dB, FP32; gap = test - held-out.", "",
                  "| model | candidate | held-out: candidate / shipped | CT / MRI / X-ray held-out (candidate) | "
                  "test: candidate / shipped | gap: candidate / shipped | INT8 held-out | promoted |",
                  "|---|---|---|---|---|---|---|---|"]
        for d in promos:
            c = d["candidate"]
            sh = d.get("shipped") or {"held_out": {"gain": float("nan")}, "test": {"gain": float("nan")},
                                      "gap_db": float("nan")}
            pm = c["held_out"]["per_modality"]
            lines.append(f"| `{d['name']}` | `{d['run']}` | {c['held_out']['gain']:+.3f} / {sh['held_out']['gain']:+.3f} | "
                         + " / ".join(f"{pm[m]:+.2f}" if m in pm else "-" for m in MODALITIES)
                         + f" | {c['test']['gain']:+.3f} / {sh['test']['gain']:+.3f} | {c['gap_db']:.2f} / {sh['gap_db']:.2f} | "
                         f"{c.get('held_out_int8_gain', float('nan')):+.3f} | {'yes' if d['promoted'] else 'no'} ({d['why']}) |")
        lines.append("")
    lat = load("student-latency-x4.json")
    if lat:
        lines += ["## Architecture latency", "",
                  f"`python benchmarks/student_latency.py --threads {lat['threads']} --repeats {lat['repeats']} --json "
                  "docs/student-latency-x4.json`: one network call, ONNX Runtime, median of the repeats, ratio to the "
                  "first student (`student-v1`) in the same run. The default is RepPFANet 32 x 4 (re-parameterised 3x3 "
                  "convolutions, SPAN's parameter-free attention, a 1x1 fusion, a nearest-neighbour anchor).", "",
                  "| config | params | GFLOPs/MP | ms 128 -> 512 | x student-v1 | ms 512 -> 2048 | x student-v1 |",
                  "|---|---|---|---|---|---|---|"]
        for r in lat["rows"]:
            lines.append(f"| {r['config']} | {r['params']:,} | {r['gflops_per_output_mpx']} | {r['ms']['128x128']} | "
                         f"{r['ratio_to_student_v1']['128x128']} | {r['ms']['512x512']} | {r['ratio_to_student_v1']['512x512']} |")
        lines.append("")
    lines += ["## x2, test split", "", f"`docs/bench-test-x2.json`: {sum(x2['images'].values())} images ({images(x2)}).", "",
              *summary(x2, m2, "student-x2"), "", "Every row and format: [bench-test-x2.md](bench-test-x2.md).", "",
              "## Where the models come from", "",
              "From each model's card (`medsr_edge/weights/NAME.json`, also as `NAME.md`); the recipes are in "
              "[training.md](training.md), and [../CHANGELOG.md](../CHANGELOG.md) says when each was promoted and what "
              "it replaced. *Started from*: the run whose weights began this one (a fine-tune, `--init`) and that "
              "run's own iterations.", "",
              "| model | kind | iterations | wall time (1 CPU thread) | loss | batch x patch | peak LR | started from |",
              "|---|---|---|---|---|---|---|---|",
              *provenance(m4[1:] + m2[1:] + ["teacher-x4", "teacher-x2"]), ""]
    (DOCS / "results.md").write_text("\n".join(lines))
    print(f"wrote {DOCS / 'results.md'}")


if __name__ == "__main__":
    main()
