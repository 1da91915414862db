#!/usr/bin/env bash
# One GPU loan -> an esrgan-full teacher (PSNR then GAN stage), a student distilled from it, ONNX
# FP32/FP16/INT8 exports, TensorRT FP16/INT8 engines and their bench, all under $OUTDIR.
#
#   bash benchmarks/gpu_session.sh            # on a CUDA machine; call it again until it says "all done"
#   bash benchmarks/gpu_session.sh --smoke    # the same chain on CPU in a minute or two (tiny iterations)
#
# Each call works for at most CHUNK_MIN minutes (default 8, so it fits a 10-minute command) and exits
# 0 when every step is done, or 75 when work remains: training steps stop with a checkpoint
# (--max-minutes) and resume on the next call; finished steps are skipped (OUTDIR/done/STEP).
# Data: MEDSR_DATA, a data folder or a pack from `medsr-edge pack-data` (default ../shared/data).
# TensorRT steps are skipped, with the reason written to OUTDIR/done/STEP, where TensorRT or a GPU
# is missing. Knobs (env): OUTDIR, CHUNK_MIN, SCALE, TEACHER_CONFIG, TEACHER_ITERS, GAN_ITERS,
# STUDENT_CONFIG, STUDENT_ITERS, BATCH, PATCH, WORKERS, BENCH_SPLIT, BENCH_LIMIT.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; fi
DATA=${MEDSR_DATA:-../shared/data}
OUTDIR=${OUTDIR:-gpu-session}
SCALE=${SCALE:-4}
if [ "$SMOKE" = 1 ]; then
  CHUNK_MIN=${CHUNK_MIN:-30}; TEACHER_CONFIG=${TEACHER_CONFIG:-esrgan-tiny}; TEACHER_ITERS=${TEACHER_ITERS:-4}
  GAN_ITERS=${GAN_ITERS:-4}; STUDENT_CONFIG=${STUDENT_CONFIG:-student-fast}; STUDENT_ITERS=${STUDENT_ITERS:-4}
  BATCH=${BATCH:-2}; PATCH=${PATCH:-32}; WORKERS=${WORKERS:-0}; DISC=discriminator-small; VAL_EVERY=2
  SPEED=(--threads 2); BENCH_LIMIT=${BENCH_LIMIT:-2}
else
  CHUNK_MIN=${CHUNK_MIN:-8}; TEACHER_CONFIG=${TEACHER_CONFIG:-esrgan-full}; TEACHER_ITERS=${TEACHER_ITERS:-20000}
  GAN_ITERS=${GAN_ITERS:-5000}; STUDENT_CONFIG=${STUDENT_CONFIG:-student}; STUDENT_ITERS=${STUDENT_ITERS:-30000}
  BATCH=${BATCH:-16}; PATCH=${PATCH:-$((48 * SCALE))}; WORKERS=${WORKERS:-8}; DISC=discriminator; VAL_EVERY=1000
  SPEED=(--workers "$WORKERS" --channels-last); BENCH_LIMIT=${BENCH_LIMIT:-}
fi
T=teacher-x$SCALE; S=student-x$SCALE; W="$OUTDIR/weights"
mkdir -p "$OUTDIR/done" "$W"
DEADLINE=$(( $(date +%s) + CHUNK_MIN * 60 ))
DATA_DIR=$(python -c "from medsr_edge.distill.pack import resolve_data; print(resolve_data('$DATA'))")
BENCH_SPLIT=${BENCH_SPLIT:-$( [ -n "$(find "$DATA_DIR" -path '*/test/*' -type f -print -quit)" ] && echo test || echo val )}
export MEDSR_EDGE_WEIGHTS="$W"
python - <<EOF > "$OUTDIR/environment.json"
import json, platform, torch
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__,
                  "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                  "data": "$DATA", "smoke": bool($SMOKE)}))
EOF

minutes_left() { echo $(( (DEADLINE - $(date +%s)) / 60 )); }
more_to_do() { echo "gpu_session: chunk of $CHUNK_MIN min used; run the same command again to continue"; exit 75; }
done_step() { [ -f "$OUTDIR/done/$1" ]; }
mark() { echo "${2:-done}" > "$OUTDIR/done/$1"; }
iterations() {  # iterations recorded in a run's model file (0 if none yet)
  python -c "
import json, sys
from safetensors import safe_open
try:
    with safe_open('$1/model.safetensors', 'pt') as f: print(json.loads(f.metadata()['meta'])['iterations'])
except Exception: print(0)"
}
train() {  # train STEP RUN ITERS -- medsr-edge args...: resumable, stops at the chunk's deadline
  local step=$1 run=$2 iters=$3; shift 4
  done_step "$step" && return 0
  local left; left=$(minutes_left)
  if [ "$left" -lt 1 ]; then more_to_do; fi
  medsr-edge "$@" --out "$run" --iters "$iters" --max-minutes "$left" "${SPEED[@]}"
  if [ "$(iterations "$run")" -ge "$iters" ]; then mark "$step"; else more_to_do; fi
}
quick() {  # quick STEP MINUTES -- command...: a short step, started only with MINUTES left in the chunk
  local step=$1 need=$2; shift 3
  done_step "$step" && return 0
  if [ "$(minutes_left)" -lt "$need" ]; then more_to_do; fi
  "$@"
  mark "$step"
}
have_tensorrt() { python -c "from medsr_edge.runtime.tensorrt_backend import import_tensorrt; import_tensorrt()" 2>&1; }

# 1-3. Teacher PSNR stage, GAN stage, distillation from the new teacher (all resumable).
train teacher-psnr "$OUTDIR/$T-psnr" "$TEACHER_ITERS" -- train teacher --config "$TEACHER_CONFIG" --stage psnr \
  --data "$DATA" --batch "$BATCH" --patch "$PATCH" --scale "$SCALE" --val-every "$VAL_EVERY"
train teacher-gan "$OUTDIR/$T-gan" "$GAN_ITERS" -- train teacher --stage gan --init "$OUTDIR/$T-psnr" --disc "$DISC" \
  --data "$DATA" --batch "$BATCH" --patch "$PATCH" --scale "$SCALE" --lr 1e-4 --disc-lr 4e-4 \
  --pixel-weight 1 --perceptual-weight 0.02 --gan-weight 0.1 --val-every "$VAL_EVERY"
train distill "$OUTDIR/$S" "$STUDENT_ITERS" -- train student --teacher "$OUTDIR/$T-psnr" --config "$STUDENT_CONFIG" \
  --data "$DATA" --batch "$BATCH" --patch "$PATCH" --scale "$SCALE" --lr 5e-4 --val-every "$VAL_EVERY"

# 4. Exports, checked against PyTorch and (INT8) against ground truth on the val split; the student's
#    as one release (safetensors, ONNX FP32, FP16, INT8: `export --format release`).
CAL=(--calib-data "$DATA_DIR" --calib-split val --overwrite)
quick export 5 -- bash -c "
  medsr-edge export --model '$OUTDIR/$T-psnr' --format onnx --name $T -o '$W/$T.onnx' ${CAL[*]} &&
  { medsr-edge export --model '$OUTDIR/$T-gan' --format onnx --name $T-gan -o '$W/$T-gan.onnx' ${CAL[*]} \
      2> '$OUTDIR/export-$T-gan.err' || echo 'gpu_session: GAN teacher not exported (see export-$T-gan.err)'; } &&
  medsr-edge export --model '$OUTDIR/$S' --format release --name $S -o '$W' ${CAL[*]} \
    --calib-method minmax --int8-float-convs 3 --max-gt-drop 0.3"

# 5. TensorRT engines (strongly typed, from the FP16 and symmetric-QDQ ONNX).
if reason=$(have_tensorrt); then
  Q=("${CAL[@]}" --calib-method minmax --int8-float-convs 3 --max-gt-drop 0.3)
  quick engine-teacher-fp16 4 -- medsr-edge export --model "$OUTDIR/$T-psnr" --format engine-fp16 --name "$T" \
    -o "$W/$T-fp16.engine" --overwrite
  quick engine-student-fp16 4 -- medsr-edge export --model "$OUTDIR/$S" --format engine-fp16 --name "$S" \
    -o "$W/$S-fp16.engine" --overwrite
  quick engine-student-int8 4 -- medsr-edge export --model "$OUTDIR/$S" --format engine-int8 --name "$S" \
    -o "$W/$S-int8.engine" "${Q[@]}"
else
  done_step engines || mark engines "skipped: ${reason##*: }"
  echo "gpu_session: TensorRT steps skipped: ${reason##*: }"
fi

# 6. Bench: every artifact against bicubic and the teacher, CUDA where the providers have it.
LIMIT=(); [ -n "$BENCH_LIMIT" ] && LIMIT=(--limit "$BENCH_LIMIT")
quick bench 6 -- medsr-edge bench --data "$DATA_DIR" --split "$BENCH_SPLIT" --scale "$SCALE" "${LIMIT[@]}" \
  --models "$T" --models "$S" --backends onnxruntime --backends tensorrt --json "$OUTDIR/bench-$BENCH_SPLIT-x$SCALE.json" \
  --markdown "$OUTDIR/bench-$BENCH_SPLIT-x$SCALE.md"

# 7. Model cards from the runs' metadata and the bench (nothing typed by hand).
quick cards 2 -- python benchmarks/model_cards.py --bench "$OUTDIR/bench-$BENCH_SPLIT-x$SCALE.json" --data "$DATA_DIR" \
  --run "$T=$OUTDIR/$T-psnr" --run "$S=$OUTDIR/$S"
for run in "$T-psnr" "$T-gan" "$S"; do cp "$OUTDIR/$run/log.csv" "$OUTDIR/log-$run.csv"; done
echo "gpu_session: all done; results in $OUTDIR (bench-$BENCH_SPLIT-x$SCALE.json, weights/, log-*.csv)"
