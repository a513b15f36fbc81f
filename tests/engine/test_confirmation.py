"""Confirmation by repeats (issue 13): verdicts a researcher would act on, on seeded noise."""

from __future__ import annotations

import random

import pytest

from engine.confirmation import (
    BASELINE,
    Candidate,
    ConfirmationPolicy,
    Decision,
    Goal,
    decide,
    mean_se,
    pick_repeats,
    t_quantile,
)

SIGMA = 0.002  # nanoGPT speedrun: repeated runs spread by about 0.002 in val loss
BASE_LOSS = 3.28


def run_to_verdict(rng: random.Random, effect: float, *, baseline_runs: int = 8,
                   prior: float | None = SIGMA, first: float | None = None,
                   goal: Goal = "minimize", policy: ConfirmationPolicy | None = None) -> Decision:
    """Runs an idea of true `effect` (gain, positive = better) until the rule decides."""
    sign = 1.0 if goal == "maximize" else -1.0
    base = [BASE_LOSS + rng.gauss(0, SIGMA) for _ in range(baseline_runs)]
    runs: list[float] = []
    while True:
        if first is not None and not runs:
            runs.append(BASE_LOSS + sign * first)
        else:
            runs.append(BASE_LOSS + sign * effect + rng.gauss(0, SIGMA))
        d = decide(base, runs, goal, policy, prior)
        if not d.repeat:
            return d


def test_t_quantiles_match_the_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.975, 5) == pytest.approx(2.571, abs=1e-3)
    assert t_quantile(0.995, 10) == pytest.approx(3.169, abs=1e-3)
    assert t_quantile(0.025, 30) == pytest.approx(-2.042, abs=1e-3)


def test_mean_and_standard_error():
    assert mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, 0.57735), abs=1e-5)
    assert mean_se([1.77]) == (1.77, None)


def test_one_run_of_each_and_no_prior_is_unconfirmed_with_a_repeat_as_next_action():
    d = decide([1.80], [1.70], "minimize")
    assert (d.status, d.repeat, d.se) == ("unconfirmed", True, None)
    assert "run it again" in d.reason
    # The environment's declared noise makes the same two runs judgeable (not yet confirmable).
    d = decide([1.80], [1.70], "minimize", prior_sigma=0.002)
    assert d.se is not None and d.gain == pytest.approx(0.10)


def test_a_clear_win_is_confirmed_on_its_first_repeat_and_a_clear_loss_refuted_at_once():
    for seed in range(20):
        win = run_to_verdict(random.Random(seed), effect=0.02)  # 10σ better val loss
        assert (win.status, win.runs) == ("confirmed", 2)
        assert win.gain == pytest.approx(0.02, abs=0.005) and win.lower > 0
        loss = run_to_verdict(random.Random(seed), effect=-0.02)
        assert (loss.status, loss.runs) == ("refuted", 1)


def test_direction_follows_the_goal():
    up = decide([48.0, 47.0, 49.0], [60.0, 61.0, 59.0], "maximize")
    down = decide([48.0, 47.0, 49.0], [60.0, 61.0, 59.0], "minimize")
    assert up.status == "confirmed" and up.gain == pytest.approx(12.0)
    assert down.status == "refuted" and down.gain == pytest.approx(-12.0)


def test_a_lucky_single_run_is_never_confirmed_and_rarely_survives_its_repeats():
    # One 3σ draw from a useless idea: exactly the kind of idea single evaluation builds on.
    base = [BASE_LOSS + d for d in (0.001, -0.002, 0.0005, -0.001, 0.002, 0.0, -0.0005, 0.001)]
    lucky = decide(base, [BASE_LOSS - 3 * SIGMA], "minimize", prior_sigma=SIGMA)
    assert lucky.status == "unconfirmed" and lucky.gain > 0
    # Run on to a verdict, it is confirmed less often than the level allows: the confirmation
    # bound reads the repeats, not the draw that made the idea a candidate.
    verdicts = [run_to_verdict(random.Random(s), effect=0.0, first=3 * SIGMA).status
                for s in range(1000)]
    assert verdicts.count("confirmed") / len(verdicts) < 1 - ConfirmationPolicy().confidence
    assert "unconfirmed" not in verdicts  # every one ends, within max_runs


@pytest.mark.parametrize("prior, baseline_runs", [(SIGMA, 8), (SIGMA, 3), (None, 3)])
def test_false_confirmations_of_useless_ideas_stay_under_the_level(prior, baseline_runs):
    policy = ConfirmationPolicy()
    verdicts = [run_to_verdict(random.Random(s), 0.0, prior=prior, baseline_runs=baseline_runs)
                for s in range(1000)]
    rate = sum(v.status == "confirmed" for v in verdicts) / len(verdicts)
    assert rate < 1 - policy.confidence
    # Sequential: useless ideas are mostly stopped before the cap.
    assert sum(v.runs for v in verdicts) / len(verdicts) < policy.max_runs


def test_a_real_small_gain_is_confirmed_with_enough_runs():
    # A 2σ gain (0.004 val loss) against an 8-run baseline: confirmed nearly always, in few runs.
    verdicts = [run_to_verdict(random.Random(s), effect=2 * SIGMA) for s in range(300)]
    confirmed = [v for v in verdicts if v.status == "confirmed"]
    assert len(confirmed) / len(verdicts) > 0.9
    assert sum(v.runs for v in confirmed) / len(confirmed) < 6
    # A 1σ gain is at the edge of what 12 runs show against 8 baseline runs; a longer baseline
    # (the error it adds is shared by every idea) confirms it more often.
    small = [run_to_verdict(random.Random(s), effect=SIGMA).status for s in range(300)]
    longer = [run_to_verdict(random.Random(s), SIGMA, baseline_runs=24).status for s in range(300)]
    assert small.count("confirmed") > 0.3 * len(small)
    assert longer.count("confirmed") > 0.55 * len(longer)
    assert "confirmed" not in (
        run_to_verdict(random.Random(s), effect=-SIGMA).status for s in range(300))


def candidates() -> tuple[list[float], list[Candidate]]:
    base = [48.0, 46.0, 50.0, 47.0, 49.0, 48.0, 47.5, 48.5]  # GRPO accuracy points, mean 48
    ideas = [
        Candidate("small", (49.0,)),
        Candidate("big", (53.0,)),
        Candidate("worse", (44.0,)),
        Candidate("done", (60.0, 61.0, 59.5)),  # already confirmed
        Candidate("mid", (51.0, 50.0)),
    ]
    return base, ideas


def test_top_k_queues_the_best_open_ideas_first_and_skips_decided_and_losing_ones():
    base, ideas = candidates()
    top2 = ConfirmationPolicy(mode="top-K", top_k=2, gpu_share=1.0)
    assert pick_repeats(ideas, base, "maximize", top2, prior_sigma=2.2) == ["big", "mid"]
    every = ConfirmationPolicy(mode="all", gpu_share=1.0)
    assert pick_repeats(ideas, base, "maximize", every, prior_sigma=2.2) == ["big", "mid", "small"]
    assert pick_repeats(ideas, base, "maximize", ConfirmationPolicy(mode="off")) == []


def test_the_baseline_is_repeated_first_while_it_has_few_runs():
    base, ideas = candidates()
    policy = ConfirmationPolicy(top_k=2, gpu_share=1.0)
    assert pick_repeats(ideas, base[:3], "maximize", policy, prior_sigma=2.2)[:2] == [
        BASELINE, "big"]
    # Nothing open, nothing to compare against: the baseline is not repeated for its own sake.
    assert pick_repeats([Candidate("worse", (44.0,))], base[:3], "maximize", policy) == []


def test_the_gpu_share_caps_how_many_repeats_are_queued():
    base, ideas = candidates()
    policy = ConfirmationPolicy(mode="all", gpu_share=0.3)
    slow = [Candidate(c.idea_id, c.scores, hours_per_run=2.0) for c in ideas]
    # 28 of 100 GPU hours went to repeats; with 2-hour runs 30/102 fits, 32/104 would not.
    assert pick_repeats(slow, base, "maximize", policy, repeat_hours=28, total_hours=100) == [
        "big"]
    assert pick_repeats(slow, base, "maximize", policy, repeat_hours=20, total_hours=100) == [
        "big", "mid", "small"]
    assert pick_repeats(slow, base, "maximize", policy, repeat_hours=29, total_hours=100) == []
