#!/usr/bin/env bash
# Reproduce the shipped models of one scale end to end: teacher (PSNR stage), distillation, export to
# ONNX FP32/FP16/INT8, benchmark on the test split, model cards, CI baseline, README figures (x4).
# Completed training runs are resumed/skipped; exports replace the shipped files.
# This is the chain of the teachers and of the first students (student-v1, still shipped at x2).
# The x4 default student now comes from the training campaign instead: benchmarks/campaign.sh
# (train on the ground truth, promote only when the test split improves), then steps 4-6 below.
# Knobs (env): SCALE (4 or 2), DATA, RUNS, WEIGHTS, DOCS, THREADS, TEACHER_CONFIG, TEACHER_ITERS,
# STUDENT_CONFIG, STUDENT_ITERS, STUDENT_LIMIT, FINETUNE_ITERS, FINETUNE_LIMIT, BENCH_BACKENDS.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-4}
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
WEIGHTS=${WEIGHTS:-medsr_edge/weights}
DOCS=${DOCS:-docs}
THREADS=${THREADS:-2}
TEACHER_CONFIG=${TEACHER_CONFIG:-esrgan-small}
TEACHER_ITERS=${TEACHER_ITERS:-2500}
STUDENT_CONFIG=${STUDENT_CONFIG:-student-v1}
STUDENT_ITERS=${STUDENT_ITERS:-5000}
STUDENT_LIMIT=${STUDENT_LIMIT:-400}  # images per modality whose teacher outputs are cached
if [ "${SCALE:-4}" = 4 ]; then FT_DEFAULT=8000; else FT_DEFAULT=0; fi
FINETUNE_ITERS=${FINETUNE_ITERS:-$FT_DEFAULT}  # second distillation stage from the first's weights (0: none)
FINETUNE_LIMIT=${FINETUNE_LIMIT:-1200}  # images per modality in that stage (1200: every training image)
BENCH_BACKENDS=${BENCH_BACKENDS:-onnxruntime tensorrt}  # add torch for the PyTorch rows (slow teacher on CPU)
PATCH=$((32 * SCALE))  # HR patch side: the LR patch is 32x32 at every scale
T=teacher-x$SCALE; S=student-x$SCALE
mkdir -p "$WEIGHTS" "$DOCS"
export MEDSR_EDGE_WEIGHTS="$WEIGHTS"

# 1. Teacher, PSNR-oriented stage (L1), EMA generator.
medsr-edge train teacher --config "$TEACHER_CONFIG" --stage psnr --data "$DATA" --out "$RUNS/$T-psnr" \
  --iters "$TEACHER_ITERS" --batch 16 --patch "$PATCH" --scale "$SCALE" --threads "$THREADS"
# 2. Distillation into the re-parameterizable student (teacher outputs cached once).
medsr-edge train student --teacher "$RUNS/$T-psnr" --cache-teacher --config "$STUDENT_CONFIG" --data "$DATA" --out "$RUNS/$S" \
  --iters "$STUDENT_ITERS" --batch 32 --patch "$PATCH" --scale "$SCALE" --lr 5e-4 --limit "$STUDENT_LIMIT" --threads "$THREADS"

SRUN="$RUNS/$S"; INIT=()
# 2b. Fine-tune: the same distillation from the first stage's weights, lower LR, every training image.
if [ "$FINETUNE_ITERS" -gt 0 ]; then
  medsr-edge train student --teacher "$RUNS/$T-psnr" --cache-teacher --init "$RUNS/$S" --data "$DATA" --out "$RUNS/$S-ft" \
    --iters "$FINETUNE_ITERS" --batch 32 --patch "$PATCH" --scale "$SCALE" --lr 2e-4 --limit "$FINETUNE_LIMIT" \
    --val-every 1000 --threads "$THREADS"
  SRUN="$RUNS/$S-ft"; INIT=(--init-run "$S=$RUNS/$S")
  cp "$SRUN/curves.png" "$DOCS/curves-$S-ft.png"; cp "$SRUN/log.csv" "$DOCS/log-$S-ft.csv"
fi

cp "$RUNS/$T-psnr/curves.png" "$DOCS/curves-$T-psnr.png"; cp "$RUNS/$T-psnr/log.csv" "$DOCS/log-$T-psnr.csv"
cp "$RUNS/$S/curves.png" "$DOCS/curves-$S.png"; cp "$RUNS/$S/log.csv" "$DOCS/log-$S.csv"

# 3. Export. Real images of the val split calibrate INT8 and check every export.
CAL=(--calib-data "$DATA" --calib-split val)
X=(--overwrite)
medsr-edge export --model "$RUNS/$T-psnr" --format pytorch --precision fp16 --name "$T" -o "$WEIGHTS/$T.safetensors" "${X[@]}"
medsr-edge export --model "$RUNS/$T-psnr" --format onnx --name "$T" -o "$WEIGHTS/$T.onnx" "${CAL[@]}" "${X[@]}"
# The student: every released format at once (`--format release`: safetensors, ONNX FP32, FP16, INT8,
# each verified, moved in together). INT8: the first three body convolutions stay in float too (they
# lower the 8-bit noise, which a narrow CT window such as brain W80 shows as grain), as does the
# tail's input (see float_nodes); min/max ranges (percentile ranges clip bright outliers: 0.18 max
# error against 0.06). An INT8 its gate refuses is left out and the rest released.
medsr-edge export --model "$SRUN" --format release --name "$S" -o "$WEIGHTS" "${CAL[@]}" "${X[@]}" \
  --calib-method minmax --int8-float-convs 3

# 4. Benchmark on the test split (README table, JSON, plot), then the model cards from it.
BK=(); for b in $BENCH_BACKENDS; do BK+=(--backends "$b"); done
B="$DOCS/bench-test-x$SCALE"
medsr-edge bench --data "$DATA" --split test --scale "$SCALE" "${BK[@]}" --threads "$THREADS" --json "$B.json" \
  --csv "$B.csv" --markdown "$B.md" --plot "$B.png"
python benchmarks/model_cards.py --bench "$B.json" --data "$DATA" --run "$T=$RUNS/$T-psnr" --run "$S=$SRUN" "${INIT[@]}"

# 5. CI baseline: the same gate CI runs (8 test images per modality at x4, 4 at x2 whose big radiographs
# make the teacher slow; one inference thread, so the gate compares CPU time; 3 interleaved rounds).
CI_LIMIT=$([ "$SCALE" = 2 ] && echo 4 || echo 8)
medsr-edge bench --data "$DATA" --split test --scale "$SCALE" --limit "$CI_LIMIT" --backends onnxruntime --threads 1 \
  --latency-rounds 3 --json "benchmarks/baseline-ci-x$SCALE.json"

# 6. README figures, from DICOM files that pydicom and pydicom-data ship (no ../shared image).
if [ "$SCALE" = 4 ]; then bash benchmarks/figures.sh; fi
