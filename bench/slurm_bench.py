"""Slurm executor figures on a real one-node Slurm (tests/slurm/cluster.py: this machine, four
fake GPUs, no accounting): submit → running and exit → score latency, and the Slurm calls per
poll as the number of queued jobs grows (one squeue per poll, whatever the number).

    .venv/bin/python bench/slurm_bench.py [--jobs 8] [--queued 10,50,200] [--poll 1.0]

Needs root and `slurm-wlm`/`munge` (as tests/slurm). Results: bench/README.md, "Slurm".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.environments import Profile, load
from engine.executors.base import LaunchSpec
from engine.executors.fleet import WatchItem
from engine.executors.hosts import load as load_hosts
from engine.executors.slurm import HOST, SlurmFleet
from engine.store import Store
from tests.slurm.cluster import Cluster, missing

TOY = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "toyenv"


def fleet_for(root: Path, poll: float, max_queued: int) -> SlurmFleet:
    root.mkdir(parents=True, exist_ok=True)
    hosts = root / "hosts.toml"
    hosts.write_text(f'[slurm]\nworkdir = "{root / "shared"}"\npoll_interval = {poll}\n'
                     f"max_queued = {max_queued}\ntime_margin_s = 60\n")
    return SlurmFleet(load_hosts(hosts), Store(root / "ws"), background=True)


def spec(job_id: int, command: str) -> LaunchSpec:
    return LaunchSpec(job_id=job_id, search_id=1, idea_id=job_id, env=load(TOY),
                      profile=Profile(name="b", command=command, gpus=1, timeout=120),
                      diff=None, gpus=(0,), workspace_id="w", queued_at=1.0)


def submit(fleet: SlurmFleet, first: int, n: int, command: str) -> list[WatchItem]:
    items = []
    for job in range(first, first + n):
        job_dir = fleet.job_dir(HOST, 1, job)
        while fleet.launch(HOST, spec(job, command), job_dir) is None:
            time.sleep(0.05)  # the poller's first squeue is not in yet
        items.append(WatchItem(job, job_dir, 0, 0))
    return items


def latency(root: Path, jobs: int, poll: float) -> dict[str, float]:
    """`jobs` one-GPU jobs of 2 s (4 at a time): when each was submitted, started running
    (its runner's `started`), wrote `exit`, and when the engine's loop (every 0.1 s, the
    squeue in its own thread every `poll` s) first reported it finished."""
    fleet = fleet_for(root, poll, jobs)
    fleet.refresh()
    items = submit(fleet, 1, jobs, "sleep 2; python train.py")
    seen: dict[int, float] = {}
    end = time.monotonic() + 120
    while len(seen) < jobs and time.monotonic() < end:
        reports = fleet.watch(HOST, items) or {}
        for job, rep in reports.items():
            if rep.status.state == "finished" and job not in seen:
                seen[job] = time.time()
        time.sleep(0.1)
    to_run, to_score = [], []
    for item in items:
        path = Path(item.job_dir)
        submitted = json.loads((path / "slurm_job").read_text())["submitted"]
        started = (path / "started").stat().st_mtime
        to_run.append(started - submitted)
        to_score.append(seen[item.job_id] - json.loads((path / "exit").read_text())["time"])
    first_wave = sorted(to_run)[:4]  # the jobs that found a free GPU at once
    return {"submit_to_running_s": statistics.median(first_wave),
            "exit_to_score_s": statistics.median(to_score),
            "exit_to_score_max_s": max(to_score)}


def calls_per_poll(root: Path, queued: int, poll: float, polls: int = 5) -> dict[str, float]:
    """`queued` jobs in Slurm's queue (4 run, the rest wait): `polls` polls of all of them."""
    fleet = fleet_for(root, poll, queued)
    fleet.background = False
    fleet.refresh(force=True)
    items = submit(fleet, 1, queued, "sleep 600")
    before = dict(fleet.calls)
    took = []
    for _ in range(polls):
        t0 = time.monotonic()
        fleet.refresh(force=True)
        reports = fleet.watch(HOST, items) or {}
        took.append(time.monotonic() - t0)
        assert len(reports) == queued
    calls = {k: (fleet.calls[k] - before[k]) / polls for k in ("squeue", "sacct", "sbatch")}
    return {"queued": queued, "squeue_per_poll": calls["squeue"],
            "sacct_per_poll": calls["sacct"], "sbatch_per_poll": calls["sbatch"],
            "poll_ms": 1000 * statistics.median(took)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--queued", default="10,50,200")
    parser.add_argument("--poll", type=float, default=1.0, help="[slurm] poll_interval")
    args = parser.parse_args()
    why = missing()
    if why:
        sys.exit(f"slurm_bench: {why}")
    root = Path(tempfile.mkdtemp(prefix="ideaforge-slurm-bench-"))
    cluster = Cluster(root / "cluster")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    cluster.start()
    try:
        out = {"latency": latency(root / "latency", args.jobs, args.poll), "polls": []}
        cluster.cancel_all()
        for n in (int(x) for x in args.queued.split(",")):
            out["polls"].append(calls_per_poll(root / f"q{n}", n, args.poll))
            cluster.cancel_all()
        print(json.dumps(out, indent=1))
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
