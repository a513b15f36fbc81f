"""The evaluation stage: scores the policy that training saved, from outside training's reach.

    python evaluate.py                     # as the runner starts it (IDEAFORGE_* below)
    python evaluate.py --profile smoke --artifacts ./artifacts [--test-jsonl FILE]

Protected (environment.toml), and run from a pristine copy: the runner starts it after the
training process tree is gone, in a fresh folder holding only the `[evaluate].files` of the
environment version, never the job's patched copy. It reads

- IDEAFORGE_ARTIFACTS: what training left, treated as untrusted input. Exactly
  `policy.safetensors` (the full state dict) and `policy.json` (base model, dtype, step), as
  train_grpo.save_policy writes them; anything else there voids the run.
- IDEAFORGE_METRICS: a fresh file, the only one a score is read from.
- IDEAFORGE_DATA_DIR: the host's data, held-out MATH500 included (training never sees it).
- IDEAFORGE_PROFILE, IDEAFORGE_TRAIN_SECONDS (measured by the runner; recorded).
- IDEAFORGE_EVAL_SEED: the same for every job of a search, never visible to training; smoke
  draws its arithmetic problems from it (without it, from a fresh random seed).

The policy is rebuilt from this profile's base model with the pristine modeling.py, the saved
tensors must match its state dict key for key and shape for shape, and it is sampled with this
file's EVAL_SAMPLING and eval_seed() through the pristine rollout.py, graded by grader.py (whose
math-verify workers start isolated, see grader.py). The score is the final policy's accuracy:
the mean over problems of each problem's share of correct samples (EVAL_SAMPLES per problem),
reported with its standard error over problems (`eval_accuracy_se`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import time
from pathlib import Path

import torch
from data import Problem, default_data_dir, format_prompt, load_jsonl, synthetic_arithmetic
from grader import STOP, Grader, grade_r1_zero
from metrics import Reporter
from modeling import load_policy, pick_dtype, sample_id_range
from rollout import Sampling, derive_seed, make_backend
from safetensors import SafetensorError, safe_open

START = time.monotonic()
# The base model each profile trains; the saved policy must be this model's state dict.
BASE_MODEL = {"full": "Qwen/Qwen2.5-Math-1.5B", "h100": "Qwen/Qwen2.5-Math-1.5B",
              "smoke": "random:tiny", "gpu-bench": "random:qwen2-0.5b"}
EVAL_PROBLEMS = {"full": 500, "h100": 500, "smoke": 16, "gpu-bench": 128}
# Samples per problem. More samples shrink the part of the standard error that comes from
# sampling; the part from which problems are hard stays (README.md, "The score's standard
# error"). smoke takes 2 so that CI runs the several-samples path (it costs a fraction of a second).
EVAL_SAMPLES = {"full": 4, "h100": 4, "smoke": 2, "gpu-bench": 1}
EVAL_SAMPLING = {
    "full": Sampling(temperature=1.0, top_p=1.0, max_new_tokens=1024, stop=(STOP,)),
    "h100": Sampling(temperature=1.0, top_p=1.0, max_new_tokens=1024, stop=(STOP,)),
    "smoke": Sampling(temperature=1.0, top_p=1.0, max_new_tokens=24, stop=(STOP,)),
    "gpu-bench": Sampling(temperature=1.0, top_p=1.0, max_new_tokens=1024, stop=(STOP,)),
}
EVAL_SEED = 1234  # the sampling seed when the run has no IDEAFORGE_SEED (see eval_seed)
EVAL_GEN_BATCH = {"full": 256, "h100": 256, "smoke": 0, "gpu-bench": 0}  # transformers rows per call
VLLM_GPU_MEMORY = 0.55
GRADER_WORKERS = {"full": 8, "h100": 8, "smoke": 1, "gpu-bench": 8}
POLICY_FILE, META_FILE = "policy.safetensors", "policy.json"
MAX_META_BYTES = 64 * 1024
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class VoidRun(Exception):
    """What training left cannot be scored as the policy it claims to be."""


def load_eval_problems(profile: str, test_jsonl: str | None = None,
                       problem_seed: int | None = None) -> tuple[list[Problem], int | None]:
    """MATH500 (held out: only the evaluator's data dir holds it), or the JSON lines given; for
    smoke, synthetic arithmetic drawn with a seed the training process cannot know: the one
    given, else the search's IDEAFORGE_EVAL_SEED (every job of a search is asked the same
    problems), else a fresh one. The seed is returned so that the score lines record it."""
    n = EVAL_PROBLEMS[profile]
    if profile == "smoke" and test_jsonl is None:
        seed = problem_seed
        if seed is None and os.environ.get("IDEAFORGE_EVAL_SEED"):
            seed = int(os.environ["IDEAFORGE_EVAL_SEED"])
        if seed is None:
            seed = secrets.randbits(31)
        return synthetic_arithmetic(n, seed=seed), seed
    path = Path(test_jsonl) if test_jsonl else default_data_dir() / "math500.jsonl"
    return load_jsonl(path, limit=n), None


def read_policy(artifacts: Path, model_spec: str, device: torch.device, dtype: torch.dtype):
    """(model, tokenizer, meta): the base model rebuilt with the saved tensors, or VoidRun."""
    if not artifacts.is_dir():
        raise VoidRun(f"no artifacts folder {artifacts}: training saved no policy (save_policy)")
    found = sorted(p.name for p in artifacts.iterdir())
    unexpected = [name for name in found if name not in (POLICY_FILE, META_FILE)]
    if unexpected:
        raise VoidRun(f"unexpected files in the artifacts: {', '.join(unexpected[:5])} "
                      f"(only {POLICY_FILE} and {META_FILE} are read)")
    for name in (POLICY_FILE, META_FILE):
        path = artifacts / name
        if path.is_symlink() or not path.is_file():
            raise VoidRun(f"no saved policy: {name} is missing or not a plain file (save_policy)")
    if (artifacts / META_FILE).stat().st_size > MAX_META_BYTES:
        raise VoidRun(f"{META_FILE} is larger than {MAX_META_BYTES} bytes")
    try:
        meta = json.loads((artifacts / META_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VoidRun(f"{META_FILE} is not JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("model") != model_spec:
        got = meta.get("model") if isinstance(meta, dict) else meta
        raise VoidRun(f"the saved policy is of model {got!r}, not the base model {model_spec!r}")
    model, tokenizer = load_policy(model_spec, device, dtype)
    expected = model.state_dict()
    try:
        with safe_open(str(artifacts / POLICY_FILE), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
            if missing or extra:
                raise VoidRun(f"saved tensors do not match the model's keys: missing {missing[:3]}"
                              f"{'...' if len(missing) > 3 else ''}, unexpected {extra[:3]}"
                              f"{'...' if len(extra) > 3 else ''}")
            loaded = {}
            for name in sorted(keys):
                tensor_slice = f.get_slice(name)
                shape, kind = tuple(tensor_slice.get_shape()), tensor_slice.get_dtype()
                if shape != tuple(expected[name].shape):
                    raise VoidRun(f"saved tensor {name} has shape {list(shape)}, the model's is "
                                  f"{list(expected[name].shape)}")
                if kind not in ("F32", "BF16", "F16"):
                    raise VoidRun(f"saved tensor {name} has dtype {kind}, not a float type")
                loaded[name] = f.get_tensor(name)
    except SafetensorError as exc:
        raise VoidRun(f"{POLICY_FILE} is not a readable safetensors file: {exc}") from None
    _check_tied(model, loaded)
    model.load_state_dict(loaded, strict=True)
    return model, tokenizer, meta


def _check_tied(model, loaded: dict[str, torch.Tensor]) -> None:
    """Names that share one parameter in the model (tied embeddings) must hold equal tensors:
    loading would otherwise keep whichever came last."""
    by_storage: dict[int, list[str]] = {}
    for name, tensor in model.state_dict().items():
        by_storage.setdefault(tensor.data_ptr(), []).append(name)
    for names in by_storage.values():
        first = loaded[names[0]]
        for other in names[1:]:
            if not torch.equal(first, loaded[other]):
                raise VoidRun(f"saved tensors {names[0]} and {other} differ, but the model ties them")


def accuracy_and_se(per_problem: list[float]) -> tuple[float, float]:
    """The mean of the per-problem shares of correct samples, and its standard error over
    problems: the sample standard deviation of those shares / sqrt(number of problems). With
    one sample per problem this is the binomial sqrt(p(1-p)/(n-1)); with k samples it also
    counts how much problems differ from each other, which more samples do not remove."""
    n = len(per_problem)
    mean = sum(per_problem) / n
    if n < 2:
        return mean, float("nan")  # not estimable; the Reporter leaves non-finite values out
    variance = sum((x - mean) ** 2 for x in per_problem) / (n - 1)
    return mean, math.sqrt(variance / n)


def eval_seed() -> int:
    """The evaluation's sampling seed: drawn from the run's IDEAFORGE_SEED when the engine set
    one (each repeat of an idea then samples its evaluation independently, and each problem has
    its own stream under vLLM: rollout.prompt_seeds), else the fixed EVAL_SEED."""
    raw = os.environ.get("IDEAFORGE_SEED", "").strip()
    return derive_seed(int(raw), "evaluation") if raw else EVAL_SEED


def evaluate(backend, problems: list[Problem], grader: Grader, profile: str,
             seed: int | None = None) -> dict[str, float]:
    """EVAL_SAMPLES[profile] samples per problem; a sample is correct when it is well formed and
    equivalent to the reference. Rates are over all samples, the accuracy's SE over problems.
    seed: the sampling seed (default: eval_seed())."""
    started = time.monotonic()
    k = EVAL_SAMPLES[profile]
    prompts = [format_prompt(p) for p in problems]
    seed = eval_seed() if seed is None else seed
    completions = backend.generate(prompts, n=k, sampling=EVAL_SAMPLING[profile], seed=seed)
    responses = [c.text for group in completions for c in group]
    scores = grade_r1_zero(responses, [p.answer for p in problems for _ in range(k)], grader)
    correct = [s.correct and s.format_ok for s in scores]
    accuracy, se = accuracy_and_se([sum(correct[i * k:(i + 1) * k]) / k for i in range(len(problems))])
    n = len(scores)
    print(f"[eval] sample response: {responses[0][:300]!r}", flush=True)
    return {
        "eval_accuracy": accuracy,
        "eval_accuracy_se": se,
        "eval_format_rate": sum(s.format_ok for s in scores) / n,
        "eval_response_length": sum(c.n_tokens for group in completions for c in group) / n,
        "time_eval_s": time.monotonic() - started,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=os.environ.get("IDEAFORGE_PROFILE") or "full",
                        choices=sorted(BASE_MODEL))
    parser.add_argument("--artifacts", default=os.environ.get("IDEAFORGE_ARTIFACTS") or "artifacts",
                        help="the folder train_grpo.py saved the policy into")
    parser.add_argument("--test-jsonl", help="MATH500-style JSON lines (default: <data dir>/math500.jsonl)")
    parser.add_argument("--model", help="the base model the policy was trained from, when a human "
                        "trained another one with --model (default: the profile's)")
    parser.add_argument("--problem-seed", type=int, help="smoke: the seed of the arithmetic "
                        "problems (default: $IDEAFORGE_EVAL_SEED, else a fresh one; recorded "
                        "in the score lines)")
    parser.add_argument("--backend", default="auto", choices=["auto", "vllm", "native", "transformers"])
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    profile, spec = args.profile, args.model or BASE_MODEL[args.profile]
    reporter = Reporter(START)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    grader = Grader(workers=GRADER_WORKERS[profile])  # starts while the model loads
    try:
        model, tokenizer, meta = read_policy(Path(args.artifacts), spec, device, pick_dtype("auto", device))
    except VoidRun as exc:
        grader.close()
        reporter.emit("void", 1, 0, reason=f"evaluation: {exc}")
        reporter.close()
        print(f"void: {exc}", file=sys.stderr, flush=True)
        return 2
    step = int(meta["step"]) if isinstance(meta.get("step"), int) else 0
    problems, problem_seed = load_eval_problems(profile, args.test_jsonl, args.problem_seed)
    sampling_seed = eval_seed()
    backend = make_backend(args.backend, model=model, tokenizer=tokenizer, model_name=spec,
                           gpu_memory_utilization=VLLM_GPU_MEMORY, seed=sampling_seed,
                           gen_batch=EVAL_GEN_BATCH[profile], id_range=sample_id_range(spec))
    print(f"evaluating the policy of step {step} ({spec}, backend={backend.name}, device={device}) "
          f"on {len(problems)} problems; load_s={time.monotonic() - START:.1f}", flush=True)
    results = evaluate(backend, problems, grader, profile, seed=sampling_seed)
    grader.close()
    extra: dict[str, object] = {"evaluator": "grpo/evaluate.py", "eval_problems": len(problems),
                                "eval_samples": EVAL_SAMPLES[profile], "sampling_seed": sampling_seed}
    if problem_seed is not None:
        extra["problem_seed"] = problem_seed
    train_seconds = os.environ.get("IDEAFORGE_TRAIN_SECONDS")
    if train_seconds:
        extra["train_seconds"] = float(train_seconds)
    for name, value in results.items():
        reporter.emit(name, value, step, **extra)
    print(" ".join(f"{k}={v:.4g}" for k, v in results.items()), flush=True)
    reporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
