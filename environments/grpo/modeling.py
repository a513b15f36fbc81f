"""The policy: a Hugging Face checkpoint, or a randomly initialised Qwen2 built from a config.

`random:*` models come with a byte-level tokenizer that needs no files, so the smoke profile and
GPU checks run with no download. They sample only ASCII bytes (`sample_id_range`): no end of
sequence, no undecodable ids, so every response runs to the token limit (the worst case).
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    ByT5Tokenizer,
    Qwen2Config,
    Qwen2ForCausalLM,
)

RANDOM_CONFIGS = {
    # ~0.1M parameters: the smoke profile on a CPU.
    "random:tiny": {
        "vocab_size": 384, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
    },
    # Qwen2-0.5B's shape (~494M parameters, same vocabulary size), random weights.
    "random:qwen2-0.5b": {
        "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    },
}


def sample_id_range(spec: str) -> tuple[int, int] | None:
    """Ids a rollout may sample: for random models ByT5's ASCII bytes (ids 3..130); else all."""
    if spec in RANDOM_CONFIGS:
        return (3, 3 + 128)
    return None


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[name]


def load_policy(spec: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """Returns (model, tokenizer). spec: a hub id or local path, or one of RANDOM_CONFIGS."""
    if spec in RANDOM_CONFIGS:
        tokenizer = ByT5Tokenizer()
        config = Qwen2Config(tie_word_embeddings=True, **RANDOM_CONFIGS[spec])
        torch.manual_seed(seed)
        with torch.device(device):  # initialise in place: fast on a GPU, no host copy
            model = Qwen2ForCausalLM(config)
        model = model.to(dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, attn_implementation="sdpa")
        model = model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
