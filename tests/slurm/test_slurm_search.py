"""A whole search through Slurm: `ideaforge run --hosts hosts.toml` with a `[slurm]` table."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.conftest import base_env, cli, start_cli, wait_for
from tests.slurm.cluster import Cluster


def test_a_catalog_search_runs_end_to_end_through_slurm(slurm: Cluster, toy_env: Path,
                                                        tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(f'[slurm]\nworkdir = "{shared}"\npoll_interval = 0.3\nmax_queued = 2\n'
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
    # never more than max_queued (2) of them in Slurm's hands at once: submitted → ended
    spans = [(json.loads((d / "slurm_job").read_text())["submitted"],
              json.loads((d / "exit").read_text())["time"]) for d in job_dirs]
    assert max(sum(a <= t < b for a, b in spans) for t, _ in spans) <= 2


def test_an_engine_killed_between_sbatch_and_its_database_write_submits_nothing_twice(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    # sbatch submits, then the engine dies before it reads the job id: nothing recorded
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(
        f"#!/bin/bash\nout=$({shutil.which('sbatch')} \"$@\") || {{ echo \"$out\"; exit 1; }}\n"
        f"if mkdir {tmp_path / 'killed'} 2>/dev/null; then kill -9 $PPID; exit 0; fi\n"
        'echo "$out"\n')
    (fake / "sbatch").chmod(0o755)
    env = base_env(PATH=f"{fake}:{os.environ['PATH']}")
    # the node is full: the job waits in Slurm's queue, where only its tag can find it
    blocker = slurm.run("sbatch", "--parsable", "--gres=gpu:4", "-o", "/dev/null",
                        "--wrap", "sleep 60").strip()
    shared = tmp_path / "shared"
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(f'[slurm]\nworkdir = "{shared}"\npoll_interval = 0.3\n')
    ws = tmp_path / "ws"
    args = ["--epochs", "1", "--ideas-per-epoch", "1", "--auto", "--baseline-runs", "1",
            "--confirm", "off"]
    proc = cli("run", str(toy_env), "--profile", "gpu", "--name", "t", "--hosts", str(hosts),
               *args, workspace=ws, env=env, timeout=60)
    assert proc.returncode == -9 and (tmp_path / "killed").is_dir()
    (first,) = shared.glob("*/jobs/search-*/job-*")
    assert not (first / "slurm_job").exists()
    engine = start_cli("resume", "t", workspace=ws, env=env)
    try:
        wait_for(lambda: (first / "slurm_job").exists(), 30, "the job to be adopted",
                 proc=engine)
        slurm.run("scancel", blocker)
        out, _ = engine.communicate(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 0, out
    job_dirs = list(shared.glob("*/jobs/search-*/job-*"))
    mine = f"ideaforge:{first.parents[2].name}:"  # this workspace's id
    tags = [line.split()[1] for line in slurm.run("squeue", "-h", "-t", "all", "-o",
                                                  "%i %k").splitlines() if mine in line]
    assert len(tags) == len(set(tags)) == len(job_dirs) == 2  # the baseline and one idea
    assert all((d / "exit").exists() for d in job_dirs)
