"""A search stopped with its jobs cancelled must not hold this machine's slots for ever
(issue 11, item 11): any engine settles other searches' jobs from their attempt folders."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from tests.conftest import TOY, base_env, cli, start_cli, wait_for


def job_rows(ws: Path) -> list[tuple[int, int, str, str | None]]:
    con = sqlite3.connect(ws / "ideaforge.db", timeout=10)
    try:
        return con.execute("SELECT id, search_id, state, reason FROM job ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the schema is still being made
        return []
    finally:
        con.close()


def run(ws: Path, name: str, sleep: str) -> subprocess.Popen[str]:
    return start_cli("run", str(TOY), "--name", name, "--auto", "--profile", "smoke",
                     "--epochs", "1", "--ideas-per-epoch", "1", "--cpu-slots", "1",
                     workspace=ws, env=base_env(TOY_SLEEP_S=sleep))


def start_a(ws: Path) -> subprocess.Popen[str]:
    """Search A, once its first job (a long one) runs on the one CPU slot."""
    a = run(ws, "A", "120")
    try:
        wait_for(lambda: (ws / "ideaforge.db").exists()
                 and any(state == "running" for _, _, state, _ in job_rows(ws)), 60,
                 "search A's first job to run", proc=a)
    except BaseException:
        a.kill()
        raise
    return a


def test_a_stopped_search_s_cancelled_job_frees_its_slot_for_the_next_search(
        tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    a = start_a(ws)
    try:
        stop = cli("stop", "A", "--cancel-jobs", workspace=ws)
        assert stop.returncode == 0, stop.stderr
        out, _ = a.communicate(timeout=60)
        assert a.returncode == 5, out  # stopped by the researcher
        b = run(ws, "B", "0.1")
        out, _ = b.communicate(timeout=90)  # before: B waited for A's slot until killed
        assert b.returncode == 0, out
    finally:
        for proc in (a,):
            if proc.poll() is None:
                proc.kill()
    a_jobs = [(state, reason) for _, search, state, reason in job_rows(ws) if search == 1]
    assert ("cancelled", "cancelled") in a_jobs, a_jobs
    assert not [s for s, _ in a_jobs if s in ("launching", "running")]
    status = cli("status", "A", "--json", workspace=ws)
    assert '"running"' not in status.stdout.split('"jobs"', 1)[1].split("}", 1)[0]


def test_stop_cancel_jobs_without_an_engine_records_the_jobs_cancelled(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    a = start_a(ws)
    a.kill()  # the engine dies; its job runs on
    a.wait()
    stop = cli("stop", "A", "--cancel-jobs", workspace=ws)
    assert stop.returncode == 0, stop.stderr
    states = [(state, reason) for _, _, state, reason in job_rows(ws)]
    assert ("cancelled", "cancelled") in states and "running" not in [s for s, _ in states]
    con = sqlite3.connect(ws / "ideaforge.db")
    try:
        assert con.execute("SELECT count(*) FROM gpu_lease").fetchone() == (0,)
        assert con.execute("SELECT status FROM search").fetchone() == ("stopped",)
    finally:
        con.close()
