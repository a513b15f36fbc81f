"""`ideaforge stats [SEARCH] [--json]`: execution analytics (issue 14).

With SEARCH: that search's ideas per coder model — implemented at the first answer, after a
repair, never; ran, crashed, fixed, scored — and what was spent on them, of which on ideas that
ended without a score. Without: every search of the workspace, per environment and per model.
The definitions are those of `engine.store.stats`.

Read-only, through plain sqlite3 (SQLAlchemy is loaded only where that reader cannot answer:
no database, or one to upgrade). The console's stats screen renders the same tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.stats import Counts, Overview
    from engine.store.verification import Execute

#: The implementation and run columns: (heading, Counts field).
OUTCOME_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ideas", "ideas"), ("first", "implemented_first"),
    ("repaired", "implemented_after_repair"), ("never", "never_implemented"), ("ran", "ran"),
    ("crashed", "crashed"), ("fixed", "fixed"), ("scored", "scored"), ("unscored", "unscored"),
)
#: What was spent: (heading, Counts field of the whole, field of the wasted part, format).
SPENT_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("coder calls", "coder_calls", "wasted_calls", "{:d}"),
    ("cost $", "coder_cost_usd", "wasted_cost_usd", "{:.4f}"),
    ("GPU h", "gpu_hours", "wasted_gpu_hours", "{:.3f}"),
    ("job s", "job_seconds", "wasted_job_seconds", "{:.0f}"),
)
LEGEND = ("first: a usable diff at the first answer · repaired: at a later answer (a re-ask or "
          "a crash repair) · never: none, and the idea ended · crashed: a job exited with a "
          "crash (pre-flight included) · fixed: crashed, repaired, then scored · unscored: "
          "ended without a score (failed, implement_failed, rejected, skipped, superseded) · "
          "spent: all (wasted on unscored ideas)")


class StatsUsageError(Exception):
    """Bad input (exit 2); raised as the CLI's UsageError by `cmd_stats`."""


def outcome_rows(models: dict[str, Counts], total: Counts) -> list[list[str]]:
    """Rows of the outcome table: one per model, then "all" (which also counts the ideas no
    coder answered yet)."""
    return [[label, *(str(getattr(c, f)) for _, f in OUTCOME_COLUMNS)]
            for label, c in (*models.items(), ("all", total))]


def spent_rows(models: dict[str, Counts], total: Counts) -> list[list[str]]:
    return [[label, *(f"{form.format(getattr(c, whole))} ({form.format(getattr(c, part))})"
                      for _, whole, part, form in SPENT_COLUMNS)]
            for label, c in (*models.items(), ("all", total))]


def _table(headings: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headings, *rows]) for i in range(len(headings))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in [headings, *rows]]


def block(title: str, models: dict[str, Counts], total: Counts) -> list[str]:
    """One search's (or group's) two tables in plain text."""
    return [title, "", *_table(["model", *(h for h, _ in OUTCOME_COLUMNS)],
                               outcome_rows(models, total)),
            "", *_table(["spent (wasted)", *(h for h, *_ in SPENT_COLUMNS)],
                        spent_rows(models, total)), ""]


def _read(execute: Execute, workspace: Path, search: str | None) -> Overview:
    from engine.store import stats

    if search is None:
        return stats.overview(execute)
    found = stats.find_search(execute, search)
    if found is None:
        known = ", ".join(stats.search_names(execute)) or "none yet"
        raise StatsUsageError(f"no search {search!r} in {workspace} (searches: {known})")
    return stats.overview(execute, [found])


def read(workspace: Path, search: str | None) -> Overview:
    """The overview of one search (by name or id) or of the whole workspace."""
    from engine.store import stats
    from engine.store.first_frame import Unavailable

    try:
        with stats.workspace_reader(workspace) as execute:
            return _read(execute, workspace, search)
    except Unavailable:
        pass
    from engine.store import Store

    store = Store(workspace, create=False)  # says what is wrong, or upgrades the database
    try:
        with stats.store_reader(store) as execute:
            return _read(execute, workspace, search)
    finally:
        store.close()


def render(view: Overview, one: bool) -> str:
    lines: list[str] = []
    if one:
        (s,) = view.searches
        lines += block(f"{s.name} · environment {s.environment} · {s.total.ideas} ideas "
                       f"(baseline excluded), {s.total.attempted} given to a coder",
                       s.models, s.total)
    else:
        if not view.searches:
            return "no searches in this workspace\n"
        for env, g in view.environments.items():
            lines += block(f"environment {env} · searches {', '.join(g.searches)}",
                           g.models, g.total)
        lines += block(f"every environment · {len(view.searches)} searches",
                       view.workspace.models, view.workspace.total)
    return "\n".join([*lines, *textwrap.wrap(LEGEND, 100)]) + "\n"


def cmd_stats(args: argparse.Namespace) -> int:
    from console.cli import UsageError

    workspace = Path(getattr(args, "workspace", None) or os.environ.get(
        "IDEAFORGE_WORKSPACE") or ".ideaforge").expanduser()
    try:
        view = read(workspace, args.search)
    except StatsUsageError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        data: Any = view.searches[0].to_dict() if args.search else view.to_dict()
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(render(view, args.search is not None))
    return 0


def register(add: Any) -> None:
    """The `stats` parser; `add(name, fn, help)` makes a sub-parser."""
    x = add("stats", cmd_stats, "execution analytics: ideas implemented, crashed, fixed, "
            "scored per coder model, and what unscored ideas cost")
    x.add_argument("search", nargs="?", help="one search (default: every search, per "
                   "environment and per model)")
    x.add_argument("--json", action="store_true", help="print JSON instead of text")
