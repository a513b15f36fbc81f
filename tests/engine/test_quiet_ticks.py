"""An engine that only waits only looks (issue 18, `engine.search_quiet`): while one job runs and
nothing else changes, its ticks read nothing from the store; yet what happens — the job ending,
a decision from another process, a slice of a long queue — is acted on at once. The periodic
full pass is switched off here (`FULL_EVERY_S`), so only the change markers can wake it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import event

from engine import search_jobs, search_quiet
from engine.executors.local import LocalExecutor
from engine.outcome import EXIT_OK, EXIT_STOPPED
from engine.search import SearchEngine
from engine.store import Store, job_ops, ops
from tests.engine.test_engine_scale import DIFF, CountingEngine, _add, _search


def _engine(store: Store, search_id: int, cls: type[SearchEngine] = SearchEngine,
            slots: int = 1) -> SearchEngine:
    return cls(store, ops.find_search(store, search_id),
               LocalExecutor(store.workspace, cpu_slots=slots), None, poll_s=0.1,
               progress=lambda m: None)


def _statements(store: Store) -> list[str]:
    """Every SQL statement the store's engines send from now on."""
    seen: list[str] = []
    for eng in {store.engine, store.read_engine}:
        event.listen(eng, "before_cursor_execute",
                     lambda conn, cur, sql, *rest: seen.append(sql))
    return seen


async def _until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def no_periodic_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_quiet, "FULL_EVERY_S", 3600.0)
    monkeypatch.setattr(search_quiet, "ENGINE_BEAT_S", 3600.0)


def test_a_waiting_engine_reads_nothing_and_still_sees_its_job_end(
        toy_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        no_periodic_pass: None) -> None:
    """One job sleeping 4 s: for 1.5 s of it (15 ticks) the engine sends no SQL and runs no
    pass; when the job ends its score is stored and the search finishes."""
    monkeypatch.setenv("TOY_SLEEP_S", "4")
    store = Store(tmp_path / "ws")
    search = _search(store, toy_env, ideas_per_epoch=1)
    [idea] = _add(store, search.id, 1, "implemented", DIFF)
    ops.update_search(store, search.id, phase="run")
    engine = _engine(store, search.id, CountingEngine)

    async def scenario() -> tuple[int, list[str], object]:
        task = asyncio.create_task(engine.run())
        await _until(lambda: any(j.state == "running" and j.heartbeat_at
                                 for j in job_ops.list_jobs(store, search.id)), 60,
                     "the job to run")
        await asyncio.sleep(0.5)  # the ticks that follow the job's start settle
        passes, sql = engine.passes, _statements(store)  # type: ignore[attr-defined]
        await asyncio.sleep(1.5)
        quiet = (engine.passes - passes, list(sql))  # type: ignore[attr-defined]
        return (*quiet, await asyncio.wait_for(task, 60))

    passes, sql, outcome = asyncio.run(scenario())
    assert passes == 0 and sql == [], (passes, sql[:5])
    assert outcome.code == EXIT_OK, outcome  # type: ignore[attr-defined]
    done = ops.get_idea(store, idea)
    assert done.status == "scored" and done.score is not None


def test_a_decision_from_another_process_reaches_a_quiet_engine(
        toy_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        no_periodic_pass: None) -> None:
    """While the engine only looks, `ideaforge stop` (a decision written through another
    connection, as the CLI and the console write it) stops it within a tick or two."""
    monkeypatch.setenv("TOY_SLEEP_S", "30")
    store = Store(tmp_path / "ws")
    search = _search(store, toy_env, ideas_per_epoch=1)
    _add(store, search.id, 1, "implemented", DIFF)
    ops.update_search(store, search.id, phase="run")
    engine = _engine(store, search.id)

    async def scenario() -> tuple[object, float]:
        task = asyncio.create_task(engine.run())
        await _until(lambda: any(j.state == "running" for j in
                                 job_ops.list_jobs(store, search.id)), 60, "the job to run")
        await asyncio.sleep(1.0)
        other = Store(tmp_path / "ws")  # the CLI's own store, its own connection
        asked = time.monotonic()
        ops.add_decision(other, search.id, "stop")
        outcome = await asyncio.wait_for(task, 30)
        return outcome, time.monotonic() - asked

    try:
        outcome, took = asyncio.run(scenario())
    finally:
        for job in job_ops.list_jobs(store, search.id):
            if job.job_dir:
                LocalExecutor(store.workspace, cpu_slots=1).cancel(job.job_dir)
    assert outcome.code == EXIT_STOPPED, outcome  # type: ignore[attr-defined]
    assert took < 10, took  # the periodic pass is an hour away: the marker woke it


def test_ten_times_the_enqueue_slice_is_queued_in_slices_and_every_job_runs(
        toy_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """30 implemented ideas, 3 queued per tick: no tick queues more than its slice, and every
    idea still runs and scores."""
    monkeypatch.setattr(search_jobs, "ENQUEUE_SLICE", 3)
    monkeypatch.setenv("TOY_SLEEP_S", "0")
    store = Store(tmp_path / "ws")
    search = _search(store, toy_env, ideas_per_epoch=30)
    ideas = _add(store, search.id, 30, "implemented", DIFF)
    ops.update_search(store, search.id, phase="run")
    queued_per_pass: list[int] = []

    class Recording(SearchEngine):
        def _enqueue(self, epoch: int) -> None:  # type: ignore[override]
            before = len(job_ops.list_jobs(self.store, self.search_id))
            super()._enqueue(epoch)
            queued_per_pass.append(len(job_ops.list_jobs(self.store, self.search_id)) - before)

    engine = Recording(store, ops.find_search(store, search.id),
                       LocalExecutor(store.workspace, cpu_slots=2), None, poll_s=0.5,
                       progress=lambda m: None)
    outcome = asyncio.run(asyncio.wait_for(engine.run(), 180))
    assert outcome.message == "finished"
    assert max(queued_per_pass) == 3 and sum(queued_per_pass) == 30, queued_per_pass
    assert [ops.get_idea(store, i).status for i in ideas] == ["scored"] * 30


def test_a_local_runner_s_exit_wakes_the_engine_at_once(
        toy_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        no_periodic_pass: None) -> None:
    """An engine adopts a running job (the one that launched it was stopped), then looks at
    it only every 50 s: the job's end is still stored within a second of its runner writing
    `exit`, because the runner's exit woke the engine (a pidfd in its event loop)."""
    monkeypatch.setattr(search_quiet, "QUIET_POLL_FACTOR", 100.0)
    monkeypatch.setattr(search_quiet, "QUIET_POLL_FACTOR_WATCHED", 100.0)
    monkeypatch.setenv("TOY_SLEEP_S", "5")
    store = Store(tmp_path / "ws")
    search = _search(store, toy_env, ideas_per_epoch=1)
    _add(store, search.id, 1, "implemented", DIFF)
    ops.update_search(store, search.id, phase="run")

    def started() -> bool:
        jobs = job_ops.list_jobs(store, search.id)
        return bool(jobs and jobs[0].state == "running" and jobs[0].job_dir
                    and (Path(jobs[0].job_dir) / "pid").exists())

    async def scenario() -> object:
        first = asyncio.create_task(_engine(store, search.id).run())
        await _until(started, 60, "the job's runner")
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        second = _engine(store, search.id)
        second.poll_s = 0.5
        return await asyncio.wait_for(second.run(), 30)

    outcome = asyncio.run(scenario())
    assert outcome.code == EXIT_OK, outcome  # type: ignore[attr-defined]
    (job,) = job_ops.list_jobs(store, search.id)
    assert job.state == "finished" and job.finished_at is not None and job.job_dir
    ended = (Path(job.job_dir) / "exit").stat().st_mtime
    assert job.finished_at - ended < 1.0, job.finished_at - ended
