"""GRPO post-training on MATH: sample groups of responses, reward them, update the policy.

    python train_grpo.py --profile full     # Qwen2.5-Math-1.5B, vLLM rollouts, 1 GPU, 1 h
    python train_grpo.py --profile h100     # 64 prompts, micro-batch 2 x accumulation 32 (80 GB)
    python train_grpo.py --profile smoke    # CPU, tiny random model, arithmetic, seconds

One step: rollouts -> rewards -> group advantages -> old log-probs -> train pass over the
rollouts in micro-batches (AdamW every grad_accum micro-batches) -> weight refresh of the
sampler. No evaluation happens here: when the steps are done or the time is up, save_policy
writes the weights to $IDEAFORGE_ARTIFACTS, and evaluate.py (protected, run afterwards from a
pristine copy) scores them on problems this process never sees.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from data import Problem, default_data_dir, format_prompt, load_jsonl, synthetic_arithmetic
from grader import STOP, Grader, grade_r1_zero
from grpo import (
    accumulation_counts,
    aggregate_loss,
    group_advantages,
    masked_mean,
    policy_gradient_loss,
    token_logprobs,
)
from metrics import Reporter
from modeling import load_policy, pick_dtype, sample_id_range
from rollout import Sampling, TransformersBackend, VLLMBackend, derive_seed, resolve_backend
from safetensors.torch import save_file

RUN_START = time.monotonic()  # the wall-clock limit counts from here (after the imports)
# Training budget per profile. The runner measures the real one (environment.toml: time_limit,
# from the job's start, imports included) and voids a run past time_limit + time_slack; this
# copy only lets the loop stop in time to save the policy.
TIME_LIMIT_S = {"full": 3600.0, "h100": 3600.0, "smoke": 120.0, "gpu-bench": 300.0}


def time_is_up(profile: str, run_start: float, next_step_s: float = 0.0) -> bool:
    """True once the next step (expected to take next_step_s) would end past the limit."""
    return time.monotonic() - run_start + next_step_s > TIME_LIMIT_S[profile]


def save_policy(model, model_spec: str, step: int, out_dir: Path) -> Path:
    """What evaluation reads: every tensor of the state dict (safetensors, never pickle) and a
    small json naming the base model it was built from. Written under temporary names and
    renamed, so a run stopped half-way leaves no half-written policy."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # copy=True: tied tensors (embeddings / lm_head) become separate entries; safetensors
    # refuses tensors that share memory, and the evaluator checks every key of the state dict.
    state = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    save_file(state, str(out_dir / "policy.safetensors.tmp"))
    meta = {"model": model_spec, "dtype": dtypes[0] if len(dtypes) == 1 else dtypes, "step": step,
            "tensors": len(state)}
    (out_dir / "policy.json.tmp").write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(out_dir / "policy.safetensors.tmp", out_dir / "policy.safetensors")
    os.replace(out_dir / "policy.json.tmp", out_dir / "policy.json")
    return out_dir / "policy.safetensors"


def artifacts_dir() -> Path:
    return Path(os.environ.get("IDEAFORGE_ARTIFACTS") or "artifacts")


@dataclass
class Config:
    profile: str = "full"
    model: str = "Qwen/Qwen2.5-Math-1.5B"
    train_data: str = ""  # JSON lines path; "" = <data dir>/math_train.jsonl; "synthetic"
    backend: str = "auto"  # auto | vllm | native | transformers
    vllm_gpu_memory: float = 0.55
    gen_batch: int = 0  # transformers backend: rows per generate() call (0 = all)
    n_steps: int = 20
    prompts_per_step: int = 128
    group_size: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    loss_type: str = "grpo_clip"  # no_baseline | reinforce_with_baseline | grpo_clip
    clip_range: float = 0.2
    normalize_std: bool = True
    adv_eps: float = 1e-6
    epochs_per_rollout: int = 1
    micro_batch: int = 4
    grad_accum: int = 16
    lr: float = 1e-5
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 = no clipping (the reference clips nothing); > 0 clips at this norm
    shuffle_rollouts: bool = False  # the reference trains on the rollouts in sampling order
    dtype: str = "auto"  # bfloat16 on a GPU, float32 on a CPU
    gradient_checkpointing: bool = False
    grader_workers: int = 8
    grade_timeout_s: float = 5.0
    seed: int = 0  # every random choice of a run; $IDEAFORGE_SEED replaces it (parse_args)


PROFILES: dict[str, dict] = {
    # The reference's scripts (env/grpo of NoviScl/Automated-AI-Researcher): `full` is its B200
    # run_job.sh (the Config defaults: 20 steps, group 8, 128 prompts, micro-batch 4 x
    # accumulation 16, lr 1e-5, grpo_clip 0.2), `h100` its 80 GB run.sh (64 prompts, micro-batch
    # 2 x accumulation 32). Both take 8 x 128 (or 8 x 64) / (micro x accum) optimizer steps per
    # GRPO step: 16 and 8.
    "full": {},
    "h100": {"micro_batch": 2, "grad_accum": 32, "prompts_per_step": 64},
    "smoke": {
        "model": "random:tiny", "train_data": "synthetic", "backend": "transformers",
        "n_steps": 2, "prompts_per_step": 4, "group_size": 4, "max_new_tokens": 24,
        "micro_batch": 4, "grad_accum": 2, "lr": 1e-3, "grader_workers": 1,
    },
    # A randomly initialised model of Qwen2-0.5B's shape with a byte-level tokenizer: timings
    # on a GPU with no download (pass --train-jsonl/--test-jsonl with MATH problems).
    "gpu-bench": {
        "model": "random:qwen2-0.5b", "backend": "transformers", "n_steps": 2,
        "prompts_per_step": 64, "micro_batch": 2, "grad_accum": 32, "gen_batch": 512,
    },
}


@dataclass
class Rollout:
    prompt_ids: list[int]
    response_ids: list[int]
    reward: float
    advantage: float = 0.0
    old_logprobs: torch.Tensor | None = None  # [len(response_ids)], filled before training


def training_rewards(responses: list[str], answers: list[str], grader: Grader) -> tuple[list[float], dict]:
    """The reward GRPO trains on (evaluation always uses grader.grade_r1_zero unchanged)."""
    scores = grade_r1_zero(responses, answers, grader)
    n = len(scores)
    stats = {
        "train_format_rate": sum(s.format_ok for s in scores) / n,
        "train_accuracy": sum(s.correct and s.format_ok for s in scores) / n,
    }
    return [s.reward for s in scores], stats


def collate(rollouts: list[Rollout], pad_id: int, device: torch.device):
    """Right-padded prompt+response ids, attention mask, and the response mask on label positions."""
    lengths = [len(r.prompt_ids) + len(r.response_ids) for r in rollouts]
    width = max(lengths)
    ids = torch.full((len(rollouts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rollouts), width), dtype=torch.long)
    response_mask = torch.zeros((len(rollouts), width - 1), dtype=torch.bool)
    for row, r in enumerate(rollouts):
        p, n = len(r.prompt_ids), len(r.response_ids)
        ids[row, : p + n] = torch.tensor(r.prompt_ids + r.response_ids)
        attention[row, : p + n] = 1
        response_mask[row, p - 1: p - 1 + n] = True  # label t+1 is predicted at position t
    return ids.to(device), attention.to(device), response_mask.to(device)


def micro_batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def fill_old_logprobs(model, rollouts: list[Rollout], cfg: Config, pad_id: int, device) -> float:
    """Log-probs under the policy that sampled the rollouts (before any update); mean entropy."""
    model.eval()
    entropy_sum, entropy_tokens = 0.0, 0
    for batch in micro_batches(rollouts, cfg.micro_batch):
        ids, attention, mask = collate(batch, pad_id, device)
        logprobs, entropy = token_logprobs(model, ids, attention, with_entropy=True)
        for row, r in enumerate(batch):
            r.old_logprobs = logprobs[row][mask[row]].detach()
        entropy_sum += float((entropy * mask).sum())
        entropy_tokens += int(mask.sum())
    model.train()
    return entropy_sum / max(entropy_tokens, 1)


def gradient_norm(parameters) -> float:
    """The global L2 norm of the gradients (what clipping would look at), changing nothing."""
    norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def train_on_rollouts(model, optimizer, rollouts: list[Rollout], cfg: Config, pad_id: int,
                      device, rng: random.Random) -> dict[str, float]:
    """One pass (per epoch) over the rollouts in micro-batches. Each micro-batch's loss is the
    mean over all its response tokens, divided by the number of micro-batches in its
    accumulation window; AdamW steps once per window."""
    model.train()
    losses, clip_fractions, grad_norms = [], [], []
    for _ in range(cfg.epochs_per_rollout):
        order = rollouts[:]
        if cfg.shuffle_rollouts:
            rng.shuffle(order)
        batches = micro_batches(order, cfg.micro_batch)
        window = accumulation_counts(len(batches), cfg.grad_accum)
        for i, batch in enumerate(batches):
            ids, attention, mask = collate(batch, pad_id, device)
            logprobs, _ = token_logprobs(model, ids, attention)
            old = None
            if cfg.loss_type == "grpo_clip":
                old = torch.zeros_like(logprobs)
                old[mask] = torch.cat([r.old_logprobs for r in batch])
            per_token, clipped = policy_gradient_loss(
                cfg.loss_type,
                logprobs,
                raw_rewards=torch.tensor([r.reward for r in batch], device=device),
                advantages=torch.tensor([r.advantage for r in batch], device=device),
                old_logprobs=old,
                clip_range=cfg.clip_range,
            )
            loss = aggregate_loss(per_token, mask)
            (loss / window[i]).backward()
            losses.append(float(loss.detach()))
            clip_fractions.append(float(masked_mean(clipped.float(), mask)))
            if (i + 1) % cfg.grad_accum == 0 or i + 1 == len(batches):
                if cfg.grad_clip > 0:
                    grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)))
                else:
                    grad_norms.append(gradient_norm(model.parameters()))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return {
        "loss": sum(losses) / max(len(losses), 1),
        "clip_fraction": sum(clip_fractions) / max(len(clip_fractions), 1),
        "grad_norm": sum(grad_norms) / max(len(grad_norms), 1),
        "optimizer_steps": len(grad_norms),
    }


def build_policy_and_backend(cfg: Config, device: torch.device):
    """(model, tokenizer, backend) in the reference's order: the vLLM engine first, on a GPU
    that holds nothing yet, taking cfg.vllm_gpu_memory (0.55, the reference's) of its memory;
    then the policy; then the engine gets the policy's weights (the first weight sync). The
    transformers backend samples from the policy itself."""
    kind = resolve_backend(cfg.backend, on_gpu=device.type == "cuda", model_name=cfg.model)
    engine = VLLMBackend(cfg.model, cfg.vllm_gpu_memory, cfg.seed) if kind == "vllm" else None
    model, tokenizer = load_policy(cfg.model, device, pick_dtype(cfg.dtype, device), seed=cfg.seed)
    if engine is not None:
        engine.refresh(model)  # start from the training model's weights, whatever their origin
        return model, tokenizer, engine
    if kind == "native":  # native_rollout.py: static KV cache, CUDA graphs
        from native_rollout import NativeBackend
        return model, tokenizer, NativeBackend(model, tokenizer, id_range=sample_id_range(cfg.model))
    return model, tokenizer, TransformersBackend(model, tokenizer, gen_batch=cfg.gen_batch,
                                                 id_range=sample_id_range(cfg.model))


def load_train_problems(cfg: Config, data_dir: Path) -> list[Problem]:
    if cfg.train_data == "synthetic":
        return synthetic_arithmetic(256, seed=cfg.seed)
    return load_jsonl(cfg.train_data or data_dir / "math_train.jsonl")


def parse_args() -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--model", help="hub id or local path (default: the profile's)")
    parser.add_argument("--train-jsonl", help="MATH-style JSON lines to train on")
    parser.add_argument("--backend", choices=["auto", "vllm", "native", "transformers"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a Config field, e.g. --set n_steps=3")
    parser.add_argument("--wandb", action="store_true", help="also log to Weights & Biases")
    args = parser.parse_args()
    cfg = Config(profile=args.profile, **PROFILES[args.profile])
    if os.environ.get("IDEAFORGE_SEED", "").strip():  # each run of an idea its own; --set wins
        cfg.seed = int(os.environ["IDEAFORGE_SEED"]) % 2**31
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for item in args.set:
        key, _, raw = item.partition("=")
        if key not in fields or key == "profile":
            parser.error(f"unknown Config field {key!r}")
        kind = type(getattr(cfg, key))
        value = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        setattr(cfg, key, value)
    if args.model:
        cfg.model = args.model
    if args.train_jsonl:
        cfg.train_data = args.train_jsonl
    if args.backend:
        cfg.backend = args.backend
    return cfg, args


def main() -> None:
    cfg, args = parse_args()
    print(f"config: {dataclasses.asdict(cfg)}", flush=True)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    reporter = Reporter(RUN_START, wandb_config=dataclasses.asdict(cfg) if args.wandb else None)
    grader = Grader(workers=cfg.grader_workers, timeout_s=cfg.grade_timeout_s)  # starts in background

    train_problems = load_train_problems(cfg, default_data_dir())
    model, tokenizer, backend = build_policy_and_backend(cfg, device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    pad_id = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens, stop=(STOP,))
    print(f"backend={backend.name} device={device} train={len(train_problems)} "
          f"params={sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          f"setup_s={time.monotonic() - RUN_START:.1f}", flush=True)

    step = 0  # n_steps=0 saves the base model
    for step in range(1, cfg.n_steps + 1):
        step_start = time.monotonic()
        times: dict[str, float] = {}
        problems = rng.sample(train_problems, min(cfg.prompts_per_step, len(train_problems)))
        prompts = [format_prompt(p) for p in problems]

        t = time.monotonic()
        groups = backend.generate(prompts, n=cfg.group_size, sampling=sampling,
                                  seed=derive_seed(cfg.seed, "rollout", step))
        times["time_rollout_s"] = time.monotonic() - t
        responses = [c.text for group in groups for c in group]
        generated_tokens = sum(c.n_tokens for group in groups for c in group)

        t = time.monotonic()
        answers = [p.answer for p in problems for _ in range(cfg.group_size)]
        rewards, reward_stats = training_rewards(responses, answers, grader)
        reward_tensor = torch.tensor(rewards, dtype=torch.float32)
        advantages = group_advantages(reward_tensor, cfg.group_size, cfg.normalize_std, cfg.adv_eps)
        prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        rollouts = [
            Rollout(prompt_ids[i // cfg.group_size],
                    tokenizer(text, add_special_tokens=False).input_ids, rewards[i], float(advantages[i]))
            for i, text in enumerate(responses)
        ]
        lengths = [len(r.response_ids) for r in rollouts]
        times["time_reward_s"] = time.monotonic() - t

        t = time.monotonic()
        entropy = float("nan")  # only measured where old log-probs are needed anyway
        if cfg.loss_type == "grpo_clip":
            entropy = fill_old_logprobs(model, rollouts, cfg, pad_id, device)
        times["time_old_logprobs_s"] = time.monotonic() - t

        t = time.monotonic()
        train_stats = train_on_rollouts(model, optimizer, rollouts, cfg, pad_id, device, rng)
        times["time_train_s"] = time.monotonic() - t

        t = time.monotonic()
        backend.refresh(model)
        times["time_weight_refresh_s"] = time.monotonic() - t
        times["time_step_s"] = time.monotonic() - step_start

        grouped = reward_tensor.view(-1, cfg.group_size)
        values = {
            "train_reward": sum(rewards) / len(rewards),
            **reward_stats,
            **train_stats,
            "entropy": entropy,
            "response_length": sum(lengths) / len(lengths),
            "response_length_max": max(lengths),
            "zero_variance_groups": float((grouped.std(dim=1) == 0).float().mean()),
            "rollout_tokens_per_s": generated_tokens / max(times["time_rollout_s"], 1e-9),
            **times,
        }
        if device.type == "cuda":
            values["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        reporter.emit_many(values, step)

        if step < cfg.n_steps and time_is_up(cfg.profile, RUN_START, next_step_s=times["time_step_s"]):
            print(f"time limit reached after step {step}", flush=True)
            break

    grader.close()
    t = time.monotonic()
    path = save_policy(model, cfg.model, step, artifacts_dir())
    print(f"saved the policy of step {step} to {path} in {time.monotonic() - t:.1f} s", flush=True)
    reporter.close()


if __name__ == "__main__":
    main()
