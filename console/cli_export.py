"""`ideaforge export SEARCH`: a search's ideas as JSON or CSV, each job's run time, and with
`--metrics` every metric line its jobs reported (JSON: under each job; CSV: one long table)."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from console.cli import _idea_dict, _log, _print_json, _status_dict, _store

#: The ideas CSV's columns; the last four (run times) came later, so they stay at the end.
IDEA_COLUMNS = ["id", "epoch", "origin", "status", "score", "score_se", "runs", "confirmation",
                "delta", "quarantine", "parents", "twin_of", "attempts", "title", "reason",
                "text", "jobs", "run_seconds", "started_at", "finished_at"]
#: `--metrics --format csv`: one row per metric line (long format, for pandas or a sheet).
METRIC_COLUMNS = ["idea_id", "job_id", "run", "name", "step", "value", "time_s"]


def register(add: Any) -> None:
    """The `export` parser; `add(name, fn, help)` makes a sub-parser."""
    x = add("export", cmd_export, "export a search as JSON or CSV")
    x.add_argument("search", help="the search's name or id")
    x.add_argument("--format", choices=["json", "csv"], default="json",
                   help="json: the search, its ideas and their jobs; csv: one row per idea "
                   "(default: %(default)s)")
    x.add_argument("--metrics", action="store_true",
                   help="also every metric line of every job: in JSON under each job's "
                   "\"metrics\"; in CSV instead of the ideas, one row per line with the "
                   f"columns {', '.join(METRIC_COLUMNS)}")
    x.add_argument("--patched", help="also write each implemented idea's patched environment "
                   "into this folder (one idea-N folder each)")


def _run_times(jobs: list[Any]) -> dict[str, Any]:
    """An idea's CSV run-time cells: its job count, seconds run in all, first start, last end."""
    seconds = [j.seconds for j in jobs if j.seconds is not None]
    starts = [j.started_at for j in jobs if j.started_at is not None]
    ends = [j.finished_at for j in jobs if j.finished_at is not None]
    return {"jobs": len(jobs), "run_seconds": round(sum(seconds), 3) if seconds else None,
            "started_at": min(starts) if starts else None,
            "finished_at": max(ends) if ends else None}


def cmd_export(args: argparse.Namespace) -> int:
    from console import cli_read_more

    got = cli_read_more.export(args)  # stdlib sqlite3: no ORM import (None: the path below)
    if got is None:
        from engine.store import metric_queries, ops

        store = _store(args, read=True)
        s = ops.find_search(store, args.search)
        runs = metric_queries.job_runs(store, s.id)
        got = cli_read_more.Exported(
            search=s, ideas=ops.list_ideas(store, s.id), runs=runs,
            lines=(metric_queries.metric_lines(store, [j.id for js in runs.values() for j in js])
                   if args.metrics else {}),
            status=_status_dict(store, s) if args.format == "json" else None)
    s, ideas, runs, lines = got.search, got.ideas, got.runs, got.lines
    if args.format == "json":
        rows = []
        for i in ideas:
            jobs = []
            for j in runs.get(i.id, []):
                job = j.to_dict()
                if args.metrics:
                    job["metrics"] = [{"name": m.name, "step": m.step, "value": m.value,
                                       "time_s": m.time_s} for m in lines.get(j.id, ())]
                jobs.append(job)
            rows.append({**_idea_dict(i, s.baseline), "jobs": jobs})
        _print_json({"search": got.status, "ideas": rows})
    elif args.metrics:
        w = csv.DictWriter(sys.stdout, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        for i in ideas:
            for j in runs.get(i.id, []):
                for m in lines.get(j.id, ()):
                    w.writerow({"idea_id": i.id, "job_id": j.id, "run": j.run, "name": m.name,
                                "step": m.step, "value": m.value, "time_s": m.time_s})
    else:
        w = csv.DictWriter(sys.stdout, fieldnames=IDEA_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for i in ideas:
            r = _idea_dict(i, s.baseline)
            w.writerow({**r, "parents": " ".join(map(str, r["parents"])),
                        **_run_times(runs.get(i.id, []))})
    if args.patched:
        from engine import environments
        from engine.patching import apply_to_copy

        env = environments.load(s.env_path)
        out = Path(args.patched)
        out.mkdir(parents=True, exist_ok=True)
        n = 0
        for i in ideas:
            if i.diff:
                apply_to_copy(env.root, i.diff, out / f"idea-{i.id}")
                (out / f"idea-{i.id}" / "IDEA.txt").write_text(i.text + "\n")
                n += 1
        _log().info("wrote %d patched copies of %s under %s", n, env.name, out)
    return 0
