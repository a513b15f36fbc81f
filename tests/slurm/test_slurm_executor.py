"""The Slurm executor against a real Slurm (tests/slurm/cluster.py: one node, 4 fake GPUs, no
accounting): jobs run through sbatch, are read from their attempt directories, share the GPUs
as Slurm gives them out, are cancelled, and are submitted exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from engine.environments import Profile, load
from engine.executors import attempt_dir
from engine.executors.base import LaunchSpec
from engine.executors.fleet import JobReport, WatchItem
from engine.executors.hosts import load as load_hosts
from engine.executors.slurm import HOST, SlurmFleet, cancel_job
from engine.store import Store
from tests.conftest import wait_for
from tests.slurm.cluster import Cluster


def _fleet(tmp_path: Path, ws: str = "ws") -> SlurmFleet:
    hosts = tmp_path / "hosts.toml"
    if not hosts.exists():
        hosts.write_text(f'[slurm]\nworkdir = "{tmp_path / "shared"}"\npoll_interval = 0.2\n'
                         "time_margin_s = 60\n")
    return SlurmFleet(load_hosts(hosts), Store(tmp_path / ws))


def _spec(env_dir: Path, command: str, gpus: int, job_id: int, timeout: float = 60
          ) -> LaunchSpec:
    return LaunchSpec(job_id=job_id, search_id=1, idea_id=job_id, env=load(env_dir),
                      profile=Profile(name="t", command=command, gpus=gpus, timeout=timeout),
                      diff=None, gpus=tuple(range(gpus)), workspace_id="w", queued_at=1.0)


def _launch(fleet: SlurmFleet, spec: LaunchSpec) -> WatchItem:
    job_dir = fleet.job_dir(HOST, spec.search_id, spec.job_id)
    outcome = fleet.launch(HOST, spec, job_dir)
    assert outcome is not None and outcome.error is None, outcome
    return WatchItem(spec.job_id, job_dir, 0, 0)


def _poll(fleet: SlurmFleet, items: list[WatchItem]) -> dict[int, JobReport]:
    fleet.refresh(force=True)
    reports = fleet.watch(HOST, items)
    assert reports is not None
    return reports


def _until(fleet: SlurmFleet, items: list[WatchItem], states: set[str], timeout: float = 30
           ) -> dict[int, JobReport]:
    def check() -> dict[int, JobReport] | None:
        reports = _poll(fleet, items)
        return reports if all(r.status.state in states for r in reports.values()) else None
    got = wait_for(check, timeout, f"jobs {[i.job_id for i in items]} {states}", interval=0.2)
    assert isinstance(got, dict)
    return got


def _tagged(slurm: Cluster, fleet: SlurmFleet) -> list[str]:
    out = slurm.run("squeue", "-h", "-t", "all", "-o", "%i|%k")
    return [line for line in out.splitlines() if f":{fleet.workspace_id}:" in line]


def test_a_one_gpu_job_runs_and_its_score_and_exit_are_read(slurm: Cluster, toy_env: Path,
                                                            tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    item = _launch(fleet, _spec(toy_env, 'echo "gpus=$CUDA_VISIBLE_DEVICES port=$IDEAFORGE_RDZV_'
                                'PORT on=$IDEAFORGE_HOST"; python train.py', 1, 1))
    report = _until(fleet, [item], {"finished"})[1]
    assert report.status.exit_code == 0 and report.status.record is not None
    assert [(p["name"], p["value"]) for p in report.points] == [("train_loss", 6.0),
                                                                 ("score", 5.0)]
    # Slurm chose the GPU: one of the node's four, in the job's own environment
    said = [line.split() for line in report.log_tail.splitlines() if line.startswith("gpus=")]
    assert len(said) == 1 and said[0][0] in ("gpus=0", "gpus=1", "gpus=2", "gpus=3"), said
    # and a port free on its node for torchrun, and the node's name
    assert said[0][1].removeprefix("port=").isdigit() and said[0][2] == f"on={slurm.node}"
    # the attempt directory lives on the shared workdir and names its Slurm job
    slurm_job = json.loads((Path(item.job_dir) / "slurm_job").read_text())
    assert Path(item.job_dir).is_relative_to(tmp_path / "shared")
    assert _tagged(slurm, fleet) == [(f"{slurm_job['id']}|ideaforge:{fleet.workspace_id}:1:"
                                     f"{(Path(item.job_dir) / 'launch_key').read_text()[:16]}")]


def test_mixed_jobs_never_oversubscribe_the_gpus_and_one_squeue_serves_all(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    record = ('echo "$CUDA_VISIBLE_DEVICES $(date +%s.%N)" > "$IDEAFORGE_JOB_DIR/gpus"; '
              'sleep 3; date +%s.%N >> "$IDEAFORGE_JOB_DIR/gpus"')
    wants = {1: 2, 2: 1, 3: 2, 4: 1, 5: 1}  # 7 GPUs asked of 4
    items = [_launch(fleet, _spec(toy_env, record, n, job)) for job, n in wants.items()]
    before = dict(fleet.calls)
    reports = _poll(fleet, items)
    assert fleet.calls["squeue"] == before["squeue"] + 1 and fleet.calls["sacct"] == 0
    waiting = [r.status.note or "" for r in reports.values() if r.status.state == "pending"]
    assert waiting and all("pending (" in n for n in waiting), waiting  # with Slurm's reason
    reports = _until(fleet, items, {"finished"}, timeout=40)
    assert all(r.status.exit_code == 0 for r in reports.values())
    runs = []
    for item in items:
        first, end = (Path(item.job_dir) / "gpus").read_text().split("\n")[:2]
        gpus, start = first.split()
        runs.append((set(gpus.split(",")), float(start), float(end), item.job_id))
    for gpus, _, _, job in runs:
        assert len(gpus) == wants[job] and gpus <= {"0", "1", "2", "3"}
    for a in runs:
        for b in runs:
            if a[3] < b[3] and a[1] < b[2] and b[1] < a[2]:  # they ran at the same time
                assert not a[0] & b[0], f"jobs {a[3]} and {b[3]} shared GPUs {a[0] & b[0]}"


def test_cancel_stops_a_running_job_and_scancel_by_hand_is_seen(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    ours = _launch(fleet, _spec(toy_env, "sleep 120", 1, 1))
    theirs = _launch(fleet, _spec(toy_env, "sleep 120", 1, 2))
    queued = _launch(fleet, _spec(toy_env, "sleep 120", 4, 3))  # waits: two GPUs are taken
    running = _until(fleet, [ours, theirs], {"running"})
    assert all("running on" in (r.status.note or "") for r in running.values())
    wait_for(lambda: all((Path(i.job_dir) / "pid").exists() for i in (ours, theirs)), 20,
             "both runners to start the jobs", interval=0.1)
    assert fleet.cancel(HOST, ours.job_dir) == "requested"
    assert _poll(fleet, [queued])[3].status.state == "pending"
    # `ideaforge cancel` from another process: the queued job leaves Slurm's queue
    assert cancel_job(load_hosts(tmp_path / "hosts.toml"), Store(tmp_path / "ws"),
                      queued.job_dir) == "requested"
    # someone cancels the other one with scancel: the runner still records how it ended
    other = json.loads((Path(theirs.job_dir) / "slurm_job").read_text())["id"]
    subprocess.run(["scancel", other], check=True, env=slurm.env())
    fleet.settle_s = 3
    done = _until(fleet, [ours, theirs, queued], {"finished", "lost"}, timeout=30)
    # ours: the runner stopped the job and said so; the queued one left the queue, never ran
    assert done[1].status.state == "finished" and done[1].status.cancelled
    assert done[1].status.record is not None and done[1].status.record["cancelled"]
    assert done[3].status.state == "finished" and done[3].status.cancelled
    assert not (Path(queued.job_dir) / "started").exists()
    # it left the queue without an exit record; squeue still lists it, CANCELLED (for
    # MinJobAge): no sacct was needed
    assert fleet.calls["sacct"] == 0
    # the one cancelled by hand: its runner got Slurm's TERM (so did the job) and Slurm says
    # CANCELLED: cancelled too, not a crash "killed by TERM"
    assert done[2].status.state == "finished" and done[2].status.cancelled
    assert done[2].status.record is not None and done[2].status.record["cancelled"]
    assert f"Slurm job {other} cancelled from outside ideaforge" in (done[2].status.note or "")
    # and Slurm runs none of them any more (once their runners, done writing exit, left)
    wait_for(lambda: "RUNNING" not in slurm.run("squeue", "-h", "-t", "all", "-o", "%T").split(),
             15, "Slurm to see every job end")


def test_an_engine_that_died_after_sbatch_adopts_the_job_instead_of_submitting_again(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    # the node is full, so our job waits in the queue, where only its tag can find it
    blocker = slurm.run("sbatch", "--parsable", "--gres=gpu:4", "-o", "/dev/null",
                        "--wrap", "sleep 60").strip()
    fleet = _fleet(tmp_path)
    spec = _spec(toy_env, "python train.py", 1, 7)
    item = _launch(fleet, spec)
    (Path(item.job_dir) / "slurm_job").unlink()  # it died before recording anything
    again = _fleet(tmp_path)  # the restarted engine, nothing in memory
    _launch(again, spec)
    assert len(_tagged(slurm, again)) == 1
    assert again.calls["sbatch"] == 0
    report = _poll(again, [item])[7]
    assert report.status.state == "pending" and "pending (" in (report.status.note or "")
    slurm.run("scancel", blocker)
    report = _until(again, [item], {"finished"})[7]
    assert report.status.exit_code == 0 and len(_tagged(slurm, again)) == 1


def test_a_controller_outage_concludes_nothing_and_the_jobs_go_on(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    first = _launch(fleet, _spec(toy_env, "sleep 3; python train.py", 1, 1))
    _until(fleet, [first], {"running"})
    slurm.stop_daemon("slurmctld")
    try:
        fleet.refresh(force=True)
        assert fleet.watch(HOST, [first]) is None  # squeue fails: no job is called lost
        (view,) = fleet.host_views()
        assert not view.reachable and not view.ready and "squeue failed" in (view.problem or "")
        spec = _spec(toy_env, "python train.py", 1, 2)
        job_dir = fleet.job_dir(HOST, 1, 2)
        assert fleet.launch(HOST, spec, job_dir) is None  # asked again once Slurm answers
    finally:
        slurm.start_daemon("slurmctld")
    second = _launch(fleet, spec)
    done = _until(fleet, [first, second], {"finished"}, timeout=40)
    assert [done[j].status.exit_code for j in (1, 2)] == [0, 0]
    assert [p["value"] for p in done[1].points if p["name"] == "score"] == [5.0]
    assert len(_tagged(slurm, fleet)) == 2


def test_a_job_past_its_time_limit_is_stopped_by_its_runner_before_slurms_limit(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    item = _launch(fleet, _spec(toy_env, "sleep 60", 1, 1, timeout=2))
    sid = json.loads((Path(item.job_dir) / "slurm_job").read_text())["id"]
    # Slurm's limit: 2 s + kill_grace_s 10 + time_margin_s 60 + the signal's 30 s, in minutes
    assert slurm.run("squeue", "-h", "-j", sid, "-o", "%l").strip() == "2:00"
    report = _until(fleet, [item], {"finished"}, timeout=20)[1]
    assert report.status.timed_out and report.status.exit_code == -15


def test_slurmd_restarted_mid_job_loses_nothing(slurm: Cluster, toy_env: Path, tmp_path: Path
                                                ) -> None:
    fleet = _fleet(tmp_path)
    item = _launch(fleet, _spec(toy_env, "sleep 4; python train.py", 1, 1))
    _until(fleet, [item], {"running"})
    slurm.stop_daemon("slurmd")
    slurm.start_daemon("slurmd")
    report = _until(fleet, [item], {"finished"}, timeout=30)[1]
    assert report.status.exit_code == 0 and [p["value"] for p in report.points][-1] == 5.0


def test_a_job_gone_from_slurm_without_an_exit_record_is_lost(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    fleet.settle_s = 2
    item = _launch(fleet, _spec(toy_env, "sleep 60", 1, 1))
    _until(fleet, [item], {"running"})
    wait_for(lambda: (Path(item.job_dir) / "pid").exists(), 20, "the runner", interval=0.1)
    # the runner dies (as on a node that fails): Slurm ends the job, and nothing wrote `exit`
    sid = json.loads((Path(item.job_dir) / "slurm_job").read_text())["id"]
    os.kill(json.loads((Path(item.job_dir) / "pid").read_text())["pid"], signal.SIGKILL)
    report = _until(fleet, [item], {"lost", "finished"}, timeout=20)[1]
    assert report.status.state == "lost" and not (Path(item.job_dir) / "exit").exists()
    assert f"Slurm job {sid} ended" in (report.status.note or "")
    # (proctrack/linuxproc loses the job's own session when its runner dies; on clusters
    # proctrack/cgroup ends it with the job. Here the test ends it.)
    info = json.loads((Path(item.job_dir) / "pid").read_text())
    for pid in attempt_dir.job_processes(item.job_dir, info):
        os.kill(pid, signal.SIGKILL)
