"""Faults a user met on SSH hosts (issue 11): a workspace re-created at the same path, and a
runner killed on its host while its job runs. Real sshd on 127.0.0.1, the real CLI."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from tests.conftest import base_env, start_cli, wait_for
from tests.ssh.conftest import Lab, db_rows, finish, jobs, remote_dir

#: A job that leaves a process behind when its runner dies: a loop stamping the time.
LINGER = '''
[profiles.linger]
command = "(while true; do date +%s.%N >> alive; sleep 0.1; done) & echo \\"ran on $IDEAFORGE_HOST gpus=$CUDA_VISIBLE_DEVICES from $(date +%s.%N)\\"; python train.py"
gpus = 1
timeout = 60
'''


def run(lab: Lab, env_dir: Path, ws: Path, hosts: Path, name: str, profile: str, ideas: int
        ) -> subprocess.Popen[str]:
    return lab.track(start_cli("run", str(env_dir), "--name", name, "--hosts", str(hosts),
                               "--auto", "--confirm", "off", "--profile", profile, "--epochs", "1",
                               "--ideas-per-epoch", str(ideas), workspace=ws, env=base_env()))


def events(ws: Path) -> list[str]:
    return [m for (m,) in db_rows(ws, "SELECT message FROM event ORDER BY id")]


def test_a_killed_runner_s_processes_die_before_its_gpu_is_given_again_and_the_idea_reruns(
        lab: Lab, gpu_toy: Path, tmp_path: Path) -> None:
    with open(gpu_toy / "environment.toml", "a") as fh:
        fh.write(LINGER)
    lab.host("a", 1)  # one GPU: every job waits for the one before to give it back
    hosts = lab.hosts_toml(sleep=4)
    ws = tmp_path / "ws"
    engine = run(lab, gpu_toy, ws, hosts, "t", "linger", 1)
    wait_for(lambda: any(r["state"] == "running" and (remote_dir(lab, r) / "pid").exists()
                         for r in jobs(ws)), 60, "a running job", proc=engine)
    (victim,) = [r for r in jobs(ws) if r["state"] == "running"]
    info = json.loads((remote_dir(lab, victim) / "pid").read_text())
    os.kill(info["pid"], signal.SIGKILL)  # the runner only: the job's processes live on
    finish(engine, timeout=120)
    alive = (remote_dir(lab, victim) / "env" / "alive").read_text().split()
    last_stamp = float(alive[-1])
    rows = jobs(ws)
    old = next(r for r in rows if r["id"] == victim["id"])
    assert old["state"] == "failed" and old["reason"].startswith("lost (no exit code)")
    # The idea (or baseline) of the lost job ran again, as a new attempt, and finished.
    again = [r for r in rows if r["idea_id"] == victim["idea_id"] and r["attempt"] == 2]
    assert len(again) == 1, rows
    assert "toy run done" in (remote_dir(lab, again[0]) / "output.log").read_text()
    # Nothing of the lost job ran on when the next job took GPU 0.
    for r in rows:
        if r["id"] == victim["id"]:
            continue
        text = (remote_dir(lab, r) / "output.log").read_text()
        started = float(re.search(r"gpus=0 from ([\d.]+)", text).group(1))
        if started > float(alive[0]):
            assert started > last_stamp, f"job {r['id']} started while the lost job ran"
    assert any("killing the" in m and "it left" in m for m in events(ws))
    assert subprocess.run(["pgrep", "-s", str(info["pgid"])], capture_output=True,
                          check=False).returncode == 1
    assert not db_rows(ws, "SELECT * FROM gpu_lease")
    # Every lease given back is kept, with its times: the lost job's ended when it was retried,
    # and no two leases of GPU 0 overlapped.
    log = db_rows(ws, "SELECT job_id, gpu, taken_at, released_at, why FROM gpu_lease_log "
                  "ORDER BY taken_at")
    assert {r[0] for r in log} == {r["id"] for r in rows}
    assert (victim["id"], 0) in {(r[0], r[1]) for r in log if r[4] == "retried"}
    for before, after in itertools.pairwise(log):
        assert before[3] <= after[2], "two jobs held GPU 0 at once"


def test_a_workspace_re_created_at_the_same_path_never_adopts_the_old_one_s_jobs(
        lab: Lab, gpu_toy: Path, tmp_path: Path) -> None:
    lab.host("a", 4)
    hosts = lab.hosts_toml(sleep=0.2)
    ws = tmp_path / "ws"
    finish(run(lab, gpu_toy, ws, hosts, "first", "gpu1", 1))
    first = jobs(ws)
    first_scores = {s for (s,) in db_rows(ws, "SELECT score FROM idea WHERE score IS NOT NULL")}
    shutil.rmtree(ws)
    # The same environment, changed so that every score differs from the first run's.
    for name in ("train.py", "environment.toml"):
        path = gpu_toy / name
        path.write_text(path.read_text().replace("score = 5.0 - ", "score = 7.0 - "))
    out = finish(run(lab, gpu_toy, ws, hosts, "second", "gpu1", 1))
    assert "adopted" not in out
    second = jobs(ws)
    assert {r["id"] for r in second} & {r["id"] for r in first}  # same job ids again ...
    assert not {r["job_dir"] for r in second} & {r["job_dir"] for r in first}  # ... own dirs
    scores = {s for (s,) in db_rows(ws, "SELECT score FROM idea WHERE score IS NOT NULL")}
    assert scores and not scores & first_scores
    for r in second:
        assert "toy run done" in (remote_dir(lab, r) / "output.log").read_text()


def test_a_copied_workspace_s_jobs_run_in_their_own_directories(
        lab: Lab, gpu_toy: Path, tmp_path: Path) -> None:
    lab.host("a", 4)
    hosts = lab.hosts_toml(sleep=0.2)
    ws, copy = tmp_path / "ws", tmp_path / "copy"
    finish(run(lab, gpu_toy, ws, hosts, "first", "gpu1", 1))
    shutil.copytree(ws, copy)  # same identity, same next job ids
    finish(run(lab, gpu_toy, ws, hosts, "second", "gpu1", 1))
    original = {r["id"]: r for r in jobs(ws)}
    out = finish(run(lab, gpu_toy, copy, hosts, "second", "gpu1", 1))
    assert "adopted" not in out
    refused = [m for m in events(copy) if "holds another job" in m]
    assert refused, events(copy)
    copied = [r for r in jobs(copy) if r["search_id"] == 2]
    finished = [r for r in copied if r["state"] in ("finished", "failed")
                and not (r["reason"] or "").startswith("launch on")]
    assert finished and not {r["job_dir"] for r in finished} & \
        {r["job_dir"] for r in original.values()}
    for r in finished:  # each result is the copy's own run, read from its own directory
        log = (remote_dir(lab, r) / "output.log").read_text()
        assert log.count("toy run done") == 1
