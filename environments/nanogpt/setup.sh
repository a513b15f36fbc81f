#!/usr/bin/env bash
# Once per host (the GPU profiles' `setup`): the environment's own venv, then the FineWeb shards.
# Idempotent: a second run only checks (pip finds everything, prepare_data.py finds its shards).
#
#   NANOGPT_VENV        where the venv goes            (default ~/.cache/ideaforge/nanogpt/venv)
#   NANOGPT_DATA_DIR or IDEAFORGE_DATA_DIR             where the shards go (see prepare_data.py)
#   NANOGPT_MAX_TOKENS  training tokens to prepare     (default: all of FineWeb sample-10BT)
#   NANOGPT_WANDB=1     also install wandb
#   NANOGPT_SYNTHETIC=1 made-up shards instead of FineWeb (hosts without internet; benchmarks only;
#                       needs NANOGPT_DATA_DIR or IDEAFORGE_DATA_DIR)
#   PYTHON              the interpreter that creates the venv (default python3)
#
# Then run the profiles with "$NANOGPT_VENV/bin/python" as `python` (the host's interpreter
# in hosts.toml, or first on PATH).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${NANOGPT_VENV:-$HOME/.cache/ideaforge/nanogpt/venv}
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
# The dependencies straight from pyproject.toml; `pip install .` would write build files here.
mapfile -t deps < <(sed -n '/^dependencies = \[/,/^\]/p' pyproject.toml | grep -o '"[^"]*"' | tr -d '"')
[ "${NANOGPT_WANDB:-0}" = 1 ] && deps+=(wandb)
"$VENV/bin/python" -m pip install -q "${deps[@]}"
args=()
[ -n "${NANOGPT_MAX_TOKENS:-}" ] && args+=(--max-tokens "$NANOGPT_MAX_TOKENS")
if [ "${NANOGPT_SYNTHETIC:-0}" = 1 ]; then
  dir=${NANOGPT_DATA_DIR:-${IDEAFORGE_DATA_DIR:?NANOGPT_SYNTHETIC needs a data dir}/fineweb10B}
  args=(--synthetic --data-dir "$dir" --max-tokens "${NANOGPT_MAX_TOKENS:-1000000000}")
fi
"$VENV/bin/python" prepare_data.py "${args[@]}"
echo "nanogpt is set up; its interpreter is $VENV/bin/python"
