"""`--max-gpu-hours`: once a search's jobs have used the budget no job of it starts, the running
ones are collected, the search stops with exit 3, and `resume --max-gpu-hours MORE` goes on.
Through the real CLI and real jobs of the toy environment's `gpu` profile, on one GPU that a
fake `nvidia-smi` reports (the only fake: there is no GPU here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.store import Store, console_queries, job_ops, ops
from engine.store.views import JobView
from tests.conftest import base_env, cli


@pytest.fixture
def one_gpu(tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI that sees one GPU (index 0), with toy jobs of about 1 s."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n'\n")
    smi.chmod(0o755)
    env = base_env(TOY_SLEEP_S="1")
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def status(ws: Path) -> dict:
    return json.loads(cli("status", "t", "--json", workspace=ws, check=True).stdout)


def job_rows(ws: Path) -> list[JobView]:
    store = Store(ws)
    try:
        return job_ops.list_jobs(store, ops.find_search(store, "t").id)
    finally:
        store.close()


def used_at(jobs: list[JobView], t: float) -> float:
    """GPU hours the jobs had used by time t, from the rows alone (`gpus`: leased indices)."""
    return sum(len(j.gpus.split(",")) * max(0.0, min(j.finished_at or t, t) - j.started_at)
               for j in jobs if j.started_at is not None and j.gpus) / 3600


def spent_at(jobs: list[JobView], budget: float) -> float:
    """When the jobs' use reached `budget` (bisection: the use only grows with time)."""
    lo = min(j.started_at for j in jobs if j.started_at is not None)
    hi = max(j.finished_at or lo for j in jobs)
    assert used_at(jobs, hi) >= budget, "the budget was never reached"
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if used_at(jobs, mid) >= budget else (mid, hi)
    return hi


def assert_hours_match_rows(ws: Path, jobs: list[JobView]) -> None:
    """`status --json` and `show --json` say what the job rows say (every job has ended)."""
    total = used_at(jobs, max(j.finished_at or 0.0 for j in jobs))
    assert status(ws)["gpu_hours"] == pytest.approx(total, abs=2e-6)
    per_idea = {}
    for idea_id in {j.idea_id for j in jobs}:
        shown = json.loads(cli("show", str(idea_id), "--json", workspace=ws, check=True).stdout)
        mine = [j for j in jobs if j.idea_id == idea_id]
        per_idea[idea_id] = shown["gpu_hours"]
        assert shown["gpu_hours"] == pytest.approx(used_at(mine, 2e9), abs=2e-6)
    assert sum(per_idea.values()) == pytest.approx(total, abs=1e-5)


def test_a_spent_gpu_budget_stops_new_jobs_and_resume_goes_on(toy_env: Path, workspace: Path,
                                                               one_gpu: dict[str, str]) -> None:
    budget = 0.0005  # 1.8 GPU-seconds: the baseline and at most one idea job start
    run = cli("run", str(toy_env), "--name", "t", "--profile", "gpu", "--epochs", "1",
              "--ideas-per-epoch", "3", "--auto", "--max-gpu-hours", str(budget),
              workspace=workspace, env=one_gpu, timeout=120)
    assert run.returncode == 3, run.stderr
    said = run.stderr.strip().splitlines()[-1]
    assert f"--max-gpu-hours {budget:g} reached (spent 0.0" in said, said
    assert "GPU h): no new job starts" in said
    assert "`ideaforge resume t --max-gpu-hours MORE` continues" in said
    st = status(workspace)
    assert st["status"] == "stopped" and st["max_gpu_hours"] == budget

    jobs = job_rows(workspace)
    started = [j for j in jobs if j.started_at is not None]
    held = [j for j in jobs if j.started_at is None]
    assert held and all(j.state == "queued" for j in held)  # the budget held these back
    assert all(j.state == "finished" for j in started)  # the running ones were collected
    # No job started after the budget was spent. The engine checks before it places jobs, and
    # a job's start is recorded when it is placed, a few milliseconds after that check.
    spent = spent_at(started, budget)
    assert max(j.started_at for j in started) <= spent + 0.05
    assert_hours_match_rows(workspace, started)

    # A budget below what was used is refused, and nothing stored changes.
    low = cli("resume", "t", "--max-gpu-hours", "0.0001", workspace=workspace, env=one_gpu)
    assert low.returncode == 2
    assert "--max-gpu-hours 0.0001: search 't' has used 0.0" in low.stderr
    assert "give more than that" in low.stderr
    assert status(workspace) == st

    more = cli("resume", "t", "--max-gpu-hours", "1", workspace=workspace, env=one_gpu,
               timeout=120)
    assert more.returncode == 0, more.stderr
    assert "--max-gpu-hours 0.0005 → 1.0" in more.stderr  # the engine says what changed
    st = status(workspace)
    assert st["status"] == "finished" and st["max_gpu_hours"] == 1.0
    assert st["ideas"] == {"scored": 4}
    jobs = job_rows(workspace)
    assert all(j.state == "finished" and j.gpus == "0" for j in jobs)
    assert_hours_match_rows(workspace, jobs)
    idea_id = jobs[-1].idea_id
    shown = cli("show", str(idea_id), workspace=workspace, check=True).stdout
    hours = json.loads(cli("show", str(idea_id), "--json", workspace=workspace,
                           check=True).stdout)["gpu_hours"]
    mine = len([j for j in jobs if j.idea_id == idea_id])  # its first run and any repeats
    said = re.search(r"GPU hours: (\d+\.\d{4}) \(its (\d+) job\(s\)\)", shown)
    assert said and int(said.group(2)) == mine
    assert float(said.group(1)) == pytest.approx(hours, abs=1e-4)


@pytest.mark.parametrize(("value", "words"), [
    ("-1", "--max-gpu-hours -1: must be a positive number of GPU hours, e.g. 8 or 0.5"),
    ("0", "--max-gpu-hours 0: must be a positive number of GPU hours"),
    ("abc", "argument --max-gpu-hours: 'abc' is not a number; give GPU hours, e.g. 8"),
])
def test_a_bad_gpu_budget_is_refused_before_anything_is_stored(toy_env: Path, workspace: Path,
                                                               value: str, words: str) -> None:
    proc = cli("run", str(toy_env), "--name", "t", "--max-gpu-hours", value, workspace=workspace)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr, proc.stderr
    assert not (workspace / "ideaforge.db").exists() or \
        json.loads(cli("status", "--json", workspace=workspace, check=True).stdout) == []


def test_gpu_hours_count_leased_gpus_and_cpu_jobs_count_none(tmp_path: Path) -> None:
    """The one measure behind the budget, `status`, `show` and the console's header."""
    store = Store(tmp_path)
    sid = ops.create_search(store, name="s", env_name="toy", env_path="/x", env_version="v",
                            profile="gpu", model="catalog", epochs=1, ideas_per_epoch=3,
                            metric_name="score", goal="minimize").id
    (b,) = ops.ensure_batches(store, sid, 0, [("seed", 3)])
    ideas = ops.finish_batch(store, b.id, [ops.NewIdea(text=t, origin="seed",
                                                        status="implemented")
                                           for t in ("two gpus", "cpu", "running")])
    # The rows an engine writes: two GPUs for an hour, a CPU job, one GPU running for 30 min.
    for idea, gpus, start, end in zip(ideas, ("0,1", "", "2"), (0.0, 0.0, 5400.0),
                                      (3600.0, 3600.0, None), strict=True):
        job = job_ops.enqueue_job(store, idea, profile="gpu", gpus_wanted=gpus.count(",") + 1
                                  if gpus else 0)
        assert job is not None
        job_ops.update_job(store, job, state="finished" if end else "running", gpus=gpus,
                           started_at=start, finished_at=end)
    now = 7200.0
    assert console_queries.gpu_hours(store, sid, now=now) == pytest.approx(2.5)
    assert console_queries.idea_gpu_hours(store, ideas, now=now) == pytest.approx(
        {ideas[0]: 2.0, ideas[1]: 0.0, ideas[2]: 0.5})
    (summary,) = console_queries.search_summaries(store, sid, now=now)
    assert summary.gpu_hours == pytest.approx(2.5)
    store.close()
