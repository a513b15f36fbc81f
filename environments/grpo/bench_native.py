"""Rollout backends side by side on one GPU, with no download and no vLLM (issue 19).

    python environments/grpo/bench_native.py            # one GPU, about 6-8 minutes
    python environments/grpo/bench_native.py --tiny     # CPU, tiny shapes: checks the script
    OUT=dir python ... [--budget-s 450] [--train-jsonl MATH.jsonl]

Measures, in one process:
- the card: a bf16 matmul rate (8192^3 products) and a memory bandwidth (a 2 GiB copy);
- shape `h100` (random Qwen2-0.5B shape, 64 prompts x 8 = 512 rows, ~600-token prompts,
  1,024 new tokens) and shape `paper` (Qwen2.5-Math-1.5B's config with random weights, 128 x 8
  = 1,024 rows): the native backend over the whole budget, the transformers backend over the
  first `--transformers-tokens` tokens (it is 10-100x slower; its ms per step is what it costs
  at the start of a rollout, where its cache is smallest), tokens/s, ms per decoding step, the
  step's floor (matmul FLOPs at the measured rate + weight and KV-cache bytes at the measured
  bandwidth, at the mean context length), peak memory, how the KV cache was sized, and whether
  greedy decoding gives the same text on both backends;
- a whole GRPO step at the `full` shape (the paper model's shape, 128 prompts x 8, micro-batch
  4 x accumulation 16, 1,024 tokens) with the native backend: rollout, reward, old log-probs,
  train, refresh. Its rollout is the `paper` shape's native measurement.
Anything that does not fit the time budget is skipped and listed. Random models sample only
ASCII bytes (no end of sequence), so every row runs to the token budget: the worst case.
Writes $OUT/bench_native.json and $OUT/bench_native.md ($OUT defaults to ./bench_results).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch
import transformers
from data import Problem, format_prompt, load_jsonl, synthetic_arithmetic
from modeling import RANDOM_CONFIGS
from native_rollout import NativeBackend
from rollout import Sampling, TransformersBackend

STOP = "</answer>"
ID_RANGE = (3, 131)  # ByT5's ASCII bytes, as modeling.sample_id_range gives random models
# Qwen/Qwen2.5-Math-1.5B's config.json (architecture only; the weights here are random).
QWEN25_MATH_15B = {
    "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
    "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 4096,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
}
GPU_SHAPES = {
    "h100": {"model": RANDOM_CONFIGS["random:qwen2-0.5b"], "model_name": "random Qwen2-0.5B shape",
             "prompts": 64, "group": 8, "new_tokens": 1024, "prompt_tokens": 600, "gen_batch": 512},
    "paper": {"model": QWEN25_MATH_15B, "model_name": "random Qwen2.5-Math-1.5B shape",
              "prompts": 128, "group": 8, "new_tokens": 1024, "prompt_tokens": 600, "gen_batch": 512,
              "micro_batch": 4, "grad_accum": 16},
}
TINY_SHAPES = {
    "h100": {"model": RANDOM_CONFIGS["random:tiny"], "model_name": "random:tiny", "prompts": 2, "group": 2,
             "new_tokens": 12, "prompt_tokens": 60, "gen_batch": 4},
    "paper": {"model": {**RANDOM_CONFIGS["random:tiny"], "num_hidden_layers": 3}, "model_name": "tiny, 3 layers",
              "prompts": 2, "group": 2, "new_tokens": 8, "prompt_tokens": 80, "gen_batch": 4,
              "micro_batch": 2, "grad_accum": 2},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0):
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(tie_word_embeddings=True, **config))
    return model.to(dtype)


def make_prompts(count: int, target_tokens: int, train_jsonl: str | None, seed: int) -> tuple[list[str], list[str]]:
    """count r1-zero prompts of about target_tokens bytes (one token per byte with ByT5): real
    MATH problems when a file is given, else arithmetic padded with a plain instruction."""
    rng = random.Random(seed)
    if train_jsonl:
        problems = rng.sample(load_jsonl(train_jsonl), count)
    else:
        filler = " Show every step of the computation, check it, and only then give the result."
        problems = []
        for p in synthetic_arithmetic(count, seed):
            base = len(format_prompt(p))
            text = p.problem + filler * max(0, (target_tokens - base) // len(filler) + 1)
            problems.append(Problem(problem=text[:len(p.problem) + max(0, target_tokens - base)],
                                    answer=p.answer, level=p.level, subject=p.subject))
    return [format_prompt(p) for p in problems], [p.answer for p in problems]


def measure_card(device: torch.device, tiny: bool) -> dict:
    """bf16 matmul TFLOP/s (best of several 8192^3 products) and copy bandwidth (GB/s, read +
    write, best of several copies of 2 GiB). On a CPU: float32, small sizes."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = 256 if tiny else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(12 if not tiny else 4):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        sync(device)
        if i:  # the first is warm-up
            best = min(best, (time.perf_counter() - t0) / 5)
    tflops = 2 * n ** 3 / best / 1e12
    size = (32 if tiny else 2048) * 2 ** 20
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for i in range(12 if not tiny else 4):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        if i:
            best = min(best, time.perf_counter() - t0)
    del a, b, src, dst
    return {"matmul_tflops": tflops, "matmul_dtype": str(dtype).removeprefix("torch."),
            "bandwidth_gbs": 2 * size / best / 1e9}


def step_floor_ms(config: dict, rows: int, context: float, element_size: int, card: dict) -> dict:
    """Lower bound of one decoding step of `rows` rows at mean context length `context`: the
    matmul FLOPs (projections, MLP, lm_head, attention scores and values) at the measured
    matmul rate, plus the bytes that must be read (every weight once, the KV cache of every row)
    at the measured bandwidth."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    d = h // heads
    linear = layers * (h * heads * d + 2 * h * kv_heads * d + heads * d * h + 3 * h * inter) + h * config["vocab_size"]
    flops = rows * (2 * linear + layers * 4 * heads * d * context)
    weight_bytes = linear * element_size
    kv_bytes = rows * layers * 2 * kv_heads * d * context * element_size
    compute_ms = flops / (card["matmul_tflops"] * 1e12) * 1e3
    memory_ms = (weight_bytes + kv_bytes) / (card["bandwidth_gbs"] * 1e9) * 1e3
    return {"floor_ms_per_step": compute_ms + memory_ms, "floor_compute_ms": compute_ms,
            "floor_memory_ms": memory_ms, "step_tflop": flops / 1e12, "step_weight_gb": weight_bytes / 1e9,
            "step_kv_gb": kv_bytes / 1e9, "mean_context": context}


def run_backend(backend, prompts: list[str], n: int, tokens: int, seed: int, device) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    groups = backend.generate(prompts, n=n, sampling=Sampling(1.0, 1.0, tokens, stop=(STOP,)), seed=seed)
    sync(device)
    seconds = time.perf_counter() - t0
    generated = sum(c.n_tokens for g in groups for c in g)
    out = {"rows": len(prompts) * n, "new_tokens": tokens, "seconds": seconds, "tokens": generated,
           "tokens_per_s": generated / seconds, "ms_per_step": seconds / tokens * 1e3}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    stats = getattr(backend, "last_stats", None)
    if stats:
        decode_steps = max(stats["decode_steps"], 1)
        out["decode_ms_per_step"] = (stats["decode_s"] - stats["capture_s"]) / decode_steps * 1e3
        out["prefill_s"], out["capture_s"] = stats["prefill_s"], stats["capture_s"]
        out["graphs_captured"] = stats["graphs_captured"]
        out["kv_cache_gib"] = stats["kv_cache_bytes"] / 2 ** 30
        out["batches"], out["batch_rows"] = stats["batches"], stats["batch_rows"]
        out["kv_plan"] = stats["plan"]
        if "graph_error" in stats:
            out["graph_error"] = stats["graph_error"]
    return out, groups


def greedy_agreement(model, tokenizer, prompts: list[str], tokens: int) -> dict:
    """Greedy decoding of the same rows on both backends: the share of rows with the same text,
    and the mean share of each row's text that matches before the first difference."""
    sampling = Sampling(temperature=0.0, max_new_tokens=tokens, stop=(STOP,))
    native = NativeBackend(model, tokenizer, id_range=ID_RANGE).generate(prompts, 1, sampling, 0)
    reference = TransformersBackend(model, tokenizer, id_range=ID_RANGE).generate(prompts, 1, sampling, 0)
    same, prefix = 0, 0.0
    for (a,), (b,) in zip(native, reference):
        same += a.text == b.text
        k = next((i for i, (x, y) in enumerate(zip(a.text, b.text)) if x != y), min(len(a.text), len(b.text)))
        prefix += k / max(len(b.text), 1)
    return {"greedy_agreement": same / len(prompts), "greedy_prefix_share": prefix / len(prompts),
            "greedy_rows": len(prompts), "greedy_tokens": tokens}


def grpo_step(model, tokenizer, backend, prompts, answers, shape: dict, device, report: dict) -> dict:
    """One GRPO step as train_grpo.main runs it, phase by phase (its functions, this model)."""
    import train_grpo
    from grpo import group_advantages

    cfg = train_grpo.Config(profile="full", model="bench", prompts_per_step=len(prompts),
                            group_size=shape["group"], max_new_tokens=shape["new_tokens"],
                            micro_batch=shape["micro_batch"], grad_accum=shape["grad_accum"])
    grader = None
    try:
        from grader import Grader
        grader = Grader(workers=8 if device.type == "cuda" else 1, timeout_s=5.0)
    except Exception as exc:  # noqa: BLE001 - math-verify missing: rewards are 0 (a random model earns none)
        report["grader"] = f"not used: {type(exc).__name__}: {exc}"[:300]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    times, pad_id, n = {}, tokenizer.pad_token_id, cfg.group_size
    step_start = time.perf_counter()
    try:
        t = time.perf_counter()
        rollout, groups = run_backend(backend, prompts, n, cfg.max_new_tokens, seed=1, device=device)
        times["rollout_s"] = time.perf_counter() - t
        report["rollout"] = rollout
        responses = [c.text for g in groups for c in g]
        t = time.perf_counter()
        expanded = [a for a in answers for _ in range(n)]
        if grader is not None:
            rewards, _ = train_grpo.training_rewards(responses, expanded, grader)
        else:
            rewards = [0.0] * len(responses)
        advantages = group_advantages(torch.tensor(rewards), n, cfg.normalize_std, cfg.adv_eps)
        prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        rollouts = [train_grpo.Rollout(prompt_ids[i // n], tokenizer(text, add_special_tokens=False).input_ids,
                                       rewards[i], float(advantages[i])) for i, text in enumerate(responses)]
        times["reward_s"] = time.perf_counter() - t
        t = time.perf_counter()
        train_grpo.fill_old_logprobs(model, rollouts, cfg, pad_id, device)
        sync(device)
        times["old_logprobs_s"] = time.perf_counter() - t
        t = time.perf_counter()
        stats = train_grpo.train_on_rollouts(model, optimizer, rollouts, cfg, pad_id, device, random.Random(0))
        sync(device)
        times["train_s"] = time.perf_counter() - t
        report["optimizer_steps"] = stats.get("optimizer_steps")
        t = time.perf_counter()
        backend.refresh(model)
        times["refresh_s"] = time.perf_counter() - t
        times["step_s"] = time.perf_counter() - step_start
    finally:
        if grader is not None:
            grader.close()
        del optimizer
    if device.type == "cuda":
        report["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    report["times"] = times
    return report


def free_cuda(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized shapes (checks the script)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting parts after this")
    parser.add_argument("--transformers-tokens", type=int, default=0,
                        help="tokens the transformers backend generates per shape (default 64 h100, 32 paper)")
    parser.add_argument("--train-jsonl", help="MATH-style JSON lines for real prompts (default: padded arithmetic)")
    parser.add_argument("--skip-step", action="store_true", help="no whole GRPO step")
    args = parser.parse_args()
    started = time.perf_counter()
    out_dir = Path(os.environ.get("OUT") or "bench_results")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu":
        torch.set_num_threads(1)
    shapes = TINY_SHAPES if args.tiny else GPU_SHAPES
    tokenizer = transformers.ByT5Tokenizer()
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "dtype": str(dtype).removeprefix("torch."), "tiny": args.tiny, "shapes": [],
                    "skipped": []}
    left = lambda: args.budget_s - (time.perf_counter() - started)

    def save() -> None:
        report["wall_s"] = time.perf_counter() - started
        (out_dir / "bench_native.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        (out_dir / "bench_native.md").write_text(markdown(report))

    report["card"] = card = measure_card(device, args.tiny)
    print(f"card: {card}", flush=True)
    for name, shape in shapes.items():
        row = {"shape": name, "model": shape["model_name"], "prompts": shape["prompts"],
               "group": shape["group"], "rows": shape["prompts"] * shape["group"],
               "new_tokens": shape["new_tokens"], "prompt_tokens": shape["prompt_tokens"]}
        report["shapes"].append(row)
        need = 20 if args.tiny else (60 if name == "h100" else 150)
        if left() < need:
            report["skipped"].append(f"{name}: {left():.0f} s left, needs ~{need} s")
            continue
        try:
            model = build_model(shape["model"], device, dtype)
            prompts, answers = make_prompts(shape["prompts"], shape["prompt_tokens"], args.train_jsonl, seed=0)
            row["prompt_tokens"] = sum(len(p) for p in prompts) / len(prompts)
            row["parameters_m"] = sum(p.numel() for p in model.parameters()) / 1e6
            row.update(greedy_agreement(model, tokenizer, prompts[:8], 8 if args.tiny else 32))
            native = NativeBackend(model, tokenizer, id_range=ID_RANGE)
            element = next(model.parameters()).element_size()
            row.update(step_floor_ms(shape["model"], row["rows"], row["prompt_tokens"] + shape["new_tokens"] / 2,
                                     element, card))
            if name == "paper" and not args.skip_step:  # the full step's rollout is this shape's
                step = {}
                row["grpo_step"] = step
                try:
                    grpo_step(model, tokenizer, native, prompts, answers, shape, device, step)
                except Exception as exc:  # noqa: BLE001 - reported, the rest still runs
                    step["error"] = f"{type(exc).__name__}: {exc}"[:1000]
                    traceback.print_exc()
                if "rollout" in step:
                    row["native"] = step["rollout"]
            if "native" not in row:
                row["native"], _ = run_backend(native, prompts, shape["group"], shape["new_tokens"], 1, device)
            print(f"{name} native: {row['native']}", flush=True)
            save()
            tokens = args.transformers_tokens or (shape["new_tokens"] if args.tiny else
                                                  64 if name == "h100" else 32)
            if left() < (5 if args.tiny else 45):
                report["skipped"].append(f"{name} transformers: {left():.0f} s left")
            else:
                free_cuda(device)
                reference = TransformersBackend(model, tokenizer, gen_batch=shape["gen_batch"], id_range=ID_RANGE)
                row["transformers"], _ = run_backend(reference, prompts, shape["group"], tokens, 1, device)
                print(f"{name} transformers: {row['transformers']}", flush=True)
            # like for like: the native backend's ms per step over the same first tokens
            native_short, _ = run_backend(native, prompts, shape["group"], tokens, 1, device)
            row["native_first_tokens"] = native_short
            if "transformers" in row:
                row["speedup_tokens_per_s"] = native_short["tokens_per_s"] / row["transformers"]["tokens_per_s"]
                row["speedup_vs_full_native"] = row["native"]["tokens_per_s"] / row["transformers"]["tokens_per_s"]
            row["native_x_floor"] = row["native"].get("decode_ms_per_step", row["native"]["ms_per_step"]) \
                / row["floor_ms_per_step"]
        except Exception as exc:  # noqa: BLE001 - reported, the other shapes still run
            row["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            traceback.print_exc()
        finally:
            model = native = reference = None
            free_cuda(device)
            save()
    save()
    print(markdown(report), flush=True)
    return 0


def markdown(report: dict) -> str:
    card = report.get("card", {})
    title = (f"### Rollout backends — {report['device']}, torch {report['torch']}, transformers "
             f"{report['transformers']}, {report['dtype']}")
    measured = (f"Measured: {card.get('matmul_dtype', '')} matmul {card.get('matmul_tflops', 0):.1f} TFLOP/s, "
                f"copy bandwidth {card.get('bandwidth_gbs', 0):.0f} GB/s. Wall {report.get('wall_s', 0):.0f} s.")
    lines = [title, "", measured, "",
             "| shape | rows × new tokens | backend | tokens/s | ms/step | floor ms/step | × floor | peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["shapes"]:
        floor = row.get("floor_ms_per_step", 0.0)
        for key, label in (("native", "native"), ("native_first_tokens", "native (first tokens)"),
                           ("transformers", "transformers")):
            m = row.get(key)
            if not m:
                continue
            ms = m.get("decode_ms_per_step", m["ms_per_step"])
            lines.append(f"| {row['shape']} ({row['model']}) | {m['rows']} × {m['new_tokens']} | {label} | "
                         f"{m['tokens_per_s']:,.0f} | {ms:.2f} | {floor:.2f} | {ms / floor if floor else 0:.1f} | "
                         f"{m.get('peak_memory_gib', 0):.1f} |")
    lines.append("")
    for row in report["shapes"]:
        n = row.get("native") or {}
        plan = n.get("kv_plan") or {}
        if plan:
            free = plan.get("free_bytes")
            lines.append(f"- {row['shape']}: KV cache {n.get('kv_cache_gib', 0):.2f} GiB for {n.get('batch_rows')} rows "
                         f"× {plan['cache_width']} columns ({plan['kv_bytes_per_row'] / 2**20:.1f} MiB per row); "
                         f"free memory {free / 2**30 if free else 0:.1f} GiB × {plan['memory_fraction']} "
                         f"allows {plan['batch_rows']} rows; {n.get('batches')} batch(es); prefill "
                         f"{n.get('prefill_s', 0):.2f} s; {n.get('graphs_captured', 0)} graphs captured in "
                         f"{n.get('capture_s', 0):.2f} s; floor {floor_text(row)}.")
        if "speedup_tokens_per_s" in row:
            lines.append(f"- {row['shape']}: native / transformers tokens/s over the same first tokens "
                         f"{row['speedup_tokens_per_s']:.1f}×; whole native rollout vs that "
                         f"{row['speedup_vs_full_native']:.1f}×.")
        if "greedy_agreement" in row:
            lines.append(f"- {row['shape']}: greedy, {row['greedy_rows']} rows × {row['greedy_tokens']} tokens: "
                         f"{row['greedy_agreement']:.0%} of rows give the same text on both backends "
                         f"({row['greedy_prefix_share']:.0%} of the text before the first difference).")
        for key in ("error",):
            if key in row:
                lines.append(f"- {row['shape']}: ERROR {row[key]}")
        step = row.get("grpo_step")
        if step:
            times = step.get("times", {})
            head = (f"GRPO step, `full` shape ({row['model']}, {row['rows']} rollouts × {row['new_tokens']} "
                    f"tokens, native backend), optimizer steps {step.get('optimizer_steps')}, peak "
                    f"{step.get('peak_memory_gib', 0):.1f} GiB{'; ' + step['grader'] if 'grader' in step else ''}"
                    f"{'; ERROR ' + step['error'] if 'error' in step else ''}:")
            lines += ["", head, "", "| phase | seconds |", "|---|---|"]
            lines += [f"| {k.removesuffix('_s')} | {v:.2f} |" for k, v in times.items()]
    if report["skipped"]:
        lines += ["", "Skipped: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def floor_text(row: dict) -> str:
    return (f"{row.get('step_tflop', 0):.2f} TFLOP + {row.get('step_weight_gb', 0):.2f} GB weights + "
            f"{row.get('step_kv_gb', 0):.2f} GB KV at mean context {row.get('mean_context', 0):.0f}")


if __name__ == "__main__":
    sys.exit(main())
