"""How the console writes numbers, ages and states: one place, so every screen agrees.

`clock` is the console's idea of now; snapshot tests pin it so that ages render the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.store import verification
from engine.store.verification import Verification

clock: Callable[[], float] = time.time

STATUS_STYLE: dict[str, str] = {
    "proposed": "bold yellow",
    "approved": "cyan",
    "rejected": "red dim",
    "implementing": "blue",
    "implement_failed": "red",
    "implemented": "cyan",
    "diff_review": "bold yellow",
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
