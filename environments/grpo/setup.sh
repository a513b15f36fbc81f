#!/usr/bin/env bash
# Run once per host (environment.toml: profiles.full.setup): dependencies, data and model.
# GRPO_SKIP_INSTALL=1 keeps the interpreter's packages as they are; GRPO_DATA_FROM=DIR copies
# MATH JSON lines (train.jsonl, test.jsonl) from DIR instead of downloading them.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${GRPO_SKIP_INSTALL:-0}" != 1 ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    python -m pip install -q ".[vllm]"   # vLLM brings the CUDA torch it is built for
  else
    python -m pip install -q .
  fi
fi
if [ -n "${GRPO_DATA_FROM:-}" ]; then
  python prepare.py --from-jsonl "$GRPO_DATA_FROM"
else
  python prepare.py
fi
