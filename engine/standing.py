"""Which idea leads a search, and how a score is written with its evidence (issue 13).

One run is not a result: with repeats on (`search.confirm` not "off"), only a confirmed idea
may be called the best; the idea with the best mean that is not confirmed is the *leading*
one, and every listing says how many runs a score is the mean of, and its standard error.
Pure functions over store views; the CLI and the console print what they return.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: How each confirmation state is marked next to a score.
MARKS = {"confirmed": "✓", "unconfirmed": "○", "refuted": "✗"}  # `?` means unverified


@dataclass(frozen=True)
class Standing:
    best: Any | None  # the best idea the search may build on (confirmed, when repeats are on)
    leading: Any | None  # the best mean of all but the refuted, when it is not `best`


def usable(ideas: Iterable[Any]) -> list[Any]:
    """Ideas with a score that counts: not the baseline, not held in quarantine."""
    return [i for i in ideas if i.score is not None and i.origin != "baseline"
            and i.quarantine in (None, "accepted") and i.status == "scored"]


def ranked(ideas: Iterable[Any], goal: str) -> list[Any]:
    """Best first by mean score."""
    return sorted(ideas, key=lambda i: -i.score if goal == "maximize" else i.score)


def standing(ideas: Sequence[Any], goal: str, confirm: str) -> Standing:
    order = ranked(usable(ideas), goal)
    if confirm == "off":
        return Standing(order[0] if order else None, None)
    confirmed = [i for i in order if i.confirmation == "confirmed"]
    best = confirmed[0] if confirmed else None
    open_ = [i for i in order if i.confirmation != "refuted"]  # a refuted lead is no lead
    leading = open_[0] if open_ and open_[0] is not best else None
    return Standing(best, leading)


def score_text(idea: Any, digits: int = 4) -> str:
    """`2.0470 ± 0.0081 ×3` for a mean of runs, `2.0470` for one run, `-` for none."""
    if idea.score is None:
        return "-"
    text = f"{idea.score:.{digits}f}"
    if getattr(idea, "runs", 0) > 1:
        se = "" if idea.score_se is None else f" ± {idea.score_se:.{digits}f}"
        text += f"{se} ×{idea.runs}"
    return text


def mark(idea: Any) -> str:
    """The confirmation mark of an idea (blank when it is no candidate)."""
    return MARKS.get(getattr(idea, "confirmation", None) or "", "")


def label(idea: Any) -> str:
    """`confirmed`, `unconfirmed, 1 run`, … : the evidence behind a score, in words."""
    state = getattr(idea, "confirmation", None)
    if state is None:
        return ""
    runs = getattr(idea, "runs", 0)
    return f"{state}, {runs} run{'s' if runs != 1 else ''}"
