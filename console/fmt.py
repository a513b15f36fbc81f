"""How the console writes numbers, ages and states: one place, so every screen agrees.

`clock` is the console's idea of now; snapshot tests pin it so that ages render the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.store import verification
from engine.store.verification import Verification

if TYPE_CHECKING:  # console_queries loads SQLAlchemy: not before the first frame
    from engine.store.console_queries import Ranked, SearchSummary

clock: Callable[[], float] = time.time

STATUS_STYLE: dict[str, str] = {
    "proposed": "bold yellow",
    "approved": "cyan",
    "rejected": "red dim",
    "implementing": "blue",
    "implement_failed": "red",
    "implemented": "cyan",
    "diff_review": "bold yellow",
    "checking": "blue",  # its pre-flight check runs
    "repairing": "magenta",  # back with its coder after a crash
    "queued": "blue",
    "running": "bold blue",
    "scored": "green",
    "failed": "red",
    "skipped": "dim",
    "superseded": "dim",
}

SEARCH_STATUS_STYLE: dict[str, str] = {
    "created": "yellow",
    "running": "bold green",
    "stopped": "yellow",
    "finished": "cyan",
    "failed": "red",
    "imported": "magenta",
}

JOB_STATE_STYLE: dict[str, str] = {
    "queued": "yellow",
    "launching": "blue",
    "running": "bold blue",
    "unreachable": "bold red",
    "succeeded": "green",
    "finished": "green",
    "failed": "red",
    "cancelled": "dim",
    "lost": "red",
}

#: Idea states in which a decision still applies (mirrors the engine's `_apply`).
APPROVABLE = frozenset({"proposed", "diff_review"})
REJECTABLE = frozenset({"proposed", "approved", "diff_review"})
EDITABLE = frozenset({"proposed", "approved"})


def score(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.{digits}g}"


def delta(value: float | None, baseline: float | None) -> str:
    if value is None or baseline is None:
        return ""
    return f"{value - baseline:+.4f}"


def beats(value: float | None, baseline: float | None, goal: str) -> bool | None:
    """True if better than the baseline, False if worse, None when either is unknown."""
    if value is None or baseline is None:
        return None
    if value == baseline:
        return False
    return value < baseline if goal == "minimize" else value > baseline


def score_style(value: float | None, baseline: float | None, goal: str) -> str:
    verdict = beats(value, baseline, goal)
    return "dim" if verdict is None else "bold green" if verdict else "red"


def age(at: float | None, now: float | None = None) -> str:
    """`12s`, `4m`, `3h`, `2d` since `at`; `-` when unknown."""
    if at is None:
        return "-"
    secs = max(0.0, (clock() if now is None else now) - at)
    if secs < 90:
        return f"{secs:.0f}s"
    if secs < 90 * 60:
        return f"{secs / 60:.0f}m"
    if secs < 36 * 3600:
        return f"{secs / 3600:.0f}h"
    return f"{secs / 86400:.0f}d"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def money(usd: float) -> str:
    return f"${usd:.2f}" if usd < 100 else f"${usd:,.0f}"


def first_line(text: str | None, width: int = 120) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def clip(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


#: How the board marks a score no evaluation stage measured, and an idea with flags.
UNVERIFIED_MARK = "?"
FLAG_MARK = "⚑"


def verification_lines(v: Verification) -> list[tuple[str, str]]:
    """(line, style) saying which evaluator judged an idea, then one line per flag: the same
    words in `ideaforge show` and on the detail screen."""
    out: list[tuple[str, str]] = []
    if v.label == verification.VERIFIED:
        out.append((f"verified by evaluator {(v.evaluator or '')[:12]}", "green"))
    elif v.label == verification.UNVERIFIED:
        out.append(("unverified: scored by the training process itself (no evaluation stage)",
                    "yellow"))
    elif v.label == verification.OTHER_EVALUATOR:
        ours, theirs = (v.evaluator or "")[:12], (v.ranks_by or "")[:12]
        line = f"not ranked: scored by another evaluator ({ours}; the search ranks by {theirs})"
        out.append((line, "red"))
    out += [(f"flagged: {line}", "magenta") for line in v.flags]
    return out


#: Confirmation by repeats (issue 13), drawn right after the score (and after its `?` when the
#: score is unverified): whether repeats with fresh seeds upheld the idea's lead, which is
#: another question than who measured it. No mark: not a candidate, or confirmation is off.
CONFIRMATION_MARK: dict[str, str] = {"confirmed": "✓", "unconfirmed": "○", "refuted": "✗"}
CONFIRMATION_STYLE: dict[str, str] = {"confirmed": "bold green", "unconfirmed": "yellow",
                                      "refuted": "red"}
CONFIRMATION_MEANING: dict[str, str] = {
    "confirmed": "confirmed: repeats with fresh seeds upheld its lead over the baseline",
    "unconfirmed": "unconfirmed: it beat the baseline, but on too few runs; repeats will "
                   "decide (until then it is neither called best nor built on)",
    "refuted": "refuted: repeats did not uphold its lead (it is not built on)",
}
#: A near duplicate of an earlier idea of the search ("≈#N"), flagged before implementation.
TWIN_MARK = "≈"


def mark(confirmation: str | None) -> str:
    return CONFIRMATION_MARK.get(confirmation or "", "")


def se(value: float | None) -> str:
    """A standard error to two significant digits, fixed point: `±0.0083`, `±1.5`."""
    if value is None:
        return ""
    if value == 0 or not math.isfinite(value):
        return f"±{value:g}"
    digits = max(0, min(6, 1 - math.floor(math.log10(abs(value)))))
    return f"±{value:.{digits}f}"


def spread(score_se: float | None, runs: int) -> str:
    """`±0.0083 ×3`: the mean's error and its number of runs, for a mean of two runs or more
    (one run has neither)."""
    if runs < 2:
        return ""
    return " ".join(p for p in (se(score_se), f"×{runs}") if p)


def mean_se(value: float | None, score_se: float | None, runs: int) -> str:
    """`4.0000 ±0.0083 ×3`, or `4.0000` for a single run."""
    return " ".join(p for p in (score(value), spread(score_se, runs)) if p)


def runs_word(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def verdict_style(value: float | None, baseline: float | None, goal: str,
                  confirmation: str | None) -> str:
    """`score_style`, toned down where repeats have not (yet) upheld a lead: an unconfirmed
    lead is not bold, a refuted one is dim."""
    if confirmation == "refuted":
        return "dim"
    style = score_style(value, baseline, goal)
    return "green" if confirmation == "unconfirmed" and style == "bold green" else style


def confirmation_line(value: float | None, score_se: float | None, runs: int,
                      confirmation: str | None, baseline: tuple[float | None, float | None, int]
                      | None = None) -> tuple[str, str] | None:
    """(line, style): the idea's mean ± error over its runs and its confirmation, against the
    baseline's (mean, error, runs) when known; None for an idea with no scored run."""
    if runs < 1 or value is None:
        return None
    said = f"mean {score(value)}" + (f" {se(score_se)}" if score_se is not None and runs > 1
                                     else "") + f" over {runs_word(runs)}"
    if baseline is not None and baseline[0] is not None:
        b_value, b_se, b_runs = baseline
        said += f" · baseline {score(b_value)}" + (f" {se(b_se)}" if b_se is not None and
                                                   b_runs > 1 else "")
        said += f" over {runs_word(b_runs)}" if b_runs else ""
    if confirmation in CONFIRMATION_MARK:
        return (f"{mark(confirmation)} {CONFIRMATION_MEANING[confirmation]} — {said}",
                CONFIRMATION_STYLE[confirmation])
    return (said, "")


def best_parts(summary: SearchSummary) -> list[tuple[str, str]]:
    """(text, style) pieces naming the search's best: with confirmation on, the best confirmed
    idea only, and an unconfirmed idea that leads it said as such, e.g.
    `best score: none confirmed yet — leading #11 2.0470 ○ (unconfirmed, 1 run)`."""
    s = summary.search
    best, leading = summary.best_idea, summary.leading
    out: list[tuple[str, str]] = []
    if best is not None:
        out.append((f"best {s.metric_name} ", ""))
        out.append((ranked_score(best), verdict_style(best.score, s.baseline, s.goal,
                                                      best.confirmation)))
        out.append((f" #{best.id}", "bold"))
        if s.baseline is not None:
            d = delta(best.score, s.baseline)
            out.append((f" ({d + ' ' if d else ''}vs baseline {score(s.baseline)}, {s.goal})",
                        "dim"))
    elif summary.confirming and leading is not None:
        out.append((f"best {s.metric_name}: ", ""))
        out.append(("none confirmed yet", "bold yellow"))
    else:
        out.append((f"best {s.metric_name} ", ""))
        out.append((score(None), "dim"))
    if leading is not None:
        state = ("unconfirmed" if leading.confirmation == "unconfirmed"
                 else "not ahead of the baseline")
        lead = (f"{' — ' if best is None else ' · '}leading #{leading.id} "
                f"{ranked_score(leading)} ({state}, {runs_word(leading.runs)})")
        out.append((lead, "yellow"))
    if best is None and s.baseline is not None:
        out.append((f" · baseline {score(s.baseline)}, {s.goal}", "dim"))
    return out


def ranked_score(r: Ranked) -> str:
    """`4.0000 ±0.0083 ×3 ✓`."""
    return " ".join(p for p in (mean_se(r.score, r.score_se, r.runs), mark(r.confirmation))
                    if p)
