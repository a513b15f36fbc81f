"""Reading the metric protocol and judging a finished job.

A job appends JSON lines `{"name", "value", "step", "time_s"}` to `$IDEAFORGE_METRICS`; the
executor hands us the complete lines, and this module turns a finished job into a verdict:
score (the best value of the environment's metric per its goal), or a failure with its reason.

With an evaluation stage (environments/CONTRACT.md) the score comes only from the runner's
signed `exit` record, which holds what the evaluation stage reported; the training process's
lines are curves, and a score line among them is ignored and flagged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
    evaluator: str | None = None  # the evaluator that produced the score (None: unverified)
    flags: tuple[str, ...] = ()  # what was ignored or is doubtful, one line each
    points: tuple[dict[str, Any], ...] = ()  # the evaluation stage's metric lines


@dataclass(frozen=True)
class Evaluation:
    """What the engine expects of a job of an environment with an evaluation stage."""

    search_evaluator: str | None  # the evaluator the search ranks by (None: an old search)
    secret: str | None  # signs the runner's exit record (None: not checked)


def reported_score(metric: Metric, points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines of the training process that only the evaluation stage may write."""
    return [p for p in points if p.get("name") in (metric.name, "void")]


def signed(record: dict[str, Any], secret: str) -> bool:
    """Whether `exit` was written by the job's runner (runner.sign, checked)."""
    body = json.dumps({k: v for k, v in record.items() if k != "mac"}, sort_keys=True)
    want = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, str(record.get("mac") or ""))


def judge(metric: Metric, status: JobStatus, points: Sequence[dict[str, Any]],
          timeout_s: float, evaluation: Evaluation | None = None,
          flags: Sequence[str] = ()) -> Verdict:
    if status.cancelled:
        return Verdict("cancelled", "failed", None, "cancelled", None, "cancelled")
    if status.state == "lost":
        return Verdict("failed", "failed", None, "lost: the job's process vanished without an "
                       "exit record", None, "lost")
    if status.failure:
        return Verdict("failed", "failed", None, status.failure, None,
                       status.failure.split(":")[0])
    if status.timed_out:
        return Verdict("failed", "failed", None,
                       f"timed out: killed after the profile's {timeout_s:.0f} s limit", None,
                       "timed out")
    if evaluation is not None:
        return _judge_evaluated(metric, status, evaluation, tuple(flags))
    values = [float(p["value"]) for p in points if p.get("name") == metric.name]
    void = [p for p in points if p.get("name") == "void"]
    if void:
        why = str(void[-1].get("reason") or "the environment voided its result")
        return Verdict("failed", "failed", None, f"void: {why}", None, "void")
    if status.exit_code != 0:
        return Verdict("failed", "failed", None, f"crashed: exit code {status.exit_code}", None,
                       f"crashed (exit {status.exit_code})")
    return _scored(metric, values, None, tuple(flags), ())


def _failed(reason: str, summary: str, flags: tuple[str, ...],
            evaluator: str | None = None) -> Verdict:
    return Verdict("failed", "failed", None, reason, None, summary, evaluator, flags)


def _scored(metric: Metric, values: list[float], evaluator: str | None,
            flags: tuple[str, ...], points: tuple[dict[str, Any], ...]) -> Verdict:
    score = metric.best(values)
    if score is None:
        return Verdict("failed", "failed", None,
                       f"no metric: the job exited 0 without reporting {metric.name!r}", None,
                       "no metric", evaluator, flags, points)
    quarantine = "pending" if metric.is_suspicious(score) else None
    summary = f"{metric.name} {score:.4g}" + (" (suspicious: quarantined)" if quarantine else "")
    return Verdict("finished", "scored", score, None, quarantine, summary, evaluator, flags,
                   points)


def _judge_evaluated(metric: Metric, status: JobStatus, expect: Evaluation,
                     flags: tuple[str, ...]) -> Verdict:
    record = status.record or {}
    if expect.secret and not signed(record, expect.secret):
        return _failed("void: the job's exit record was not written by its runner (forged or "
                       "damaged): nothing in it is trusted", "void (forged exit record)",
                       flags + ("exit record not signed by the runner",))
    train = record.get("train") or {}
    if train.get("over_time"):
        limit = float(train.get("time_limit") or 0)
        slack = float(train.get("time_slack") or 0)
        return _failed(f"void: training ran past its time limit ({limit:g} s + {slack:g} s "
                       "slack, measured by the runner): stopped", "void (over time)", flags)
    code = train.get("code", status.exit_code)
    if code != 0:
        return _failed(f"crashed: exit code {code}", f"crashed (exit {code})", flags)
    ev = record.get("evaluation")
    if not isinstance(ev, dict):
        return _failed("no evaluation: the runner recorded none (a runner from before the "
                       "evaluation stage?)", "not evaluated", flags)
    evaluator = ev.get("evaluator")
    if ev.get("error"):
        return _failed(f"not evaluated: {ev['error']}", "not evaluated", flags, evaluator)
    if ev.get("timed_out"):
        return _failed(f"evaluation timed out after {float(ev.get('seconds') or 0):.0f} s",
                       "evaluation timed out", flags, evaluator)
    points = tuple(p for p in ev.get("points") or () if isinstance(p, dict))
    void = [p for p in points if p.get("name") == "void"]
    if void:
        why = str(void[-1].get("reason") or "the evaluation voided the result")
        return Verdict("failed", "failed", None, f"void: {why}", None, "void", evaluator, flags,
                       points)
    if ev.get("code") != 0:
        return Verdict("failed", "failed", None, f"evaluation crashed: exit code {ev.get('code')}",
                       None, f"evaluation crashed (exit {ev.get('code')})", evaluator, flags,
                       points)
    values = [float(p["value"]) for p in points if p.get("name") == metric.name]
    verdict = _scored(metric, values, evaluator, flags, points)
    if (verdict.score is not None and expect.search_evaluator
            and evaluator != expect.search_evaluator):
        reason = (f"not ranked: scored by evaluator {str(evaluator)[:12]}, but this search "
                  f"ranks by {expect.search_evaluator[:12]} (the evaluator's files changed "
                  "since the search began)")
        return Verdict("finished", "failed", None, reason, None, verdict.summary + " (not ranked)",
                       evaluator, flags + (reason,), points)
    return verdict
