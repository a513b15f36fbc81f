"""The `ideaforge` command. Headless commands drive `engine` directly; only `console` (the
default with no arguments) loads the Textual UI.

Exit codes: 0 done; 1 error (model, environment, job infrastructure); 2 bad input or usage;
3 budget reached (--max-cost); 4 another engine already drives the search; 5 stopped by the
researcher; 130 interrupted (Ctrl-C; the search resumes with `ideaforge resume`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input: one line naming the problem and the fix (exit code 2)."""


def _workspace(args: argparse.Namespace) -> Path:
    from engine.search import workspace_path

    return workspace_path(getattr(args, "workspace", None))


def _store(args: argparse.Namespace, create: bool = False):
    from engine.store import Store

    return Store(_workspace(args), create=create)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _fmt(score: float | None) -> str:
    return "-" if score is None else f"{score:.4f}"


# ------------------------------------------------------------------------------ run / resume


def _load_prices() -> dict[str, tuple[float, float]]:
    import tomllib

    path = Path(os.environ.get("IDEAFORGE_CONFIG", "~/.config/ideaforge/config.toml")).expanduser()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    prices = {}
    for model, pair in (data.get("prices") or {}).items():
        if not (isinstance(pair, list) and len(pair) == 2):
            raise UsageError(f"{path}: prices.{model} must be [input_usd_per_1M, "
                             "output_usd_per_1M]")
        prices[model] = (float(pair[0]), float(pair[1]))
    return prices


def _make_llm(store: Any, search: Any) -> Any:
    if search.model == "catalog":
        return None
    from engine import llm as llm_mod
    from engine.store import ops

    cfg = llm_mod.LlmConfig(model=search.model, coder_model=search.coder_model,
                            api_base=search.api_base, max_cost_usd=search.max_cost_usd,
                            prices=_load_prices(), **search.config.get("llm", {}))

    def record(r: Any) -> None:
        ops.add_llm_call(store, search.id, role=r.role, purpose=r.purpose, model=r.model,
                         prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                         cost_usd=r.cost_usd, latency_s=r.latency_s, error=r.error,
                         attempt=r.attempt)

    client = llm_mod.LlmClient(cfg, on_record=record, spent_usd=ops.llm_cost(store, search.id))
    client.check()
    return client


def _drive(store: Any, search: Any, cpu_slots: int | None) -> int:
    from engine.executors.local import LocalExecutor
    from engine.search import EngineBusy, SearchEngine

    llm = _make_llm(store, search)
    hosts_file = search.config.get("hosts")
    if hosts_file:
        from engine.executors.ssh import executor_from_hosts

        executor = executor_from_hosts(Path(hosts_file), store)
    else:
        executor = LocalExecutor(store.workspace, cpu_slots=cpu_slots)
    engine = SearchEngine(store, search, executor, llm,
                          progress=lambda m: logging.getLogger("ideaforge").info(m))
    try:
        outcome = asyncio.run(engine.run())
    except EngineBusy as exc:
        raise _Exit(4, str(exc)) from None
    if outcome.code == 0:
        logging.getLogger("ideaforge").info("search %s: %s", search.name, outcome.message)
    else:
        from engine.store import ops

        ended = "failed" if ops.find_search(store, search.id).status == "failed" else "stopped"
        sys.stderr.write(f"ideaforge: search {search.name!r} {ended}: {outcome.message}\n")
    return outcome.code


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _create(args: argparse.Namespace, env_ref: str) -> tuple[Any, Any]:
    from engine import environments
    from engine.store import ops

    env = environments.load(env_ref)
    profile = env.profile(args.profile)
    if args.epochs < 1 or args.ideas_per_epoch < 1:
        raise UsageError("--epochs and --ideas-per-epoch must be at least 1")
    if not 0 < args.advance_at <= 1:
        raise UsageError("--advance-at must be in (0, 1], e.g. 0.3 to move on at 30 %")
    if args.model == "catalog" and not (env.root / "catalog").is_dir():
        raise UsageError(f"--model catalog needs {env.root}/catalog/; give an LLM with --model")
    store = _store(args, create=True)
    name = args.name or _next_name(store, env.name)
    llm_cfg = {k: v for k, v in (("concurrency", getattr(args, "concurrency", None)),
                                 ("max_retries", getattr(args, "llm_retries", None)),
                                 ("timeout_s", getattr(args, "llm_timeout", None)),
                                 ("backoff_base_s", getattr(args, "llm_backoff", None)))
               if v is not None}
    hosts = getattr(args, "hosts", None)
    if hosts and not Path(hosts).is_file():
        raise UsageError(f"--hosts {hosts}: no such file; copy hosts.toml.example and edit it")
    if hosts:
        from engine.executors.hosts import load as load_hosts

        load_hosts(hosts)  # a bad file fails here, before anything is stored
    config = {"cpu_slots": args.cpu_slots, "llm": llm_cfg,
              "hosts": str(Path(hosts).resolve()) if hosts else None}
    search = ops.create_search(
        store, name=name, env_name=env.name, env_path=str(env.root), env_version=env.version(),
        profile=profile.name, model=args.model, coder_model=args.coder_model,
        api_base=args.api_base, epochs=args.epochs, ideas_per_epoch=args.ideas_per_epoch,
        auto=args.auto, review_diffs=args.review_diffs, advance_at=args.advance_at,
        max_cost_usd=args.max_cost, max_attempts=args.max_attempts,
        metric_name=env.metric.name, goal=env.metric.goal,
        baseline=env.baseline_for(profile.name), config_json=json.dumps(config))
    return store, search


def _next_name(store: Any, base: str) -> str:
    from engine.store import ops

    taken = {s.name for s in ops.list_searches(store)}
    n = 1
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def cmd_run(args: argparse.Namespace) -> int:
    store, search = _create(args, args.env)
    _log().info("workspace %s, search %r", store.workspace, search.name)
    return _drive(store, search, args.cpu_slots)


def cmd_demo(args: argparse.Namespace) -> int:
    args.profile, args.model, args.coder_model, args.api_base = "smoke", "catalog", None, None
    args.epochs, args.ideas_per_epoch, args.max_cost = 3, 6, None
    args.advance_at, args.review_diffs, args.max_attempts = 1.0, False, 10
    args.name = None
    if not args.auto and not (sys.stdin.isatty() and sys.stdout.isatty()):
        _log().info("no terminal for the console: running the demo with --auto")
        args.auto = True
    store, search = _create(args, "nanogpt")
    if not args.auto:
        # The engine runs as its own process; the console attaches to it through the
        # database, and closing the console leaves the search running.
        from console.app import run_console
        from console.launch import start_engine

        return run_console(store.workspace, search.name,
                           attach_engine=lambda: start_engine(store.workspace, search.name))
    started = time.monotonic()
    code = _drive(store, search, args.cpu_slots)
    _print_leaderboard(store, search.id)
    _print_lineage_forest(store, search.id)
    sys.stdout.write(f"\ndemo finished in {time.monotonic() - started:.0f} s; workspace "
                     f"{store.workspace}\n")
    return code


def cmd_resume(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    search = ops.find_search(store, args.search)
    if search.status == "imported":
        raise UsageError(f"search {search.name!r} was imported read-only; it cannot run")
    if search.status == "finished":
        sys.stdout.write(f"search {search.name!r} already finished\n")
        return 0
    # A stop request left unconsumed by the last engine must not stop this one at once.
    for d in ops.pending_decisions(store, search.id):
        if d.action == "stop":
            ops.consume_decision(store, d.id, "superseded by resume")
    return _drive(store, search, search.config.get("cpu_slots"))


def cmd_stop(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    search = ops.find_search(store, args.search)
    ops.add_decision(store, search.id, "stop")
    if args.cancel_jobs:
        from console.cli_hosts import cancel_job

        for job in ops.list_jobs(store, search.id, ("running", "launching")):
            if job.job_dir:
                cancel_job(store, job)
    if not search.engine_pid:
        ops.update_search(store, search.id, status="stopped", message="stopped by the researcher",
                          event="stopped while no engine was running")
    sys.stdout.write(f"stop requested for {search.name!r}\n")
    return 0


# ------------------------------------------------------------------------------ listings


def _status_dict(store: Any, s: Any, benched: list[Any] | None = None) -> dict[str, Any]:
    from engine.store import ops

    ideas = [i for i in ops.list_ideas(store, s.id) if i.origin != "baseline"]
    scored = [i.score for i in ideas if i.score is not None and i.quarantine in (None, "accepted")]
    best = (max(scored) if s.goal == "maximize" else min(scored)) if scored else None
    jobs = ops.list_jobs(store, s.id)
    gpu_hours = sum(((j.finished_at or time.time()) - j.started_at) * max(1, len(j.gpus.split(",")))
                    for j in jobs if j.started_at and j.gpus) / 3600
    return {"name": s.name, "id": s.id, "environment": s.env_name, "profile": s.profile,
            "model": s.model, "status": s.status, "phase": s.phase, "epoch": s.epoch,
            "epochs": s.epochs, "best_score": best, "baseline": s.baseline,
            "metric": s.metric_name, "goal": s.goal,
            "cost_usd": round(ops.llm_cost(store, s.id), 6),
            "llm_calls": ops.llm_call_count(store, s.id), "gpu_hours": round(gpu_hours, 4),
            "ideas": ops.counts_by_status(store, s.id),
            "jobs": {st: sum(j.state == st for j in jobs) for st in {j.state for j in jobs}},
            "engine_pid": s.engine_pid, "message": s.message,
            "quarantined_hosts": sorted(h.name for h in (
                _benched_hosts(store) if benched is None else benched))}


def _benched_hosts(store: Any) -> list[Any]:
    """Hosts in quarantine (read once per command, shared by every search's row)."""
    from engine.store.hosts_queries import host_states

    return [h for h in host_states(store).values() if h.quarantined()]


def cmd_status(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    searches = [ops.find_search(store, args.search)] if args.search else ops.list_searches(store)
    benched = _benched_hosts(store)
    rows = [_status_dict(store, s, benched) for s in searches]
    if args.json:
        _print_json(rows[0] if args.search else rows)
        return 0
    if not rows:
        sys.stdout.write(f"no searches in {store.workspace}\n")
    for h in benched:
        sys.stdout.write(f"host {h.name} quarantined until "
                         f"{time.strftime('%H:%M', time.localtime(h.quarantined_until))} after "
                         f"{h.failures} failures ({h.last_error or '-'}); "
                         f"`ideaforge hosts release {h.name}` ends it\n")
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["ideas"].items()))
        sys.stdout.write(
            f"{r['name']}: {r['status']} · epoch {r['epoch'] + 1}/{r['epochs']} · {r['phase']} · "
            f"best {r['metric']} {_fmt(r['best_score'])} (baseline {_fmt(r['baseline'])}) · "
            f"${r['cost_usd']:.2f} · ideas: {counts or 'none'}"
            + (f" · {r['message']}" if r["message"] else "") + "\n")
    return 0


def _idea_dict(i: Any, baseline: float | None = None) -> dict[str, Any]:
    d = i.to_dict()
    d["parents"] = list(i.parents)
    d["delta"] = (i.score - baseline) if (i.score is not None and baseline is not None) else None
    return d


def cmd_ideas(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    s = ops.find_search(store, args.search)
    ideas = ops.list_ideas(store, s.id, args.epoch)
    if args.json:
        _print_json([_idea_dict(i, s.baseline) for i in ideas])
        return 0
    sys.stdout.write(f"{'id':>5} {'ep':>3} {'origin':<8} {'status':<16} {'score':>8} "
                     f"{'att':>3}  title\n")
    for i in ideas:
        q = " [quarantine]" if i.quarantine == "pending" else ""
        sys.stdout.write(f"{i.id:>5} {i.epoch:>3} {i.origin:<8} {i.status:<16} "
                         f"{_fmt(i.score):>8} {i.attempts:>3}  {i.title[:60]}{q}\n")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    i = ops.get_idea(store, args.idea)
    attempts = ops.list_attempts(store, i.id)
    jobs = ops.list_jobs(store, idea_id=i.id)
    children = ops.children_of(store, i.id)
    if args.json:
        d = _idea_dict(i)
        d.update(children=children, attempts=[a.to_dict() for a in attempts],
                 jobs=[j.to_dict() for j in jobs])
        _print_json(d)
        return 0
    out = [f"idea {i.id} · epoch {i.epoch} · {i.origin} · {i.status} · score {_fmt(i.score)}"]
    if i.reason:
        out.append(f"reason: {i.reason}")
    if i.parents:
        out.append(f"parents: {', '.join(map(str, i.parents))}")
    if children:
        out.append(f"children: {', '.join(map(str, children))}")
    out += ["", i.text, ""]
    for a in attempts:
        out.append(f"attempt {a.number} ({a.model}): {a.outcome}" +
                   (f" — {a.error}" if a.error else ""))
    if i.diff:
        out += ["", i.diff]
    for j in jobs:
        out.append(f"job {j.id}: {j.state} exit {j.exit_code} {j.reason or ''} ({j.job_dir})")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _ancestry(store: Any, idea_id: int) -> dict[str, Any]:
    from engine.store import ops

    i = ops.get_idea(store, idea_id)
    return {"id": i.id, "title": i.title, "score": i.score, "status": i.status,
            "epoch": i.epoch, "origin": i.origin,
            "parents": [_ancestry(store, p) for p in i.parents]}


def cmd_lineage(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    tree = _ancestry(store, args.idea)
    descendants: list[int] = []
    frontier = [args.idea]
    while frontier:
        kids = ops.children_of(store, frontier.pop())
        descendants += [k for k in kids if k not in descendants]
        frontier += kids
    if args.json:
        _print_json({"ancestry": tree, "descendants": descendants})
        return 0

    def walk(node: dict[str, Any], depth: int) -> None:
        sys.stdout.write(f"{'  ' * depth}{'└─ ' if depth else ''}#{node['id']} "
                         f"[{_fmt(node['score'])}] {node['title'][:60]}\n")
        for p in node["parents"]:
            walk(p, depth + 1)

    walk(tree, 0)
    if descendants:
        sys.stdout.write(f"descendants: {', '.join(map(str, descendants))}\n")
    return 0


def _print_leaderboard(store: Any, search_id: int, top: int = 10) -> None:
    from engine.store import ops

    s = ops.find_search(store, search_id)
    ideas = [i for i in ops.list_ideas(store, search_id) if i.score is not None]
    ideas.sort(key=lambda i: i.score if s.goal == "minimize" else -i.score)  # type: ignore[operator]
    sys.stdout.write(f"\nLeaderboard — {s.name} ({s.metric_name}, {s.goal}; baseline "
                     f"{_fmt(s.baseline)})\n")
    for rank, i in enumerate(ideas[:top], 1):
        delta = "" if s.baseline is None else f" ({i.score - s.baseline:+.4f})"  # type: ignore[operator]
        sys.stdout.write(f"{rank:>3}. #{i.id:<4} {_fmt(i.score)}{delta}  ep{i.epoch} "
                         f"{i.origin:<8} {i.title[:60]}\n")
    failed = [i for i in ops.list_ideas(store, search_id) if i.status in
              ("failed", "implement_failed")]
    if failed:
        sys.stdout.write(f"     {len(failed)} failed: " + ", ".join(
            f"#{i.id} {(i.reason or '')[:40]}" for i in failed[:5]) + "\n")


def _print_lineage_forest(store: Any, search_id: int) -> None:
    from engine.store import ops

    ideas = ops.list_ideas(store, search_id)
    with_parents = [i for i in ideas if i.parents]
    if not with_parents:
        return
    sys.stdout.write("\nLineage (child ← parents)\n")
    for i in with_parents:
        sys.stdout.write(f"  #{i.id} [{_fmt(i.score)}] ← " +
                         ", ".join(f"#{p}" for p in i.parents) + f"  {i.title[:50]}\n")


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


def _read_text(path: str | None, initial: str) -> str:
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("w+", suffix=".txt", delete=False) as fh:
            fh.write(initial)
        subprocess.run([*editor.split(), fh.name], check=False)
        text = Path(fh.name).read_text(encoding="utf-8")
        os.unlink(fh.name)
    if not text.strip():
        raise UsageError("the idea text is empty; nothing was changed")
    return text.strip()


def cmd_edit(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    idea = _idea_for_decision(store, args.idea, {"proposed", "approved"})
    text = _read_text(args.text_file, idea.text)
    if text == idea.text.strip():
        raise UsageError("the text is unchanged; nothing was saved")
    ops.add_decision(store, idea.search_id, "edit", idea.id, text=text)
    sys.stdout.write(f"edit of idea {idea.id} saved; the engine stores it as a new version\n")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    s = ops.find_search(store, args.search)
    text = _read_text(args.text_file, "[Experiment] \n[Code Changes] \n")
    ops.add_decision(store, s.id, "add", text=text)
    sys.stdout.write(f"idea added to {s.name!r} (epoch {s.epoch + 1}); the engine picks it up\n")
    return 0


def cmd_go(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    s = ops.find_search(store, args.search)
    ops.add_decision(store, s.id, "go")
    sys.stdout.write(f"gate of {s.name!r} released: undecided ideas are skipped\n")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from engine.store import ops

    store = _store(args)
    idea = ops.get_idea(store, args.idea)
    if idea.quarantine != "pending":
        raise UsageError(f"idea {idea.id} is not in quarantine")
    ops.add_decision(store, idea.search_id, "accept" if args.accept else "discard", idea.id)
    return 0


# ------------------------------------------------------------------------------ export


def cmd_export(args: argparse.Namespace) -> int:
    from engine import environments
    from engine.patching import apply_to_copy
    from engine.store import ops

    store = _store(args)
    s = ops.find_search(store, args.search)
    ideas = ops.list_ideas(store, s.id)
    rows = [_idea_dict(i, s.baseline) for i in ideas]
    if args.format == "json":
        _print_json({"search": _status_dict(store, s), "ideas": rows})
    else:
        cols = ["id", "epoch", "origin", "status", "score", "delta", "quarantine", "parents",
                "attempts", "title", "reason", "text"]
        w = csv.DictWriter(sys.stdout, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "parents": " ".join(map(str, r["parents"]))})
    if args.patched:
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
    p = argparse.ArgumentParser(prog="ideaforge", description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", help="workspace folder (default ./.ideaforge or "
                   "$IDEAFORGE_WORKSPACE)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command")

    def add(name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(fn=fn)
        sp.add_argument("--workspace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sp

    d = add("demo", cmd_demo, "3 epochs × 6 ideas of nanogpt smoke with the offline catalog")
    d.add_argument("--auto", action="store_true", help="no review gates")
    d.add_argument("--cpu-slots", type=int, default=None)

    r = add("run", cmd_run, "start a search on an environment (a shipped name or a folder)")
    r.add_argument("env")
    r.add_argument("--name")
    r.add_argument("--model", default="catalog",
                   help="ideator: a litellm model id, or 'catalog' (offline, no LLM)")
    r.add_argument("--coder-model", help="implementer model (default: --model)")
    r.add_argument("--api-base", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    r.add_argument("--profile", default="smoke")
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--ideas-per-epoch", type=int, default=10)
    r.add_argument("--auto", action="store_true", help="no review gates")
    r.add_argument("--review-diffs", action="store_true", help="a second gate on diffs")
    r.add_argument("--advance-at", type=float, default=1.0)
    r.add_argument("--max-cost", type=float, help="model budget in USD")
    r.add_argument("--max-attempts", type=int, default=10)
    r.add_argument("--cpu-slots", type=int, default=None)
    r.add_argument("--hosts", help="hosts.toml: run jobs on these GPU hosts over SSH "
                   "(default: this machine)")
    r.add_argument("--concurrency", type=int, help="model calls in flight at once (16)")
    r.add_argument("--llm-retries", type=int, help="retries per model call (6)")
    r.add_argument("--llm-timeout", type=float, help="seconds per model call (600)")
    r.add_argument("--llm-backoff", type=float, help="first retry wait in seconds (1.0)")

    x = add("resume", cmd_resume, "continue a stopped or interrupted search")
    x.add_argument("search")
    x = add("stop", cmd_stop, "stop a search (running jobs keep running unless --cancel-jobs)")
    x.add_argument("search")
    x.add_argument("--cancel-jobs", action="store_true")
    x = add("status", cmd_status, "searches and their progress")
    x.add_argument("search", nargs="?")
    x.add_argument("--json", action="store_true")
    x = add("ideas", cmd_ideas, "a search's ideas")
    x.add_argument("search")
    x.add_argument("--epoch", type=int)
    x.add_argument("--json", action="store_true")
    x = add("show", cmd_show, "one idea: text, attempts, diff, jobs")
    x.add_argument("idea", type=int)
    x.add_argument("--json", action="store_true")
    x = add("lineage", cmd_lineage, "an idea's ancestry and descendants")
    x.add_argument("idea", type=int)
    x.add_argument("--json", action="store_true")
    x = add("approve", cmd_approve, "approve proposed ideas (or diffs under review)")
    x.add_argument("ideas", type=int, nargs="+")
    x = add("reject", cmd_reject, "reject ideas; the reason steers later prompts")
    x.add_argument("ideas", type=int, nargs="+")
    x.add_argument("--reason")
    x = add("edit", cmd_edit, "edit an idea (in $EDITOR or from a file) as a new version")
    x.add_argument("idea", type=int)
    x.add_argument("--text-file")
    x = add("add", cmd_add, "add your own idea to a search")
    x.add_argument("search")
    x.add_argument("--text-file")
    x = add("go", cmd_go, "release the gate: undecided ideas are skipped")
    x.add_argument("search")
    x = add("quarantine", cmd_quarantine, "accept or discard a suspicious result")
    x.add_argument("idea", type=int)
    g = x.add_mutually_exclusive_group(required=True)
    g.add_argument("--accept", action="store_true")
    g.add_argument("--discard", action="store_true")
    x = add("export", cmd_export, "export a search as JSON or CSV")
    x.add_argument("search")
    x.add_argument("--format", choices=["json", "csv"], default="json")
    x.add_argument("--patched", help="also write each implemented idea's patched environment")
    x = add("console", cmd_console, "open the console (the default)")
    x.add_argument("search", nargs="?")
    x = add("import-legacy", cmd_import_legacy, "import the reference code's JSON output as a "
            "read-only search")
    x.add_argument("directory")
    x.add_argument("--name")
    from console import cli_hosts

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
    try:
        return int(fn(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; continue with `ideaforge resume SEARCH`\n")
        return 130
    except _Exit as exc:
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
    sys.exit(main())
