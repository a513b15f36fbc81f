"""The `ideaforge` command. Headless commands drive `engine` directly; only `console` (the
default with no arguments) loads the Textual UI.

Exit codes: 0 done; 1 error (model, environment, job infrastructure); 2 bad input or usage;
3 budget reached (--max-cost); 4 another engine already drives the search; 5 stopped by the
researcher; 130 interrupted (Ctrl-C; the search resumes with `ideaforge resume`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: one line naming the problem and the fix (exit code 2)."""


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth saying (not an unset
    value, not an off switch) and its text does not say it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default in (None, False, argparse.SUPPRESS)
                or default == [] or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)"


def _workspace(args: argparse.Namespace) -> Path:
    from engine.search import workspace_path

    return workspace_path(getattr(args, "workspace", None))


def _store(args: argparse.Namespace, create: bool = False, read: bool = False):
    """The workspace's store. `read`: the command only reads, so the database is opened
    read-only (an archived, read-only copy can be browsed); a database that needs an upgrade
    is opened writable when it can be, as before."""
    from engine.store import Store
    from engine.store.db import NeedsUpgrade

    if read:
        try:
            return Store(_workspace(args), read_only=True)
        except NeedsUpgrade:
            ws = _workspace(args).expanduser().resolve()
            if not (os.access(ws, os.W_OK) and os.access(ws / "ideaforge.db", os.W_OK)):
                raise
    return Store(_workspace(args), create=create)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _fmt(score: float | None) -> str:
    return "-" if score is None else f"{score:.4f}"


# ------------------------------------------------------------------------------ listings


def _status_dict(store: Any, s: Any, benched: list[Any] | None = None) -> dict[str, Any]:
    from engine import standing
    from engine.store import console_queries, job_ops, ops

    everything = ops.list_ideas(store, s.id)
    rank = standing.standing(everything, s.goal, s.confirm)
    base = next((i for i in everything if i.origin == "baseline"), None)
    jobs = job_ops.list_jobs(store, s.id)
    from console.cli_read import status_fields

    return status_fields(
        s, rank, base, cost=ops.llm_cost(store, s.id), calls=ops.llm_call_count(store, s.id),
        gpu_hours=console_queries.gpu_hours(store, s.id),
        ideas=ops.counts_by_status(store, s.id),
        jobs={st: sum(j.state == st for j in jobs) for st in sorted({j.state for j in jobs})},
        benched=sorted(h.name for h in (_benched_hosts(store) if benched is None
                                        else benched)))


def _brief(i: Any) -> dict[str, Any] | None:
    """An idea as `status --json` names its best or leading one."""
    if i is None:
        return None
    return {"id": i.id, "title": i.title, "score": i.score, "score_se": i.score_se,
            "runs": i.runs, "confirmation": i.confirmation}


def _best_text(r: dict[str, Any]) -> str:
    """`best: #3 val_loss 2.0470 ± 0.0081 ×3 ✓ Warm up…`, or the leading idea when none is
    confirmed."""
    from engine import standing

    def said(b: dict[str, Any]) -> str:
        view = argparse.Namespace(**b)
        return (f"#{b['id']} {r['metric']} {standing.score_text(view)} {standing.mark(view)} "
                f"{b['title'][:40]}").replace("  ", " ").rstrip()

    text = "best: " + (said(r["best"]) if r["best"] else f"{r['metric']} none confirmed yet"
                       if r["confirm"] != "off" else f"{r['metric']} -")
    if r["leading"]:
        text += f", leading {said(r['leading'])} ({r['leading']['confirmation'] or '-'})"
    return text


def _benched_hosts(store: Any) -> list[Any]:
    """Hosts in quarantine (read once per command, shared by every search's row)."""
    from engine.store.hosts_queries import HostState, host_states

    if store.read_only:  # the table is made on first use; read-only, a missing one is empty
        from sqlalchemy import inspect

        if not inspect(store.engine).has_table(str(HostState.__tablename__)):
            return []
    return [h for h in host_states(store).values() if h.quarantined()]


def _epoch_label(epoch: int, epochs: int) -> str:
    """`epoch 2 (of 0–2)`: epochs count from 0, as in the console (its search header says the
    same words), `ideas --epoch N` and the JSON's "epoch"."""
    return f"epoch {epoch} (of 0–{epochs - 1})"


def cmd_status(args: argparse.Namespace) -> int:
    from console import cli_read

    fast = cli_read.status(args)  # stdlib sqlite3: no ORM import (None: the path below)
    if fast is not None:
        rows, benched, workspace = fast
    else:
        from engine.store import ops

        store = _store(args, read=True)
        searches = ([ops.find_search(store, args.search)] if args.search
                    else ops.list_searches(store))
        benched = _benched_hosts(store)
        rows = [_status_dict(store, s, benched) for s in searches]
        workspace = store.workspace
    if args.json:
        _print_json(rows[0] if args.search else rows)
        return 0
    if not rows:
        sys.stdout.write(f"no searches in {workspace}\n")
    for h in benched:
        sys.stdout.write(f"host {h.name} quarantined until "
                         f"{time.strftime('%H:%M', time.localtime(h.quarantined_until))} after "
                         f"{h.failures} failures ({h.last_error or '-'}); "
                         f"`ideaforge hosts release {h.name}` ends it\n")
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["ideas"].items()))
        sys.stdout.write(
            f"{r['name']}: {r['status']} · {_epoch_label(r['epoch'], r['epochs'])} · {r['phase']} · "
            f"{'auto' if r['auto'] else 'at the gates'} · "
            f"{_best_text(r)} (baseline {_fmt(r['baseline'])}"
            + (f" ×{r['baseline_runs']}" if r["baseline_runs"] > 1 else "") + ") · "
            f"${r['cost_usd']:.2f}"
            + (f" of ${r['max_cost_usd']:.2f}" if r["max_cost_usd"] is not None else "")
            + f" · {r['gpu_hours']:.4f} GPU h"
            + (f" of {r['max_gpu_hours']:g}" if r["max_gpu_hours"] is not None else "")
            + f" · ideas: {counts or 'none'}"
            + (f" · {r['message']}" if r["message"] else "") + "\n")
    return 0


def _idea_dict(i: Any, baseline: float | None = None) -> dict[str, Any]:
    """An idea as JSON. `delta`: its score minus the baseline's, as the board's Δ column and
    every export since the first round (which side is better follows the metric's goal)."""
    d = dict(vars(i))  # its fields, in order (a shallow `to_dict`: 3× faster at 1,000 ideas)
    d["parents"] = list(i.parents)
    d["delta"] = _delta(i.score, baseline)
    return d


def _delta(score: float | None, baseline: float | None) -> float | None:
    """score − baseline: negative is better for a metric to minimize, positive to maximize."""
    if score is None or baseline is None:
        return None
    return score - baseline


#: `ideas --sort`: id order (as stored), best score first, by status, most runs first.
IDEA_SORTS = ("id", "score", "status", "runs")


def _sorted_ideas(ideas: list[Any], key: str, goal: str) -> list[Any]:
    if key == "score":
        scored = [i for i in ideas if i.score is not None]
        from engine import standing

        return standing.ranked(scored, goal) + [i for i in ideas if i.score is None]
    if key == "status":
        return sorted(ideas, key=lambda i: (i.status, i.id))
    if key == "runs":
        return sorted(ideas, key=lambda i: (-i.runs, i.id))
    return ideas


def _verification_dict(v: Any) -> dict[str, Any]:
    """`verified`: the label (verified | unverified | other evaluator) or None when no job
    ended; `evaluator`: the evaluator of the job that decides; `flags`: one string each."""
    return {"verified": v.label, "evaluator": v.evaluator, "flags": list(v.flags)}


def cmd_ideas(args: argparse.Namespace) -> int:
    from console import cli_read
    from engine.store import verification

    fast = cli_read.ideas(args)  # stdlib sqlite3: no ORM import (None: the path below)
    if fast is not None:
        s, found, checked = fast
    else:
        from engine.store import console_queries, ops

        store = _store(args, read=True)
        s = ops.find_search(store, args.search)
        found = ops.list_ideas(store, s.id, args.epoch)
        checked = console_queries.verifications(store, search_id=s.id)
    ideas = _sorted_ideas(found, args.sort, s.goal)
    if args.json:
        _print_json([{**_idea_dict(i, s.baseline),
                      **_verification_dict(checked.get(i.id, verification.UNKNOWN))}
                     for i in ideas])
        return 0
    from engine import standing

    sys.stdout.write(f"{'id':>5} {'ep':>3} {'origin':<8} {'status':<16} {'score':>23}   "
                     f"{'Δ':>9} {'att':>3}  title\n")
    for i in ideas:
        q = " [quarantine]" if i.quarantine == "pending" else ""
        twin = f" [≈ #{i.twin_of}]" if i.twin_of else ""
        delta = _delta(i.score, s.baseline)
        sys.stdout.write(f"{i.id:>5} {i.epoch:>3} {i.origin:<8} {i.status:<16} "
                         f"{standing.score_text(i):>23} {standing.mark(i) or ' '} "
                         f"{'-' if delta is None else f'{delta:+.4f}':>9} "
                         f"{i.attempts:>3}  {i.title[:60]}{q}{twin}\n")
    if s.baseline is not None and any(i.score is not None for i in ideas):
        sys.stdout.write(f"Δ: score − baseline {s.baseline:.4f} ({s.metric_name} is to "
                         f"{'maximize: positive' if s.goal == 'maximize' else 'minimize: negative'}"
                         " is better)\n")
    if any(i.confirmation for i in ideas):
        sys.stdout.write("score: the mean of the idea's runs ± its standard error ×runs; "
                         "✓ confirmed by repeats, ○ unconfirmed, ✗ refuted\n")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from console import cli_read_more, fmt

    fast = cli_read_more.show(args)  # stdlib sqlite3: no ORM import (None: the path below)
    if fast is None:
        from engine.store import console_queries, job_ops, manage, ops, verification

        store = _store(args, read=True)
        i = ops.get_idea(store, args.idea)
        jobs = job_ops.list_jobs(store, idea_id=i.id)
        fast = cli_read_more.Shown(
            idea=i, note=manage.get_note(store, i.id), attempts=ops.list_attempts(store, i.id),
            jobs=jobs, children=ops.children_of(store, i.id),
            checked=console_queries.verifications(store, [i.id]).get(i.id,
                                                                     verification.UNKNOWN),
            gpu_hours=console_queries.idea_gpu_hours(store, [i.id])[i.id],
            own_se=_evaluator_se(store, i, jobs))
    i, note, attempts, jobs, children, checked, gpu_hours, own_se = (
        fast.idea, fast.note, fast.attempts, fast.jobs, fast.children, fast.checked,
        fast.gpu_hours, fast.own_se)
    if args.json:
        d = _idea_dict(i)
        d.update(note=note, children=children, attempts=[a.to_dict() for a in attempts],
                 jobs=[{**j.to_dict(), "evaluator_se": own_se.get(j.id)} for j in jobs],
                 gpu_hours=round(gpu_hours, 6),
                 **_verification_dict(checked))
        _print_json(d)
        return 0
    from engine import standing

    out = [f"idea {i.id} · epoch {i.epoch} · {i.origin} · {i.status} · score "
           f"{standing.score_text(i)}" + (f" · {standing.label(i)}" if i.confirmation else "")]
    if i.twin_of:
        out.append(f"near duplicate of idea {i.twin_of} (`ideaforge show {i.twin_of}`)")
    if i.reason:
        out.append(f"reason: {i.reason}")
    if note:
        out.append(f"note: {note}")
    out += [line for line, _ in fmt.verification_lines(checked)]
    if i.parents:
        out.append(f"parents: {', '.join(map(str, i.parents))}")
    if children:
        out.append(f"children: {', '.join(map(str, children))}")
    out += ["", i.text, ""]
    for a in attempts:
        what = f", a repair after job {a.job_id} crashed" if a.kind == "repair" else ""
        out.append(f"attempt {a.number} ({a.model}{what}): {a.outcome}" +
                   (f" — {a.error}" if a.error else ""))
    if i.diff:
        out += ["", i.diff]
    for j in jobs:
        se = (f" ± {own_se[j.id]:.4f} (stated by its "
              f"{'evaluation' if j.evaluator else 'run, unverified'})" if j.id in own_se else "")
        run = "pre-flight check" if j.kind == "preflight" else f"run {j.run}"
        out.append(f"job {j.id}: {run} (seed {j.seed if j.seed is not None else '-'}) "
                   f"{j.state} exit {j.exit_code} score {_fmt(j.score)}{se} {j.reason or ''} "
                   f"({j.job_dir})" + (f" slurm job {j.external_id}"
                                       f"{f' {j.external_state}' if j.external_state else ''}"
                                       f"{f' on {j.node}' if j.node else ''}"
                                       if j.external_id else ""))
    if jobs:
        out.append(f"GPU hours: {gpu_hours:.4f} (its {len(jobs)} job(s))")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _evaluator_se(store: Any, idea: Any, jobs: list[Any]) -> dict[int, float]:
    """Per scored job, the standard error its evaluator stated for the score (a
    `<metric>_se` line, environments/CONTRACT.md), when it stated one."""
    from engine.store import job_ops, ops

    name = ops.find_search(store, idea.search_id).metric_name + "_se"
    out = {}
    for j in jobs:
        if j.score is not None:
            points = job_ops.job_metrics(store, j.id, name)
            if points:
                out[j.id] = points[-1].value
    return out


def _ancestry(store: Any, idea_id: int) -> dict[str, Any]:
    from engine.store import ops

    i = ops.get_idea(store, idea_id)
    return {"id": i.id, "title": i.title, "score": i.score, "status": i.status,
            "epoch": i.epoch, "origin": i.origin, "runs": i.runs, "score_se": i.score_se,
            "confirmation": i.confirmation,
            "parents": [_ancestry(store, p) for p in i.parents]}


def cmd_lineage(args: argparse.Namespace) -> int:
    from console import cli_read_more

    fast = cli_read_more.lineage(args)  # stdlib sqlite3: no ORM import (None: below)
    if fast is not None:
        tree, descendants = fast
    else:
        from engine.store import ops

        store = _store(args, read=True)
        tree = _ancestry(store, args.idea)
        descendants = []
        frontier = [args.idea]
        while frontier:
            kids = ops.children_of(store, frontier.pop())
            descendants += [k for k in kids if k not in descendants]
            frontier += kids
    if args.json:
        _print_json({"ancestry": tree, "descendants": descendants})
        return 0

    from engine import standing

    def walk(node: dict[str, Any], depth: int) -> None:
        view = argparse.Namespace(**node)
        mark = standing.mark(view)
        sys.stdout.write(f"{'  ' * depth}{'└─ ' if depth else ''}#{node['id']} "
                         f"[{standing.score_text(view)}{' ' + mark if mark else ''}] "
                         f"{node['title'][:60]}\n")
        for p in node["parents"]:
            walk(p, depth + 1)

    walk(tree, 0)
    if descendants:
        sys.stdout.write(f"descendants: {', '.join(map(str, descendants))}\n")
    return 0


# ------------------------------------------------------------------------------ decisions


def _idea_for_decision(store: Any, idea_id: int, allowed: set[str]) -> Any:
    from engine.store import ops

    idea = ops.get_idea(store, idea_id)
    if idea.status not in allowed:
        raise UsageError(f"idea {idea_id} is {idea.status}; only {', '.join(sorted(allowed))} "
                         "ideas can take this decision")
    return idea


def cmd_approve(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    for idea_id in args.ideas:
        idea = _idea_for_decision(store, idea_id, {"proposed", "diff_review"})
        ops.add_decision(store, idea.search_id, "approve", idea_id)
    sys.stdout.write(f"approved {len(args.ideas)} idea(s); the engine applies it at its next "
                     "step\n")
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    for idea_id in args.ideas:
        idea = _idea_for_decision(store, idea_id, {"proposed", "approved", "diff_review"})
        ops.add_decision(store, idea.search_id, "reject", idea_id, text=args.reason)
    sys.stdout.write(f"rejected {len(args.ideas)} idea(s)\n")
    return 0


def cmd_go(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    s = ops.find_search(store, args.search)
    ops.add_decision(store, s.id, "go")  # refused (exit 2) when no engine would apply it
    if s.status == "running":
        sys.stdout.write(f"gate of {s.name!r} released: undecided ideas are skipped\n")
    else:
        sys.stdout.write(f"search {s.name!r} is {s.status}: its gate is released when it "
                         f"resumes (`ideaforge resume {s.name}`); undecided ideas are then "
                         "skipped\n")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    idea = ops.get_idea(store, args.idea)
    if idea.quarantine != "pending":
        raise UsageError(f"idea {idea.id} is not in quarantine")
    ops.add_decision(store, idea.search_id, "accept" if args.accept else "discard", idea.id)
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from console.app import run_console

    # engine.search.workspace_path's rule, without importing engine.search (and SQLAlchemy
    # with it) before the console's first frame.
    workspace = Path(getattr(args, "workspace", None) or os.environ.get("IDEAFORGE_WORKSPACE")
                     or ".ideaforge").expanduser()
    return run_console(workspace, getattr(args, "search", None))


def cmd_import_legacy(args: argparse.Namespace) -> int:
    from console.legacy import import_legacy

    directory = Path(args.directory)
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a folder; give the reference run's output folder "
                         "(holding ideas_<run>/ and database.json)")
    store = _store(args, create=True)
    search = import_legacy(store, directory, args.name)
    sys.stdout.write(f"imported {directory} as read-only search {search.name!r}\n")
    return 0


# ------------------------------------------------------------------------------ parser


def _log() -> logging.Logger:
    return logging.getLogger("ideaforge")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ideaforge", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--workspace", help="workspace folder (default ./.ideaforge or "
                   "$IDEAFORGE_WORKSPACE)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step (debug), and "
                   "show the traceback of an unexpected error")
    sub = p.add_subparsers(dest="command")

    def add(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        sp.set_defaults(fn=fn)
        sp.add_argument("--workspace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sp

    from console import (
        cli_envs,
        cli_export,
        cli_hosts,
        cli_ideas,
        cli_manage,
        cli_run,
        cli_stats,
    )

    cli_run.register(add)
    cli_stats.register(add)
    x = add("status", cmd_status, "searches and their progress")
    x.add_argument("search", nargs="?", help="a search's name or id (default: every search)")
    x.add_argument("--json", action="store_true", help="print JSON (one search: an object "
                   "with `best_idea`, the best idea's id or null; all: a list of them)")
    x = add("ideas", cmd_ideas, "a search's ideas, with each score's Δ against the baseline")
    x.add_argument("search", help="a search's name or id")
    x.add_argument("--epoch", type=int, help="only this epoch's ideas (epochs count from 0)")
    x.add_argument("--sort", choices=IDEA_SORTS, default="id", help="order: id (as "
                   "proposed), score (best first, unscored last), status, runs (most first)")
    x.add_argument("--json", action="store_true", help="print JSON; `delta` is score − baseline "
                   "(as the board's Δ: negative is better for a metric to minimize)")
    x = add("show", cmd_show, "one idea: text, note, attempts, diff, jobs")
    x.add_argument("idea", type=int, help="the idea's id")
    x.add_argument("--json", action="store_true", help="print JSON instead of text")
    x = add("lineage", cmd_lineage, "an idea's ancestry and descendants")
    x.add_argument("idea", type=int, help="the idea's id")
    x.add_argument("--json", action="store_true", help="print JSON instead of text")
    x = add("approve", cmd_approve, "approve proposed ideas (or diffs under review)")
    x.add_argument("ideas", type=int, nargs="+", help="the ideas' ids")
    x = add("reject", cmd_reject, "reject ideas; the reason steers later prompts")
    x.add_argument("ideas", type=int, nargs="+", help="the ideas' ids")
    x.add_argument("--reason", help="why (shown to the model in later prompts)")
    cli_ideas.register(add)
    x = add("go", cmd_go, "release the gate: undecided ideas are skipped")
    x.add_argument("search", help="a search's name or id")
    x = add("quarantine", cmd_quarantine, "accept or discard a suspicious result")
    x.add_argument("idea", type=int, help="the idea's id")
    g = x.add_mutually_exclusive_group(required=True)
    g.add_argument("--accept", action="store_true", help="the result counts")
    g.add_argument("--discard", action="store_true", help="the result is thrown away")
    cli_export.register(add)
    x = add("console", cmd_console, "open the console (the default)")
    x.add_argument("search", nargs="?", help="open on this search (default: the latest)")
    x = add("import-legacy", cmd_import_legacy, "import the reference code's JSON output as a "
            "read-only search")
    x.add_argument("directory", help="the reference run's output folder")
    x.add_argument("--name", help="the search's name (default: legacy-<run>)")
    cli_manage.register(add)
    cli_envs.register(add)
    cli_hosts.register(sub)
    return p


#: Errors of bad input (exit code 2), by module and name: importing their classes up front would
#: import engine.store (SQLAlchemy) before the console's first frame.
_USAGE_ERRORS = {("engine.environments", "EnvironmentError_"),
                 ("engine.executors.hosts", "HostsError"), ("engine.store.db", "StoreError")}


def _is_engine_error(exc: BaseException, which: set[tuple[str, str]]) -> bool:
    return any((c.__module__, c.__name__) in which for c in type(exc).__mro__)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("LiteLLM", "litellm", "httpx", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    fn = getattr(args, "fn", cmd_console)
    from console.cli_run import EngineExit

    try:
        return int(fn(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; continue with `ideaforge resume SEARCH`\n")
        return 130
    except BrokenPipeError:  # `ideaforge ideas S | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return 141  # as a process killed by SIGPIPE
    except EngineExit as exc:
        sys.stderr.write(f"ideaforge: {exc}\n")
        return exc.code
    except UsageError as exc:
        sys.stderr.write(f"ideaforge: {exc}\n")
        return EXIT_USAGE
    except Exception as exc:
        if _is_engine_error(exc, _USAGE_ERRORS):
            sys.stderr.write(f"ideaforge: {exc}\n")
            return EXIT_USAGE
        if type(exc).__name__ in ("ModelUnavailable", "LlmError", "BudgetExceeded"):
            sys.stderr.write(f"ideaforge: {exc}\n")
            return 3 if type(exc).__name__ == "BudgetExceeded" else 1
        if args.verbose:
            raise
        sys.stderr.write(f"ideaforge: {type(exc).__name__}: {exc} (run with -v for details)\n")
        return 1


if __name__ == "__main__":
    # `python -m console.cli` runs this file as `__main__`, a second copy beside the module
    # `console.cli` that console.cli_run imports: delegating to that one keeps one class per
    # error, so a UsageError raised in cli_run is caught (exit 2) like any other.
    from console.cli import main as _main

    sys.exit(_main())
