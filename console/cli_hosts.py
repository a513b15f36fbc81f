"""`ideaforge hosts check|release` and `ideaforge cancel JOB`: the GPU hosts from the terminal.

`register(subparsers)` adds the commands to the `ideaforge` parser. `hosts check` connects to
every host of hosts.toml (in parallel), verifies its key, and reports GPUs (and which are busy
with processes ideaforge did not start), free disk, interpreters with their torch, the
environment copies and setups it holds, and any quarantine; it exits 1 if a host fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("ideaforge")

DEFAULT_HOSTS = ("hosts.toml", "~/.config/ideaforge/hosts.toml")
LOW_DISK_BYTES = 20 * 1024**3


def register(sub: Any) -> None:
    """Add `hosts` and `cancel` to the subparsers of `ideaforge`."""
    def hidden_workspace(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    from console.cli import HelpFormatter

    h = sub.add_parser("hosts", help="the GPU hosts of hosts.toml: check them, end a quarantine",
                       formatter_class=HelpFormatter)
    hidden_workspace(h)
    hs = h.add_subparsers(dest="hosts_command", required=True)
    c = hs.add_parser("check", help="connect to every host and report what it has",
                      formatter_class=HelpFormatter)
    c.add_argument("--hosts", help="hosts.toml (default: $IDEAFORGE_HOSTS, ./hosts.toml, "
                   "~/.config/ideaforge/hosts.toml)")
    c.add_argument("--env", action="append", metavar="ENV", default=[],
                   help="an environment (name or folder) whose shipped and held-back files to "
                   "list (repeatable; default: those hosts.toml names that resolve)")
    c.add_argument("--json", action="store_true", help="print JSON instead of text")
    c.add_argument("--accept-new", action="store_true",
                   help="record the key of a host that is not yet in its known_hosts file "
                   "(check the fingerprint shown first); a changed key is always refused")
    hidden_workspace(c)
    c.set_defaults(fn=_guarded(cmd_hosts_check))
    r = hs.add_parser("release", help="end a host's quarantine now",
                      formatter_class=HelpFormatter)
    r.add_argument("host", help="the host's name in hosts.toml")
    hidden_workspace(r)
    r.set_defaults(fn=_guarded(cmd_hosts_release))
    x = sub.add_parser("cancel", help="cancel a job: its whole process group is killed on its "
                       "host", formatter_class=HelpFormatter)
    x.add_argument("job", type=int, help="the job's id (`ideaforge show IDEA` lists them)")
    hidden_workspace(x)
    x.set_defaults(fn=_guarded(cmd_cancel))


class HostsUsageError(Exception):
    """Bad input: one line naming the problem and the fix (exit code 2, as `ideaforge`'s)."""


def _usage(message: str) -> Exception:
    return HostsUsageError(message)


def _guarded(fn: Any) -> Any:
    """Report bad input as one line with exit code 2 here, because `ideaforge` may run as
    `python -m console.cli`, whose UsageError is then another class than console.cli's."""
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except HostsUsageError as exc:
            sys.stderr.write(f"ideaforge: {exc}\n")
            return 2

    run.__doc__ = fn.__doc__
    return run


def hosts_path(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser()
    if os.environ.get("IDEAFORGE_HOSTS"):
        return Path(os.environ["IDEAFORGE_HOSTS"]).expanduser()
    for candidate in DEFAULT_HOSTS:
        path = Path(candidate).expanduser()
        if path.is_file():
            return path
    raise _usage("no hosts file: pass --hosts FILE (copy hosts.toml.example and edit it)")


def _store_if_any(args: argparse.Namespace) -> Any:
    from engine.search import workspace_path
    from engine.store import Store, StoreError

    try:
        return Store(workspace_path(getattr(args, "workspace", None)), create=False)
    except StoreError:
        return None


def check_host(cfg: Any, accept_new: bool) -> dict[str, Any]:
    """Everything `hosts check` reports about one host (plain data, for --json)."""
    from engine.executors.ssh import HostKeyError, SshError, connect

    started = time.monotonic()
    out: dict[str, Any] = {"name": cfg.name, "address": f"{cfg.address}:{cfg.port}",
                           "via": cfg.jump.name if cfg.jump else None, "ok": False,
                           "labels": list(cfg.labels), "problems": []}
    try:
        remote = connect(cfg, accept_new=accept_new)
    except HostKeyError as exc:
        out.update(error=str(exc), host_key_problem=True)
        return out
    except SshError as exc:
        out["error"] = str(exc)
        return out
    try:
        # Probed as setups and jobs start them: same interpreter, same environment.
        env = dict(cfg.env_vars)
        pythons = {"host": {"python": cfg.python, "env": env}}
        for name, e in cfg.environments.items():
            pythons[f"environment {name}"] = {"python": e.python or cfg.python, "venv": e.venv,
                                              "env": env}
        info = remote.call("info", {"workdir": remote.workdir, "pythons": pythons},
                           timeout=300)
    except SshError as exc:
        out.update(host_key=remote.conn.host_key, error=str(exc))
        return out
    finally:
        remote.conn.close()
    gpus = info.get("gpus") or {}
    found = [g["index"] for g in gpus.get("list", [])]
    usable = [g for g in found if cfg.gpus is None or g in cfg.gpus]
    problems = out["problems"]
    if gpus.get("error"):
        problems.append(f"GPUs: {gpus['error']}")
    if cfg.gpus is not None and set(cfg.gpus) - set(found):
        problems.append(f"configured GPUs {sorted(set(cfg.gpus) - set(found))} are not present")
    for label, p in (info.get("pythons") or {}).items():
        if p.get("error"):
            problems.append(f"{label} python: {p['error']}")
    free = info.get("disk_free_bytes")
    if info.get("disk_error"):
        problems.append(f"workdir {cfg.workdir}: {info['disk_error']}")
    out.update(
        ok=not problems, host_key=remote.conn.host_key, hostname=info.get("hostname"),
        workdir=remote.workdir, disk_free_bytes=free, gpus=gpus.get("list", []),
        usable_gpus=usable,
        foreign_busy=[g["index"] for g in gpus.get("list", []) if g.get("foreign_procs")],
        pythons=info.get("pythons"), setups=info.get("setups"),
        environment_copies=info.get("pristine"),
        clock_skew_s=round(float(info.get("now", time.time())) - time.time(), 2),
        seconds=round(time.monotonic() - started, 2),
    )
    if free is not None and free < LOW_DISK_BYTES:
        out["warnings"] = [f"only {free / 1024**3:.1f} GiB free in {remote.workdir}"]
    return out


def cmd_hosts_check(args: argparse.Namespace) -> int:
    from engine.executors.hosts import HostsError, load

    path = hosts_path(args.hosts)
    try:
        hosts = load(path)
    except HostsError as exc:
        raise _usage(str(exc)) from None
    if hosts.slurm is not None:
        return _check_slurm(args, path, hosts)
    with ThreadPoolExecutor(max_workers=min(16, len(hosts.hosts))) as pool:
        rows = list(pool.map(lambda h: check_host(h, args.accept_new), hosts.hosts))
    store = _store_if_any(args)
    if store is not None:
        from engine.store import hosts_queries as hq

        states = hq.host_states(store)
        for row in rows:
            st = states.get(row["name"])
            row["quarantined_until"] = st.quarantined_until if st and st.quarantined() \
                else None
            row["recent_failures"] = st.failures if st else 0
            row["last_failure"] = st.last_error if st else None
    envs = shipping_report(args.env, hosts)
    if args.json:
        sys.stdout.write(json.dumps({"file": str(path), "hosts": rows, "environments": envs},
                                    indent=2) + "\n")
    else:
        sys.stdout.write(f"{path}: {len(rows)} host(s)\n")
        for e in envs:
            sys.stdout.write(_describe_env(e))
        for row in rows:
            sys.stdout.write(_describe(row))
    return 0 if all(r["ok"] for r in rows) else 1


def _check_slurm(args: argparse.Namespace, path: Path, hosts: Any) -> int:
    """A `[slurm]` target: Slurm's commands, controller, partition, GPUs per node and a test
    job writing to the shared workdir (engine/executors/slurm_check.py); exit 1 if one fails."""
    from engine.environments import EnvironmentError_, load
    from engine.executors.slurm_check import check

    cfg = hosts.slurm
    wanted = 1
    for ref in args.env:
        try:
            env = load(ref)
        except EnvironmentError_ as exc:
            raise _usage(str(exc)) from None
        wanted = max([wanted, *(p.gpus for p in env.profiles.values())])
    if cfg.workdir:
        workdir = Path(cfg.workdir).expanduser()
    else:
        store = _store_if_any(args)
        workdir = Path(store.workspace) / "slurm" if store is not None else Path.cwd()
    lines = check(cfg, workdir, gpus_wanted=wanted, accept_new=args.accept_new)
    ok = all(c.ok is not False for c in lines)
    if args.json:
        sys.stdout.write(json.dumps({"file": str(path), "slurm": {
            "ok": ok, "workdir": str(workdir), "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail} for c in lines]}},
            indent=2) + "\n")
    else:
        sys.stdout.write(f"{path}: Slurm cluster (workdir {workdir})  "
                         f"{'ok' if ok else 'FAILED'}\n")
        for c in lines:
            mark = {True: "ok", False: "FAILED", None: "not told"}[c.ok]
            sys.stdout.write(f"  {c.name}: {mark}: {c.detail}\n")
    return 0 if ok else 1


def shipping_report(named: list[str], hosts: Any) -> list[dict[str, Any]]:
    """What each environment sends to hosts and what it holds back as credential-like: the
    ones named on the command line (each must load), else those hosts.toml names that load."""
    from engine.environments import EnvironmentError_, load

    wanted = named or sorted({e for h in hosts.hosts for e in h.environments})
    out = []
    for ref in wanted:
        try:
            env = load(ref)
        except EnvironmentError_ as exc:
            if named:
                raise _usage(str(exc)) from None
            continue
        shipped, held_back = env.shipped_files()
        out.append({"name": env.name, "root": str(env.root), "version": env.version(),
                    "shipped": len(shipped), "held_back": held_back})
    return out


def _describe_env(e: dict[str, Any]) -> str:
    head = f"environment {e['name']} ({e['root']}, version {e['version']}): " \
        f"{e['shipped']} files ship to hosts"
    if not e["held_back"]:
        return head + "; nothing held back\n"
    return (f"{head}; held back (they look like credentials; list them under `ship` in "
            f"environment.toml to send them): {', '.join(e['held_back'])}\n")


def _describe(r: dict[str, Any]) -> str:
    via = f" via {r['via']}" if r.get("via") else ""
    head = f"{r['name']}  {r['address']}{via}  {'ok' if r['ok'] else 'FAILED'}"
    lines = [head + (f"  ({r['seconds']} s)" if "seconds" in r else "")]
    if r.get("error"):
        lines.append(f"  error: {r['error']}")
    if r.get("host_key"):
        lines.append(f"  host key: {r['host_key']}")
    if "gpus" in r:
        gpus = r["gpus"]
        if gpus:
            names = sorted({g["name"] for g in gpus})
            mem = max((g.get("memory_total_mib") or 0) for g in gpus) / 1024
            lines.append(f"  GPUs: {len(gpus)} × {', '.join(names)} ({mem:.0f} GiB); usable "
                         f"{','.join(map(str, r['usable_gpus'])) or 'none'}; busy with other "
                         f"processes: {','.join(map(str, r['foreign_busy'])) or 'none'}")
        else:
            lines.append("  GPUs: none")
        if r.get("disk_free_bytes") is not None:
            lines.append(f"  disk: {r['disk_free_bytes'] / 1024**3:.1f} GiB free in "
                         f"{r['workdir']}")
        for label, p in (r.get("pythons") or {}).items():
            if p.get("error"):
                continue
            torch = f"torch {p['torch']}" if p.get("torch") else "no torch"
            cuda = "" if p.get("torch") is None else (", CUDA" if p.get("cuda") else ", no CUDA")
            lines.append(f"  {label}: python {p['version']} ({torch}{cuda}) {p['python']}")
        setups = ", ".join(f"{s['name']} {_setup_word(s)}" for s in r.get("setups") or [])
        copies = ", ".join(r.get("environment_copies") or []) or "none"
        lines.append(f"  environment copies: {copies}; setups: {setups or 'none'}")
        if abs(r.get("clock_skew_s", 0)) > 5:
            lines.append(f"  clock: {r['clock_skew_s']:+.1f} s from this machine (liveness "
                         "uses the host's own clock, so this is only informative)")
    for p in r.get("problems", []):
        lines.append(f"  problem: {p}")
    for w in r.get("warnings", []):
        lines.append(f"  warning: {w}")
    if r.get("quarantined_until"):
        until = time.strftime("%H:%M", time.localtime(r["quarantined_until"]))
        lines.append(f"  QUARANTINED until {until} after {r['recent_failures']} failures "
                     f"(last: {r['last_failure']}); `ideaforge hosts release {r['name']}` "
                     "ends it")
    return "\n".join(lines) + "\n"


def _setup_word(s: dict[str, Any]) -> str:
    if s["state"] == "finished":
        return "ok" if s.get("code") == 0 else f"failed (exit {s.get('code')})"
    return s["state"]


def cmd_hosts_release(args: argparse.Namespace) -> int:
    from engine.store import hosts_queries as hq

    store = _store_if_any(args)
    if store is None or not hq.release_host(store, args.host):
        raise _usage(f"host {args.host!r} is not in quarantine")
    sys.stdout.write(f"host {args.host} released from quarantine\n")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job: queued ones never start; running ones are stopped on their host (the
    runner sends TERM, then KILL, to the job's whole process group)."""
    from engine.store import job_ops

    store = _store_if_any(args)
    if store is None:
        raise _usage("no ideaforge workspace here; pass --workspace DIR")
    job = job_ops.get_job(store, args.job)
    if job.state in ("queued", "held"):
        if job_ops.finish_job(store, job.id, state="cancelled", exit_code=None, reason="cancelled",
                              log_tail="", idea_status="failed", score=None, quarantine=None,
                              idea_reason="cancelled before it started",
                              message=f"job {job.id} cancelled before it started"):
            sys.stdout.write(f"job {job.id} cancelled before it started\n")
            return 0
        job = job_ops.get_job(store, args.job)
    if job.state not in ("running", "unreachable") or not job.job_dir:
        raise _usage(f"job {job.id} is {job.state}; only queued, held and running jobs can be "
                     "cancelled" + (" (it is being launched: try again in a moment)"
                                    if job.state == "launching" else ""))
    result = cancel_job(store, job)
    sys.stdout.write(f"job {job.id} on {job.host}: cancel {result}; the engine records it "
                     "as cancelled once the job has stopped\n")
    return 0


def cancel_job(store: Any, job: Any) -> str:
    """Ask a started job's runner to stop it (TERM, then KILL, to its whole process group),
    on whichever host it runs; what the host answered. Raises HostsUsageError if the host
    cannot be reached."""
    if job.executor == "ssh":
        return _cancel_remote(store, job)
    if job.executor == "slurm":
        return _cancel_slurm(store, job)
    from engine.executors.local import LocalExecutor

    return LocalExecutor(store.workspace).cancel(job.job_dir)


def _search_hosts(store: Any, job: Any) -> Any:
    from engine.executors.hosts import HostsError, load
    from engine.store import ops

    search = ops.find_search(store, job.search_id)
    hosts_file = search.config.get("hosts")
    if not hosts_file:
        raise _usage(f"search {search.name!r} has no hosts file recorded")
    try:
        return load(hosts_file)
    except HostsError as exc:
        raise _usage(str(exc)) from None


def _cancel_slurm(store: Any, job: Any) -> str:
    """scancel: a job waiting in Slurm's queue leaves it at once; a running one's runner gets
    TERM and stops it (the `cancel` file says the request was ideaforge's)."""
    from engine.executors import slurm

    hosts = _search_hosts(store, job)
    if hosts.slurm is None:
        raise _usage(f"job {job.id} ran through Slurm, but {hosts.path} has no [slurm] table "
                     "any more: put it back to cancel the job")
    try:
        return slurm.cancel_job(hosts, store, job.job_dir)
    except slurm.SlurmError as exc:  # (its login node, over SSH, does not answer)
        raise _usage(f"cannot reach Slurm to cancel job {job.id}: {exc}") from None


def _cancel_remote(store: Any, job: Any) -> str:
    from engine.executors.hosts import HostsError
    from engine.executors.ssh import SshError, connect

    try:
        cfg = _search_hosts(store, job).get(job.host)
    except HostsError as exc:
        raise _usage(str(exc)) from None
    try:
        remote = connect(cfg)
        try:
            reply = remote.call("cancel", {"dir": remote.path(job.job_dir)})
        finally:
            remote.conn.close()
    except SshError as exc:
        raise _usage(f"cannot reach {job.host} to cancel job {job.id}: {exc}") from None
    return str(reply.get("result"))
