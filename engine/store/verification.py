"""Whether an idea's result came from the evaluator its search ranks by: one rule, one place.

The evaluation stage (environments/CONTRACT.md) records on each job the evaluator that judged it
(`Job.evaluator`, None when nothing but the training process measured it) and what was ignored
or doubtful (`Job.flags`). An idea may have several jobs (retries, repeats); the latest that
ended decides its label, and its flags are those of all its jobs.

Standard library only: the console's first-frame reader (plain `sqlite3`) and the SQLAlchemy
reads (`console_queries`) both run the SQL below through a callable they pass in, so the board's
first page and every later one agree. Each call costs one query per 500 ideas, or one per search.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

VERIFIED = "verified"
UNVERIFIED = "unverified"
OTHER_EVALUATOR = "other evaluator"

#: Job states that end with a verdict (cancelled and lost jobs judged nothing).
ENDED = ("finished", "failed")

#: Runs one SQL statement with `?` parameters and returns its rows (sqlite3's
#: `Connection.execute`, or SQLAlchemy's `exec_driver_sql` on the session's connection).
Execute = Callable[[str, Sequence[Any]], Iterable[Sequence[Any]]]

_SELECT = ("SELECT job.idea_id, job.id, job.state, job.evaluator, job.flags, job.finished_at, "
           "search.evaluator FROM job JOIN search ON search.id = job.search_id ")
_CHUNK = 500  # ids per query, below SQLite's oldest limit on parameters (999)


@dataclass(frozen=True)
class Verification:
    label: str | None  # VERIFIED | UNVERIFIED | OTHER_EVALUATOR; None: no job of it ended
    evaluator: str | None = None  # the evaluator of the job that decides
    ranks_by: str | None = None  # the evaluator the idea's search ranks by
    flags: tuple[str, ...] = ()  # every job's flag lines, in job order, each once


UNKNOWN = Verification(None)


def of_ideas(execute: Execute, ids: Iterable[int]) -> dict[int, Verification]:
    """The verification of each idea in `ids` that has a job (others: absent, i.e. UNKNOWN)."""
    ids = list(dict.fromkeys(ids))
    rows: list[Sequence[Any]] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows += execute(f"{_SELECT}WHERE job.idea_id IN ({marks}) ORDER BY job.id", chunk)
    return _fold(rows)


def of_search(execute: Execute, search_id: int) -> dict[int, Verification]:
    """Every idea of a search that has a job, in one query (listings of a whole search)."""
    return _fold(execute(f"{_SELECT}WHERE job.search_id = ? ORDER BY job.id", [search_id]))


def _fold(rows: Iterable[Sequence[Any]]) -> dict[int, Verification]:
    """Rows in job id order → one verification per idea."""
    flags: dict[int, dict[str, None]] = {}
    latest: dict[int, tuple[tuple[float, int], str, str | None, str | None]] = {}
    for idea_id, job_id, state, evaluator, job_flags, finished_at, ranks_by in rows:
        lines = flags.setdefault(idea_id, {})
        lines.update(dict.fromkeys(line for line in (job_flags or "").splitlines() if line))
        if state in ENDED:
            # Repeats may end out of order: the one that ended last decides.
            key = (float(finished_at or 0.0), int(job_id))
            if idea_id not in latest or key > latest[idea_id][0]:
                latest[idea_id] = (key, state, evaluator, ranks_by)
    out = {}
    for idea_id, lines in flags.items():
        if idea_id not in latest:
            out[idea_id] = Verification(None, flags=tuple(lines))
            continue
        _, state, evaluator, ranks_by = latest[idea_id]
        out[idea_id] = Verification(label_of(state, evaluator, ranks_by), evaluator, ranks_by,
                                    tuple(lines))
    return out


def label_of(state: str, evaluator: str | None, ranks_by: str | None) -> str | None:
    """The label of an ended job: which evaluator judged it against the one its search ranks
    by. A job without an evaluator that failed has no result to call unverified."""
    if evaluator is None:
        return UNVERIFIED if state == "finished" else None
    if ranks_by is None or evaluator == ranks_by:
        return VERIFIED
    return OTHER_EVALUATOR
