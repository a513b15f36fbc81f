"""Evaluation, its schedule and the wall-clock limit.

Protected (environment.toml): every idea is scored by this code, on the same problems, with the
same sampling settings, the same grader, as often and within the same time.
"""

from __future__ import annotations

import time
from pathlib import Path

from data import Problem, default_data_dir, format_prompt, load_jsonl, synthetic_arithmetic
from grader import STOP, Grader, grade_r1_zero
from metrics import Reporter
from rollout import Sampling

EVAL_EVERY_STEPS = {"full": 2, "h100": 2, "smoke": 2, "gpu-bench": 2}
TIME_LIMIT_S = {"full": 3600.0, "h100": 3600.0, "smoke": 120.0, "gpu-bench": 300.0}
EVAL_PROBLEMS = {"full": 500, "h100": 500, "smoke": 16, "gpu-bench": 128}
EVAL_SAMPLING = {
    "full": Sampling(temperature=1.0, top_p=1.0, max_new_tokens=1024, stop=(STOP,)),
    "h100": Sampling(temperature=1.0, top_p=1.0, max_new_tokens=1024, stop=(STOP,)),
    "smoke": Sampling(temperature=1.0, top_p=1.0, max_new_tokens=24, stop=(STOP,)),
    "gpu-bench": Sampling(temperature=1.0, top_p=1.0, max_new_tokens=1024, stop=(STOP,)),
}
EVAL_SEED = 1234


def time_is_up(profile: str, run_start: float) -> bool:
    return time.monotonic() - run_start > TIME_LIMIT_S[profile]


def load_eval_problems(profile: str, test_jsonl: str | None = None) -> list[Problem]:
    """MATH500 (from setup, or the JSON lines given), or synthetic arithmetic for smoke."""
    n = EVAL_PROBLEMS[profile]
    if profile == "smoke" and test_jsonl is None:
        return synthetic_arithmetic(n, seed=EVAL_SEED)
    path = Path(test_jsonl) if test_jsonl else default_data_dir() / "math500.jsonl"
    return load_jsonl(path, limit=n)


def evaluate(backend, problems: list[Problem], grader: Grader, profile: str, step: int,
             reporter: Reporter) -> dict[str, float]:
    """One sample per problem; accuracy = well-formed and equivalent to the reference."""
    started = time.monotonic()
    prompts = [format_prompt(p) for p in problems]
    completions = backend.generate(prompts, n=1, sampling=EVAL_SAMPLING[profile], seed=EVAL_SEED)
    responses = [c[0].text for c in completions]
    scores = grade_r1_zero(responses, [p.answer for p in problems], grader)
    n = len(scores)
    results = {
        "eval_accuracy": sum(s.correct and s.format_ok for s in scores) / n,
        "eval_format_rate": sum(s.format_ok for s in scores) / n,
        "eval_response_length": sum(c[0].n_tokens for c in completions) / n,
        "time_eval_s": time.monotonic() - started,
    }
    reporter.emit_many(results, step)
    print(f"[eval step {step}] sample response: {responses[0][:300]!r}", flush=True)
    return results
