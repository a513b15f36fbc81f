#!/usr/bin/env bash
# The GPU proof of BENCHMARKS.md, in one go on a 2-GPU machine (about 7 minutes):
#   1. synthetic shards (no download)            2. `single` on GPU 0: steady-state speed, memory,
#   3. validation cost: probe vs KV-cache decode     the full validation and its probe
#   4. `debug` under torchrun on both GPUs with a 100 s limit: scaling, and the limit trips
# Results go to $OUT (default /tmp/nanogpt-bench). Run from the repository or the environment.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nanogpt-bench}
DATA=${DATA:-/tmp/nanogpt-synthetic}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 WANDB_MODE=disabled
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step() { echo "== $1 ($(date -u +%T))"; }
step "synthetic shards"
$PY prepare_data.py --synthetic --data-dir "$DATA" --max-tokens 300000000 2>&1 | tail -2

step "single profile, GPU 0"
CUDA_VISIBLE_DEVICES=0 IDEAFORGE_METRICS="$OUT/single.jsonl" \
  $PY train.py --profile single --data-dir "$DATA" --max-steps ${SINGLE_STEPS:-30} --log-every 5 \
  > "$OUT/single.log" 2>&1
echo "exit $?"; grep -E "profile|val_loss|void|peak" "$OUT/single.log"

step "validation cost, GPU 0"
CUDA_VISIBLE_DEVICES=0 $PY bench/validation_cost.py --data-dir "$DATA" --kv-batches 2 \
  --out "$OUT/validation_cost.json" > "$OUT/validation_cost.log" 2>&1
echo "exit $?"

step "debug profile, 2 GPUs, time limit ${DEBUG_LIMIT:-100} s"
IDEAFORGE_METRICS="$OUT/debug.jsonl" NANOGPT_TIME_LIMIT_S=${DEBUG_LIMIT:-100} \
  $PY -m torch.distributed.run --standalone --nproc_per_node=2 train.py --profile debug \
  --data-dir "$DATA" --log-every 10 > "$OUT/debug.log" 2>&1
echo "exit $?"; grep -E "profile|time limit|val_loss|void|peak" "$OUT/debug.log"

step "summary"
$PY bench/summarize.py "$OUT"
