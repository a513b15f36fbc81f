#!/usr/bin/env bash
# Every catalog idea (and two cheats) on real GPUs: compiled, trained a few steps of 32x1024
# micro-batches, validated with the probe on 8 batches. Shows the ideas run under torch.compile
# and CUDA, what each costs in throughput, and that the probe catches leaks in bf16.
#   VARIANTS=<dir with <name>/train.py> DATA=<shards> OUT=<results> bash bench/catalog_check.sh
# Variants run one per GPU, two GPUs at a time (set GPUS for another count); each run is cut
# off after PER_RUN_S seconds (default 150) so that one hang cannot eat the whole lease.
# FIRST_GPU (default 0) shifts the GPUs used, to share a machine with another job.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nanogpt-catalog}; DATA=${DATA:-/tmp/nanogpt-synthetic}; PY=${PY:-python3}
GPUS=${GPUS:-2}; FIRST_GPU=${FIRST_GPU:-0}; PROFILE=${PROFILE:-single}  # PROFILE=smoke checks this script on a CPU
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 WANDB_MODE=disabled
# The real main(), with the validation budget cut to 8 batches in this process only.
SHORT_VAL="import sys, train as t; p = '$PROFILE'
t.VAL_TOKENS[p] = 8 * t.VAL_BATCH_ROWS[p] * t.VAL_SEQ_LEN[p]; sys.exit(t.main(sys.argv[1:]))"
check() {  # name gpu
  local dir="$VARIANTS/$1"
  (cd "$dir" && CUDA_VISIBLE_DEVICES=$2 IDEAFORGE_METRICS="$OUT/$1.jsonl" \
    timeout -k 10 "${PER_RUN_S:-150}" $PY -c "$SHORT_VAL" \
    --profile $PROFILE --data-dir "$DATA" --max-steps 9 --log-every 3 > "$OUT/$1.log" 2>&1)
  echo "$1 exit $? $(grep -o '"name": "\(val_loss\|void\)".*' "$OUT/$1.log" | cut -c1-150)"
}
names=($(ls "$VARIANTS"))
for ((i = 0; i < ${#names[@]}; i += GPUS)); do
  for ((g = 0; g < GPUS && i + g < ${#names[@]}; g++)); do check "${names[i+g]}" $((FIRST_GPU + g)) & done
  wait
done | tee "$OUT/catalog_check.txt"
