"""The checks `hosts check` runs for a [slurm] target, against the real one-node Slurm."""

from __future__ import annotations

import json
from pathlib import Path

from engine.executors.slurm_check import check, gpus_per_node
from engine.executors.slurm_config import SlurmConfig
from tests.conftest import cli
from tests.slurm.cluster import Cluster


def test_a_good_target_passes_every_check(slurm: Cluster, tmp_path: Path) -> None:
    lines = check(SlurmConfig(), tmp_path / "shared", gpus_wanted=4, wait_s=30)
    assert [(c.name, c.ok) for c in lines] == [("commands", True), ("controller", True),
                                               ("partition", True), ("gpus", True),
                                               ("workdir", True)], lines
    assert "debug" in lines[2].detail and "up to 4 GPU(s)" in lines[3].detail
    assert f"a job on {slurm.node} wrote to it" in lines[4].detail
    assert list((tmp_path / "shared").iterdir()) == []  # the probe cleans up after itself


def test_a_wrong_partition_and_too_many_gpus_are_named(slurm: Cluster, tmp_path: Path) -> None:
    (*_, bad) = check(SlurmConfig(partition="gpu-a100"), tmp_path, wait_s=5)
    assert not bad.ok and "'gpu-a100' does not exist" in bad.detail and "debug" in bad.detail
    lines = check(SlurmConfig(partition="debug"), tmp_path, gpus_wanted=8, wait_s=30)
    gpus = next(c for c in lines if c.name == "gpus")
    assert not gpus.ok and "the profile wants 8" in gpus.detail


def test_gres_columns_as_clusters_print_them() -> None:
    assert gpus_per_node("gpu:4") == 4 and gpus_per_node("gpu:a100:8(S:0-1)") == 8
    assert gpus_per_node("(null)") == 0 and gpus_per_node("gpu:h100:2,gpu:a100:4") == 4


def test_hosts_check_reports_a_slurm_target_and_fails_with_the_fix(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(f'[slurm]\nworkdir = "{tmp_path / "shared"}"\n')
    proc = cli("hosts", "check", "--hosts", str(hosts), "--env", str(toy_env),
               workspace=tmp_path / "ws", timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Slurm cluster" in out and "ok" in out.splitlines()[0]
    for name in ("commands: ok", "controller: ok", "partition: ok: debug", "gpus: ok: up to 4",
                 f"workdir: ok: {tmp_path / 'shared'}: a job on {slurm.node} wrote to it"):
        assert f"  {name}" in out, out
    hosts.write_text('[slurm]\npartition = "gpu-a100"\n')
    proc = cli("hosts", "check", "--hosts", str(hosts), "--json", workspace=tmp_path / "ws",
               timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    checks = json.loads(proc.stdout)["slurm"]["checks"]
    assert checks[-1]["name"] == "partition" and not checks[-1]["ok"]
    assert "set [slurm] partition to one of: debug" in checks[-1]["detail"]
