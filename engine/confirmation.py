"""Confirmation by repeats: is an idea better than the baseline, or was its score luck?

One run is not a result (issue 13). An idea that beats the baseline once is *unconfirmed*; this
module decides, from all its scored runs and the baseline's, whether it is

- ``confirmed``: its gain over the baseline is positive beyond a confidence bound;
- ``refuted``: its gain is, with confidence, below the smallest gain worth having (or it is
  worse), or it used up its repeats without being confirmed;
- ``unconfirmed``: not decided yet, and the next action is to run it again.

The rule is a sequential two-sided bound on the gain ``d = mean(idea) - mean(baseline)`` (sign
flipped for metrics to minimize), looked at after every run of the idea:

- the noise σ is pooled from the baseline's and the idea's runs (repeats of one environment
  share their noise; Welch's per-side variances with two or three runs a side leave so few
  degrees of freedom that nothing would ever confirm) and, when the environment declares a
  prior σ for the profile, that prior counts as ``prior_weight`` degrees of freedom;
- confirmed when the idea has at least ``min_runs`` runs and ``d' - c·SE' > 0``, where ``d'``
  and ``SE'`` are the gain and its error from the idea's *repeats* (every run after the first:
  the first is what made it a candidate, so it is biased up exactly when it was lucky; scores
  come in the order they ran), and ``c`` is Student's t quantile at one-sided level
  ``(1 - confidence) / max_runs``: a Bonferroni split of the error over every look the idea can
  get, so peeking after each repeat cannot raise the false-confirmation rate above
  ``1 - confidence`` (the union bound; in practice it stays well under it);
- refuted when ``d + c'·SE < min_effect``, with ``c'`` at the (looser) ``refute_confidence``:
  wrongly stopping a real idea costs one lost parent, a false elite costs every exploit batch it
  seeds, so the two errors are not priced alike;
- refuted when the idea has had ``max_runs`` runs and is still undecided (nothing more will be
  spent on it, so it must not be built on);
- refuted when its repeats have pulled its mean gain to zero or below (its one lead was luck;
  the repeat picker spends nothing more on it).

Pure functions, standard library only; the engine feeds it scores and stores its verdicts.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Goal = Literal["maximize", "minimize"]
Status = Literal["confirmed", "refuted", "unconfirmed"]
Mode = Literal["off", "top-K", "all"]

#: The id `pick_repeats` returns for "run the baseline again".
BASELINE = "baseline"


@dataclass(frozen=True)
class ConfirmationPolicy:
    """How much evidence an idea needs, and how much GPU time repeats may take.

    Defaults, and why (tuned in bench/selection.py on seeds other than those it reports):
    - ``confidence=0.9`` over ``max_runs=12`` looks: each look tests at one-sided
      0.1 / 12 ≈ 0.008, stricter than the p < 0.01 the nanoGPT speedrun asks of a record, on
      repeats the selection never saw; the union bound keeps a useless idea's chance of ever
      being confirmed under 10 % (in practice 1–3 %). What a search feels is the share of false
      elites among confirmed ideas (a false-discovery rate, growing with the share of useless
      ideas): 1–2 % at 70 % useless ideas in bench/selection.py. 0.8 finds slightly better bests
      there at twice the false elites; at 0.95 the nanoGPT best falls back to single
      evaluation's; 0.9 keeps a margin for ideators worse than the simulated one.
    - ``max_runs=12``: an idea whose gain has not shown in 12 runs is below ~1σ, smaller than
      anything a search can build on; a higher cap makes every look stricter (the split).
    - ``min_runs=2``: one run never confirms, however high. Confirmation reads the repeats
      only (module docstring); counting the selecting run as evidence let one lucky 3σ run of
      a useless idea end confirmed 1 time in 3.
    - ``refute_confidence=0.8``: the bound that stops an idea early for being too small. Looser
      than ``confidence`` because a wrong refutation loses one candidate, not the search.
    - ``min_effect=None``: the smallest gain worth building on, in the metric's units; None
      means a quarter of the estimated noise σ — a gain below that would need hundreds of runs
      to confirm, more than any repeat budget gives it.
    - ``prior_weight=4``: a declared prior σ counts as much as five runs of one setting: enough
      that one run of an idea can be judged, not so much that a wrong prior overrules the data.
    - ``baseline_runs=8``: the baseline is repeated (while some idea awaits a verdict) until it
      has this many runs. Every comparison shares it, and its error floors the gain's standard
      error at σ·√(1/m) however often the idea runs: with the 3 runs a profile starts with, no
      gain under ~2σ could ever be confirmed.
    - ``mode="top-K"``, ``top_k=4``, ``gpu_share=0.3``: which unconfirmed ideas get repeats, and
      the most of all GPU time repeats (baseline included) may take. At 0.5 the search tries
      too few new ideas to find the gains worth confirming; 0.3 keeps most GPU time exploring.
    """

    confidence: float = 0.9
    refute_confidence: float = 0.8
    max_runs: int = 12
    min_runs: int = 2
    min_effect: float | None = None
    prior_weight: int = 4
    baseline_runs: int = 8
    mode: Mode = "top-K"
    top_k: int = 4
    gpu_share: float = 0.3

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1 or not 0.5 < self.refute_confidence < 1:
            raise ValueError("confidence levels must lie between 0.5 and 1")
        if not 1 <= self.min_runs <= self.max_runs:
            raise ValueError("need 1 <= min_runs <= max_runs")
        if self.mode not in ("off", "top-K", "all"):
            raise ValueError(f"mode must be off, top-K or all, got {self.mode!r}")
        if not 0 <= self.gpu_share <= 1:
            raise ValueError("gpu_share must lie between 0 and 1")


@dataclass(frozen=True)
class Decision:
    status: Status
    gain: float  # mean gain over the baseline, positive = better, in the metric's units
    se: float | None  # standard error of the gain; None when there is no noise estimate
    lower: float | None  # confirmation bound on the gain, from the repeats (None before one)
    upper: float | None  # refutation bound on the gain
    runs: int
    reason: str

    @property
    def repeat(self) -> bool:
        """True when the next action is another run of the idea."""
        return self.status == "unconfirmed"


def mean_se(scores: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean; the error is None for a single run."""
    if not scores:
        raise ValueError("no scores")
    mean = statistics.fmean(scores)
    if len(scores) < 2:
        return mean, None
    return mean, statistics.stdev(scores) / math.sqrt(len(scores))


def decide(
    baseline: Sequence[float],
    idea: Sequence[float],
    goal: Goal,
    policy: ConfirmationPolicy | None = None,
    prior_sigma: float | None = None,
) -> Decision:
    """The verdict on an idea from its scored runs and the baseline's (module docstring)."""
    policy = policy or ConfirmationPolicy()
    if not baseline or not idea:
        raise ValueError("need at least one baseline run and one idea run")
    sign = 1.0 if goal == "maximize" else -1.0
    gain = sign * (statistics.fmean(idea) - statistics.fmean(baseline))
    n, m = len(idea), len(baseline)
    sigma, df = _pooled_sigma(baseline, idea, prior_sigma, policy.prior_weight)
    if sigma is None:
        return Decision("unconfirmed", gain, None, None, None, n,
                        "one run of each and no prior noise: run it again")
    se = sigma * math.sqrt(1 / n + 1 / m)
    upper = gain + t_quantile(policy.refute_confidence, df) * se
    # Confirmation reads the repeats only: the first run is what made the idea a candidate (it
    # beat the baseline), so it is biased upward exactly when it was lucky. Fresh draws after
    # the selection keep the bound's error rate, whatever that first run was.
    lower = None
    repeats = idea[1:]
    r_sigma, r_df = (_pooled_sigma(baseline, repeats, prior_sigma, policy.prior_weight)
                     if repeats else (None, 0.0))
    if r_sigma is not None:
        looks = max(policy.max_runs, n)
        r_gain = sign * (statistics.fmean(repeats) - statistics.fmean(baseline))
        c = t_quantile(1 - (1 - policy.confidence) / looks, r_df)
        lower = r_gain - c * r_sigma * math.sqrt(1 / len(repeats) + 1 / m)
    min_effect = policy.min_effect if policy.min_effect is not None else 0.25 * sigma
    if lower is not None and lower > 0 and n >= policy.min_runs:
        return Decision("confirmed", gain, se, lower, upper, n,
                        f"gain {gain:.4g} ± {se:.2g}: the repeats' lower bound {lower:.4g} > 0")
    if upper < min_effect:
        return Decision("refuted", gain, se, lower, upper, n,
                        f"gain {gain:.4g} ± {se:.2g}: upper bound {upper:.4g} "
                        f"< minimum effect {min_effect:.4g}")
    if n >= policy.max_runs:
        return Decision("refuted", gain, se, lower, upper, n,
                        f"not confirmed within {policy.max_runs} runs")
    if n >= 2 and gain <= 0:
        # Its repeats pulled its mean to the baseline's or below: the lead it had was luck,
        # and no repeat is spent on it any more (`pick_repeats` takes leading ideas only).
        return Decision("refuted", gain, se, lower, upper, n,
                        f"its mean over {n} runs no longer beats the baseline (gain {gain:.4g})")
    return Decision("unconfirmed", gain, se, lower, upper, n,
                    f"gain {gain:.4g} ± {se:.2g} undecided: run it again")


def _pooled_sigma(
    baseline: Sequence[float], idea: Sequence[float], prior_sigma: float | None, prior_weight: int
) -> tuple[float | None, float]:
    """Pooled noise σ and its degrees of freedom (the prior counts as `prior_weight` of them)."""
    ss = 0.0
    for runs in (baseline, idea):
        mean = statistics.fmean(runs)
        ss += sum((x - mean) ** 2 for x in runs)
    df = float(len(baseline) - 1 + len(idea) - 1)
    if prior_sigma is not None and prior_sigma > 0:
        ss += prior_weight * prior_sigma**2
        df += prior_weight
    if df <= 0:
        return None, 0.0
    return math.sqrt(ss / df), df


@dataclass(frozen=True)
class Candidate:
    """An idea as the repeat picker sees it: its scores so far and the GPU hours of one run."""

    idea_id: str
    scores: tuple[float, ...]
    hours_per_run: float = 1.0


def pick_repeats(
    candidates: Sequence[Candidate],
    baseline: Sequence[float],
    goal: Goal,
    policy: ConfirmationPolicy | None = None,
    *,
    repeat_hours: float = 0.0,
    total_hours: float = 0.0,
    prior_sigma: float | None = None,
) -> list[str]:
    """The repeats to queue now, best first: one run each for unconfirmed ideas that beat the
    baseline on their mean, the `top_k` best under ``top-K``, all under ``all``, none under
    ``off``; led by `BASELINE` while the baseline has fewer than `baseline_runs` runs (it costs
    a candidate's run time); cut so that repeats stay within `gpu_share` of all GPU hours
    (`repeat_hours` of `total_hours` are already spent on repeats)."""
    policy = policy or ConfirmationPolicy()
    if policy.mode == "off":
        return []
    open_ = []
    for c in candidates:
        d = decide(baseline, c.scores, goal, policy, prior_sigma)
        if d.repeat and d.gain > 0:
            # Best first by mean gain; among equals the one with fewer runs learns more per run.
            open_.append((-d.gain, len(c.scores), c))
    open_.sort(key=lambda t: (t[0], t[1]))
    chosen = [c for _, _, c in open_]
    if policy.mode == "top-K":
        chosen = chosen[: policy.top_k]
    if chosen and len(baseline) < policy.baseline_runs:
        chosen.insert(0, Candidate(BASELINE, tuple(baseline), chosen[0].hours_per_run))
    queued: list[str] = []
    for c in chosen:
        # Share after this repeat: (spent + h) / (total + h) must stay within gpu_share.
        h = c.hours_per_run
        if repeat_hours + h > policy.gpu_share * (total_hours + h) + 1e-12:
            break
        repeat_hours += h
        total_hours += h
        queued.append(c.idea_id)
    return queued


@functools.lru_cache(maxsize=1024)  # a search asks for few (p, df) pairs, over and over
def t_quantile(p: float, df: float) -> float:
    """Student's t quantile: the t with P(T ≤ t) = p, by bisection on the CDF."""
    if not 0 < p < 1:
        raise ValueError("p must lie in (0, 1)")
    if math.isinf(df) or df > 1e6:
        return statistics.NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1 - p, df)
    hi = 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    lo = 0.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * max(1.0, hi):
            break
    return (lo + hi) / 2


def t_cdf(t: float, df: float) -> float:
    """Student's t CDF through the regularized incomplete beta function."""
    tail = 0.5 * _beta_inc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def _beta_inc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    # The fraction converges fast for x below the mean a/(a+b); use the symmetry otherwise.
    if x > (a + 1) / (a + b + 2):
        return 1 - _beta_inc(b, a, 1 - x)
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        k = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = k * (b - k) * x / ((a + 2 * k - 1) * (a + 2 * k))
        else:
            num = -(a + k) * (a + b + k) * x / ((a + 2 * k) * (a + 2 * k + 1))
        d = 1 + num * d
        d = tiny if abs(d) < tiny else d
        d = 1 / d
        c = 1 + num / c
        c = tiny if abs(c) < tiny else c
        f *= c * d
        if abs(1 - c * d) < 1e-14:
            break
    return math.exp(log_front) * (f - 1) / a
