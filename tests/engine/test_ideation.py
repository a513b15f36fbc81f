"""engine.ideation: the epoch schedule, prompts, parent sampling and lenient idea parsing."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from engine import environments
from engine.environments import Environment
from engine.ideation import (
    ScoredIdea,
    exploit_prompt,
    explore_prompt,
    implement_prompt,
    parse_ideas,
    plan_batches,
    sample_parents,
    sample_population,
    seed_prompt,
)

TRAIN_PY = textwrap.dedent("""\
    import torch
    LEARNING_RATE = 3e-4  # tuned for the baseline
    def train():
        loss = model(x).loss
        return loss
""")


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    (tmp_path / "train.py").write_text(TRAIN_PY)
    (tmp_path / "evaluate.py").write_text("def evaluate():\n    return 1.0\n")
    (tmp_path / "environment.toml").write_text(textwrap.dedent("""\
        name = "toy"
        description = "A toy language model trained for a fixed time."
        context = ["train.py"]
        protected = ["evaluate.py"]
        rules = "Never change the evaluation or the time limit. No future-token leaks."
        [protected_lines]
        "train.py" = ["loss = model(x).loss"]
        [metric]
        name = "val_loss"
        goal = "minimize"
        baseline = 3.255
        [profiles.smoke]
        command = "python train.py"
        timeout = 60
    """))
    return environments.load(tmp_path)


def user_text(messages: list[dict[str, str]]) -> str:
    assert [m["role"] for m in messages] == ["system", "user"]
    return messages[1]["content"]


def idea(i: int, score: float | None, status: str = "scored") -> ScoredIdea:
    return ScoredIdea(id=i, text=f"[Experiment] idea number {i}\n[Code Changes] change {i}",
                      score=score, status=status)


# -- schedule ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("epoch", "n", "expected"), [
    (0, 25, [("seed", 10), ("seed", 10), ("seed", 5)]),
    (0, 6, [("seed", 6)]),
    (1, 80, [("exploit", 10)] * 4 + [("explore", 10)] * 4),  # share 0.5 -> 40
    (2, 80, [("exploit", 10)] * 4 + [("explore", 10)] * 4),  # 0.6 * 80 = 48 -> 40
    (4, 80, [("exploit", 10)] * 5 + [("explore", 10)] * 3),  # 0.7 * 80 = 56 -> 50
    (6, 80, [("exploit", 10)] * 6 + [("explore", 10)] * 2),  # 0.8 * 80 = 64 -> 60
    (9, 80, [("exploit", 10)] * 6 + [("explore", 10)] * 2),  # 0.5 + 0.4 = 0.9, capped at 0.8
    (20, 100, [("exploit", 10)] * 8 + [("explore", 10)] * 2),  # cap holds far out
    (3, 50, [("exploit", 10)] * 3 + [("explore", 10)] * 2),  # 0.6 * 50 = 30 exactly
    (1, 15, [("explore", 10), ("explore", 5)]),  # 7.5 rounds down to no full batch
    (1, 6, [("exploit", 3), ("explore", 3)]),  # smaller than a batch: 0.5 * 6 = 3
    (8, 6, [("exploit", 4), ("explore", 2)]),  # 0.8 * 6 = 4.8 -> 4
    (1, 3, [("exploit", 1), ("explore", 2)]),
    (1, 2, [("exploit", 1), ("explore", 1)]),  # at least one exploit from 2 ideas on
    (1, 1, [("explore", 1)]),
    (5, 0, []),
])
def test_plan_batches(epoch: int, n: int, expected: list[tuple[str, int]]) -> None:
    plan = plan_batches(epoch, n)
    assert plan == expected
    assert sum(size for _, size in plan) == n


def test_plan_batches_other_batch_size() -> None:
    assert plan_batches(1, 20, batch_size=4) == [("exploit", 4)] * 2 + [("explore", 4)] * 3


# -- sampling ------------------------------------------------------------------------------------

def test_parents_only_beat_the_baseline() -> None:
    population = [idea(1, 3.10), idea(2, 3.30), idea(3, 3.20), idea(4, None, "failed"),
                  idea(5, 3.255), idea(6, 3.25), idea(7, float("nan"))]
    for seed in range(20):
        parents = sample_parents(population, "minimize", 3.255, rng=random.Random(seed))
        assert [p.id for p in parents] == [1, 3, 6]  # best first

    maximize = [idea(1, 0.40), idea(2, 0.55), idea(3, 0.70)]
    assert [p.id for p in sample_parents(maximize, "maximize", 0.49)] == [3, 2]


def test_parents_are_a_random_sample_of_all_winners() -> None:
    winners = [idea(i, 3.0 - i / 1000) for i in range(1, 41)]
    losers = [idea(i, 4.0) for i in range(41, 60)]
    seen: set[int] = set()
    for seed in range(30):
        chosen = sample_parents(winners + losers, "minimize", 3.255, top_k=10,
                                rng=random.Random(seed))
        assert len(chosen) == 10 and all(p.id <= 40 for p in chosen)
        seen.update(p.id for p in chosen)
    assert len(seen) > 30  # not always the same top 10


def test_sample_population() -> None:
    population = [idea(i, None, "proposed") for i in range(1, 251)]
    sample = sample_population(population, rng=random.Random(1))
    assert len(sample) == 100 and len({i.id for i in sample}) == 100
    assert [i.id for i in sample] == sorted(i.id for i in sample)
    assert len(sample_population(population[:7], sample_k=100)) == 7


# -- prompts -------------------------------------------------------------------------------------

def test_seed_prompt_carries_code_rules_metric_previous_and_steering(env: Environment) -> None:
    previous = ["[Experiment] Use rotary embeddings.\n[Code Changes] edit attention",
                "[Experiment] Warmup for 200 steps.\n[Code Changes] edit the schedule"]
    steering = ["Bigger batch: out of memory on our cards", "Use Muon: we tried it already"]
    text = user_text(seed_prompt(env, 10, previous, steering))
    assert "2 | LEARNING_RATE = 3e-4  # tuned for the baseline" in text  # numbered code
    assert "Never change the evaluation or the time limit." in text
    assert "val_loss" in text and "3.255" in text and "lower is better" in text
    assert "Use rotary embeddings." in text and "Warmup for 200 steps." in text
    assert "The researcher rejected these ideas" in text
    assert "Bigger batch: out of memory on our cards" in text
    assert "Use Muon: we tried it already" in text
    assert "exactly 10 ideas" in text and "[Experiment]" in text and "[End]" in text


def test_previous_ideas_stay_within_the_budget(env: Environment) -> None:
    previous = [f"[Experiment] idea {i:03d} " + "x" * 150 + f"\n[Code Changes] c{i}"
                for i in range(300)]
    small = user_text(seed_prompt(env, 10, previous, [], budget_chars=2_000))
    large = user_text(seed_prompt(env, 10, previous, [], budget_chars=200_000))
    assert "idea 299" in small and "idea 000" not in small  # the most recent are kept
    kept = sum(f"idea {i:03d}" in small for i in range(300))
    assert 5 <= kept < 20
    assert f"({300 - kept} earlier ideas omitted to save space)" in small
    assert "Already proposed (300 ideas)" in small
    assert all(f"idea {i:03d}" in large for i in range(300)) and "omitted" not in large
    assert len(large) - len(small) > 40_000


def test_exploit_prompt_shows_parents_with_scores(env: Environment) -> None:
    parents = [idea(7, 3.1), idea(9, 3.2)]
    text = user_text(exploit_prompt(env, 5, parents, ["[Experiment] old one"], ["x: no"]))
    assert "## Idea 7 — val_loss = 3.1" in text and "idea number 9" in text
    assert "combine" in text and "exactly 5 ideas" in text
    assert "old one" in text and "x: no" in text
    assert "3 | def train():" in text
    with pytest.raises(ValueError, match="explore"):
        exploit_prompt(env, 5, [], [], [])


def test_explore_prompt_marks_failures(env: Environment) -> None:
    population = [idea(1, 3.1), idea(2, 3.4), idea(3, None, "implement_failed"),
                  idea(4, None, "failed"), idea(5, None, "rejected"), idea(6, None, "proposed")]
    text = user_text(explore_prompt(env, 10, population, [], []))
    assert "## Idea 1 — val_loss = 3.1 (beats the baseline)" in text
    assert "## Idea 2 — val_loss = 3.4 (no better than the baseline)" in text
    assert "## Idea 3 — FAILED (implement failed)" in text
    assert "## Idea 4 — FAILED (failed)" in text
    assert "## Idea 5 — rejected by the researcher" in text
    assert "## Idea 6 — not measured yet (proposed)" in text
    assert "avoid patterns that failed" in text
    assert "Never change the evaluation" in text


def test_implement_prompt(env: Environment) -> None:
    messages = implement_prompt(env, "[Experiment] Raise the LR.\n[Code Changes] LR to 6e-4", [])
    text = user_text(messages)
    assert "2 | LEARNING_RATE = 3e-4" in text
    assert "[Experiment] Raise the LR." in text
    assert "--- a/train.py" in text and "+++ b/train.py" in text and "```diff" in text
    assert "<<<<<<< SEARCH" in text
    assert "evaluate.py" in text and "loss = model(x).loss" in text  # protected file and line
    assert "Never change the evaluation" in text
    assert "Earlier attempts" not in text

    retry = user_text(implement_prompt(env, "idea", [("first answer", "hunk 1 does not apply"),
                                                      ("second answer", "touches evaluate.py")]))
    assert "first answer" in retry and "hunk 1 does not apply" in retry
    assert "second answer" in retry and "touches evaluate.py" in retry
    huge = user_text(implement_prompt(env, "idea", [("y" * 100_000, "too long")]))
    assert len(huge) < 30_000 and "too long" in huge


# -- parsing -------------------------------------------------------------------------------------

def test_parse_clean_answer() -> None:
    ideas, problems = parse_ideas(
        "[Experiment] Use RoPE.\n[Code Changes] Replace learned positions in GPT.\n[End]\n"
        "[Experiment] Cosine schedule.\n[Code Changes] Change get_lr.\n[End]\n")
    assert ideas == ["[Experiment] Use RoPE.\n[Code Changes] Replace learned positions in GPT.",
                     "[Experiment] Cosine schedule.\n[Code Changes] Change get_lr."]
    assert problems == []


def test_parse_messy_answer() -> None:
    answer = textwrap.dedent("""\
        Sure! Here are three ideas that should help:

        ```
        1. **[Experiment]** Use *SwiGLU* in the MLP.
        **[Code Changes]:** In `MLP.forward`, replace GELU with SwiGLU; hidden 4*768 -> 2048.
        **[End]**

        ### Idea 2
        [experiment] Longer warmup.
        [CODE CHANGE] In get_lr, warmup_iters = 500.
        ```

        2) [Experiment]: Label smoothing 0.1.
        [Code Changes]
        ```python
        loss = F.cross_entropy(logits, y, label_smoothing=0.1)
        tokens[end] = 0
        ```
        I hope these help!
    """)
    ideas, problems = parse_ideas(answer)
    assert ideas[0] == ("[Experiment] Use *SwiGLU* in the MLP.\n[Code Changes] In `MLP.forward`, "
                        "replace GELU with SwiGLU; hidden 4*768 -> 2048.")
    assert ideas[1] == "[Experiment] Longer warmup.\n[Code Changes] In get_lr, warmup_iters = 500."
    assert ideas[2] == ("[Experiment] Label smoothing 0.1.\n[Code Changes]\n```python\n"
                        "loss = F.cross_entropy(logits, y, label_smoothing=0.1)\n"
                        "tokens[end] = 0\n```")  # code kept whole, the sign-off dropped
    assert len(ideas) == 3
    assert problems == []


def test_parse_reports_problems() -> None:
    answer = ("[Experiment] No code section here.\n[End]\n"
              "[Experiment] Fine one.\n[Code Changes] do it\n[End]\n"
              "[Experiment] Empty code.\n[Code Changes]\n[End]\n"
              "[Experiment] Fine one.\n[Code Changes] do it\n[End]\n")
    ideas, problems = parse_ideas(answer)
    assert ideas == ["[Experiment] Fine one.\n[Code Changes] do it"]
    assert len(problems) == 3
    assert "idea 1" in problems[0] and "no [Code Changes]" in problems[0]
    assert "No code section here." in problems[0]
    assert "empty [Code Changes]" in problems[1]
    assert "repeats" in problems[2]


def test_parse_without_blocks() -> None:
    assert parse_ideas("") == ([], ["no [Experiment] block in the answer (it is empty)"])
    ideas, problems = parse_ideas("I cannot help with that request.")
    assert ideas == [] and "it starts: 'I cannot help with that request.'" in problems[0]
    ideas, problems = parse_ideas("[Code Changes] orphan")
    assert ideas == [] and any("without an [Experiment]" in p for p in problems)


def test_parse_missing_end_on_last_block_and_multiline() -> None:
    ideas, problems = parse_ideas(
        "[Experiment] Two-line\nexperiment text.\n[Code Changes] step 1\nstep 2\n\n"
        "[Experiment] last one\n[Code Changes] final change")
    assert ideas == ["[Experiment] Two-line\nexperiment text.\n[Code Changes] step 1\nstep 2",
                     "[Experiment] last one\n[Code Changes] final change"]
    assert problems == []


def test_parse_answer_cut_at_the_output_limit_drops_the_cut_block() -> None:
    answer = ("[Experiment] Warm up longer.\n[Code Changes] warmup = 200.\n[End]\n\n"
              "[Experiment] Use RoPE.\n[Code Changes] Replace the learned positions\n"
              "[Experiment] Tie the embeddings.\n[Code Changes] Share wte and lm_head; rem")
    whole, problems = parse_ideas(answer)
    assert len(whole) == 3  # read as whole, the fragment passes for an idea

    ideas, problems = parse_ideas(answer, cut_off=True)

    assert [i.split("\n")[0] for i in ideas] == ["[Experiment] Warm up longer.",
                                                 "[Experiment] Use RoPE."]
    assert problems == ["idea 3 was cut off at the model's output limit; dropped"]
    closed = answer.replace("; rem", ".\n[End]\nI hope th")
    assert len(parse_ideas(closed, cut_off=True)[0]) == 3  # cut after its [End]: kept
