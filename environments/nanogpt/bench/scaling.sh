#!/usr/bin/env bash
# Scaling of the `full` profile, launched as a search launches it (torchrun, one process per
# GPU, 262,144 tokens per optimizer step at any world size), with a shortened time limit so that
# several GPU counts fit one device call. Writes full_<N>gpu.{jsonl,log} and wall_<N>gpu.txt to
# $OUT, then bench/summarize.py's scaling table.
#   RUNS="1:100 2:100 4:200" OUT=... DATA=... bash bench/scaling.sh     (GPUs:limit-seconds)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/nanogpt-scaling}; DATA=${DATA:-/tmp/nanogpt-synthetic}; PY=${PY:-python3}
RUNS=${RUNS:-"1:100 2:100 4:200"}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 \
  NVSHMEM_DISABLE_NVLS=1 WANDB_MODE=disabled
if [ ! -e "$DATA/SYNTHETIC" ]; then
  $PY prepare_data.py --synthetic --data-dir "$DATA" --max-tokens ${TOKENS:-200000000} | tail -1
fi
for run in $RUNS; do
  n=${run%%:*} limit=${run##*:}
  echo "== full on $n GPU(s), time limit $limit s ($(date -u +%T))"
  start=$(date +%s.%N)
  IDEAFORGE_METRICS="$OUT/full_${n}gpu.jsonl" NANOGPT_TIME_LIMIT_S=$limit \
    timeout -k 10 $((limit + 150)) $PY -m torch.distributed.run --standalone --nproc_per_node=$n \
    train.py --profile full --data-dir "$DATA" --log-every 10 > "$OUT/full_${n}gpu.log" 2>&1
  code=$?
  echo "$(date +%s.%N) $start $code" | awk '{printf "wall_s %.1f exit %d\n", $1 - $2, $3}' \
    | tee "$OUT/wall_${n}gpu.txt"
  grep -E "^profile|time limit|val_loss|void" "$OUT/full_${n}gpu.log" | cut -c1-240
done
$PY bench/summarize.py "$OUT"
