"""The engine's own cost against the size of an epoch (issue 18).

A toy environment whose job is a bare Python start (~30 ms), the offline catalog as the model
(no model library on the path: the engine's cost shows alone), 8 CPU slots, one epoch of N
ideas. For each N it reports, each the median of `--repeat` runs:

- implement: engine CPU per idea while N approved ideas are implemented (the phase from first
  to last), ms;
- run: engine CPU per finished job while jobs run (a `--window` s window once jobs flow), ms;
- idle: engine CPU while one long job runs and every other idea of the epoch has scored, in %
  of one core;
- CLI (at `--cli-at` ideas): `status --json`, `ideas --json`, `show` (text and JSON), `lineage`
  and `export` (JSON and CSV), wall seconds from process start (`--cli-orm`: each also through
  the ORM path).

The engine runs in this process; its CPU is this process's (children excluded: the jobs and
their runners are other processes).

    .venv/bin/python bench/engine_scale.py [--sizes 100,1000,10000] [--repeat 3] [--window 8]
    .venv/bin/python bench/engine_scale.py --only cli --cli-orm  # the CLI alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
for key, value in (("LITELLM_LOCAL_MODEL_COST_MAP", "True"), ("WANDB_MODE", "disabled"),
                   ("HF_HUB_OFFLINE", "1"), ("TOY_SLEEP_S", "0")):
    os.environ.setdefault(key, value)

from engine.executors.local import LocalExecutor
from engine.search import SearchEngine
from engine.store import Store, ops
from engine.store.models import Idea

TOY = REPO / "tests" / "fixtures" / "toyenv"
SLOTS = 8


def make_search(tmp: Path, n: int, status: str, phase: str, long_last: float = 0.0
                ) -> tuple[Store, object]:
    """A workspace with one search whose epoch 0 holds `n` ideas in `status` (the last one
    implemented with a job that sleeps `long_last` s when that is set)."""
    env_dir = tmp / "toyenv"
    if not env_dir.exists():
        shutil.copytree(TOY, env_dir)
    diff = (TOY / "catalog" / "bonus_a.diff").read_text()
    store = Store(tmp / f"ws-{n}-{status}-{time.monotonic_ns()}")
    search = ops.create_search(
        store, name="scale", env_name="toy", env_path=str(env_dir), env_version="v",
        profile="smoke", model="catalog", epochs=1, ideas_per_epoch=n, auto=True,
        metric_name="score", goal="minimize", baseline=5.0)
    with store.session() as s:
        for k in range(n):
            long = long_last and k == n - 1
            s.add(Idea(search_id=search.id, epoch=0, origin="seed",
                       text=f"[Experiment] Set BONUS_A to 1.0, variant {k}.",
                       title=f"Set BONUS_A to 1.0, variant {k}", catalog_stem="bonus_a",
                       status="implemented" if long else status,
                       diff=_sleepy(diff, long_last) if long else
                       (diff if status != "approved" else None),
                       score=4.0 if status == "scored" else None,
                       runs=1 if status == "scored" else 0))
    ops.update_search(store, search.id, phase=phase)
    return store, ops.find_search(store, search.id)


def _sleepy(diff: str, seconds: float) -> str:
    """The catalog's diff, plus a hunk that makes the job sleep `seconds`."""
    return diff + (
        "@@ -28,1 +28,1 @@\n"
        "-SLEEP_S = float(os.environ.get(\"TOY_SLEEP_S\", \"0.1\"))\n"
        f"+SLEEP_S = {seconds}\n")


def count(store: Store, sql: str) -> int:
    with sqlite3.connect(store.path, timeout=30) as conn:
        return conn.execute(sql).fetchone()[0]


async def drive(store: Store, search: object, until, *, poll: float = 0.1) -> object:
    """Run an engine until `until()` returns a value; that value, then the engine stops."""
    engine = SearchEngine(store, search, LocalExecutor(store.workspace, cpu_slots=SLOTS),
                          None, progress=lambda m: None)
    task = asyncio.create_task(engine.run())
    try:
        while True:
            value = await until()
            if value is not None:
                return value
            if task.done():
                raise RuntimeError(f"the engine stopped: {task.result()}")
            await asyncio.sleep(poll)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def implement_cpu(tmp: Path, n: int) -> float:
    """Engine CPU per idea (ms) from the first tick until every idea is implemented."""
    store, search = make_search(tmp, n, "approved", "implement")
    left = "SELECT count(*) FROM idea WHERE status IN ('approved', 'implementing')"
    t0 = time.process_time()

    async def until():
        return True if count(store, left) == 0 else None

    asyncio.run(drive(store, search, until))
    return (time.process_time() - t0) / n * 1000


def run_cpu(tmp: Path, n: int, window: float) -> float:
    """Engine CPU per finished job (ms) over a window once jobs flow."""
    store, search = make_search(tmp, n, "implemented", "run")
    done = "SELECT count(*) FROM job WHERE state NOT IN ('queued', 'launching', 'running')"
    mark: list[tuple[float, float, int]] = []

    async def until():
        finished = count(store, done)
        if not mark and finished >= SLOTS:
            mark.append((time.monotonic(), time.process_time(), finished))
        elif mark and (time.monotonic() - mark[0][0] >= window or finished >= n):
            # (the window, or every job: at 100 ideas the engine may finish the epoch first)
            return time.process_time() - mark[0][1], finished - mark[0][2]
        return None

    cpu, jobs = asyncio.run(drive(store, search, until))
    return cpu / max(jobs, 1) * 1000


def idle_cpu(tmp: Path, n: int, window: float) -> float:
    """Engine CPU (% of a core) while one long job runs and the epoch's other ideas scored."""
    store, search = make_search(tmp, n, "scored", "run", long_last=window + 20)
    running = "SELECT count(*) FROM job WHERE state = 'running'"
    mark: list[tuple[float, float]] = []

    async def until():
        if not mark and count(store, running):
            await asyncio.sleep(2.0)  # the launch's own work is done
            mark.append((time.monotonic(), time.process_time()))
        elif mark and time.monotonic() - mark[0][0] >= window:
            return (time.process_time() - mark[0][1]) / (time.monotonic() - mark[0][0]) * 100
        return None

    try:
        return asyncio.run(drive(store, search, until, poll=1.0))
    finally:
        for pid_file in store.workspace.glob("jobs/**/pid"):
            _kill(pid_file)


def _kill(pid_file: Path) -> None:
    """Stop the long job's runner and its job (each leads its own session)."""
    try:
        pid = int(json.loads(pid_file.read_text())["pid"])
        os.killpg(os.getpgid(pid), 15)
    except (ValueError, KeyError, OSError):
        pass


#: The CLI with every stdlib reader answering None: the ORM path, for comparison.
ORM_PATH = ("import sys\n"
            "from console import cli_read, cli_read_more\n"
            "for name in ('show', 'lineage', 'export'):\n"
            "    setattr(cli_read_more, name, lambda args: None)\n"
            "cli_read.status = cli_read.ideas = lambda args: None\n"
            "from console.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")


def cli_latency(tmp: Path, n: int, repeat: int, orm: bool = False) -> dict[str, float]:
    """Wall seconds from process start of each read command (median of `repeat`); with `orm`,
    also of the same command through the ORM path (keys ending in " (ORM)")."""
    store, _ = make_search(tmp, n, "scored", "run")
    mid = n // 2
    with sqlite3.connect(store.path, timeout=30) as conn:  # `lineage mid`: ten generations
        conn.executemany("INSERT INTO idea_parent (child_id, parent_id, kind) VALUES (?, ?, ?)",
                         [(mid - k, mid - k - 1, "exploit") for k in range(10)])
    out: dict[str, float] = {}
    for name, args in (("status --json", ["status", "--json"]),
                       ("ideas --json", ["ideas", "scale", "--json"]),
                       ("show", ["show", str(mid)]), ("show --json", ["show", str(mid), "--json"]),
                       ("lineage", ["lineage", str(mid)]),
                       ("export (json)", ["export", "scale"]),
                       ("export --format csv", ["export", "scale", "--format", "csv"])):
        for label, head in ((name, ["-m", "console.cli"]),
                            *([(f"{name} (ORM)", ["-c", ORM_PATH])] if orm else [])):
            walls = []
            for _ in range(repeat):
                t0 = time.monotonic()
                subprocess.run([sys.executable, *head, "--workspace", str(store.workspace),
                                *args], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
                walls.append(time.monotonic() - t0)
            out[label] = statistics.median(walls)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--window", type=float, default=8.0)
    ap.add_argument("--cli-at", type=int, default=1000)
    ap.add_argument("--only", default="implement,run,idle,cli")
    ap.add_argument("--cli-orm", action="store_true", help="also time each CLI read through "
                    "the ORM path")
    args = ap.parse_args()
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="engine-scale-"))
    try:
        engine_parts = only & {"implement", "run", "idle"}
        for n in (int(x) for x in args.sizes.split(",") if engine_parts):
            row = {}
            if "implement" in only:
                row["implement ms/idea"] = statistics.median(
                    implement_cpu(tmp, n) for _ in range(args.repeat))
            if "run" in only:
                row["run ms/job"] = statistics.median(
                    run_cpu(tmp, n, args.window) for _ in range(args.repeat))
            if "idle" in only:
                row["idle % core"] = statistics.median(
                    idle_cpu(tmp, n, args.window) for _ in range(args.repeat))
            print(f"N={n}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
        if "cli" in only:
            lat = cli_latency(tmp, args.cli_at, args.repeat, args.cli_orm)
            print(f"CLI at {args.cli_at} ideas: " +
                  ", ".join(f"{k} {v:.3f} s" for k, v in lat.items()), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
