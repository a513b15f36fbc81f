"""Searches on GPU hosts over SSH: real sshd on 127.0.0.1, fake nvidia-smi, the toy
environment, and the real `ideaforge` CLI as the engine (killed and resumed at will)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from itertools import combinations
from pathlib import Path

from tests.conftest import base_env, cli, start_cli, wait_for
from tests.ssh.conftest import Lab, db_rows, finish, jobs, remote_dir

ACTIVE = ("launching", "running", "unreachable")


SECRET = "sk-ideaforge-test-secret-0123456789"


def run(lab: Lab, toy: Path, ws: Path, hosts: Path, name: str, profile: str, ideas: int
        ) -> subprocess.Popen[str]:
    # The engine holds model keys; none of them may reach a host, the database or a log.
    env = base_env(OPENAI_API_KEY=SECRET, ANTHROPIC_API_KEY=SECRET, HF_TOKEN=SECRET)
    return lab.track(start_cli("run", str(toy), "--name", name, "--hosts", str(hosts), "--auto", "--confirm", "off",
                               "--profile", profile, "--epochs", "1", "--ideas-per-epoch",
                               str(ideas), workspace=ws, env=env))


def files_holding(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def kill(engine: subprocess.Popen[str]) -> None:
    os.kill(engine.pid, signal.SIGKILL)
    engine.wait()


def hosts_cli(*args: str, ws: Path) -> subprocess.CompletedProcess[str]:
    """`ideaforge hosts …` / `ideaforge cancel …`."""
    return cli(*args, workspace=ws, timeout=120)


def local_log(ws: Path, job: dict) -> Path:
    return ws / "jobs" / "ssh" / job["host"] / f"search-{job['search_id']}" / \
        f"job-{job['id']}" / "output.log"


def test_two_hosts_mixed_1_and_4_gpu_jobs_never_share_a_gpu(lab: Lab, gpu_toy: Path,
                                                              tmp_path: Path) -> None:
    lab.host("a", 4)
    lab.host("b", 4).set_gpus(4, busy=(3,))  # someone else's process holds b's GPU 3
    hosts = lab.hosts_toml(sleep=1.5)
    ws = tmp_path / "ws"
    wide = run(lab, gpu_toy, ws, hosts, "wide", "gpu4", 2)
    # Two engines creating one new workspace at once race on its schema: let one create it.
    wait_for(lambda: db_rows(ws, "SELECT id FROM search"), 30, "the first search")
    narrow = run(lab, gpu_toy, ws, hosts, "narrow", "gpu1", 4)
    finish(wide)
    finish(narrow)
    rows = jobs(ws)
    assert len(rows) == 3 + 5 and all(r["state"] in ("finished", "failed") for r in rows)
    assert all(r["attempt"] == 1 and r["exit_code"] in (0, 3) for r in rows)
    assert not db_rows(ws, "SELECT * FROM gpu_lease")  # every lease was given back
    runs = []
    for r in rows:
        # What really happened on the host: the GPUs the job saw and when it ran.
        text = local_log(ws, r).read_text()
        assert text == (remote_dir(lab, r) / "output.log").read_text()  # no gap, no dupe
        m = re.search(r"ran on (\w+) gpus=([\d,]+) from ([\d.]+)\n.*until ([\d.]+)", text,
                      re.DOTALL)
        assert m, text
        host, gpus, start, end = m.group(1), m.group(2), float(m.group(3)), float(m.group(4))
        assert host == r["host"] and gpus == r["gpus"]
        assert len(gpus.split(",")) == (4 if r["search_id"] == 1 else 1)
        runs.append((host, set(gpus.split(",")), start, end))
    for (h1, g1, s1, e1), (h2, g2, s2, e2) in combinations(runs, 2):
        assert h1 != h2 or not g1 & g2 or e1 <= s2 or e2 <= s1, "two jobs shared a GPU"
    assert not [r for r in runs if r[0] == "b" and "3" in r[1]]  # the foreign-busy GPU
    assert {r["host"] for r in rows if r["search_id"] == 1} == {"a"}  # b has no 4 free GPUs
    ports = [json.loads((remote_dir(lab, r) / "spec.json").read_text())["env"]
             ["IDEAFORGE_RDZV_PORT"] for r in rows]
    assert len(set(ports)) == len(ports)  # each job its own rendezvous port
    metrics = db_rows(ws, "SELECT job_id, count(*) FROM metric GROUP BY job_id")
    assert all(n == 2 for _, n in metrics if n)  # train_loss and score, each exactly once
    assert files_holding(ws, SECRET) == []
    assert all(files_holding(h.dir, SECRET) == [] for h in lab.hosts.values())


def test_engine_killed_mid_run_adopts_its_jobs_and_launches_none_twice(
        lab: Lab, gpu_toy: Path, tmp_path: Path) -> None:
    lab.host("a", 4)
    lab.host("b", 4)
    hosts = lab.hosts_toml(sleep=5)
    ws = tmp_path / "ws"
    engine = run(lab, gpu_toy, ws, hosts, "t", "gpu1", 4)
    wait_for(lambda: sum(r["state"] == "running" for r in jobs(ws)) >= 4, 60, "4 running jobs")
    kill(engine)
    # While no engine runs, the hosts finish jobs on their own.
    # (a job still queued has no host yet: only placed ones can finish)
    wait_for(lambda: any((remote_dir(lab, r) / "exit").exists() for r in jobs(ws)
                         if r["host"] in lab.hosts), 30,
             "a job to finish while the engine is down")
    finish(lab.track(start_cli("resume", "t", workspace=ws)))
    rows = jobs(ws)
    assert len(rows) == 5 and {r["attempt"] for r in rows} == {1}
    assert {r["state"] for r in rows} <= {"finished", "failed"}
    for r in rows:
        remote = remote_dir(lab, r)
        assert (remote / "output.log").read_text().count("toy run done") == 1
        assert local_log(ws, r).read_text() == (remote / "output.log").read_text()
        assert r["metrics_offset"] == (remote / "metrics.jsonl").stat().st_size
    counts = dict(db_rows(ws, "SELECT job_id, count(*) FROM metric GROUP BY job_id"))
    assert all(counts.get(r["id"]) == 2 for r in rows)
    events = [m for (m,) in db_rows(ws, "SELECT message FROM event")]
    assert sum("started for idea" in m for m in events) == 5
    for h in lab.hosts.values():  # the setup ran once per host, not again after the restart
        assert len((h.workdir / "data" / "toy" / "setup-runs").read_text().splitlines()) == 1


def test_setup_runs_once_per_host_and_version_and_its_failure_stops_the_search(
        lab: Lab, gpu_toy: Path, tmp_path: Path) -> None:
    host = lab.host("a", 4)
    hosts = lab.hosts_toml()
    ws = tmp_path / "ws"
    runs = host.workdir / "data" / "toy" / "setup-runs"
    finish(run(lab, gpu_toy, ws, hosts, "first", "gpu1", 1))
    finish(run(lab, gpu_toy, ws, hosts, "again", "gpu1", 1))
    assert len(runs.read_text().splitlines()) == 1  # same version: recorded, not re-run
    with open(gpu_toy / "train.py", "a") as fh:
        fh.write("# a new version of the environment\n")
    finish(run(lab, gpu_toy, ws, hosts, "changed", "gpu1", 1))
    first, second = runs.read_text().splitlines()
    assert first != second  # each version's setup ran in its own pristine copy
    assert len(list((host.workdir / "envs").iterdir())) == 2
    bad = run(lab, gpu_toy, ws, hosts, "bad", "badsetup", 1)
    out, _ = bad.communicate(timeout=90)
    assert bad.returncode == 1
    assert "setup failed on every host" in out and "cannot fetch the data" in out
    assert {r["state"] for r in jobs(ws) if r["search_id"] == 4} == {"queued"}


def test_sshd_stopped_mid_job_keeps_leases_and_collects_after_restart(
        lab: Lab, gpu_toy: Path, tmp_path: Path) -> None:
    host = lab.host("a", 4)
    hosts = lab.hosts_toml(sleep=6)
    ws = tmp_path / "ws"
    engine = run(lab, gpu_toy, ws, hosts, "t", "gpu1", 1)
    wait_for(lambda: sum(r["state"] == "running" for r in jobs(ws)) == 2, 60, "2 running jobs")
    host.stop()
    wait_for(lambda: {r["state"] for r in jobs(ws)} == {"unreachable"}, 30,
             "jobs marked unreachable")
    assert len(db_rows(ws, "SELECT * FROM gpu_lease")) == 2  # GPUs stay booked meanwhile
    wait_for(lambda: all((remote_dir(lab, r) / "exit").exists() for r in jobs(ws)), 30,
             "the jobs to end on the host")
    host.start()
    finish(engine)
    rows = jobs(ws)
    assert len(rows) == 2 and all(r["attempt"] == 1 for r in rows)
    assert all(r["state"] in ("finished", "failed") and r["exit_code"] in (0, 3) for r in rows)
    events = [m for (m,) in db_rows(ws, "SELECT message FROM event")]
    assert any("unreachable since" in m for m in events)
    assert any("answers again" in m for m in events)


def test_remote_kill_fails_with_exit_code_and_cancel_kills_the_group(
        lab: Lab, gpu_toy: Path, tmp_path: Path) -> None:
    lab.host("a", 4)
    hosts = lab.hosts_toml(sleep=60)
    ws = tmp_path / "ws"
    # Known baseline: a killed or cancelled baseline job would stop the search (issue 11).
    engine = run(lab, gpu_toy, ws, hosts, "t", "group_known", 2)
    wait_for(lambda: sum(r["state"] == "running" for r in jobs(ws)) == 2
             and all((remote_dir(lab, r) / "pid").exists() for r in jobs(ws)), 60,
             "2 running jobs")
    killed, cancelled = jobs(ws)
    info = json.loads((remote_dir(lab, killed) / "pid").read_text())
    # An out-of-memory kill, as the kernel does it: SIGKILL to the training process.
    python = subprocess.run(["pgrep", "-g", str(info["pgid"]), "-f", "python train.py"],
                            capture_output=True, text=True, check=False).stdout.split()
    os.kill(int(python[0]), signal.SIGKILL)
    group = json.loads((remote_dir(lab, cancelled) / "pid").read_text())["pgid"]
    proc = hosts_cli("cancel", str(cancelled["id"]), ws=ws)
    assert proc.returncode == 0, proc.stderr
    finish(engine)
    rows = {r["id"]: r for r in jobs(ws)}
    k, c = rows[killed["id"]], rows[cancelled["id"]]
    assert k["state"] == "failed" and k["exit_code"] == -9
    assert "SIGKILL" in k["reason"] and "out of memory" in k["reason"]
    assert c["state"] == "cancelled" and c["reason"] == "cancelled"
    assert "sending TERM" in c["log_tail"]
    # Nothing of the cancelled job's process group is left on the host (the `sleep 600` too).
    wait_for(lambda: subprocess.run(["pgrep", "-g", str(group)], capture_output=True,
                                    check=False).returncode == 1, 10, "the group to be gone")


def test_time_limit_holds_on_the_host_while_the_engine_is_down(
        lab: Lab, gpu_toy: Path, tmp_path: Path) -> None:
    lab.host("a", 4)
    hosts = lab.hosts_toml(sleep=60, scheduling="kill_grace_s = 1")
    ws = tmp_path / "ws"
    engine = run(lab, gpu_toy, ws, hosts, "t", "short_known", 2)  # no baseline job
    wait_for(lambda: sum(r["state"] == "running" for r in jobs(ws)) == 2, 60, "2 running jobs")
    kill(engine)
    wait_for(lambda: all((remote_dir(lab, r) / "exit").exists() for r in jobs(ws)), 20,
             "the host to stop both jobs at their 3 s limit")
    for r in jobs(ws):
        assert json.loads((remote_dir(lab, r) / "exit").read_text())["timed_out"] is True
    finish(lab.track(start_cli("resume", "t", workspace=ws)))
    rows = jobs(ws)
    assert all(r["state"] == "failed" and r["reason"].startswith("timed out") for r in rows)


def test_jobs_of_a_silent_host_are_retried_elsewhere_and_it_is_quarantined(
        lab: Lab, gpu_toy: Path, tmp_path: Path) -> None:
    servers = {"a": lab.host("a", 4), "b": lab.host("b", 4)}
    hosts = lab.hosts_toml(sleep=1,
                           scheduling="kill_grace_s = 1\nmargin_s = 1\nquarantine_after = 1")
    ws = tmp_path / "ws"
    engine = run(lab, gpu_toy, ws, hosts, "t", "short", 1)
    wait_for(lambda: len(jobs(ws)) == 2 and all(r["state"] in ACTIVE for r in jobs(ws)), 60,
             "2 placed jobs")
    first = jobs(ws)
    (used,) = {r["host"] for r in first}  # packed onto one host
    (other,) = set(servers) - {used}
    servers[used].stop()
    finish(engine)
    rows = jobs(ws)
    old = [r for r in rows if r["attempt"] == 1]
    new = [r for r in rows if r["attempt"] == 2]
    assert len(old) == len(new) == 2
    assert all(r["state"] == "failed" and r["reason"].startswith("unreachable") for r in old)
    assert all(r["host"] == other and r["state"] in ("finished", "failed") for r in new)
    assert all(r["exit_code"] in (0, 3) for r in new)
    servers[used].start()
    check = hosts_cli("hosts", "check", "--hosts", str(hosts), "--json", ws=ws)
    report = {h["name"]: h for h in json.loads(check.stdout)["hosts"]}
    assert report[used]["ok"] and report[used]["quarantined_until"]
    assert report[other]["quarantined_until"] is None
    assert hosts_cli("hosts", "release", used, ws=ws).returncode == 0
    assert cli("status", "t", "--json", workspace=ws).returncode == 0
