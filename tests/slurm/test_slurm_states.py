"""How a Slurm job ended, where its `exit` alone cannot tell: Slurm's own word decides whether
the engine runs it again (its infrastructure failed it: a requeue, a node failure) or the idea
fails (out of memory, Slurm's time limit), and `ideaforge cancel` scancels a queued job."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from engine.executors.fleet import WatchItem
from engine.executors.slurm import HOST, SlurmFleet
from engine.executors.slurm_cli import QueueRow
from engine.store import Store, job_ops
from tests.conftest import cli, start_cli, wait_for
from tests.slurm.cluster import Cluster
from tests.slurm.test_slurm_executor import _fleet, _launch, _spec, _until


def _sid(item: WatchItem) -> str:
    return str(json.loads((Path(item.job_dir) / "slurm_job").read_text())["id"])


def _state(slurm: Cluster, sid: str) -> str:
    """What squeue says of the job; empty once it forgot it."""
    proc = subprocess.run(["squeue", "-h", "-t", "all", "-j", sid, "-o", "%T"],
                          env=slurm.env(), capture_output=True, text=True, timeout=30,
                          check=False)
    return proc.stdout.strip()


def test_a_requeued_job_and_a_failed_node_are_lost_and_run_again(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    requeued = _launch(fleet, _spec(toy_env, "sleep 60", 1, 1))
    failed = _launch(fleet, _spec(toy_env, "sleep 60", 1, 2))
    _until(fleet, [requeued, failed], {"running"})
    wait_for(lambda: all((Path(i.job_dir) / "started").exists() for i in (requeued, failed)),
             20, "both runners", interval=0.1)
    sid = _sid(requeued)
    slurm.run("scontrol", "requeue", sid)
    report = _until(fleet, [requeued], {"lost", "finished"})[1]
    assert report.status.state == "lost", report.status
    assert f"Slurm job {sid} was requeued" in (report.status.note or "")
    # the engine runs the idea again as a new job: Slurm's requeued copy is cancelled
    wait_for(lambda: _state(slurm, sid) == "CANCELLED", 20, "the requeued copy cancelled")
    # the node goes down under the other job: Slurm kills it and puts it back in its queue
    # (a requeueable job, as ideaforge submits them): lost too, not the idea's fault
    other = _sid(failed)
    slurm.run("scontrol", "update", f"nodename={slurm.node}", "state=down", "reason=test")
    try:
        report = _until(fleet, [failed], {"lost", "finished"}, timeout=30)[2]
        assert report.status.state == "lost", report.status
        assert f"Slurm job {other} was requeued" in (report.status.note or "")
    finally:
        slurm.run_ok("scontrol", "update", f"nodename={slurm.node}", "state=resume")
        wait_for(slurm.idle, 30, "the node back (ReturnToService=2)")


def _as_if(fleet: SlurmFleet, item: WatchItem, state: str) -> None:
    """This poll's squeue says `state` for the job (this Slurm has neither cgroups to run out
    of memory in nor a clock to wait minutes for its limit)."""
    key = (Path(item.job_dir) / "launch_key").read_text()
    fleet.refresh(force=True)
    rows = dict(fleet._rows or {})
    rows[item.job_id] = QueueRow(_sid(item), state, "None", "", "0:01",
                                 fleet._tag(item.job_id, key))
    fleet._rows = rows


def test_out_of_memory_and_slurms_time_limit_fail_the_idea_with_the_reason(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    (tmp_path / "hosts.toml").write_text(
        f'[slurm]\nworkdir = "{tmp_path / "shared"}"\npoll_interval = 0.2\n'
        'time_margin_s = 60\nmem_per_gpu = "100M"\n')
    fleet = _fleet(tmp_path)
    oom = _launch(fleet, _spec(toy_env, "sleep 2; kill -9 $$", 1, 1))
    late = _launch(fleet, _spec(toy_env, "true", 1, 2))
    _until(fleet, [oom], {"finished"}, timeout=30)  # exit -9 (killed by KILL: by whom?)
    _as_if(fleet, oom, "OUT_OF_MEMORY")
    status = fleet.watch(HOST, [oom])[1].status  # type: ignore[index]
    assert status.state == "finished" and status.failure is not None
    assert status.failure.startswith(f"out of memory: Slurm ended job {_sid(oom)} OUT_OF_MEMORY")
    assert "--mem-per-gpu=100M" in status.failure and "mem_per_gpu" in status.failure
    # a job Slurm ended at its own limit, its runner gone without an exit record
    _until(fleet, [late], {"finished"}, timeout=30)
    (Path(late.job_dir) / "exit").unlink()
    _as_if(fleet, late, "TIMEOUT")
    status = fleet.watch(HOST, [late])[2].status  # type: ignore[index]
    assert status.state == "finished" and status.failure == (
        f"timed out: Slurm's time limit for job {_sid(late)} (3 min: the profile's timeout + "
        "kill grace + [slurm] time_margin_s) ended it")
    # preempted: not the idea's fault
    _as_if(fleet, late, "PREEMPTED")
    fleet._gone.clear()
    status = fleet.watch(HOST, [late])[2].status  # type: ignore[index]
    assert status.state == "lost" and "preempted" in (status.note or "")


def test_ideaforge_cancel_scancels_a_queued_slurm_job_at_once(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    blocker = slurm.run("sbatch", "--parsable", "--gres=gpu:4", "-o", "/dev/null",
                        "--wrap", "sleep 60").strip()
    shared, ws = tmp_path / "shared", tmp_path / "ws"
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(f'[slurm]\nworkdir = "{shared}"\npoll_interval = 0.3\n')
    engine = start_cli("run", str(toy_env), "--profile", "gpu", "--name", "t", "--hosts",
                       str(hosts), "--epochs", "1", "--ideas-per-epoch", "1", "--auto",
                       "--baseline-runs", "1", "--confirm", "off", workspace=ws)
    try:
        found = wait_for(lambda: list(shared.glob("*/jobs/search-*/job-*/slurm_job")), 60,
                         "the first job in Slurm's queue", proc=engine)
        # the baseline's job (the idea's may be in the queue too: launches run off the tick)
        path = min(found, key=lambda p: int(p.parent.name.removeprefix("job-")))  # type: ignore[union-attr]
        job_id = int(path.parent.name.removeprefix("job-"))
        sid = str(json.loads(path.read_text())["id"])
        assert _state(slurm, sid) == "PENDING"
        proc = cli("cancel", str(job_id), workspace=ws, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "cancel requested" in proc.stdout
        assert _state(slurm, sid) == "CANCELLED"  # at once, not when it would have started
        store = Store(ws, create=False)
        wait_for(lambda: job_ops.get_job(store, job_id).state == "cancelled", 30,
                 "the engine to record it cancelled", proc=engine)
        assert not (path.parent / "started").exists()
        cli("stop", "t", workspace=ws, check=True)
        engine.wait(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
        subprocess.run(["scancel", blocker], env=slurm.env(), check=False)


def test_slurms_warning_before_its_limit_stops_the_job_as_timed_out(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    item = _launch(fleet, _spec(toy_env, "sleep 60", 1, 1))
    _until(fleet, [item], {"running"})
    wait_for(lambda: (Path(item.job_dir) / "pid").exists(), 20, "the runner", interval=0.1)
    sid = _sid(item)
    assert "--signal=B:USR1@30" in fleet._options(_spec(toy_env, "true", 1, 1),
                                                  Path(item.job_dir), "k")
    slurm.run("scancel", "--batch", "--signal=USR1", sid)  # what --signal=B:USR1@30 sends
    status = _until(fleet, [item], {"finished"})[1].status
    assert status.timed_out and not status.cancelled, status
