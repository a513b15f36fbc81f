"""Problems and the prompt: MATH as JSON lines, synthetic arithmetic for the smoke profile.

This file is protected (environment.toml): the evaluation set and the prompt it is asked in
must be the same for every idea.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

# The r1-zero prompt (DeepSeek-R1-Zero's template). The response continues after "<think>".
R1_ZERO_PROMPT = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the User with the answer. The reasoning process is enclosed within <think> "
    "</think> and answer is enclosed within <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>.\n"
    "User: {question}\n"
    "Assistant: <think>"
)


@dataclass(frozen=True)
class Problem:
    problem: str
    answer: str  # the reference final answer, LaTeX as it would appear inside \boxed{}
    level: int = 0  # MATH difficulty 1..5 (0 when unknown)
    subject: str = ""


def format_prompt(problem: Problem) -> str:
    return R1_ZERO_PROMPT.format(question=problem.problem)


def default_data_dir() -> Path:
    """Where setup puts the data: $IDEAFORGE_DATA_DIR/grpo, else ~/.cache/ideaforge/data/grpo
    (the executors set IDEAFORGE_DATA_DIR; the default is theirs too)."""
    base = os.environ.get("IDEAFORGE_DATA_DIR") or Path.home() / ".cache" / "ideaforge" / "data"
    return Path(base) / "grpo"


def _level(raw: object) -> int:
    text = str(raw or "")
    digits = "".join(ch for ch in text if ch.isdigit())
    return int(digits) if digits else 0


def load_jsonl(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Reads MATH-style JSON lines with at least `problem` and `answer`."""
    problems: list[Problem] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            problems.append(
                Problem(
                    problem=row["problem"],
                    answer=str(row["answer"]),
                    level=_level(row.get("level")),
                    subject=str(row.get("subject") or row.get("type") or ""),
                )
            )
            if limit is not None and len(problems) >= limit:
                break
    if not problems:
        raise ValueError(f"no problems in {path}")
    return problems


def synthetic_arithmetic(n: int, seed: int) -> list[Problem]:
    """Integer arithmetic with exact answers, three levels, for the smoke profile (no download)."""
    rng = random.Random(seed)
    problems = []
    for _ in range(n):
        level = rng.randint(1, 3)
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
        if level == 1:
            text, value = f"What is {a} + {b}?", a + b
        elif level == 2:
            text, value = f"What is {a} \\times {c}?", a * c
        else:
            text, value = f"Compute {a} \\times {c} - {b}.", a * c - b
        problems.append(Problem(problem=text, answer=str(value), level=level, subject="Arithmetic"))
    return problems
