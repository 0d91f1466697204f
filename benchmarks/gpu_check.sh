#!/usr/bin/env bash
# A short check of the professional settings on a CUDA machine, as one script:
#   1. training throughput (images/s) of ResNet-50 and ResNet-18 at 416 px, batch 8 and 32, with AMP;
#   2. `python -m scripts.validate_phase1` (the professional profile) under a training time budget,
#      killed with SIGKILL (the whole process group) after its first epoch, then run again: it must
#      resume, not start over, and finish the evaluation;
#   3. benchmarks/detector_goals.py on the model it trained (real shapes and strokes, synthetic val).
#
#   bash benchmarks/gpu_check.sh OUT_DIR REAL_DIR [TRAIN_MINUTES] [extra pipeline flags...]
#
# It writes logs, the stage records and the metrics to OUT_DIR; the pipeline's work folder is $WORK
# (default /tmp/bongard_gpu_check, emptied first). With PYTHON unset it uses python3.
set -u
OUT=${1:?usage: gpu_check.sh OUT_DIR REAL_DIR [TRAIN_MINUTES] [flags...]}
REAL=${2:?usage: gpu_check.sh OUT_DIR REAL_DIR [TRAIN_MINUTES] [flags...]}
MINUTES=${3:-3}
shift 3 2>/dev/null || shift $#
PY=${PYTHON:-python3}
SPEED_CONFIGS=${SPEED_CONFIGS:-resnet50:416:8,resnet50:416:32,resnet18:416:8,resnet18:416:32}
WORK=${WORK:-/tmp/bongard_gpu_check}
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
say() { echo "== $(date +%H:%M:%S) $*"; }

say "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"

say "1. data for the speed check (2,000 images at 416 px)"
$PY -m bongard_system1 generate --out "$WORK/speed_data" --num-images 2000 --image-size 416 --seed 1 --no-progress \
    || echo "generate failed"
say "1. training throughput"
timeout 240 $PY benchmarks/train_speed.py --data "$WORK/speed_data" --configs "$SPEED_CONFIGS" --steps 30 --warmup 8 \
    --out "$OUT/train_speed.json" || echo "train_speed failed or timed out (rc $?)"
rm -rf "$WORK/speed_data"

say "2. validate_phase1, professional profile, ${MINUTES} min of training: first run, to be killed"
setsid $PY -m scripts.validate_phase1 --workdir "$WORK" --real-data "$REAL" --time-budget "$MINUTES" --no-progress "$@" \
    > "$OUT/run1.log" 2>&1 &
PID=$!
while kill -0 "$PID" 2>/dev/null && ! grep -q "^epoch 1/" "$OUT/run1.log"; do sleep 1; done
if kill -0 "$PID" 2>/dev/null; then
    kill -9 -- "-$PID"
    say "killed the run (SIGKILL to its process group) after: $(grep '^epoch 1/' "$OUT/run1.log")"
else
    say "first run ended before it could be killed"
fi
wait "$PID" 2>/dev/null
tail -n 5 "$OUT/run1.log"
say "2. status after the kill"
$PY train_system1_checkpointed.py --status --workdir "$WORK"
say "2. the same command again"
timeout 420 $PY -m scripts.validate_phase1 --workdir "$WORK" --real-data "$REAL" --time-budget "$MINUTES" --no-progress "$@" \
    > "$OUT/run2.log" 2>&1
echo "validate_phase1 exit status $?"
grep -E "resuming|^epoch|Phase 1|target|AP" "$OUT/run2.log" | head -40
$PY train_system1_checkpointed.py --status --workdir "$WORK"

say "3. detector goals on the trained model"
RUN=$(ls -d "$WORK"/runs/* 2>/dev/null | head -n 1)
DATA=$(ls -d "$WORK"/processed_data/*_synthetic 2>/dev/null | head -n 1)
if [ -n "$RUN" ] && [ -n "$DATA" ]; then
    timeout 240 $PY benchmarks/detector_goals.py --run "$RUN" --data "$DATA" --real "$REAL" --device "${GOALS_DEVICE:-cuda}" \
        --out "$OUT/detector_goals.json" || echo "detector_goals exit status $?"
fi
cp "$WORK"/checkpoints/training.json "$WORK"/checkpoints/evaluation.json "$OUT"/ 2>/dev/null
cp "$RUN"/metrics.csv "$OUT"/ 2>/dev/null
say "done"
