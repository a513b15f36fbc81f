"""`ideaforge envs [--json] [PATH ...]`: the environments a search can run on — the shipped
ones and any folder given — with their metric, profiles, GPUs and time limits."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

from console.cli import UsageError, _print_json


def _env_dict(env: Any, shipped: bool) -> dict[str, Any]:
    m = env.metric
    return {"name": env.name, "path": str(env.root), "shipped": shipped,
            "description": env.description.strip(),
            "metric": {"name": m.name, "goal": m.goal, "baseline": m.baseline},
            "verified": env.evaluation is not None, "preflight": env.preflight,
            "profiles": [{"name": p.name, "gpus": p.gpus, "timeout_s": p.timeout,
                          "time_limit_s": p.time_limit, "baseline": p.baseline,
                          "baseline_runs": p.baseline_runs}
                         for p in env.profiles.values()]}


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 3600 and value % 360 == 0:
        return f"{value / 3600:g} h"
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s"


def environments_seen(paths: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The shipped environments and those at `paths` (each folder once); problems of shipped
    ones are returned as lines to show, a given path that is no environment is refused."""
    from engine import environments

    found: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for toml in sorted(environments.BUILTIN_DIR.glob("*/environment.toml")):
        try:
            env = environments.load(toml.parent)
        except environments.EnvironmentError_ as exc:
            problems.append(str(exc))
            continue
        seen.add(str(env.root))
        found.append(_env_dict(env, shipped=True))
    for path in paths:
        try:
            env = environments.load(path)
        except environments.EnvironmentError_ as exc:
            raise UsageError(f"{exc} (give a folder holding environment.toml, or the file)"
                             ) from None
        if str(env.root) not in seen:
            seen.add(str(env.root))
            found.append(_env_dict(env, shipped=False))
    return found, problems


def cmd_envs(args: argparse.Namespace) -> int:
    found, problems = environments_seen(args.paths)
    if args.json:
        _print_json(found)
        return 0
    for e in found:
        m = e["metric"]
        where = "shipped" if e["shipped"] else e["path"]
        base = "-" if m["baseline"] is None else f"{m['baseline']:g}"
        sys.stdout.write(f"{e['name']} ({where}): {m['name']}, to {m['goal']}, baseline "
                         f"{base}\n")
        if e["description"]:
            first = e["description"].splitlines()[0]
            sys.stdout.write(f"  {textwrap.shorten(first, 100, placeholder=' …')}\n")
        for p in e["profiles"]:
            limit = (f", trains for {_seconds(p['time_limit_s'])}"
                     if p["time_limit_s"] is not None else "")
            gpus = f"{p['gpus']} GPU{'s' if p['gpus'] != 1 else ''}" if p["gpus"] else "CPU"
            sys.stdout.write(f"  profile {p['name']:<8} {gpus:<7} limit "
                             f"{_seconds(p['timeout_s'])}{limit}\n")
    for line in problems:
        sys.stderr.write(f"ideaforge: a shipped environment does not load: {line}\n")
    if found:
        sys.stdout.write("run one with `ideaforge run NAME-OR-FOLDER --profile PROFILE`\n")
    return 0


def register(add: Any) -> None:
    """The `envs` parser; `add(name, fn, help)` makes a sub-parser."""
    x = add("envs", cmd_envs, "the environments a search can run on: the shipped ones and any "
            "folder given, with their profiles, GPUs and time limits")
    x.add_argument("paths", nargs="*", metavar="PATH", help="also these environments (a "
                   "folder holding environment.toml, or the file)")
    x.add_argument("--json", action="store_true", help="print JSON instead of text")
