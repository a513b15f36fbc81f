"""`ideaforge run`, `demo`, `resume` and `stop`: the commands that start, continue or stop
an engine. They share how a search's options are checked (`run` and `resume` refuse the same
bad values, before anything is stored) and how the engine is driven to its exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from console.cli import UsageError, _fmt, _log, _store


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


def _drive(store: Any, search: Any, cpu_slots: int | None,
           options: dict[str, Any] | None = None) -> int:
    """Run the engine on a search to its end; its exit code. `options` (checked already) are
    stored by the engine once it holds the search, so a refused engine changes nothing."""
    from engine.executors.local import LocalExecutor
    from engine.search import EngineBusy, SearchEngine

    llm = _make_llm(store, dataclasses.replace(search, **(options or {})))
    hosts_file = search.config.get("hosts")
    if hosts_file:
        from engine.executors.ssh import executor_from_hosts

        executor = executor_from_hosts(Path(hosts_file), store)
    else:
        executor = LocalExecutor(store.workspace, cpu_slots=cpu_slots)
    engine = SearchEngine(store, search, executor, llm, options=options,
                          progress=lambda m: logging.getLogger("ideaforge").info(m))
    from console.cli_progress import ProgressReporter

    # The running jobs' steps, training metric and time left, on stderr while the engine runs.
    reporter = ProgressReporter(store, search.id).start()
    try:
        outcome = asyncio.run(engine.run())
    except EngineBusy as exc:
        raise EngineExit(4, str(exc)) from None
    finally:
        reporter.stop()
    if outcome.code == 0:
        logging.getLogger("ideaforge").info("search %s: %s", search.name, outcome.message)
    else:
        from engine.store import ops

        ended = "failed" if ops.find_search(store, search.id).status == "failed" else "stopped"
        sys.stderr.write(f"ideaforge: search {search.name!r} {ended}: {outcome.message}\n")
    return outcome.code


class EngineExit(Exception):
    """The engine did not run: its exit code and why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _create(args: argparse.Namespace, env_ref: str) -> tuple[Any, Any]:
    from engine import environments
    from engine.store import ops

    env = environments.load(env_ref)
    profile = env.profile(args.profile)
    if args.ideas_per_epoch < 1:
        raise UsageError("--ideas-per-epoch must be at least 1")
    check_options(epochs=args.epochs, advance_at=args.advance_at, max_cost=args.max_cost,
                  max_gpu_hours=args.max_gpu_hours, confirm=args.confirm)
    baseline_runs = profile.baseline_runs if args.baseline_runs is None else args.baseline_runs
    if baseline_runs < 1:
        raise UsageError(f"--baseline-runs {baseline_runs}: must be at least 1")
    if args.model == "catalog" and not (env.root / "catalog").is_dir():
        raise UsageError(f"--model catalog needs {env.root}/catalog/; give an LLM with --model")
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
    if args.fix_attempts < 0:
        raise UsageError(f"--fix-attempts {args.fix_attempts}: must be 0 (no repairs) or more")
    if not 0 < args.confirm_share <= 1:
        raise UsageError(f"--confirm-share {args.confirm_share:g}: must be in (0, 1], the most "
                         "of the search's compute that repeats may take, e.g. 0.3")
    dedup = _dedup_options(args)
    config = {"cpu_slots": args.cpu_slots, "llm": llm_cfg, "confirm_share": args.confirm_share,
              "dedup": dedup,
              "hosts": str(Path(hosts).resolve()) if hosts else None}
    if args.model != "catalog":
        # Unknown model or missing key: said now, offline, so a failed start stores no search
        # (the same check the engine's client makes again when it starts).
        from engine import llm as llm_mod

        llm_mod.LlmClient(llm_mod.LlmConfig(
            model=args.model, coder_model=args.coder_model, api_base=args.api_base,
            max_cost_usd=args.max_cost, prices=_load_prices(), **llm_cfg)).check()
    # Every check above comes first: bad input never leaves a workspace database behind.
    store = _store(args, create=True)
    name = args.name or _next_name(store, env.name)
    search = ops.create_search(
        store, name=name, env_name=env.name, env_path=str(env.root), env_version=env.version(),
        profile=profile.name, model=args.model, coder_model=args.coder_model,
        api_base=args.api_base, epochs=args.epochs, ideas_per_epoch=args.ideas_per_epoch,
        auto=args.auto, review_diffs=args.review_diffs, advance_at=args.advance_at,
        max_cost_usd=args.max_cost, max_gpu_hours=args.max_gpu_hours,
        max_attempts=args.max_attempts, confirm=args.confirm.strip().lower(),
        fix_attempts=args.fix_attempts,
        baseline_runs=baseline_runs if args.confirm.strip().lower() != "off" else 1,
        metric_name=env.metric.name, goal=env.metric.goal,
        baseline=env.baseline_for(profile.name), config_json=json.dumps(config),
        evaluator=env.evaluator_id())
    return store, search


#: Which ideas get repeat runs unless `--confirm` says otherwise (issue 13).
DEFAULT_CONFIRM = "top-4"
DEFAULT_CONFIRM_SHARE = 0.3


def _dedup_options(args: argparse.Namespace) -> dict[str, Any]:
    """`config_json["dedup"]` from run's flags, checked before anything is stored."""
    from engine.dedup import dedup_config

    given = {"off": True if getattr(args, "no_dedup", False) else None,
             "threshold": getattr(args, "dedup_threshold", None),
             "embedding_model": getattr(args, "embedding_model", None),
             "embedding_threshold": getattr(args, "embedding_threshold", None),
             "api_base": getattr(args, "embedding_api_base", None)}
    options = {k: v for k, v in given.items() if v is not None}
    for name in ("threshold", "embedding_threshold"):
        if name in options and not 0 < options[name] <= 1:
            flag = "--dedup-threshold" if name == "threshold" else "--embedding-threshold"
            raise UsageError(f"{flag} {options[name]:g}: must be in (0, 1], how alike two idea "
                             "texts must be to count as one (e.g. 0.68)")
    try:
        dedup_config(options)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"near-duplicate settings: {exc}") from None
    return options


def check_options(*, epochs: int | None = None, advance_at: float | None = None,
                  max_cost: float | None = None, max_gpu_hours: float | None = None,
                  confirm: str | None = None) -> None:
    """The checks `run` and `resume` share: bad values are refused before anything is stored."""
    if confirm is not None:
        from engine.search_confirm import parse_confirm

        try:
            parse_confirm(confirm)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs {epochs}: must be at least 1")
    if advance_at is not None and not 0 < advance_at <= 1:
        raise UsageError(f"--advance-at {advance_at}: must be in (0, 1], e.g. 0.3 to move on "
                         "once 30 % of an epoch's jobs have reported")
    if max_cost is not None and not max_cost > 0:
        raise UsageError(f"--max-cost {max_cost}: must be a positive amount of USD, e.g. 10")
    if max_gpu_hours is not None and not 0 < max_gpu_hours < math.inf:
        raise UsageError(f"--max-gpu-hours {max_gpu_hours:g}: must be a positive number of GPU "
                         "hours, e.g. 8 or 0.5")


def gpu_hours_arg(text: str) -> float:
    """argparse's type for --max-gpu-hours: a word that is no number says how to write one."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give GPU hours, e.g. 8 "
                                         "or 0.5") from None


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
    code = _drive(store, search, args.cpu_slots)
    _print_leaderboard(store, search.id)
    return code


#: What `demo` does, said in its help and when it starts. The search ends when the catalog is
#: used up, so it runs fewer than 3 × 6 ideas; the help's count is checked by a test against
#: environments/nanogpt/catalog/ (loading the environment for --help would slow every command).
DEMO_PLAN = ("3 epochs of up to 6 ideas on nanogpt's smoke profile: the catalog's {n} ideas "
             "and, once two are confirmed, their combinations")
DEMO_CATALOG_IDEAS = 11


def cmd_demo(args: argparse.Namespace) -> int:
    args.profile, args.model, args.coder_model, args.api_base = "smoke", "catalog", None, None
    args.epochs, args.ideas_per_epoch, args.max_cost, args.max_gpu_hours = 3, 6, None, None
    args.advance_at, args.review_diffs, args.max_attempts = 1.0, False, 10
    args.name, args.confirm, args.baseline_runs = None, DEFAULT_CONFIRM, None
    args.confirm_share, args.fix_attempts = DEFAULT_CONFIRM_SHARE, 0  # the catalog: no coder
    if not args.auto and not (sys.stdin.isatty() and sys.stdout.isatty()):
        _log().info("no terminal for the console: running the demo with --auto")
        args.auto = True
    from engine import environments
    from engine.catalog import load_catalog

    n = len(load_catalog(environments.load("nanogpt")))
    _log().info("demo: %s", DEMO_PLAN.format(n=n))
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
    options = _resume_options(args, store, search)
    if search.status == "finished" and options.get("epochs", search.epochs) <= search.epochs:
        sys.stdout.write(f"search {search.name!r} already finished" + (
            f"; nothing was changed (--epochs above {search.epochs} extends it)"
            if options else "") + "\n")
        return 0
    # A stop request left unconsumed by the last engine must not stop this one at once.
    for d in ops.pending_decisions(store, search.id):
        if d.action == "stop":
            ops.consume_decision(store, d.id, "superseded by resume")
    code = _drive(store, search, search.config.get("cpu_slots"), options)
    _print_leaderboard(store, search.id)
    return code


def _resume_options(args: argparse.Namespace, store: Any, search: Any) -> dict[str, Any]:
    """The options a resume changes (only those given), checked as `run` checks them and
    against the search's state; nothing is stored here (the engine does, once it runs)."""
    from engine.store import ops

    given = {"auto": args.auto, "review_diffs": args.review_diffs,
             "advance_at": args.advance_at, "max_cost_usd": args.max_cost,
             "max_gpu_hours": args.max_gpu_hours, "epochs": args.epochs,
             "confirm": args.confirm and args.confirm.strip().lower(),
             "fix_attempts": args.fix_attempts}
    options = {k: v for k, v in given.items() if v is not None}
    check_options(epochs=args.epochs, advance_at=args.advance_at, max_cost=args.max_cost,
                  max_gpu_hours=args.max_gpu_hours, confirm=args.confirm)
    name = search.name
    if args.fix_attempts is not None and args.fix_attempts < 0:
        raise UsageError(f"--fix-attempts {args.fix_attempts}: must be 0 (no repairs) or more")
    if args.epochs is not None and args.epochs < search.epoch + 1:
        raise UsageError(f"--epochs {args.epochs}: search {name!r} is already in epoch "
                         f"{search.epoch + 1}; give {search.epoch + 1} or more")
    if args.max_cost is not None:
        spent = ops.llm_cost(store, search.id)
        if args.max_cost <= spent:
            raise UsageError(f"--max-cost {args.max_cost}: search {name!r} has spent "
                             f"${spent:.2f} on model calls already; give more than that")
    if args.max_gpu_hours is not None:
        from engine.store import console_queries

        used = console_queries.gpu_hours(store, search.id)
        if args.max_gpu_hours <= used:
            raise UsageError(f"--max-gpu-hours {args.max_gpu_hours:g}: search {name!r} has used "
                             f"{used:.4f} GPU hours already; give more than that")
    if args.review_diffs is False:
        waiting = ops.list_ideas(store, search.id, None, ("diff_review",))
        if waiting:
            raise UsageError(
                f"--no-review-diffs: {len(waiting)} diff(s) of {name!r} await review (ideas "
                f"{', '.join(str(i.id) for i in waiting[:10])}); approve or reject them "
                f"first (`ideaforge approve ID`), or resume without --no-review-diffs")
    return options


def cmd_stop(args: argparse.Namespace) -> int:
    from engine.store import job_ops, ops

    store = _store(args)
    search = ops.find_search(store, args.search)
    ops.add_decision(store, search.id, "stop")
    from engine.search import engine_alive

    driven = engine_alive(store.workspace, search.id)
    if args.cancel_jobs:
        from console.cli_hosts import cancel_job

        for job in job_ops.list_jobs(store, search.id, ("running", "launching", "unreachable")):
            if not job.job_dir:
                continue
            said = cancel_job(store, job)
            if not driven and said in ("requested", "killed_orphans"):
                # No engine will read its end: record it now, so it holds no GPU or slot.
                job_ops.finish_job(store, job.id, state="cancelled", exit_code=None,
                                   reason="cancelled", log_tail=job.log_tail, idea_status="failed",
                                   score=None, quarantine=None, idea_reason="cancelled",
                                   message=f"job {job.id} cancelled while no engine drove "
                                   f"{search.name!r}")
    if not driven:
        ops.update_search(store, search.id, status="stopped", message="stopped by the researcher",
                          event="stopped while no engine was running")
    sys.stdout.write(f"stop requested for {search.name!r}\n")
    return 0


def _print_leaderboard(store: Any, search_id: int, top: int = 10) -> None:
    from engine import standing
    from engine.store import ops

    s = ops.find_search(store, search_id)
    ideas = standing.ranked([i for i in ops.list_ideas(store, search_id)
                             if i.score is not None], s.goal)
    if s.confirm != "off":
        # Confirmed ideas first: only they may be called the best (issue 13).
        ideas.sort(key=lambda i: i.confirmation != "confirmed")
    base = next((i for i in ideas if i.origin == "baseline"), None)
    sys.stdout.write(f"\nLeaderboard — {s.name} ({s.metric_name}, {s.goal}; baseline "
                     f"{standing.score_text(base) if base else _fmt(s.baseline)})\n")
    for rank, i in enumerate(ideas[:top], 1):
        delta = "" if s.baseline is None else f" ({i.score - s.baseline:+.4f})"  # type: ignore[operator]
        said = f" {standing.mark(i)} {i.confirmation}" if i.confirmation else ""
        sys.stdout.write(f"{rank:>3}. #{i.id:<4} {standing.score_text(i)}{delta}{said}  "
                         f"ep{i.epoch} {i.origin:<8} {i.title[:50]}\n")
    if s.confirm != "off":
        sys.stdout.write("     ×n: the mean of n runs ± its standard error; ✓ confirmed by "
                         "repeats, ○ not yet, ✗ refuted (not built on)\n")
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


def register(add: Any) -> None:
    """The parsers of demo, run, resume and stop; `add(name, fn, help)` makes a sub-parser."""
    d = add("demo", cmd_demo, DEMO_PLAN.format(n=DEMO_CATALOG_IDEAS))
    d.description = DEMO_PLAN.format(n=DEMO_CATALOG_IDEAS) + " (no LLM, no GPU)"
    d.add_argument("--auto", action="store_true", help="no review gates")
    d.add_argument("--cpu-slots", type=int, default=None, help="CPU jobs run at once "
                   "(default: this machine's cores, at most 4)")

    r = add("run", cmd_run, "start a search on an environment (a shipped name or a folder)")
    r.add_argument("env", help="a shipped environment's name (`ideaforge envs` lists them) or "
                   "a folder holding environment.toml")
    r.add_argument("--name", help="the search's name (default: the environment's, with -2, "
                   "-3… when taken)")
    r.add_argument("--model", default="catalog",
                   help="ideator: a litellm model id, or 'catalog' (offline, no LLM)")
    r.add_argument("--coder-model", help="implementer model (default: --model)")
    r.add_argument("--api-base", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    r.add_argument("--profile", default="smoke", help="the environment's profile to run "
                   "(`ideaforge envs` lists them with their GPUs and time limits)")
    r.add_argument("--epochs", type=int, default=3, help="epochs in all (each proposes, "
                   "implements and runs a round of ideas)")
    r.add_argument("--ideas-per-epoch", type=int, default=10, help="ideas proposed per epoch")
    r.add_argument("--auto", action="store_true", help="no review gates")
    r.add_argument("--review-diffs", action="store_true", help="a second gate on diffs")
    r.add_argument("--advance-at", type=float, default=1.0, help="start the next epoch once "
                   "this share (0–1) of an epoch's ideas has a result")
    r.add_argument("--max-cost", type=float, help="model budget in USD")
    r.add_argument("--max-gpu-hours", type=gpu_hours_arg, help="GPU budget: no job starts once "
                   "the search's jobs have used this many GPU hours (CPU jobs use none)")
    r.add_argument("--max-attempts", type=int, default=10, help="times the coder may try to "
                   "write a diff that applies, per idea")
    r.add_argument("--confirm", default=DEFAULT_CONFIRM, metavar="off|top-K|all",
                   help="repeat runs before an idea is built on: the K leading unconfirmed "
                   "ideas, all of them, or none (off) (default: %(default)s)")
    r.add_argument("--fix-attempts", type=int, default=2, metavar="N",
                   help="how often the coder may repair an idea whose patched code crashed, "
                   "shown its traceback (default: %(default)s; 0: never)")
    r.add_argument("--confirm-share", type=float, default=DEFAULT_CONFIRM_SHARE,
                   metavar="SHARE", help="the most of the search's compute (GPU × hours, a CPU "
                   "job counting one) that repeats may take (default: %(default)s)")
    r.add_argument("--dedup-threshold", type=float, metavar="X", help="how alike (0–1) an "
                   "idea's text must be to an earlier one to count as its near duplicate "
                   "(default 0.68)")
    r.add_argument("--no-dedup", action="store_true", help="do not flag near-duplicate ideas")
    r.add_argument("--embedding-model", help="compare ideas by embeddings from this litellm "
                   "model (e.g. openai/text-embedding-3-small) instead of by their words")
    r.add_argument("--embedding-threshold", type=float, metavar="X",
                   help="cosine similarity of a near duplicate by embeddings (default 0.90)")
    r.add_argument("--embedding-api-base", help="the embedding model's server (default: "
                   "--api-base)")
    r.add_argument("--baseline-runs", type=int, help="measure the unmodified code this many "
                   "times at the start (default: the profile's baseline_runs, else 3)")
    r.add_argument("--cpu-slots", type=int, default=None, help="CPU jobs run at once "
                   "(default: this machine's cores, at most 4)")
    r.add_argument("--hosts", help="hosts.toml: run jobs on these GPU hosts over SSH "
                   "(default: this machine)")
    r.add_argument("--concurrency", type=int, help="model calls in flight at once (16)")
    r.add_argument("--llm-retries", type=int, help="retries per model call (6)")
    r.add_argument("--llm-timeout", type=float, help="seconds per model call (600)")
    r.add_argument("--llm-backoff", type=float, help="first retry wait in seconds (1.0)")

    x = add("resume", cmd_resume, "continue a stopped or interrupted search (the options "
            "given change how it goes on, and are stored with it)")
    x.add_argument("search", help="a search's name or id")
    x.add_argument("--auto", action=argparse.BooleanOptionalAction, default=None,
                   help="go on without review gates (--no-auto: back to the gates)")
    x.add_argument("--review-diffs", action=argparse.BooleanOptionalAction, default=None,
                   help="a second gate on diffs, from now on (or no longer)")
    x.add_argument("--advance-at", type=float, help="start the next epoch once this share "
                   "of an epoch's jobs has reported")
    x.add_argument("--max-cost", type=float, help="the model budget in USD (raise it to go "
                   "on after the budget was reached)")
    x.add_argument("--max-gpu-hours", type=gpu_hours_arg, help="the GPU budget in GPU hours "
                   "(raise it to go on after the budget was reached)")
    x.add_argument("--epochs", type=int, help="the number of epochs in all (more extends "
                   "the search, a finished one too)")
    x.add_argument("--confirm", metavar="off|top-K|all", help="which ideas get repeat runs "
                   "from now on")
    x.add_argument("--fix-attempts", type=int, metavar="N", help="crash repairs per idea "
                   "from now on")

    x = add("stop", cmd_stop, "stop a search (running jobs keep running unless --cancel-jobs)")
    x.add_argument("search", help="a search's name or id")
    x.add_argument("--cancel-jobs", action="store_true", help="also cancel its running jobs "
                   "(their whole process groups)")
