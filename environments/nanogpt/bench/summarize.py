"""Summarise a GPU benchmark folder (see gpu_bench.sh) into summary.json and a short table.

    python bench/summarize.py OUT_DIR
"""

import json
import os
import statistics
import sys

PEAK_BF16_FLOPS = 989e12  # H100 SXM dense bf16


def flops_per_token(n_layer=12, n_embd=768, vocab=50257, seq_len=1024):
    """6 x (parameters that multiply: blocks and the output head) + attention scores and sums
    (12 x layers x width x context), the usual nanoGPT/PaLM count; position embeddings excluded."""
    block = 12 * n_embd * n_embd + 2 * n_embd
    return 6 * (n_layer * block + vocab * n_embd) + 12 * n_layer * n_embd * seq_len


def read_metrics(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_summary(records, gpus, skip_windows=2):
    """Steady-state speed: the median logged window after the first ones (compilation)."""
    windows = [r for r in records if r["name"] == "tokens_per_s"][skip_windows:]
    out = {"gpus": gpus}
    if windows:
        tokens_per_s = statistics.median(r["value"] for r in windows)
        per_gpu = tokens_per_s / gpus
        out.update({
            "windows": len(windows),
            "tokens_per_s": round(tokens_per_s),
            "tokens_per_s_per_gpu": round(per_gpu),
            "ms_per_optimizer_step": statistics.median(r["ms_per_step"] for r in windows),
            "ms_per_micro_step_32x1024": round(1000 * 32 * 1024 / per_gpu, 1),
            "mfu": round(per_gpu * flops_per_token() / PEAK_BF16_FLOPS, 3),
        })
    for r in records:
        if r["name"] == "peak_memory_gb":
            out["peak_memory_gb"] = r["value"]
            out["peak_reserved_gb"] = r.get("reserved_gb")
        if r["name"] in ("val_loss", "void"):
            out["final"] = r
    return out


def scaling_summary(folder, planned_steps=26_880, full_limit_s=1500.0):
    """bench/scaling.sh's runs (full_<N>gpu.jsonl, wall_<N>gpu.txt): speed per GPU count, scaling
    from the 1-GPU run, and how much of the planned schedule the 1500 s limit would hold at that
    speed (the whole limit minus this run's start-up and compilation)."""
    runs = {}
    for name in sorted(os.listdir(folder)):
        if not (name.startswith("full_") and name.endswith("gpu.jsonl")):
            continue
        gpus = int(name[len("full_"):-len("gpu.jsonl")])
        records = read_metrics(os.path.join(folder, name))
        out = training_summary(records, gpus)
        losses = [r for r in records if r["name"] == "train_loss"]
        if losses and "ms_per_optimizer_step" in out:
            # time_s of the first log is when its window ended; what its steps took beyond the
            # steady pace is start-up and compilation
            first = losses[0]
            warm_s = first["time_s"] - first["step"] * out["ms_per_optimizer_step"] / 1000
            steady_steps = (full_limit_s - warm_s) / (out["ms_per_optimizer_step"] / 1000)
            out["startup_and_compile_s"] = round(warm_s, 1)
            out["steps_in_1500_s"] = int(steady_steps)
            out["share_of_planned_schedule"] = round(min(1.0, steady_steps / planned_steps), 3)
        wall = os.path.join(folder, f"wall_{gpus}gpu.txt")
        if os.path.exists(wall):
            with open(wall) as f:
                out["job_wall_s"] = float(f.read().split()[1])
        runs[gpus] = out
    one = runs.get(1, {}).get("tokens_per_s_per_gpu")
    for out in runs.values():
        if one and "tokens_per_s_per_gpu" in out:
            out["scaling_per_gpu_vs_1"] = round(out["tokens_per_s_per_gpu"] / one, 3)
    return {str(g): runs[g] for g in sorted(runs)}


def main(folder):
    summary = {
        "flops_per_token": flops_per_token(),
        "single": training_summary(read_metrics(os.path.join(folder, "single.jsonl")), 1),
        "debug": training_summary(read_metrics(os.path.join(folder, "debug.jsonl")), 2),
    }
    scaling = scaling_summary(folder)
    if scaling:
        summary["full_scaling"] = scaling
    cost_path = os.path.join(folder, "validation_cost.json")
    if os.path.exists(cost_path):
        with open(cost_path) as f:
            summary["validation_cost"] = json.load(f)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
