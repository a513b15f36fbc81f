"""Reading the metric protocol and judging a finished job.

A job appends JSON lines `{"name", "value", "step", "time_s"}` to `$IDEAFORGE_METRICS`; the
executor hands us the complete lines, and this module turns a finished job into a verdict:
score (the best value of the environment's metric per its goal), or a failure with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.environments import Metric
from engine.executors.base import JobStatus


@dataclass(frozen=True)
class Verdict:
    job_state: str  # finished | failed | cancelled
    idea_status: str  # scored | failed
    score: float | None
    reason: str | None
    quarantine: str | None
    summary: str


def judge(metric: Metric, status: JobStatus, points: Sequence[dict[str, Any]],
          timeout_s: float) -> Verdict:
    values = [float(p["value"]) for p in points if p.get("name") == metric.name]
    void = [p for p in points if p.get("name") == "void"]
    if status.cancelled:
        return Verdict("cancelled", "failed", None, "cancelled", None, "cancelled")
    if status.state == "lost":
        return Verdict("failed", "failed", None, "lost: the job's process vanished without an "
                       "exit record", None, "lost")
    if status.timed_out:
        return Verdict("failed", "failed", None,
                       f"timed out: killed after the profile's {timeout_s:.0f} s limit", None,
                       "timed out")
    if void:
        why = str(void[-1].get("reason") or "the environment voided its result")
        return Verdict("failed", "failed", None, f"void: {why}", None, "void")
    if status.exit_code != 0:
        return Verdict("failed", "failed", None, f"crashed: exit code {status.exit_code}", None,
                       f"crashed (exit {status.exit_code})")
    score = metric.best(values)
    if score is None:
        return Verdict("failed", "failed", None,
                       f"no metric: the job exited 0 without reporting {metric.name!r}", None,
                       "no metric")
    quarantine = "pending" if metric.is_suspicious(score) else None
    summary = f"{metric.name} {score:.4g}" + (" (suspicious: quarantined)" if quarantine else "")
    return Verdict("finished", "scored", score, None, quarantine, summary)
