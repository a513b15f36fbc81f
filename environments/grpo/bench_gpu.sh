#!/usr/bin/env bash
# GPU timing check with no download and no vLLM: GRPO training of a randomly initialised
# Qwen2-0.5B-shaped model (byte-level tokenizer, transformers backend) on real MATH prompts,
# which saves its weights, then the evaluation stage scoring those saved weights, as the runner
# runs it: pristine copies of the evaluator's files in a fresh folder, a fresh metrics file.
#   bash bench_gpu.sh TRAIN_JSONL TEST_JSONL OUT_DIR [--set KEY=VALUE ...]
# (PYTHON=... picks the interpreter; RUN_TIMEOUT_S, default 330, bounds the training and
# EVAL_TIMEOUT_S, default 240, the evaluation; the --set overrides go to the training runs,
# e.g. --set n_steps=1 for one step.) math-verify must be installed in the interpreter's
# site-packages: the grader's workers ignore PYTHONPATH.
# GPU 0 runs the `h100` shape (64 prompts x 8, micro-batch 2 x accumulation 32); a second GPU, if
# there is one, runs the `full` shape (128 prompts x 8, micro-batch 4 x accumulation 16) at the
# same time. Metrics, logs and
# stage times go to OUT_DIR (the weights to a temporary folder); a markdown summary is printed.
set -uo pipefail
cd "$(dirname "$0")"
HERE=$PWD
TRAIN=$1 TEST=$2 OUT=$3
shift 3
LIMIT=${RUN_TIMEOUT_S:-330}
EVAL_LIMIT=${EVAL_TIMEOUT_S:-240}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
echo "$(date -u +%T) checking imports with $PY"
timeout 120 "$PY" -c 'import torch, transformers, math_verify, safetensors; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "gpus", torch.cuda.device_count())' || exit 1
# [evaluate].files of environment.toml (read with re, not a TOML library: Python 3.10 has none)
EVAL_FILES=$("$PY" -c 'import re; t = open("environment.toml").read(); s = re.search(r"\[evaluate\](.*?)\n\[", t, re.S).group(1); print(" ".join(re.findall(r"\"([^\"]+)\"", re.search(r"files = \[(.*?)\]", s, re.S).group(1))))')

# One shape: training (saves the policy), then the evaluation stage from the saved policy.
stage() {  # NAME GPU [extra training args...]
  local name=$1 gpu=$2
  shift 2
  local art="$WORK/$name/artifacts" code="$WORK/$name/evaluator"
  mkdir -p "$art" "$code"
  local t0 t1 t2
  t0=$(date +%s.%N)
  CUDA_VISIBLE_DEVICES=$gpu IDEAFORGE_ARTIFACTS="$art" IDEAFORGE_METRICS="$OUT/${name}_train.jsonl" \
    IDEAFORGE_PROFILE=gpu-bench timeout "$LIMIT" "$PY" "$HERE/train_grpo.py" --profile gpu-bench \
    --train-jsonl "$TRAIN" "$@" >"$OUT/${name}_train.log" 2>&1
  local train_rc=$?
  t1=$(date +%s.%N)
  ls -l "$art" >>"$OUT/${name}_train.log"
  local eval_rc=skipped
  if [ "$train_rc" = 0 ]; then
    for f in $EVAL_FILES; do cp "$HERE/$f" "$code/$f"; done
    (cd "$code" && CUDA_VISIBLE_DEVICES=$gpu IDEAFORGE_ARTIFACTS="$art" \
      IDEAFORGE_METRICS="$OUT/${name}_eval.jsonl" IDEAFORGE_PROFILE=gpu-bench \
      IDEAFORGE_TRAIN_SECONDS=$(awk "BEGIN{print $t1 - $t0}") timeout "$EVAL_LIMIT" \
      "$PY" evaluate.py --profile gpu-bench --backend transformers --test-jsonl "$TEST") \
      >"$OUT/${name}_eval.log" 2>&1
    eval_rc=$?
  fi
  t2=$(date +%s.%N)
  printf '{"shape": "%s", "train_rc": %s, "train_wall_s": %.1f, "eval_rc": "%s", "eval_wall_s": %.1f, "weights_bytes": %s}\n' \
    "$name" "$train_rc" "$(awk "BEGIN{print $t1 - $t0}")" "$eval_rc" "$(awk "BEGIN{print $t2 - $t1}")" \
    "$(du -cb "$art" | tail -1 | cut -f1)" | tee "$OUT/${name}_stages.json"
}

ngpu=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
echo "$(date -u +%T) starting on $ngpu GPU(s)"
stage h100_shape 0 "$@" &
a=$!
if [ "$ngpu" -ge 2 ]; then
  stage full_shape 1 "$@" --set prompts_per_step=128 --set micro_batch=4 --set grad_accum=16 &
  wait $!
fi
wait $a
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
        cells = [f"{by_step[s]:.4g}" if isinstance(by_step.get(s), (int, float)) else "" for s in steps]
        print(f"| {name} | " + " | ".join(cells) + " |")
PY
