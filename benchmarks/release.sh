#!/usr/bin/env bash
# Reproduce the shipped x4 models end to end: teacher (PSNR stage), distillation, export to
# ONNX FP32/FP16/INT8, benchmark on the test split, model cards, README figures, CI baseline.
# Completed runs are resumed/skipped. Knobs (env): DATA, RUNS, WEIGHTS, DOCS, THREADS,
# TEACHER_CONFIG, TEACHER_ITERS, STUDENT_CONFIG, STUDENT_ITERS.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs}
WEIGHTS=${WEIGHTS:-medsr_edge/weights}
DOCS=${DOCS:-docs}
THREADS=${THREADS:-2}
TEACHER_CONFIG=${TEACHER_CONFIG:-esrgan-small}
TEACHER_ITERS=${TEACHER_ITERS:-2500}
STUDENT_CONFIG=${STUDENT_CONFIG:-student}
STUDENT_ITERS=${STUDENT_ITERS:-5000}
STUDENT_LIMIT=${STUDENT_LIMIT:-400}  # images per modality whose teacher outputs are cached
BENCH_BACKENDS=${BENCH_BACKENDS:-onnxruntime tensorrt}  # add torch for the PyTorch rows (slow teacher on CPU)
mkdir -p "$WEIGHTS" "$DOCS"
export MEDSR_EDGE_WEIGHTS="$WEIGHTS"

# 1. Teacher, PSNR-oriented stage (L1), EMA generator.
medsr-edge train teacher --config "$TEACHER_CONFIG" --stage psnr --data "$DATA" --out "$RUNS/teacher-x4-psnr" \
  --iters "$TEACHER_ITERS" --batch 16 --patch 128 --scale 4 --threads "$THREADS"
# 2. Distillation into the re-parameterizable student (teacher outputs cached once).
medsr-edge distill --teacher "$RUNS/teacher-x4-psnr" --config "$STUDENT_CONFIG" --data "$DATA" --out "$RUNS/student-x4" \
  --iters "$STUDENT_ITERS" --batch 32 --patch 128 --scale 4 --lr 5e-4 --limit "$STUDENT_LIMIT" --threads "$THREADS"

# 3. Export. Real images of the val split calibrate INT8 and check every export.
CAL=(--calib-data "$DATA" --calib-split val)
medsr-edge export --model "$RUNS/teacher-x4-psnr" --format pytorch --precision fp16 --name teacher-x4 -o "$WEIGHTS/teacher-x4.safetensors"
medsr-edge export --model "$RUNS/teacher-x4-psnr" --format onnx --name teacher-x4 -o "$WEIGHTS/teacher-x4.onnx" "${CAL[@]}"
medsr-edge export --model "$RUNS/student-x4" --format pytorch --name student-x4 -o "$WEIGHTS/student-x4.safetensors"
medsr-edge export --model "$RUNS/student-x4" --format onnx --name student-x4 -o "$WEIGHTS/student-x4.onnx" "${CAL[@]}"
medsr-edge export --model "$RUNS/student-x4" --format onnx-fp16 --name student-x4 -o "$WEIGHTS/student-x4-fp16.onnx"
medsr-edge export --model "$RUNS/student-x4" --format onnx-int8 --name student-x4 -o "$WEIGHTS/student-x4-int8.onnx" "${CAL[@]}"

# 4. Benchmark on the test split (README table, JSON, plot), then the model cards from it.
BK=(); for b in $BENCH_BACKENDS; do BK+=(--backends "$b"); done
medsr-edge bench --data "$DATA" --split test "${BK[@]}" --threads "$THREADS" --json "$DOCS/bench-test.json" \
  --csv "$DOCS/bench-test.csv" --markdown "$DOCS/bench-test.md" --plot "$DOCS/bench-test.png"
python benchmarks/model_cards.py --bench "$DOCS/bench-test.json" --data "$DATA" \
  --run "teacher-x4=$RUNS/teacher-x4-psnr" --run "student-x4=$RUNS/student-x4"

# 5. CI baseline: the same gate CI runs (8 test images per modality).
medsr-edge bench --data "$DATA" --split test --limit 8 --backends onnxruntime --threads "$THREADS" --json benchmarks/baseline-ci.json

# 6. README figures, from DICOM files that pydicom and pydicom-data ship (no ../shared image).
bash benchmarks/figures.sh
