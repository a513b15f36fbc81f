"""Live progress in the console: a running job's step, training metric and time left appear
on its idea's row and in the jobs table as the job writes them (a real engine and real jobs)."""

from __future__ import annotations

import re
from pathlib import Path

from console.app import IdeaforgeApp
from console.screens.jobs import JobsScreen
from console.widgets.idea_board import IdeaBoard
from console.widgets.jobs_table import JobsTable
from tests.conftest import base_env, start_cli, wait_for
from tests.console.helpers import board, until
from tests.engine.test_headless_progress import progress_env

PROGRESS = re.compile(r"▶ step (\d+) · train_loss [\d.]+ · (\d+)s left │")


def row_text(b: IdeaBoard, idea_id: int) -> str:
    """The board's line of an idea, as drawn ("" when it is not on screen)."""
    for index, row in b._rows.items():
        if row.id == idea_id:
            y = index - int(b.scroll_y) + 1
            if 1 <= y <= b.page_rows:
                return "".join(seg.text for seg in b.render_line(y))
    return ""


def baseline_id(b: IdeaBoard) -> int | None:
    return next((r.id for r in b._rows.values() if r.origin == "baseline"), None)


def step_on_board(b: IdeaBoard, idea_id: int) -> int | None:
    m = PROGRESS.search(row_text(b, idea_id))
    return int(m.group(1)) if m else None


async def test_a_running_job_shows_its_progress_on_the_board_and_in_the_jobs_table(
        toy_env: Path, workspace: Path, tmp_path: Path) -> None:
    env = progress_env(toy_env)
    gate = tmp_path / "gate"
    engine = start_cli("run", str(env), "--name", "t", "--model", "catalog", "--auto",
                       "--epochs", "1", "--ideas-per-epoch", "1", "--baseline-runs", "1",
                       "--confirm", "off", "--fix-attempts", "0", workspace=workspace,
                       env=base_env(PROGRESS_GATE=str(gate)))
    try:
        wait_for(lambda: (workspace / "ideaforge.db").exists(), 60, "the workspace", proc=engine)
        app = IdeaforgeApp(workspace, "t", poll_s=0.2, keys={})
        async with app.run_test(size=(200, 30)) as pilot:
            b = board(pilot)
            base = await until(pilot, lambda: baseline_id(b), 30, "the baseline's row")
            first = await until(pilot, lambda: step_on_board(b, base), 30,
                                "the baseline's progress on its row",
                                state=lambda: row_text(b, base))
            # The job reports every 0.1 s: its row follows without a key being pressed.
            await until(pilot, lambda: (step_on_board(b, base) or 0) > first, 30,
                        "a later step on the row", state=lambda: row_text(b, base))
            left = PROGRESS.search(row_text(b, base))
            assert left is not None and 0 < int(left.group(2)) <= 60  # the profile's 60 s
            assert "running" in row_text(b, base)

            await pilot.press("2")
            await until(pilot, lambda: isinstance(app.screen, JobsScreen), 10, "the jobs mode")
            table = app.screen.query_one(JobsTable)

            def progress_cell() -> str:
                for job_id, row in table.rows_by_id.items():
                    if row.job.idea_id == base and row.job.state == "running":
                        return str(table.get_cell(str(job_id), "progress"))
                return ""

            await until(pilot, lambda: re.fullmatch(
                r"step \d+ · train_loss [\d.]+ · \d+s left", progress_cell()), 30,
                "the progress cell of the running job", state=progress_cell)

            gate.touch()  # the jobs finish: their progress goes, their rows stay
            await until(pilot, lambda: table.rows_by_id and all(
                r.job.state != "running" for r in table.rows_by_id.values()), 60,
                "the jobs to finish", state=progress_cell)
            await until(pilot, lambda: all(str(table.get_cell(str(j), "progress")) == ""
                                           for j in table.rows_by_id), 10,
                        "no progress on finished jobs")
        engine.wait(60)
        assert engine.returncode == 0
    finally:
        gate.touch()
        if engine.poll() is None:
            engine.kill()
            engine.wait()


def test_progress_reads_the_training_metric_and_the_profiles_time_limit(
        toy_env: Path, tmp_path: Path) -> None:
    """Rows as the executor writes them: the newest line that is not the score is the one
    shown; time left counts against the toy profile's 60 s; finished jobs are not listed."""
    from engine.store import Store, job_ops, ops
    from engine.store.progress import by_idea, running
    from tests.console.builders import Built, _idea, _run_job

    store = Store(tmp_path / "ws")
    s = ops.create_search(
        store, name="p", env_name="toy", env_path=str(toy_env), env_version="v",
        profile="smoke", model="catalog", epochs=1, ideas_per_epoch=2, metric_name="score",
        goal="minimize", baseline=5.0, status="running")
    built = Built(store=store, search_id=s.id)
    live = _idea(store, s.id, 0, "live", "[Experiment] Live.", "seed", built,
                 status="implemented")
    done = _idea(store, s.id, 0, "done", "[Experiment] Done.", "seed", built,
                 status="implemented")
    job = _run_job(store, built, "live", live, score=4.5, curve=[6.0, 5.6, 5.3],
                   state="running")  # its score line came last: not a training metric
    _run_job(store, built, "done", done, score=4.0, curve=[6.0, 5.0])
    job_ops.update_job(store, job, started_at=1000.0)

    progress = running(store, s.id)
    assert list(progress) == [job]
    p = progress[job]
    assert (p.idea_id, p.step, p.metric, p.value, p.limit_s) == (live, 3, "train_loss", 5.3,
                                                                 60.0)
    assert p.label(1010.0) == "step 3 · train_loss 5.3 · 50s left"
    assert p.label(1075.0) == "step 3 · train_loss 5.3 · 15s over limit"
    assert list(by_idea(progress)) == [live]
    assert running(store, s.id + 1) == {}
    # a throughput logged after the loss (nanogpt's tokens_per_s): the loss is still shown
    job_ops.ingest_metrics(store, job, 100, 200, [
        {"name": "train_loss", "value": 5.1, "step": 4},
        {"name": "tokens_per_s", "value": 24590.0, "step": 4}])
    assert running(store, s.id)[job].label(1010.0) == "step 4 · train_loss 5.1 · 50s left"


def test_past_the_training_budget_a_graded_job_counts_down_its_evaluation(
        tmp_path: Path) -> None:
    """With an evaluation stage, training stops at time_limit + time_slack (4 + 2 s in the
    graded fixture); after that the job is evaluated, within the stage's 30 s."""
    from engine.store.progress import JobProgress, time_limits
    from tests.conftest import REPO

    limits = time_limits(str(REPO / "tests" / "fixtures" / "gradedenv"), "smoke")
    assert limits == (6.0, 30.0)
    p = JobProgress(job_id=1, idea_id=1, search_id=1, run=1, kind="run", host="local",
                    started_at=0.0, limit_s=limits[0], evaluate_s=limits[1], step=40,
                    metric="train_loss", value=2.0)
    assert p.label(2.0) == "step 40 · train_loss 2 · 4s left"
    assert p.label(10.0) == "step 40 · train_loss 2 · evaluating · 26s left"
