"""Slurm's accounting (the real `sacct`, slurmdbd on a private MariaDB: tests/slurm/accounting.py)
telling how a job ended once squeue forgot it: the engine concludes at once, with Slurm's
own state; without accounting it waits for the files and, lacking them, runs the job again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from engine.executors import attempt_dir
from tests.conftest import wait_for
from tests.slurm.cluster import Cluster
from tests.slurm.test_slurm_executor import _fleet, _launch, _poll, _spec, _until
from tests.slurm.test_slurm_states import _sid, _state

#: Slurm's states of a job that no longer waits or runs.
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


def _accounted(slurm: Cluster, sids: list[str], since: float) -> dict[str, tuple[str, str]]:
    """{Slurm job id: (state, exit code)} as `sacct` tells them, once it has every job's end.
    Jobs submitted before `since` are another test's (a cleared controller reuses ids)."""
    after = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 1))

    def told() -> dict[str, tuple[str, str]] | None:
        out = slurm.run("sacct", "--noheader", "--parsable2", "--allocations",
                        f"--jobs={','.join(sids)}", "--format=JobIDRaw,State,ExitCode,Submit")
        rows = {}
        for line in out.splitlines():
            sid, state, code, submitted = line.split("|")
            if submitted >= after and state.split()[0] in ENDED:
                rows[sid] = (state.split()[0], code)
        return rows if set(rows) == set(sids) else None
    got = wait_for(told, 30, f"sacct to record the end of jobs {sids}", interval=0.3)
    assert isinstance(got, dict)
    return got


def _forget(slurm: Cluster, sids: list[str]) -> None:
    """squeue forgets every job (as after MinJobAge): the controller restarts cleared."""
    slurm.stop_daemon("slurmctld")
    slurm.start_daemon("slurmctld", clear=True)
    assert all(_state(slurm, sid) == "" for sid in sids)


def test_a_job_squeue_forgot_is_told_by_sacct_where_accounting_works(
        slurm_accounting: Cluster, toy_env: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    slurm, since = slurm_accounting, time.time()
    fleet = _fleet(tmp_path)
    # a job that ignores TERM: its runner waits kill_grace_s (10 s) before KILL, but Slurm
    # KILLs everything after KillWait (5 s): cancelled by hand, and no exit record
    item = _launch(fleet, _spec(toy_env, "trap '' TERM; sleep 60", 1, 1))
    _until(fleet, [item], {"running"})
    pid = wait_for(lambda: attempt_dir.read_json(os.path.join(item.job_dir, "pid")), 20,
                   "the runner")
    sid = _sid(item)
    slurm.run("scancel", sid)
    wait_for(lambda: _state(slurm, sid) == "CANCELLED", 30, "Slurm to end the job")
    assert _accounted(slurm, [sid], since)[sid][0] == "CANCELLED"
    assert not (Path(item.job_dir) / "exit").exists()
    for proc in attempt_dir.job_processes(item.job_dir, pid):  # type: ignore[arg-type]
        os.kill(proc, signal.SIGKILL)  # (what proctrack/linuxproc may have lost)
    _forget(slurm, [sid])
    # with accounting, sacct says it was cancelled: cancelled, at once, Slurm's word shown
    told = _fleet(tmp_path)
    status = _poll(told, [item])[1].status
    assert told.calls["sacct"] == 1
    assert status.state == "finished" and status.cancelled, status
    assert f"Slurm job {sid} ended CANCELLED without an exit record" in (status.note or "")
    assert (status.external_id, status.external_state) == (sid, "CANCELLED")
    # without accounting (this slurm.conf has none: sacct fails): nothing is concluded until
    # exit has had its time; then the job is lost, and the engine runs it again
    monkeypatch.setenv("SLURM_CONF", str(slurm.without_accounting()))
    blind = _fleet(tmp_path)
    blind.settle_s = 2
    assert _poll(blind, [item])[1].status.state == "running"
    assert blind.calls["sacct"] == 1 and blind.error is None  # squeue still answered
    status = _until(blind, [item], {"lost", "finished"}, timeout=10)[1].status
    assert status.state == "lost" and "out of the queue" in (status.note or ""), status
    assert blind.calls["sacct"] == 1  # asked once; the failure is remembered


def test_jobs_that_ended_while_the_engine_was_down_are_told_by_sacct_when_it_is_back(
        slurm_accounting: Cluster, toy_env: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    slurm, since = slurm_accounting, time.time()
    fleet = _fleet(tmp_path)
    killed = _launch(fleet, _spec(toy_env, "sleep 1; kill -9 $$", 1, 1))
    by_hand = _launch(fleet, _spec(toy_env, "sleep 60", 1, 2))
    failed = _launch(fleet, _spec(toy_env, "sleep 1; exit 3", 1, 3))
    items = [killed, by_hand, failed]
    wait_for(lambda: (Path(by_hand.job_dir) / "pid").exists(), 30, "the runner", interval=0.1)
    sids = [_sid(i) for i in items]
    # the engine goes down; meanwhile one job is killed by KILL, one is scancelled by
    # someone (its runner stops it on Slurm's TERM), one fails on its own; then Slurm's
    # controller forgets them all
    del fleet
    slurm.run("scancel", sids[1])
    said = _accounted(slurm, sids, since)
    # (Slurm's exit code is the runner's, which ends well whatever the job did: the job's own
    # code is in its exit record)
    assert said == {sids[0]: ("COMPLETED", "0:0"), sids[1]: ("CANCELLED", "0:0"),
                    sids[2]: ("COMPLETED", "0:0")}, said
    wait_for(lambda: all((Path(i.job_dir) / "exit").exists() for i in items), 20,
             "the runners' exit records")
    _forget(slurm, sids)
    # back: one poll, one sacct for the jobs whose exit record cannot tell why they ended
    back = _fleet(tmp_path)
    reports = _poll(back, items)
    assert back.calls == {"squeue": 1, "sacct": 1, "sbatch": 0, "scancel": 0}
    got = {job: r.status for job, r in reports.items()}
    assert got[1].state == "finished" and got[1].exit_code == -9 and not got[1].cancelled
    assert (got[1].external_id, got[1].external_state) == (sids[0], "COMPLETED")
    assert got[2].state == "finished" and got[2].cancelled, got[2]
    assert f"Slurm job {sids[1]} cancelled from outside ideaforge (scancel)" == got[2].note
    assert got[2].external_state == "CANCELLED"
    assert got[3].state == "finished" and got[3].exit_code == 3 and not got[3].cancelled
    assert got[3].external_state is None  # its exit record told all: accounting not asked
    # without accounting, the same poll cannot tell: it waits for Slurm's word
    monkeypatch.setenv("SLURM_CONF", str(slurm.without_accounting()))
    blind = _fleet(tmp_path)
    reports = _poll(blind, items)
    for job in (1, 2):
        assert reports[job].status.state == "running", reports[job].status
        assert "waiting for Slurm's word" in (reports[job].status.note or "")
    assert reports[3].status.exit_code == 3
