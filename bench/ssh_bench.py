"""SSH executor against a real sshd on loopback (fake nvidia-smi, the toy environment).

Part 1 runs a real search (2 epochs of the toy environment, 1-GPU profile, a 2 s job) with the
engine in this process, and reports:
- job exit → score and state in SQLite: the host's `exit` file time vs the job row's
  `finished_at` (one machine, one clock), median and worst;
- bytes shipped per job after the first: what each `launch` call sent (spec + patch) against
  2 × the patch size + 16 KB; and the one-off cost of the first job on a host (runner, agent,
  environment copy).
Part 2 measures the cost of watching: 8 running jobs on one host, polled every 2 s (the
default `poll_interval`) for a minute: calls, bytes each way, CPU on the engine side and on the
host (the connection's sshd session process with the shells and agents it reaped), once on the
long-lived agent the executor uses and once with an exec per poll, for comparison.

Run: `.venv/bin/python bench/ssh_bench.py` (needs openssh-server; about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from console import cli
from engine.executors import ssh as ssh_mod
from engine.executors.hosts import load
from engine.store import Store, job_ops, ops
from tests.ssh.conftest import Lab, _children, _keygen

log = logging.getLogger("ssh_bench")


def lab_at(root: Path) -> Lab:
    keys = root / "keys"
    keys.mkdir(parents=True)
    for name in ("user", "host_a", "host_b"):
        _keygen(keys / name)
    return Lab(root, keys)


def part_search(root: Path) -> dict[str, Any]:
    lab = lab_at(root / "search")
    lab.host("a", 4)
    hosts = lab.hosts_toml(sleep=2.0)
    # The default poll interval (2 s), not the tests' fast one.
    hosts.write_text(hosts.read_text().replace("poll_interval = 0.5", "poll_interval = 2.0"))
    toy = root / "toyenv"
    shutil.copytree(REPO / "tests" / "fixtures" / "toyenv", toy)
    ws = root / "ws"
    fleets: list[Any] = []
    original = ssh_mod.executor_from_hosts

    def capture(path: Path, store: Any) -> Any:
        fleets.append(original(path, store))
        return fleets[-1]

    ssh_mod.executor_from_hosts = capture
    try:
        code = cli.main(["--workspace", str(ws), "run", str(toy), "--name", "bench", "--hosts",
                         str(hosts), "--auto", "--profile", "gpu", "--epochs", "2",
                         "--ideas-per-epoch", "4"])
    finally:
        ssh_mod.executor_from_hosts = original
    if code != 0:
        raise SystemExit(f"the search failed (exit {code})")
    store = Store(ws, create=False)
    search = ops.find_search(store, "bench")
    latencies, patches = [], []
    for job in job_ops.list_jobs(store, search.id):
        exit_info = json.loads((lab.hosts["a"].workdir / str(job.job_dir) / "exit").read_text())
        latencies.append((job.finished_at or 0) - exit_info["time"])
        patches.append(len((ops.get_idea(store, job.idea_id).diff or "").encode()))
    fleets[0].close()
    remote = fleets[0].workers["a"].remote
    stats = remote.stats
    launches = stats["launch"]
    agent_bytes = sum(len(data) for data in ssh_mod.HOST_FILES.values())
    lab.close()
    return {
        "jobs": len(latencies),
        "exit_to_db_median_s": round(statistics.median(latencies), 2),
        "exit_to_db_max_s": round(max(latencies), 2),
        "launch_bytes_mean": round(launches[1] / launches[0]),
        "launch_bytes_max": launches[3],
        "patch_bytes_min": min(patches), "patch_bytes_max": max(patches),
        "launch_budget_bytes_for_smallest_patch": 2 * min(patches) + 16 * 1024,
        "first_job_extra_bytes": stats.get("unpack", [0, 0])[1] + agent_bytes
        + stats.get("prepare", [0, 0])[1],
        "environment_copy_bytes": stats.get("unpack", [0, 0])[1],
    }


def part_polling(root: Path, seconds: float, jobs: int, mode: str) -> dict[str, Any]:
    """`serve`: polls on the long-lived agent (what the executor does); `exec`: one exec per
    poll (a login shell and a Python start each time), for comparison."""
    root = root / f"poll-{mode}"
    lab = lab_at(root)
    lab.host("p", 8)
    cfg = load(lab.hosts_toml()).hosts[0]
    remote = ssh_mod.connect(cfg)
    pristine = root / "pristine"
    pristine.mkdir()
    (pristine / "train.py").write_text("print('hi')\n")
    dirs = []
    for n in range(jobs):
        d = remote.path(f"jobs/bench/job-{n}")
        remote.call("launch", {"dir": d, "pristine": str(pristine), "runner": remote.runner,
                               "python": sys.executable, "venv": None, "patch": "",
                               "expect": {}, "spec": {"command": "sleep 300", "timeout": 600,
                                                      "grace": 1, "heartbeat": 2, "env": {}}})
        dirs.append(d)
    req = {"jobs": [{"dir": d, "metrics": 0, "log": 0} for d in dirs], "setups": [],
           "gpus": False, "workdir": remote.workdir, "max_bytes": 256 * 1024}
    before = dict(zip(("calls", "sent", "received"), remote.stats.get("poll", [0, 0, 0])))
    # Our connection's sshd session process waits for every shell and agent it starts, so
    # its own CPU plus its reaped children's is the host's whole cost of the polls.
    (session,) = _children(lab.hosts["p"].proc.pid)  # type: ignore[union-attr]
    cpu0, wall0 = time.process_time(), time.monotonic()
    host0 = _cpu_s(session)
    polls, rtts = 0, []
    while time.monotonic() - wall0 < seconds:
        t = time.monotonic()
        if mode == "serve":
            remote.poll(req, timeout=30)
        else:
            remote.call("poll", req)
        rtts.append(time.monotonic() - t)
        polls += 1
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t)))
    wall = time.monotonic() - wall0
    engine_cpu = time.process_time() - cpu0
    host_cpu = _cpu_s(session) - host0
    st = remote.stats["poll"]
    for d in dirs:
        remote.call("cancel", {"dir": d})
    remote.conn.close()
    lab.close()
    per_min = 60.0 / wall
    return {
        "mode": mode, "watched_jobs": jobs, "polls_per_min": round(polls * per_min, 1),
        "poll_rtt_median_ms": round(1000 * statistics.median(rtts), 1),
        "bytes_sent_per_min": round((st[1] - before["sent"]) * per_min),
        "bytes_received_per_min": round((st[2] - before["received"]) * per_min),
        "engine_cpu_s_per_min": round(engine_cpu * per_min, 2),
        "host_cpu_s_per_min": round(host_cpu * per_min, 2),
    }


def _cpu_s(pid: int) -> float:
    """CPU seconds of a process tree: every live process under `pid` (the long-lived agent)
    and the children each has reaped (the shells and agents of finished calls)."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stats[int(entry)] = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, fields in stats.items():
            if int(fields[1]) == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    ticks = sum(int(x) for p in tree if p in stats for x in stats[p][11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--poll-seconds", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=8)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="ideaforge-sshbench-") as tmp:
        root = Path(tmp)
        search = part_search(root)
        logging.getLogger().setLevel(logging.WARNING)
        polling = [part_polling(root, args.poll_seconds, args.jobs, mode)
                   for mode in ("serve", "exec")]
    result = {"search": search, "polling": polling}
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    ok = (search["exit_to_db_max_s"] <= 5.0
          and search["launch_bytes_max"] <= search["launch_budget_bytes_for_smallest_patch"])
    log.info("targets (exit to SQLite <= 5 s; launch bytes <= 2 x patch + 16 KB): %s",
             "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
