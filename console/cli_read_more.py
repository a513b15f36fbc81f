"""`show`, `lineage` and `export` without the ORM (issue 18): what `console.cli_read` does for
`status` and `ideas`. Each function reads, on one read-only stdlib sqlite3 connection
(`engine.store.first_frame.reader`), exactly what the command's ORM path reads, into the same
views, and the command prints them with the same code.

Each returns None when it cannot answer exactly as the ORM path would (no database, a schema
other than `cli_read.SCHEMA`, no such idea or search, any SQLite error): the caller then takes
that path, which says what is wrong (exit 2) or upgrades an older database.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from console.cli_read import _benched, _open, _schema_ok, _status_dict, ideas_where
from engine.store import first_frame, verification
from engine.store.views import AttemptView, IdeaView, JobRun, JobView, MetricLine, SearchView

T = TypeVar("T")


def _answer(args: argparse.Namespace, read: Callable[[sqlite3.Connection], T | None]
            ) -> T | None:
    """`read(conn)` on a read-only connection of a database of the known schema, or None."""
    try:
        with _open(args) as conn:
            return read(conn) if _schema_ok(conn) else None
    except (first_frame.Unavailable, sqlite3.Error, ValueError):
        return None


def _views(conn: sqlite3.Connection, cls: type[T], table: str, where: str, params: list[Any],
           order: str) -> list[T]:
    """Rows of `table` as `cls` (a view whose every field is a column), in `order`."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    rows = conn.execute(f"SELECT {', '.join(names)} FROM {table} WHERE {where} "
                        f"ORDER BY {order}", params).fetchall()
    return [cls(**dict(zip(names, r, strict=True))) for r in rows]


def _idea(conn: sqlite3.Connection, idea_id: int) -> IdeaView | None:
    found = ideas_where(conn, "id = ?", [idea_id])
    return found[0] if found else None


def _children(conn: sqlite3.Connection, idea_id: int) -> list[int]:
    """`ops.children_of`."""
    return sorted(r[0] for r in conn.execute(
        "SELECT child_id FROM idea_parent WHERE parent_id = ?", (idea_id,)))


# ------------------------------------------------------------------------------ show


@dataclass(frozen=True)
class Shown:
    """What `cmd_show` prints, whichever path read it."""

    idea: IdeaView
    note: str | None
    attempts: list[AttemptView]
    jobs: list[JobView]
    children: list[int]
    checked: verification.Verification
    gpu_hours: float
    own_se: dict[int, float]  # job id → the standard error its evaluator stated


def show(args: argparse.Namespace) -> Shown | None:
    def read(conn: sqlite3.Connection) -> Shown | None:
        i = _idea(conn, args.idea)
        if i is None:
            return None
        jobs = _views(conn, JobView, "job", "idea_id = ?", [i.id], "id")
        metric = conn.execute("SELECT metric_name FROM search WHERE id = ?",
                              (i.search_id,)).fetchone()[0] + "_se"
        own_se = {}
        for j in jobs:  # `cli._evaluator_se`: the last `<metric>_se` line of a scored job
            last = None if j.score is None else conn.execute(
                "SELECT value FROM metric WHERE job_id = ? AND name = ? ORDER BY id DESC "
                "LIMIT 1", (j.id, metric)).fetchone()
            if last is not None:
                own_se[j.id] = float(last[0])
        gpu_s = conn.execute(
            "SELECT sum(max(coalesce(finished_at, ?) - started_at, 0.0) * CASE WHEN gpus = '' "
            "THEN 0 ELSE length(gpus) - length(replace(gpus, ',', '')) + 1 END) FROM job "
            "WHERE idea_id = ?", (time.time(), i.id)).fetchone()[0]
        return Shown(
            idea=i, note=i.note,
            attempts=_views(conn, AttemptView, "patch_attempt", "idea_id = ?", [i.id],
                            "number"),
            jobs=jobs, children=_children(conn, i.id),
            checked=verification.of_ideas(conn.execute, [i.id]).get(i.id,
                                                                     verification.UNKNOWN),
            gpu_hours=float(gpu_s or 0.0) / 3600, own_se=own_se)

    return _answer(args, read)


# ------------------------------------------------------------------------------ lineage


def lineage(args: argparse.Namespace) -> tuple[dict[str, Any], list[int]] | None:
    """(`cli._ancestry`'s tree, the descendants in `cmd_lineage`'s order), or None."""
    def ancestry(conn: sqlite3.Connection, idea_id: int) -> dict[str, Any] | None:
        i = _idea(conn, idea_id)
        if i is None:
            return None
        parents = [ancestry(conn, p) for p in i.parents]
        if any(p is None for p in parents):
            return None
        return {"id": i.id, "title": i.title, "score": i.score, "status": i.status,
                "epoch": i.epoch, "origin": i.origin, "runs": i.runs, "score_se": i.score_se,
                "confirmation": i.confirmation, "parents": parents}

    def read(conn: sqlite3.Connection) -> tuple[dict[str, Any], list[int]] | None:
        tree = ancestry(conn, args.idea)
        if tree is None:
            return None
        descendants: list[int] = []
        frontier = [args.idea]
        while frontier:
            kids = _children(conn, frontier.pop())
            descendants += [k for k in kids if k not in descendants]
            frontier += kids
        return tree, descendants

    return _answer(args, read)


# ------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class Exported:
    """What `cmd_export` writes, whichever path read it."""

    search: SearchView
    ideas: list[IdeaView]
    runs: dict[int, list[Any]]  # idea id → its jobs (`JobRun`s) in job order
    lines: dict[int, tuple[Any, ...]]  # job id → its metric lines (`MetricLine`s), with --metrics
    status: dict[str, Any] | None  # `status --json`'s object (JSON only)


def export(args: argparse.Namespace) -> Exported | None:
    def read(conn: sqlite3.Connection) -> Exported | None:
        s = first_frame.find_search(conn, args.search)
        if s is None:
            return None
        runs: dict[int, list[Any]] = {}
        for r in _views(conn, JobRun, "job", "search_id = ?", [s.id], "id"):
            runs.setdefault(r.idea_id, []).append(r)
        lines: dict[int, list[MetricLine]] = {}
        if args.metrics:
            for job_id, name, step, value, time_s in conn.execute(
                    "SELECT m.job_id, m.name, m.step, m.value, m.time_s FROM metric m "
                    "JOIN job j ON j.id = m.job_id WHERE j.search_id = ? ORDER BY m.id",
                    (s.id,)):
                lines.setdefault(job_id, []).append(MetricLine(name, step, float(value), time_s))
        status = _status_dict(conn, s, _benched(conn)) if args.format == "json" else None
        return Exported(search=s, ideas=ideas_where(conn, "search_id = ?", [s.id]), runs=runs,
                        lines={k: tuple(v) for k, v in lines.items()}, status=status)

    return _answer(args, read)
