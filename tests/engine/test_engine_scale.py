"""The engine's work follows what changed (issue 18): implementations finishing one by one cost
one pass of the loop, not one each; a queue longer than one placement round still runs every
job; the epoch's share is counted, not read; the schema's indexes exist on new and upgraded
workspaces."""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import sqlite3
from pathlib import Path

import pytest

from engine.executors.local import LocalExecutor
from engine.search import SearchEngine
from engine.store import Store, hosts_queries, job_ops, ops
from engine.store.migrations import CURRENT, INDEXES_12
from tests.support.openai_server import OpenAIServer, Reply

DIFF = (Path(__file__).resolve().parent.parent / "fixtures" / "toyenv" / "catalog"
        / "bonus_a.diff").read_text()


def _search(store: Store, toy_env: Path, **extra: object):
    fields: dict[str, object] = {
        "name": "s", "env_name": "toy", "env_path": str(toy_env), "env_version": "v",
        "profile": "smoke", "model": "catalog", "epochs": 1, "ideas_per_epoch": 4,
        "auto": True, "metric_name": "score", "goal": "minimize", "baseline": 5.0}
    fields.update(extra)
    return ops.create_search(store, **fields)


def _add(store: Store, search_id: int, n: int, status: str, diff: str | None = None,
         epoch: int = 0) -> list[int]:
    return [ops.add_idea(store, search_id, epoch, ops.NewIdea(
        text=f"[Experiment] Set BONUS_A to 1.0, variant {k}.", origin="seed",
        catalog_stem="bonus_a", status=status, diff=diff)) for k in range(n)]


class CountingEngine(SearchEngine):
    """The real engine; counts the passes of its loop (each pass runs `_tick_epoch` once)."""

    passes = 0

    def _tick_epoch(self):  # type: ignore[override]
        self.passes += 1
        return super()._tick_epoch()


def test_implementations_finishing_one_by_one_wake_the_loop_once(
        toy_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve implementations whose model answers come 0.15 s apart: the loop (which would
    otherwise sleep an hour between ticks) runs a handful of passes, not one per answer, and
    still moves on to the run phase as soon as the last one is in."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    from engine.llm import LlmClient, LlmConfig

    train = (toy_env / "train.py").read_text()

    def model(req: dict) -> Reply:
        prompt = req["messages"][-1]["content"]
        k = int(re.search(r"variant (\d+)", prompt).group(1))  # type: ignore[union-attr]
        new = train.replace("BONUS_A = 0.0", f"BONUS_A = 1.{k}")
        diff = "".join(difflib.unified_diff(train.splitlines(True), new.splitlines(True),
                                            "a/train.py", "b/train.py"))
        return Reply.text(f"```diff\n{diff}```", delay_s=0.3 + 0.15 * k)

    store = Store(tmp_path / "ws")
    with OpenAIServer(responder=model) as srv:
        search = _search(store, toy_env, model="openai/test", api_base=srv.url,
                         ideas_per_epoch=12)
        _add(store, search.id, 12, "approved")
        ops.update_search(store, search.id, phase="implement")
        llm = LlmClient(LlmConfig(model="openai/test", api_base=srv.url, concurrency=16,
                                  backoff_base_s=0.05, timeout_s=30))
        engine = CountingEngine(store, ops.find_search(store, search.id),
                                LocalExecutor(store.workspace, cpu_slots=1), llm,
                                poll_s=3600, progress=lambda m: None)

        async def drive() -> int:
            task = asyncio.create_task(engine.run())
            try:
                for _ in range(2400):
                    await asyncio.sleep(0.05)
                    if ops.find_search(store, search.id).phase != "implement":
                        return engine.passes
                    assert not task.done(), task.result()
                raise AssertionError("the implement phase did not end within 120 s")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        passes = asyncio.run(drive())
    statuses = {i.status for i in ops.list_ideas(store, search.id)}
    assert statuses <= {"implemented", "queued", "running", "scored"}, statuses
    # one pass starts the twelve tasks, the last answer wakes one more that moves the phase
    assert passes <= 4, f"{passes} passes for 12 implementations"


def test_a_queue_longer_than_one_placement_round_runs_every_job(
        toy_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Placement reads only the front of the queue (3 jobs here): all 10 jobs still run and
    score, in queue order."""
    monkeypatch.setattr(hosts_queries, "QUEUE_WINDOW", 3)
    monkeypatch.setenv("TOY_SLEEP_S", "0")
    store = Store(tmp_path / "ws")
    search = _search(store, toy_env, ideas_per_epoch=10)
    _add(store, search.id, 10, "implemented", DIFF)
    ops.update_search(store, search.id, phase="run")
    engine = SearchEngine(store, ops.find_search(store, search.id),
                          LocalExecutor(store.workspace, cpu_slots=2), None, poll_s=0.1,
                          progress=lambda m: None)
    outcome = asyncio.run(asyncio.wait_for(engine.run(), 120))
    assert outcome.message == "finished"
    ideas = ops.list_ideas(store, search.id)
    assert [i.status for i in ideas] == ["scored"] * 10
    jobs = job_ops.list_jobs(store, search.id)
    started = [j.idea_id for j in sorted(jobs, key=lambda j: (j.started_at, j.id))]
    assert len(jobs) == 10 and sorted(started) == [i.id for i in ideas]


def test_the_queue_window_keeps_wide_jobs_and_is_empty_without_own_jobs(
        toy_env: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "ws")
    mine = _search(store, toy_env)
    other = _search(store, toy_env, name="other")
    ids = _add(store, mine.id, 6, "implemented", DIFF)
    for k, idea in enumerate(ids):
        job_ops.enqueue_job(store, idea, profile="smoke", gpus_wanted=2 if k == 5 else 0)
    front = hosts_queries.queued_jobs(store, "local", mine.id, window=2)
    # the two oldest, and the wide job at the back (the scheduler puts it first)
    assert [q.job.idea_id for q in front] == [ids[0], ids[1], ids[5]]
    assert all(q.mine for q in front)
    assert len(hosts_queries.queued_jobs(store, "local", mine.id)) == 6
    assert hosts_queries.queued_jobs(store, "local", other.id) == []


@pytest.mark.parametrize("advance_at", [1.0, 0.5])
def test_epoch_share_counts_like_the_ideas_say(toy_env: Path, tmp_path: Path,
                                                advance_at: float) -> None:
    """4 scored, 1 failed, 3 set aside (rejected, skipped, superseded), 2 still running:
    5 of 7 counted ideas ended. With advance_at 1 the exact share is not needed."""
    store = Store(tmp_path / "ws")
    search = _search(store, toy_env, advance_at=advance_at)
    for status, n in (("scored", 4), ("failed", 1), ("rejected", 1), ("skipped", 1),
                      ("superseded", 1), ("running", 2)):
        _add(store, search.id, n, status)
    _add(store, search.id, 3, "approved", epoch=1)  # another epoch: not counted
    engine = SearchEngine(store, search, LocalExecutor(store.workspace, cpu_slots=1), None)
    share = engine._epoch_share_done(0)
    assert share < 1.0
    if advance_at < 1:
        assert share == pytest.approx(5 / 7)  # past 0.5: the epoch would move on
    for i in ops.list_ideas(store, search.id, 0, ("running",)):
        ops.transition_idea(store, i.id, "running", "scored")
    assert engine._epoch_share_done(0) == 1.0
    assert engine._epoch_share_done(2) == 1.0  # an epoch with no ideas


def test_new_and_upgraded_workspaces_have_the_tick_indexes(tmp_path: Path) -> None:
    Store(tmp_path / "new")
    old = tmp_path / "old"
    Store(old)
    db = old / "ideaforge.db"
    with sqlite3.connect(db) as conn:  # as schema 11 left it
        for name, _, _ in INDEXES_12:
            conn.execute(f"DROP INDEX {name}")
        conn.execute("UPDATE meta SET value = '11' WHERE key = 'schema_version'")
    Store(old)
    for ws in (tmp_path / "new", old):
        with sqlite3.connect(ws / "ideaforge.db") as conn:
            names = {r[1] for table in ("idea", "job")
                     for r in conn.execute(f"PRAGMA index_list({table})")}
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                                   ).fetchone()[0]
        assert {n for n, _, _ in INDEXES_12} <= names
        assert int(version) == CURRENT
    assert os.path.exists(db)


def test_cli_reads_without_the_orm_say_what_the_orm_path_says(
        toy_env: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A real search (catalog, repeats, a baseline run): `status` and `ideas`, JSON and text,
    from the stdlib sqlite3 reader in a fresh process are what the ORM path prints."""
    import json
    import subprocess
    import sys

    from console import cli, cli_read
    from tests.conftest import REPO, base_env
    from tests.conftest import cli as run_cli

    proc = run_cli("run", str(toy_env), "--name", "t", "--epochs", "2", "--ideas-per-epoch",
                   "4", "--auto", "--confirm-share", "1", workspace=workspace)
    assert proc.returncode == 0, proc.stderr
    Store(workspace)  # idle: nothing changes between the two reads
    commands = (["status", "--json"], ["status", "t", "--json"], ["status"],
                ["ideas", "t", "--json"], ["ideas", "t"], ["ideas", "t", "--epoch", "1",
                                                           "--sort", "score"])
    fast = {}
    for args in commands:
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "console.cli",
                              "--workspace", str(workspace), *args], cwd=REPO,
                             env=base_env(), capture_output=True, text=True, check=True)
        fast[tuple(args)] = out.stdout
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
        assert not {"sqlalchemy", "sqlmodel", "litellm"} & imported, args
    monkeypatch.setattr(cli_read, "status", lambda args: None)
    monkeypatch.setattr(cli_read, "ideas", lambda args: None)
    for args in commands:
        assert cli.main(["--workspace", str(workspace), *args]) == 0
        slow = capsys.readouterr().out
        if "--json" in args:
            assert json.loads(fast[tuple(args)]) == json.loads(slow), args
        else:
            assert fast[tuple(args)] == slow, args
    assert json.loads(fast[("ideas", "t", "--json")])[0]["verified"] is not None


def test_the_fast_reader_knows_the_current_schema() -> None:
    from console import cli_read

    assert cli_read.SCHEMA == CURRENT
