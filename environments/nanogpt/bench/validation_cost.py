"""What the final validation costs at the `full` budget (10,485,760 tokens) on one GPU, two ways:

  probe:  train.validate as shipped: a parallel forward of each 32x1024 batch plus a second
          forward of the same batch with every row's tail replaced (the causality probe);
  kv:     the reference's method: decode token by token with a KV cache, so that the model never
          sees a token after the one it predicts. 1024 sequential steps per batch; timed on a few
          batches and extrapolated.

Also checks that both give the same loss on one batch. Run from the environment directory:
    python bench/validation_cost.py [--data-dir DIR] [--kv-batches 2] [--out result.json]
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train


@torch.no_grad()
def kv_decode_loss(model, x, y):
    """Summed next-token loss of one batch, decoded one position at a time with a KV cache."""
    B, T = x.shape
    C = model.wte.embedding_dim
    n_head = model.blocks[0].attn.n_head
    shape = (B, n_head, T, C // n_head)
    dtype = torch.bfloat16 if x.is_cuda else torch.float32
    k_cache = [torch.empty(shape, device=x.device, dtype=dtype) for _ in model.blocks]
    v_cache = [torch.empty(shape, device=x.device, dtype=dtype) for _ in model.blocks]
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    for t in range(T):
        h = model.wte(x[:, t:t + 1]) + model.wpe.weight[t]
        for i, block in enumerate(model.blocks):
            q, k, v = block.attn.qkv(block.norm1(h)).split(C, dim=2)
            q, k, v = (z.view(B, 1, n_head, C // n_head).transpose(1, 2) for z in (q, k, v))
            k_cache[i][:, :, t:t + 1] = k
            v_cache[i][:, :, t:t + 1] = v
            keys, values = k_cache[i][:, :, :t + 1], v_cache[i][:, :, :t + 1]
            y_att = F.scaled_dot_product_attention(q, keys, values)
            h = h + block.attn.proj(y_att.transpose(1, 2).reshape(B, 1, C))
            h = h + block.mlp(block.norm2(h))
        logits = model.lm_head(model.norm_f(h))[:, 0, :model.vocab_size]
        loss += F.cross_entropy(logits.float(), y[:, t], reduction="sum")
    return loss


def timed(fn):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", help="shards to validate on (default: random tokens)")
    p.add_argument("--kv-batches", type=int, default=2)
    p.add_argument("--out")
    p.add_argument("--profile", default="full", help="smoke: a CPU check of this script")
    args = p.parse_args()
    profile = args.profile
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = train.PROFILES[profile]
    T, B = train.VAL_SEQ_LEN[profile], train.VAL_BATCH_ROWS[profile]
    n_batches = train.VAL_TOKENS[profile] // (T * B)
    if args.data_dir or train.VAL_DATA[profile] == "synthetic":
        val_tokens = train.validation_tokens(profile, cfg.vocab_size, args.data_dir)
    else:
        val_tokens = torch.randint(0, cfg.vocab_size, (train.VAL_TOKENS[profile] + 1,))
    torch.manual_seed(0)
    model = train.GPT(cfg).to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    rows = torch.arange(0, n_batches * B, n_batches)  # batch 0, laid out as validate() does
    window = val_tokens[rows[:, None] * T + torch.arange(T + 1)[None, :]].to(device)
    x, y = window[:, :-1], window[:, 1:]

    def parallel_loss():
        with torch.no_grad(), autocast:
            logits = model(x)
            return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                   reduction="sum")

    for _ in range(3):
        parallel_loss()  # warm-up
    parallel, one_forward_s = timed(parallel_loss)
    (val_loss, worst), probe_total_s = timed(
        lambda: train.validate(model, val_tokens, profile, 0, 1, device, autocast))
    with autocast:
        kv_decode_loss(model, x[:2, :16], y[:2, :16])  # warm-up
        kv_first, kv_first_s = timed(lambda: kv_decode_loss(model, x, y))
        kv_times = [kv_first_s] + [timed(lambda: kv_decode_loss(model, x, y))[1]
                                   for _ in range(args.kv_batches - 1)]
    kv_per_batch_s = sum(kv_times) / len(kv_times)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "profile": profile,
        "torch": torch.__version__,
        "val_tokens": train.VAL_TOKENS[profile],
        "batches": n_batches,
        "batch": f"{B}x{T}",
        "probe_method_total_s": round(probe_total_s, 2),
        "probe_method_per_batch_s": round(probe_total_s / n_batches, 4),
        "plain_forward_per_batch_s": round(one_forward_s, 4),
        "probe_max_change": worst,
        "kv_decode_per_batch_s": round(kv_per_batch_s, 3),
        "kv_decode_batches_timed": len(kv_times),
        "kv_decode_total_s_extrapolated": round(kv_per_batch_s * n_batches, 1),
        "speedup": round(kv_per_batch_s * n_batches / probe_total_s, 1),
        "batch0_loss_parallel": parallel.item() / (B * T),
        "batch0_loss_kv_decode": kv_first.item() / (B * T),
        "val_loss_random_init": val_loss,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
