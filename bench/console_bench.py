"""Console benchmark: how fast the ideas board appears and answers keys on large searches,
against an empty Textual app as the floor (issue #5's targets).

Workspaces (built once under --dir, reused by later runs):
- `10k`: one search of 100 epochs × 100 ideas, a job per idea (10k) with a 20-point
  `train_loss` curve and its score (210k metric points), an attempt per idea, exploit parents,
  and the events of all of it;
- `100k`: one search of 100 epochs × 1000 ideas (100k), with parents and attempts.
Rows go straight into the SQLModel tables in bulk (a bench may; the engine never does).

Each figure comes from fresh processes (start-up and memory are per process), median of
--runs. Run: `.venv/bin/python bench/console_bench.py [--runs 5] [--datatable]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZE = (160, 48)
PRESSES = 40


# ------------------------------------------------------------------------------------ building
def build(ws: Path, epochs: int, per_epoch: int, jobs: bool) -> None:
    from sqlalchemy import insert

    from engine.store import Store, ops
    from engine.store.models import (
        Event,
        Idea,
        IdeaParent,
        Job,
        MetricPoint,
        PatchAttempt,
    )

    store = Store(ws)
    s = ops.create_search(
        store, name="bench", env_name="nanogpt", env_path="/envs/nanogpt",
        env_version="bench", profile="full", model="openai/bench", epochs=epochs,
        ideas_per_epoch=per_epoch, metric_name="val_loss", goal="minimize", baseline=3.255,
        status="running", epoch=epochs - 1, phase="review_ideas")
    rng = random.Random(7)
    origins = ("seed", "explore", "exploit", "catalog", "human")
    statuses = ("scored", "scored", "scored", "failed", "implement_failed", "rejected")
    now = time.time()
    with store.session() as session:
        conn = session.connection()
        next_id = 1
        for epoch in range(epochs):
            ideas, parents, attempts, job_rows, events = [], [], [], [], []
            last = epoch == epochs - 1
            for i in range(per_epoch):
                idea_id = next_id
                next_id += 1
                status = "proposed" if last else rng.choice(statuses)
                score = round(rng.uniform(3.1, 3.6), 4) if status == "scored" else None
                origin = origins[0] if epoch == 0 else rng.choice(origins[1:])
                ideas.append({
                    "id": idea_id, "search_id": s.id, "epoch": epoch, "origin": origin,
                    "text": f"[Experiment] Idea {idea_id}: change component {i % 37} of the "
                         f"model in epoch {epoch}.\n[Code Changes] Edit train.py.",
                    "title": f"Idea {idea_id}: change component {i % 37}", "status": status,
                    "score": score, "created_at": now, "updated_at": now,
                    "diff": "--- a/train.py\n+++ b/train.py\n@@ -1,1 +1,1 @@\n-a\n+b\n"
                    if score is not None else None})
                if origin == "exploit" and epoch > 0:
                    for p in rng.sample(range(1, idea_id - i), 2):
                        parents.append({"child_id": idea_id, "parent_id": p, "kind": "exploit"})
                if not last:
                    attempts.append({"idea_id": idea_id, "number": 1, "model": "openai/bench",
                                         "answer": "```diff\n...\n```", "outcome": "ok",
                                         "repairs": "", "created_at": now})
                    if jobs:
                        job_rows.append({
                            "id": idea_id, "search_id": s.id, "idea_id": idea_id, "attempt": 1,
                            "executor": "ssh", "host": f"gpu-{idea_id % 8}", "profile": "full",
                            "gpus_wanted": 8, "gpus": "0,1,2,3,4,5,6,7", "state": "finished",
                            "exit_code": 0, "log_tail": "", "metrics_offset": 0, "log_offset": 0,
                            "queued_at": now, "started_at": now, "finished_at": now + 1500})
                events.append({"search_id": s.id, "idea_id": idea_id, "kind": "idea",
                                   "message": f"idea {idea_id} → {status}", "created_at": now})
            conn.execute(insert(Idea), ideas)
            if parents:
                conn.execute(insert(IdeaParent), parents)
            if attempts:
                conn.execute(insert(PatchAttempt), attempts)
            if job_rows:
                conn.execute(insert(Job), job_rows)
                points = []
                for j in job_rows:
                    for step in range(20):
                        points.append({"job_id": j["id"], "name": "train_loss",
                                           "value": 6.0 - step * 0.13, "step": step * 100})
                    points.append({"job_id": j["id"], "name": "val_loss", "value": 3.3,
                                   "step": 2000})
                conn.execute(insert(MetricPoint), points)
            conn.execute(insert(Event), events)
    store.close()


def workspace(root: Path, kind: str) -> Path:
    ws = root / kind
    if not (ws / "ideaforge.db").exists() or not (ws / "ready").exists():
        started = time.monotonic()
        if kind == "10k":
            build(ws, 100, 100, jobs=True)
        else:
            build(ws, 100, 1000, jobs=False)
        (ws / "ready").write_text("ok")
        print(f"built the {kind} workspace in {time.monotonic() - started:.1f} s", flush=True)
    return ws


# ------------------------------------------------------------------------------------ children
def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


async def child(kind: str, ws: str | None) -> dict[str, Any]:
    from textual.app import App, ComposeResult
    from textual.binding import Binding, BindingType
    from textual.screen import Screen
    from textual.widgets import DataTable, Static

    out: dict[str, Any] = {}
    if kind in ("floor", "floor_keys", "floor_paint", "floor_push"):
        painted: list[float] = []

        class Hello(Static):
            def render_line(self, y: int) -> Any:
                if not painted:
                    painted.append(time.perf_counter())
                return super().render_line(y)

        class Pushed(Screen[None]):
            BINDINGS: ClassVar[list[BindingType]] = [Binding("j", "noop", "noop")]

            def compose(self) -> ComposeResult:
                yield Static("a pushed screen")

            def action_noop(self) -> None:
                pass

        class Empty(App[None]):
            BINDINGS: ClassVar[list[BindingType]] = [Binding("j", "noop", "noop"),
                                                     Binding("p", "paint", "paint")]
            count = 0

            def compose(self) -> ComposeResult:
                yield Hello("empty")

            def action_noop(self) -> None:
                pass

            def action_paint(self) -> None:  # a key that changes one line on screen
                self.count += 1
                self.query_one(Hello).update(f"pressed {self.count}")

        t0 = time.perf_counter()
        async with Empty().run_test(size=SIZE) as pilot:
            while not painted:
                await pilot.pause(0.002)
            out["start_s"] = painted[0] - t0
            out["painted_wall"] = time.time() - (time.perf_counter() - painted[0])
            if kind == "floor_keys":
                out["press_ms"], out["press_cpu_ms"] = await presses(pilot, "j")
            if kind == "floor_paint":
                out["press_ms"], out["press_cpu_ms"] = await presses(pilot, "p")
            if kind == "floor_push":  # a key that pushes a screen of one line, and back
                walls, cpus = [], []
                for _ in range(PRESSES // 2):
                    t, c = time.perf_counter(), time.process_time()
                    pilot.app.push_screen(Pushed())
                    await pilot.press("j")  # the press the push rides on
                    walls.append((time.perf_counter() - t) * 1000)
                    cpus.append((time.process_time() - c) * 1000)
                    pilot.app.pop_screen()
                    await pilot.pause()
                out["press_ms"], out["press_cpu_ms"] = (statistics.median(walls),
                                                        statistics.median(cpus))
        return out

    if kind == "datatable":
        from engine.store import Store
        from engine.store import console_queries as cq

        store = Store(ws or "")
        query = cq.BoardQuery(search_id=1)

        class Table(App[None]):
            def compose(self) -> ComposeResult:
                yield DataTable()

            def on_mount(self) -> None:
                page = cq.board_page(store, query, 0, 10**7)
                table = self.query_one(DataTable)
                table.add_columns("id", "ep", "origin", "status", "score", "att", "title")
                table.add_rows([(r.id, r.epoch, r.origin, r.status, r.score, r.attempts,
                                 r.title) for r in page.rows])

        t0 = time.perf_counter()
        async with Table().run_test(size=SIZE) as pilot:
            await pilot.pause()
            out["start_s"] = time.perf_counter() - t0
            out["rows"] = pilot.app.query_one(DataTable).row_count
        out["rss_mb"], out["peak_mb"] = rss_mb()
        return out

    from console.app import IdeaforgeApp
    from console.widgets.idea_board import IdeaBoard

    app = IdeaforgeApp(ws or "", "bench", keys={}, poll_s=1.0)
    t0 = time.perf_counter()
    async with app.run_test(size=SIZE) as pilot:
        board = None
        while board is None or board.first_rows_painted_at is None:
            await pilot.pause(0.002)
            found = app.screen.query(IdeaBoard)
            board = found.first() if found else None
        out["start_s"] = board.first_rows_painted_at - t0  # the first frame with rows
        out["painted_wall"] = time.time() - (time.perf_counter() - board.first_rows_painted_at)
        await pilot.pause(0.5)  # the rest of the screen (header, feed) settles
        out["total"] = board.total
        out["rows_held"] = len(board._rows)
        if kind == "board_keys":
            # imported after the first frame, as the console does (it imports SQLAlchemy)
            from console.screens.idea_detail import IdeaDetailScreen

            out["press_ms"], out["press_cpu_ms"] = await presses(pilot, "down")
            cold, warm, cold_cpu, warm_cpu = [], [], [], []
            for n in range(PRESSES // 2):
                await pilot.press("down")
                if n % 2:  # a reader who looks at the row first: its detail is fetched ahead
                    await pilot.pause(0.4)
                t, c = time.perf_counter(), time.process_time()
                await pilot.press("enter")
                wall, cpu = (time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000
                (warm if n % 2 else cold).append(wall)
                (warm_cpu if n % 2 else cold_cpu).append(cpu)
                assert isinstance(app.screen, IdeaDetailScreen)
                await pilot.press("escape")
            out["open_ms"], out["open_cpu_ms"] = statistics.median(warm), \
                statistics.median(warm_cpu)
            out["open_cold_ms"], out["open_cold_cpu_ms"] = statistics.median(cold), \
                statistics.median(cold_cpu)
            await pilot.press("end")
            while board.current is None:
                await pilot.pause(0.01)
        out["rss_mb"], out["peak_mb"] = rss_mb()
    return out


async def presses(pilot: Any, key: str) -> tuple[float, float]:
    """Median wall time of `pilot.press(key)` and median CPU time of the process meanwhile."""
    await pilot.press(key)  # warm
    times, cpu = [], []
    for _ in range(PRESSES):
        t, c = time.perf_counter(), time.process_time()
        await pilot.press(key)
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return statistics.median(times), statistics.median(cpu)


def run_child(kind: str, ws: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind] + (["--ws", str(ws)] if ws else [])
    spawned = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "TEXTUAL": ""})
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "painted_wall" in out:  # from `python …` to the first frame: imports included
        out["process_s"] = out.pop("painted_wall") - spawned
    return out


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) /
                                               "ideaforge-console-bench"))
    parser.add_argument("--datatable", action="store_true",
                        help="also time a plain DataTable filled with all 10k rows")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--only", help="run only these comma-separated measures (of floor, "
                        "floor_keys, floor_paint, floor_push, board@10k, board_keys@10k, "
                        "board@100k, board_keys@100k); the report lists what ran")
    parser.add_argument("--child")
    parser.add_argument("--ws")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.ws))))
        return
    root = Path(args.dir)
    ws10, ws100 = workspace(root, "10k"), workspace(root, "100k")
    results: dict[str, list[dict[str, Any]]] = {}
    plan = [("floor", None), ("floor_keys", None), ("floor_paint", None), ("floor_push", None),
            ("board", ws10), ("board_keys", ws10), ("board", ws100), ("board_keys", ws100)]
    if args.only:
        wanted = set(args.only.split(","))
        plan = [(k, w) for k, w in plan if (k if w is None else f"{k}@{w.name}") in wanted]
    for n in range(args.runs):
        for kind, ws in plan:  # interleaved, so drift in the machine's load hits all alike
            label = kind + ("" if ws is None else f"@{ws.name}")
            results.setdefault(label, []).append(run_child(kind, ws))
        print(f"run {n + 1}/{args.runs} done", flush=True)
    if args.datatable:
        results["datatable@10k"] = [run_child("datatable", ws10)]
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def report(results: dict[str, list[dict[str, Any]]]) -> None:
    """Print the medians of what ran. Key presses are compared with the issue's floor: the
    empty app's key that repaints one line (the no-op key is shown too, one Pilot step less)."""
    def med(label: str, key: str) -> float:
        return median_of(results[label], key)

    rows: list[tuple[str, str, str]] = []
    floor = med("floor", "start_s") if "floor" in results else None
    floor_proc = med("floor", "process_s") if "floor" in results else None
    if floor is not None:
        rows += [("start-up to the first frame, in process: empty app (floor)",
                  f"{floor:.3f} s", ""),
                 ("start-up from `python`, imports included: empty app",
                  f"{floor_proc:.3f} s", "")]
    names = {"floor_keys": ("key press: empty app, no-op binding", ""),
             "floor_paint": ("key press: empty app, the key repaints a line (floor)", "issue's"),
             "floor_push": ("key press: empty app, the key pushes a 1-line screen", "reference")}
    for label, (name, target) in names.items():
        if label in results:
            rows.append((name, (f"{med(label, 'press_ms'):.1f} ms "
                                f"(cpu {med(label, 'press_cpu_ms'):.1f})"), target))
    base = med("floor_paint", "press_ms") if "floor_paint" in results else None

    def press(keys: str, key: str) -> str:
        wall = med(keys, f"{key}_ms")
        over = f"+{wall - base:.1f}; " if base is not None else ""
        return f"{wall:.1f} ms ({over}cpu {med(keys, f'{key}_cpu_ms'):.1f})"

    for size in ("10k", "100k"):
        board, keys = f"board@{size}", f"board_keys@{size}"
        if board in results:
            limit = 0.3 if size == "10k" else 1.0
            start, proc = med(board, "start_s"), med(board, "process_s")
            rows += [
                (f"{size}: board on screen, in process", f"{start:.3f} s" + (
                    f" (+{start - floor:.3f})" if floor is not None else ""), f"< +{limit} s"),
                (f"{size}: board on screen, from `python`", f"{proc:.3f} s" + (
                    f" (+{proc - floor_proc:.3f})" if floor_proc is not None else ""), "")]
        if keys in results:
            rows += [
                (f"{size}: cursor move", press(keys, "press"), "< +10 ms"),
                (f"{size}: open the detail, cursor rested (prefetched)", press(keys, "open"),
                 "< +10 ms"),
                (f"{size}: open the detail right after a move", press(keys, "open_cold"), ""),
                (f"{size}: peak memory", f"{max(r['peak_mb'] for r in results[keys]):.0f} MB",
                 "< 300 MB" if size == "100k" else ""),
                (f"{size}: rows the board holds",
                 f"{results[keys][0]['rows_held']} of {results[keys][0]['total']}", ""),
            ]
    if "datatable@10k" in results:
        dt = results["datatable@10k"][0]
        rows.append(("10k: a plain DataTable filled with every row", f"{dt['start_s']:.3f} s"
                     + (f" (+{dt['start_s'] - floor:.3f})" if floor is not None else ""),
                     "reference"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'median':<36} target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<36} {target}")


if __name__ == "__main__":
    main()
