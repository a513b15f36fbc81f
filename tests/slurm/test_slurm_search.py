"""A whole search through Slurm: `ideaforge run --hosts hosts.toml` with a `[slurm]` table."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli
from tests.slurm.cluster import Cluster


def test_a_catalog_search_runs_end_to_end_through_slurm(slurm: Cluster, toy_env: Path,
                                                        tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(f'[slurm]\nworkdir = "{shared}"\npoll_interval = 0.3\nmax_queued = 3\n'
                     'cpus_per_gpu = 1\nmem_per_gpu = "100M"\nextra_sbatch = ["--partition=debug"]\n')
    ws = tmp_path / "ws"
    proc = cli("run", str(toy_env), "--profile", "gpu", "--name", "t", "--hosts", str(hosts),
               "--epochs", "1", "--ideas-per-epoch", "3", "--auto", "--baseline-runs", "1",
               "--confirm", "off", workspace=ws, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(cli("ideas", "t", "--json", workspace=ws, check=True).stdout)
    scores = {r["catalog_stem"] or r["origin"]: r["score"] for r in rows}
    assert scores["baseline"] == 5.0
    expected = {"bonus_a": 4.0, "bonus_b": 4.5, "penalty_c": 6.0, "crash": None}
    assert len(scores) == 4 and all(scores[k] == expected[k] for k in scores if k != "baseline")
    # every job went through Slurm: its attempt folder on the shared workdir names its job,
    # and Slurm still lists each one, tagged, once
    job_dirs = sorted(shared.glob("*/jobs/search-*/job-*"))
    assert len(job_dirs) == 4
    ids = {json.loads((d / "slurm_job").read_text())["id"] for d in job_dirs}
    listed = slurm.run("squeue", "-h", "-t", "all", "-o", "%i %k").split("\n")
    assert ids <= {line.split()[0] for line in listed if "ideaforge:" in line}
    assert all((d / "exit").exists() for d in job_dirs)
