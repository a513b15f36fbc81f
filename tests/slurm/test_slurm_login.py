"""Slurm through a login node over SSH (`[slurm] login`): a real sshd on 127.0.0.1
(tests/ssh/conftest.py) in front of this machine's real Slurm (tests/slurm/cluster.py).
Slurm's commands run only over that SSH connection (the engine's own PATH has an `sbatch`
that refuses), and the attempt folders are written and read over SFTP."""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.executors.fleet import WatchItem
from engine.executors.hosts import load as load_hosts
from engine.executors.slurm import HOST, SlurmFleet, cancel_job
from engine.store import Store
from tests.conftest import base_env, cli
from tests.slurm.cluster import Cluster
from tests.slurm.test_slurm_executor import _spec, _until
from tests.ssh.conftest import SshdHost, ssh_keys  # noqa: F401 (the fixture)


class LoginNode(SshdHost):
    """The cluster's login node: its sessions know this Slurm (SLURM_CONF), and it serves
    SFTP as login nodes do."""

    def config(self) -> Path:
        path = super().config()
        path.write_text(path.read_text().replace(
            "SetEnv PATH=", f"SetEnv SLURM_CONF={os.environ['SLURM_CONF']} PATH=")
            + "Subsystem sftp internal-sftp\n")
        return path


@pytest.fixture
def login_node(slurm: Cluster, ssh_keys: Path, tmp_path: Path  # noqa: F811
               ) -> Iterator[LoginNode]:
    node = LoginNode(tmp_path / "hosts", "login", ssh_keys / "user.pub", ssh_keys / "host_a",
                     0)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def login(login_node: LoginNode, ssh_keys: Path, tmp_path: Path) -> Path:  # noqa: F811
    """hosts.toml whose [slurm] table reaches the cluster through the login node."""
    node = login_node
    known = tmp_path / "known_hosts"
    pub = (ssh_keys / "host_a.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{node.port} {pub[0]} {pub[1]}\n")
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(f'[slurm]\nlogin = "{getpass.getuser()}@127.0.0.1"\nport = {node.port}\n'
                     f'identity_file = "{ssh_keys / "user"}"\nknown_hosts = "{known}"\n'
                     f'workdir = "{tmp_path / "cluster"}"\npython = "{sys.executable}"\n'
                     "poll_interval = 0.2\ntime_margin_s = 60\n")
    return hosts


def _no_local_slurm(tmp_path: Path) -> dict[str, str]:
    """An environment whose Slurm commands refuse: only the login node's may answer."""
    fake = tmp_path / "not-here"
    fake.mkdir(exist_ok=True)
    for name in ("sbatch", "squeue", "sacct", "scancel", "sinfo"):
        (fake / name).write_text("#!/bin/sh\necho 'not on this machine' >&2; exit 3\n")
        (fake / name).chmod(0o755)
    return base_env(PATH=f"{fake}:{os.environ['PATH']}")


def test_a_search_runs_through_the_login_node(login: Path, toy_env: Path,
                                              tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    proc = cli("run", str(toy_env), "--profile", "gpu", "--name", "t", "--hosts", str(login),
               "--epochs", "1", "--ideas-per-epoch", "1", "--auto", "--baseline-runs", "1",
               "--confirm", "off", "--fix-attempts", "0", workspace=ws,
               env=_no_local_slurm(tmp_path), timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(cli("ideas", "t", "--json", workspace=ws, check=True).stdout)
    scores = {r["catalog_stem"] or r["origin"]: r["score"] for r in rows}
    assert scores["baseline"] == 5.0 and len(scores) == 2, scores
    # the attempt folders were written on the cluster's workdir (over SFTP) and ran there;
    # nothing of them stays in the workspace's staging folder
    job_dirs = sorted((tmp_path / "cluster").glob("*/jobs/search-*/job-*"))
    assert len(job_dirs) == 2 and all((d / "exit").exists() for d in job_dirs)
    assert all((d / "slurm_job").exists() and (d / "env" / "train.py").exists()
               for d in job_dirs)
    assert not list((ws / "slurm-stage").glob("jobs/search-*/job-*"))
    shown = json.loads(cli("show", str(rows[0]["id"]), "--json", workspace=ws,
                           check=True).stdout)
    assert all(j["external_id"] for j in shown["jobs"])


def test_cancel_over_ssh_stops_a_running_job(login: Path, toy_env: Path,
                                             tmp_path: Path) -> None:
    fleet = SlurmFleet(load_hosts(login), Store(tmp_path / "ws"))
    spec = _spec(toy_env, "sleep 120", 1, 1)
    job_dir = fleet.job_dir(HOST, 1, 1)
    outcome = fleet.launch(HOST, spec, job_dir)
    assert outcome is not None and outcome.error is None, (outcome, fleet.error)
    item = WatchItem(1, job_dir, 0, 0)
    running = _until(fleet, [item], {"running"})[1].status
    assert running.node and running.external_id  # Slurm's word, read over SSH
    # `ideaforge cancel`'s way, through a connection of its own
    assert cancel_job(load_hosts(login), Store(tmp_path / "ws"), item.job_dir) == "requested"
    report = _until(fleet, [item], {"finished"})[1]
    assert report.status.cancelled and not report.status.failure
    assert (Path(item.job_dir) / "cancel").exists()  # written over SFTP
    fleet.access.close()


def test_a_login_node_that_stops_answering_concludes_nothing(
        login: Path, login_node: LoginNode, toy_env: Path, tmp_path: Path) -> None:
    fleet = SlurmFleet(load_hosts(login), Store(tmp_path / "ws"))
    job_dir = fleet.job_dir(HOST, 1, 1)
    outcome = fleet.launch(HOST, _spec(toy_env, "sleep 2; python train.py", 1, 1), job_dir)
    assert outcome is not None and outcome.error is None, (outcome, fleet.error)
    item = WatchItem(1, job_dir, 0, 0)
    _until(fleet, [item], {"running"})
    login_node.stop()  # the job goes on on its node; ideaforge can no longer see it
    fleet.refresh(force=True)
    assert fleet.watch(HOST, [item]) is None and fleet.down_since is not None
    assert "login node 127.0.0.1" in (fleet.error or ""), fleet.error
    time.sleep(3)  # it ends meanwhile
    login_node.start()  # back: the same connection settings, a new connection
    report = _until(fleet, [item], {"finished"})[1]
    assert report.status.exit_code == 0 and fleet.down_since is None
    assert [(p["name"], p["value"]) for p in report.points][-1] == ("score", 5.0)
    fleet.access.close()


def test_hosts_check_passes_for_the_login_target(login: Path, toy_env: Path,
                                                 tmp_path: Path) -> None:
    proc = cli("hosts", "check", "--hosts", str(login), "--env", str(toy_env),
               workspace=tmp_path / "ws", env=_no_local_slurm(tmp_path), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("login: ok", "commands: ok", "controller: ok", "partition: ok: debug",
                 "gpus: ok: up to 4", f"workdir: ok: {tmp_path / 'cluster'}: a job on "):
        assert f"  {name}" in proc.stdout, proc.stdout


def test_an_unknown_login_host_key_fails_the_check_until_accepted(
        login: Path, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")  # the login node's key was never recorded
    proc = cli("hosts", "check", "--hosts", str(login), workspace=tmp_path / "ws", timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "  login: FAILED" in proc.stdout and "--accept-new" in proc.stdout, proc.stdout
    assert known.read_text() == ""
    proc = cli("hosts", "check", "--hosts", str(login), "--accept-new",
               workspace=tmp_path / "ws", timeout=60)
    assert proc.returncode == 0 and "  login: ok" in proc.stdout, proc.stdout + proc.stderr
    assert "127.0.0.1" in known.read_text()
