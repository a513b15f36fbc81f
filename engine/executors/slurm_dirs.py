"""The Slurm executor's attempt directories (engine/executors/slurm.py): written as the local
executor writes them, on the cluster's shared workdir, here or over SSH to a login node."""

from __future__ import annotations

import json
import logging
import posixpath
import shlex
import shutil
import sys
import time
from pathlib import Path

from engine.environments import Environment, Profile
from engine.executors import slurm_access
from engine.executors.base import LOG_TAIL_BYTES, LaunchSpec, Output, parse_metric_bytes
from engine.executors.local import LocalExecutor
from engine.executors.slurm_access import ClusterAccess, ClusterPath
from engine.executors.slurm_config import SlurmConfig

log = logging.getLogger(__name__)


class SlurmJobDirs(LocalExecutor):
    """Attempt directories as the local executor writes them, minus the GPU indices: inside
    the allocation the job sees the GPUs Slurm gave it. Over SSH (`remote` set) each is
    written here under `root`, then copied to the cluster's workdir (spec.json last) and
    read there through `access`."""

    def __init__(self, root: Path, cfg: SlurmConfig, grace_s: float,
                 access: ClusterAccess | None = None, remote: str | None = None) -> None:
        super().__init__(root, cpu_slots=1, gpus=[], python=cfg.python or (
            "python3" if remote else sys.executable), grace_s=grace_s)
        self.cfg = cfg
        self.access = access or slurm_access.LocalAccess()
        self.remote = remote  # the workspace's folder on the cluster; None: `root` is it

    def cluster_dir(self, search_id: int, job_id: int) -> str:
        if self.remote is None:
            return str(self.job_dir(search_id, job_id))
        return posixpath.join(self.remote, "jobs", f"search-{search_id}", f"job-{job_id}")

    def write_attempt(self, spec: LaunchSpec) -> Path | None:
        if self.remote is None:
            return super().write_attempt(spec)
        there = ClusterPath(self.access, self.cluster_dir(spec.search_id, spec.job_id))
        if (there / "started").exists():
            return None  # its runner started: adopt it
        if (there / "spec.json").exists():
            return Path(str(there))  # copied whole before (spec.json goes last)
        staged = super().write_attempt(spec)
        assert staged is not None  # (nothing starts in the staging folder)
        self.access.put_tree(staged, str(there), last="spec.json")
        shutil.rmtree(staged, ignore_errors=True)
        return Path(str(there))

    def _spec(self, spec: LaunchSpec, job_dir: Path) -> dict[str, object]:
        body = super()._spec(spec, job_dir)
        env = dict(body["env"])  # type: ignore[call-overload]
        env.pop("CUDA_VISIBLE_DEVICES", None)
        per = self.cfg.cpus_per_gpu or 1
        env["OMP_NUM_THREADS"] = str(per * max(1, spec.profile.gpus))
        if self.remote is not None:  # the paths the job sees are the cluster's
            there = self.cluster_dir(spec.search_id, spec.job_id)
            env = {k: v.replace(str(job_dir), there) for k, v in env.items() if k != "PATH"}
            env["IDEAFORGE_DATA_DIR"] = posixpath.join(self.remote, "data")
            body["cwd"] = posixpath.join(there, "env")
        body["env"] = env
        return body

    def read_output(self, job_dir: str, metrics_offset: int) -> Output:
        if self.remote is None:
            return super().read_output(job_dir, metrics_offset)
        data = self.access.read_bytes(posixpath.join(job_dir, "metrics.jsonl"), metrics_offset)
        points, new_offset, bad = parse_metric_bytes(data, metrics_offset)
        tail = self.access.read_bytes(posixpath.join(job_dir, "output.log"),
                                      tail=LOG_TAIL_BYTES).decode("utf-8", "replace")
        return Output(points, new_offset, tail, bad)

    def prepare(self, env: Environment, profile: Profile) -> None:
        """The profile's setup, once per environment version, where the jobs will read its
        data: here, or over SSH in a copy of the environment on the cluster."""
        if self.remote is None or not profile.setup:
            return super().prepare(env, profile)
        tag = f"{env.name}-{env.version()}-{profile.name}"
        marker = ClusterPath(self.access, posixpath.join(self.remote, "setup", tag))
        if marker.exists():
            return None
        src = posixpath.join(self.remote, "setup", f"{tag}.src")
        self.access.put_tree(env.root, src)
        data = posixpath.join(self.remote, "data")
        self.access.makedirs(data)
        log.info("running setup of %s/%s on the cluster: %s", env.name, profile.name,
                 profile.setup)
        q = shlex.quote
        line = (f"cd {q(src)} && export IDEAFORGE_DATA_DIR={q(data)} "
                f"PATH={q(posixpath.dirname(self.python) or '/usr/bin')}:\"$PATH\" "
                f"&& {profile.setup}")
        self.access.run(["bash", "-c", line], timeout=3600)
        marker.write_text(json.dumps({"time": time.time(), "command": profile.setup}))
        return None
