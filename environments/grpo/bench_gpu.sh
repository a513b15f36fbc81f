#!/usr/bin/env bash
# GPU timing check with no download: GRPO steps of a randomly initialised Qwen2-0.5B-shaped model
# (byte-level tokenizer, transformers backend) on real MATH prompts.
#   bash bench_gpu.sh TRAIN_JSONL TEST_JSONL OUT_DIR [--set KEY=VALUE ...]
# (PYTHON=... picks the interpreter; RUN_TIMEOUT_S, default 330, bounds each run; the --set
# overrides go to both runs, e.g. --set n_steps=1 for one step and its evaluation.)
# GPU 0 runs the `h100` shape (64 prompts x 8, micro-batch 2); a second GPU, if there is one,
# runs the `full` shape (128 prompts x 8, micro-batch 4) at the same time. Metrics and logs go
# to OUT_DIR; a markdown summary is printed at the end.
set -uo pipefail
cd "$(dirname "$0")"
TRAIN=$1 TEST=$2 OUT=$3
shift 3
LIMIT=${RUN_TIMEOUT_S:-330}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
echo "$(date -u +%T) checking imports with $PY"
timeout 120 "$PY" -c 'import torch, transformers, math_verify; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "gpus", torch.cuda.device_count())' || exit 1
common=(--profile gpu-bench --train-jsonl "$TRAIN" --test-jsonl "$TEST" "$@")
ngpu=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
echo "$(date -u +%T) starting on $ngpu GPU(s)"
CUDA_VISIBLE_DEVICES=0 IDEAFORGE_METRICS="$OUT/h100_shape.jsonl" timeout "$LIMIT" \
  "$PY" train_grpo.py "${common[@]}" >"$OUT/h100_shape.log" 2>&1 &
a=$!
if [ "$ngpu" -ge 2 ]; then
  CUDA_VISIBLE_DEVICES=1 IDEAFORGE_METRICS="$OUT/full_shape.jsonl" timeout "$LIMIT" \
    "$PY" train_grpo.py "${common[@]}" --set prompts_per_step=128 --set micro_batch=4 \
    >"$OUT/full_shape.log" 2>&1 &
  b=$!
  wait $b; echo "full shape exit $?"
fi
wait $a; echo "h100 shape exit $?"
echo "$(date -u +%T) done"
"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*.jsonl")):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = sorted({r["step"] for r in rows})
    names = list(dict.fromkeys(r["name"] for r in rows))
    print(f"\n### {path.stem}\n\n| metric | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name in names:
        by_step = {r["step"]: r["value"] for r in rows if r["name"] == name}
        cells = [f"{by_step[s]:.4g}" if s in by_step else "" for s in steps]
        print(f"| {name} | " + " | ".join(cells) + " |")
PY
