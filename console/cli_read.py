"""`status` and `ideas` without the ORM (issue 18): stdlib sqlite3 on a read-only connection,
as the console's first frame reads (`engine.store.first_frame`), building the same views, so a
script polling the CLI pays ~0.1 s instead of SQLAlchemy's import.

Each function returns None when it cannot answer exactly as the ORM path would (no database,
a schema other than the one it knows, no such search): the caller then takes that path, which
says what is wrong and upgrades an older database.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from engine.store import first_frame, verification
from engine.store.views import IdeaView, SearchView

#: The schema these reads know (`engine.store.migrations.CURRENT`; a test keeps them equal).
SCHEMA = 12

_IDEA_COLUMNS = tuple(f.name for f in fields(IdeaView) if f.name not in ("parents", "attempts"))


def _workspace(args: argparse.Namespace) -> Path:
    """`engine.search.workspace_path`, without importing the engine."""
    return Path(getattr(args, "workspace", None) or os.environ.get("IDEAFORGE_WORKSPACE")
                or ".ideaforge").expanduser().resolve()


def _open(args: argparse.Namespace) -> Any:
    return first_frame.reader(_workspace(args))


def _schema_ok(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return row is not None and int(row[0]) == SCHEMA


def _ideas(conn: sqlite3.Connection, search_id: int, epoch: int | None = None
           ) -> list[IdeaView]:
    """`ops.list_ideas`: the search's ideas (of one epoch) in id order, parents and attempts."""
    if epoch is None:
        return ideas_where(conn, "search_id = ?", [search_id])
    return ideas_where(conn, "search_id = ? AND epoch = ?", [search_id, epoch])


def ideas_where(conn: sqlite3.Connection, where: str, params: list[Any]) -> list[IdeaView]:
    """The ideas matching `where` (`column = ?` terms joined by AND) in id order, as
    `ops._idea_views` builds them: parents sorted, attempts counted."""
    rows = conn.execute(f"SELECT {', '.join(_IDEA_COLUMNS)} FROM idea WHERE {where} "
                        "ORDER BY id", params).fetchall()
    joined = "i." + where.replace(" AND ", " AND i.")
    parents: dict[int, list[int]] = {}
    for child, parent in conn.execute(
            "SELECT p.child_id, p.parent_id FROM idea_parent p JOIN idea i ON i.id = p.child_id "
            f"WHERE {joined}", params):
        parents.setdefault(child, []).append(parent)
    attempts = dict(conn.execute(
        "SELECT a.idea_id, count(*) FROM patch_attempt a JOIN idea i ON i.id = a.idea_id "
        f"WHERE {joined} GROUP BY a.idea_id", params).fetchall())
    out = []
    for row in rows:
        data = dict(zip(_IDEA_COLUMNS, row, strict=True))
        out.append(IdeaView(**data, parents=tuple(sorted(parents.get(data["id"], []))),
                            attempts=attempts.get(data["id"], 0)))
    return out


def _benched(conn: sqlite3.Connection) -> list[Any]:
    """Hosts in quarantine (`cli._benched_hosts`)."""
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                       "'host_state'").fetchone()
    if not has:
        return []
    now = time.time()
    rows = conn.execute("SELECT name, failures, last_error, quarantined_until FROM host_state "
                        "WHERE quarantined_until IS NOT NULL AND quarantined_until > ?", (now,)).fetchall()
    return [argparse.Namespace(name=n, failures=f, last_error=e, quarantined_until=u)
            for n, f, e, u in rows]


def _status_dict(conn: sqlite3.Connection, s: SearchView, benched: list[Any]
                 ) -> dict[str, Any]:
    """`cli._status_dict`, field for field."""
    from engine import standing

    everything = _ideas(conn, s.id)
    rank = standing.standing(everything, s.goal, s.confirm)
    base = next((i for i in everything if i.origin == "baseline"), None)
    jobs = dict(sorted(conn.execute("SELECT state, count(*) FROM job WHERE search_id = ? "
                                    "GROUP BY state", (s.id,)).fetchall()))
    cost, calls = conn.execute("SELECT sum(cost_usd), count(*) FROM llm_call "
                               "WHERE search_id = ?", (s.id,)).fetchone()
    now = time.time()
    gpu_s = conn.execute(
        "SELECT sum(max(coalesce(finished_at, ?) - started_at, 0.0) * CASE WHEN gpus = '' "
        "THEN 0 ELSE length(gpus) - length(replace(gpus, ',', '')) + 1 END) FROM job "
        "WHERE search_id = ?", (now, s.id)).fetchone()[0]
    ideas = dict(conn.execute("SELECT status, count(*) FROM idea WHERE search_id = ? "
                              "GROUP BY status", (s.id,)).fetchall())
    return status_fields(s, rank, base, cost=float(cost or 0.0), calls=int(calls),
                         gpu_hours=float(gpu_s or 0.0) / 3600,
                         ideas={k: int(v) for k, v in ideas.items()},
                         jobs={k: int(v) for k, v in jobs.items()},
                         benched=sorted(h.name for h in benched))


def status_fields(s: Any, rank: Any, base: Any, *, cost: float, calls: int, gpu_hours: float,
                  ideas: dict[str, int], jobs: dict[str, int], benched: list[str]
                  ) -> dict[str, Any]:
    """`status --json`'s object for one search, whichever path read its parts."""
    from console.cli import _brief

    return {"name": s.name, "id": s.id, "environment": s.env_name, "profile": s.profile,
            "model": s.model, "status": s.status, "phase": s.phase, "epoch": s.epoch,
            "epochs": s.epochs, "auto": s.auto, "review_diffs": s.review_diffs,
            "advance_at": s.advance_at, "max_cost_usd": s.max_cost_usd,
            "max_gpu_hours": s.max_gpu_hours,
            "best_score": rank.best.score if rank.best else None,
            "best_idea": rank.best.id if rank.best else None,
            "best": _brief(rank.best), "leading": _brief(rank.leading),
            "confirm": s.confirm, "baseline": s.baseline,
            "baseline_runs": base.runs if base else 0,
            "baseline_se": base.score_se if base else None,
            "metric": s.metric_name, "goal": s.goal,
            "cost_usd": round(cost, 6), "llm_calls": calls,
            "gpu_hours": round(gpu_hours, 6), "ideas": ideas, "jobs": jobs,
            "engine_pid": s.engine_pid, "message": s.message, "quarantined_hosts": benched}


def _searches(conn: sqlite3.Connection) -> list[SearchView]:
    ids = [r[0] for r in conn.execute("SELECT id FROM search ORDER BY id")]
    return [s for s in (first_frame.find_search(conn, i) for i in ids) if s is not None]


def status(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[Any], Path] | None:
    """(rows, benched hosts, workspace) as `cmd_status` builds them, or None (ORM path)."""
    try:
        with _open(args) as conn:
            if not _schema_ok(conn):
                return None
            if args.search:
                s = first_frame.find_search(conn, args.search)
                if s is None:
                    return None
                searches = [s]
            else:
                searches = _searches(conn)
            benched = _benched(conn)
            rows = [_status_dict(conn, s, benched) for s in searches]
            return rows, benched, _workspace(args)
    except (first_frame.Unavailable, sqlite3.Error, ValueError):
        return None


def ideas(args: argparse.Namespace) -> tuple[SearchView, list[IdeaView], dict[int, Any]] | None:
    """(search, its ideas, their verifications) as `cmd_ideas` reads them, or None."""
    try:
        with _open(args) as conn:
            if not _schema_ok(conn):
                return None
            s = first_frame.find_search(conn, args.search)
            if s is None:
                return None
            found = _ideas(conn, s.id, args.epoch)
            checked = verification.of_search(
                lambda sql, params: conn.execute(sql, list(params)).fetchall(), s.id)
            return s, found, checked
    except (first_frame.Unavailable, sqlite3.Error, ValueError):
        return None
