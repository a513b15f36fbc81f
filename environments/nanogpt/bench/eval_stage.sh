#!/usr/bin/env bash
# The evaluation stage on a GPU, timed apart from training (about 4 minutes on one H100/H200):
#   1. synthetic shards (no download)
#   2. `single` on GPU 0 with a short NANOGPT_TIME_LIMIT_S (LIMIT, default 60 s): writes the
#      checkpoint into $OUT/artifacts, as under ideaforge
#   3. evaluate.py from a fresh folder on that checkpoint at the full validation budget
#      (10,485,760 tokens, 320 batches with the probe), twice (cold, then warm caches): wall
#      seconds of the evaluator process, its own val_time_s, and its exit code
# Results go to $OUT (default /tmp/nanogpt-eval): env.txt, train.log/.jsonl, eval_N.log/.jsonl,
# summary.txt. Run from the repository or the environment: bash bench/eval_stage.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nanogpt-eval}; DATA=${DATA:-/tmp/nanogpt-synthetic}; PY=${PY:-python3}
LIMIT=${LIMIT:-60}; GPU=${GPU:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 WANDB_MODE=disabled
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
now() { date +%s.%N; }
step() { echo "== $1 ($(date -u +%T))"; }

step "synthetic shards"
[ -f "$DATA/fineweb_val_000000.bin" ] ||
  $PY prepare_data.py --synthetic --data-dir "$DATA" --max-tokens 60000000 2>&1 | tail -2

step "training: single, GPU $GPU, time limit $LIMIT s"
rm -rf "$OUT/artifacts"
t0=$(now)
CUDA_VISIBLE_DEVICES=$GPU IDEAFORGE_ARTIFACTS="$OUT/artifacts" IDEAFORGE_METRICS="$OUT/train.jsonl" \
  NANOGPT_TIME_LIMIT_S=$LIMIT $PY train.py --profile single --data-dir "$DATA" --log-every 10 \
  > "$OUT/train.log" 2>&1
code=$?; train_s=$(awk "BEGIN {printf \"%.2f\", $(now) - $t0}")
echo "exit $code, $train_s s"; grep -E "profile|time limit|checkpoint" "$OUT/train.log"
ls -la "$OUT/artifacts"

for run in 1 2; do
  step "evaluation $run: evaluate.py from a fresh folder, full validation budget"
  dir=$(mktemp -d); cp evaluate.py "$dir/"
  t0=$(now)
  (cd "$dir" && CUDA_VISIBLE_DEVICES=$GPU IDEAFORGE_ARTIFACTS="$OUT/artifacts" \
    IDEAFORGE_METRICS="$OUT/eval_$run.jsonl" IDEAFORGE_PROFILE=single \
    IDEAFORGE_TRAIN_SECONDS=$train_s NANOGPT_DATA_DIR="$DATA" $PY evaluate.py) \
    > "$OUT/eval_$run.log" 2>&1
  code=$?; wall=$(awk "BEGIN {printf \"%.2f\", $(now) - $t0}")
  echo "evaluation $run: exit $code, wall $wall s" | tee -a "$OUT/summary.txt"
  cat "$OUT/eval_$run.jsonl" | tee -a "$OUT/summary.txt"
  tail -3 "$OUT/eval_$run.log"
  rm -rf "$dir"
done
