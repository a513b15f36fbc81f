"""Orchestration overhead: one epoch of 80 ideas against a local model server that takes 2 s per
call, concurrency 16. Measures propose + implement wall time against the ideal.

Ideal: the 8 proposal batches run at once (one 2 s round), then 80 implementations at 16 in
flight (5 rounds of 2 s): 12 s. Target: ≤ 1.2 × ideal.

    .venv/bin/python bench/orchestration.py [--latency 2] [--ideas 80] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-bench")

from engine.executors.local import LocalExecutor
from engine.llm import LlmClient, LlmConfig
from engine.search import SearchEngine
from engine.store import Store, ops
from tests.support.openai_server import OpenAIServer, Reply


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=2.0)
    ap.add_argument("--ideas", type=int, default=80)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--serve", help=argparse.SUPPRESS)  # internal: run the model server
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.serve), args.latency)
        return
    tmp = Path(tempfile.mkdtemp())
    env_dir = tmp / "toyenv"
    shutil.copytree(REPO / "tests" / "fixtures" / "toyenv", env_dir)
    # The model server runs in its own process, as a real one would: in this process its
    # threads would compete with the engine for the interpreter lock.
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(env_dir / "train.py"),
                               "--latency", str(args.latency)], stdout=subprocess.PIPE,
                              text=True)
    url = server.stdout.readline().strip()  # type: ignore[union-attr]
    try:
        run(args, tmp, env_dir, url)
    finally:
        server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


def serve(train_path: Path, latency: float) -> None:
    train = train_path.read_text()
    counter = iter(range(10**6))

    def model(req: dict) -> Reply:
        prompt = req["messages"][-1]["content"]
        if "# Idea to implement" in prompt:
            value = re.search(r"BONUS_A to ([0-9.]+)", prompt).group(1)  # type: ignore[union-attr]
            new = train.replace("BONUS_A = 0.0", f"BONUS_A = {value}")
            diff = "".join(difflib.unified_diff(train.splitlines(True), new.splitlines(True),
                                                "a/train.py", "b/train.py"))
            return Reply.text(f"```diff\n{diff}```", delay_s=latency)
        blocks = "\n".join(f"[Experiment] Set BONUS_A to 0.{next(counter):04d}1 (variant).\n"
                           f"[Code Changes] Change BONUS_A.\n[End]" for _ in range(10))
        return Reply.text(blocks, delay_s=latency)

    with OpenAIServer(responder=model) as srv:
        print(srv.url, flush=True)
        while True:
            time.sleep(3600)


def run(args: argparse.Namespace, tmp: Path, env_dir: Path, url: str) -> None:
    records: list[object] = []
    if True:
        store = Store(tmp / "ws")
        search = ops.create_search(
            store, name="bench", env_name="toy", env_path=str(env_dir), env_version="v",
            profile="smoke", model="openai/bench", api_base=url, epochs=1,
            ideas_per_epoch=args.ideas, auto=True, metric_name="score", goal="minimize",
            baseline=5.0)
        llm = LlmClient(LlmConfig(model="openai/bench", api_base=url,
                                  concurrency=args.concurrency, backoff_base_s=0.05),
                        on_record=lambda r: records.append(r))
        llm.check()
        from engine.llm import _lib

        _lib()  # import litellm (4-7 s here) before the clock starts, as the CLI does
        engine = SearchEngine(store, search, LocalExecutor(store.workspace, cpu_slots=2), llm,
                              poll_s=0.2, progress=lambda m: None)

        async def until_implemented() -> float:
            task = asyncio.create_task(engine.run())
            t0 = time.monotonic()
            while True:
                ideas = ops.list_ideas(store, search.id)
                if len(ideas) >= args.ideas and all(
                        i.status not in ("proposed", "approved", "implementing") for i in ideas):
                    wall = time.monotonic() - t0
                    break
                await asyncio.sleep(0.05)
            ops.add_decision(store, search.id, "stop")
            await task
            return wall

        t_start = time.time()
        wall = asyncio.run(until_implemented())
        calls = len(records)
        if os.environ.get("BENCH_TRACE"):
            for e in ops.events(store, search.id, limit=100000):
                if e.kind in ("propose", "search") or "attempt 1" in e.message[:40]:
                    print(f"{e.created_at - t_start:7.2f} {e.message[:70]}")
    batches = math.ceil(args.ideas / 10)
    ideal = (math.ceil(batches / args.concurrency)
             + math.ceil(args.ideas / args.concurrency)) * args.latency
    print(f"ideas {args.ideas}, latency {args.latency} s, concurrency {args.concurrency}, "
          f"model calls {calls}")
    print(f"propose+implement wall {wall:.2f} s, ideal {ideal:.2f} s, ratio {wall / ideal:.3f}")


if __name__ == "__main__":
    main()
