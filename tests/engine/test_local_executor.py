"""The local executor and its runner: attempt directories, time limits, cancel, GPUs, secrets."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from engine.environments import Profile, load
from engine.executors.base import LaunchSpec
from engine.executors.local import LocalExecutor
from tests.conftest import wait_for


def _spec(env_dir: Path, command: str, *, timeout: float = 30, gpus: tuple[int, ...] = (),
          job_id: int = 1) -> LaunchSpec:
    env = load(env_dir)
    profile = Profile(name="t", command=command, gpus=len(gpus), timeout=timeout)
    return LaunchSpec(job_id=job_id, search_id=1, idea_id=1, env=env, profile=profile,
                      diff=None, gpus=gpus)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_time_limit_kills_the_whole_process_group(toy_env: Path, tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path / "ws", grace_s=1)
    # the job starts a grandchild that would outlive a plain kill of its parent
    cmd = "sleep 300 & echo $! > grandchild.pid; sleep 300"
    job_dir = ex.launch(_spec(toy_env, cmd, timeout=1.5))
    status = wait_for(lambda: (s := ex.poll(job_dir)).state == "finished" and s, 30, "timeout")
    assert status.timed_out and status.exit_code != 0
    grandchild = int(Path(job_dir, "env", "grandchild.pid").read_text())
    wait_for(lambda: not _pid_alive(grandchild), 10, "the grandchild to die")
    assert "timed_out: sending TERM" in Path(job_dir, "output.log").read_text()


def test_cancel_stops_a_running_job(toy_env: Path, tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path / "ws")
    job_dir = ex.launch(_spec(toy_env, "sleep 300"))
    wait_for(lambda: ex.poll(job_dir).state == "running", 20, "the job to run")
    ex.cancel(job_dir)
    status = wait_for(lambda: (s := ex.poll(job_dir)).state == "finished" and s, 30, "cancel")
    assert status.cancelled


def test_launch_is_idempotent_and_metrics_are_read_by_offset(toy_env: Path,
                                                              tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path / "ws")
    spec = _spec(toy_env, "python train.py")
    job_dir = ex.launch(spec)
    assert ex.launch(spec) == job_dir  # a second launch adopts, never starts again
    wait_for(lambda: ex.poll(job_dir).state == "finished", 30, "the toy job")
    out = ex.read_output(job_dir, 0)
    assert [p["name"] for p in out.metric_lines] == ["train_loss", "score"]
    again = ex.read_output(job_dir, out.metrics_offset)
    assert again.metric_lines == []  # nothing read twice
    assert Path(job_dir, "output.log").read_text().count("toy run done") == 1
    info = json.loads(Path(job_dir, "pid").read_text())
    assert info["boot_id"] and info["start"]


def test_partial_metric_line_waits_for_its_end(toy_env: Path, tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path / "ws")
    job_dir = Path(ex.launch(_spec(toy_env, "sleep 30")))
    metrics = job_dir / "metrics.jsonl"
    metrics.write_text('{"name": "score", "value": 1.5}\n{"name": "sco')
    first = ex.read_output(str(job_dir), 0)
    assert [p["value"] for p in first.metric_lines] == [1.5]
    with open(metrics, "a") as fh:
        fh.write('re", "value": 1.25}\nnot json\n')
    second = ex.read_output(str(job_dir), first.metrics_offset)
    assert [p["value"] for p in second.metric_lines] == [1.25] and second.bad_lines == 1
    ex.cancel(str(job_dir))


def test_gpus_come_from_nvidia_smi_and_reach_the_job(toy_env: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    ex = LocalExecutor(tmp_path / "ws")
    assert ex.gpu_indices() == [0, 1, 2]
    job_dir = ex.launch(_spec(toy_env, 'echo "gpus=$CUDA_VISIBLE_DEVICES"', gpus=(1, 2)))
    wait_for(lambda: ex.poll(job_dir).state == "finished", 20, "the job")
    assert "gpus=1,2" in Path(job_dir, "output.log").read_text()


def test_jobs_never_see_api_keys(toy_env: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("WANDB_API_KEY", "wandb-ok")
    ex = LocalExecutor(tmp_path / "ws")
    job_dir = ex.launch(_spec(toy_env, "env"))
    wait_for(lambda: ex.poll(job_dir).state == "finished", 20, "the job")
    log = Path(job_dir, "output.log").read_text()
    assert "sk-secret-value-123" not in log and "sk-ant-secret" not in log
    assert "WANDB_API_KEY=wandb-ok" in log
    assert "sk-secret" not in Path(job_dir, "spec.json").read_text()


def test_a_lost_runner_is_reported_lost(toy_env: Path, tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path / "ws")
    job_dir = ex.launch(_spec(toy_env, "sleep 300"))
    wait_for(lambda: ex.poll(job_dir).state == "running", 20, "the job to run")
    info = json.loads(Path(job_dir, "pid").read_text())
    os.killpg(info["pgid"], 9)
    os.kill(info["pid"], 9)  # runner and job gone without an exit record
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and ex.poll(job_dir).state == "running":
        time.sleep(0.1)
    assert ex.poll(job_dir).state == "lost"
