"""Greedy agreement of the native and transformers rollout backends on a GPU, in a chosen
dtype (float32 separates real differences from bfloat16 near-ties of random weights).

    python3 environments/grpo/check_greedy_gpu.py [--dtype float32|bfloat16] [--rows 16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_native import GPU_SHAPES, build_model, greedy_agreement, make_prompts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--train-jsonl")
    args = parser.parse_args()
    device = torch.device("cuda")
    dtype = getattr(torch, args.dtype)
    tokenizer = transformers.ByT5Tokenizer()
    for name, shape in GPU_SHAPES.items():
        model = build_model(shape["model"], device, dtype)
        prompts, _ = make_prompts(args.rows, shape["prompt_tokens"], args.train_jsonl, seed=0)
        row = greedy_agreement(model, tokenizer, prompts, args.tokens)
        print(json.dumps({"shape": name, "dtype": args.dtype, **row}), flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
