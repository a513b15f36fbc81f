"""The local executor: runs jobs on this machine (its GPUs, or CPU slots for `gpus = 0`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from engine.environments import Environment, Profile
from engine.executors import attempt_dir, runner
from engine.executors.base import (
    LOG_TAIL_BYTES,
    JobStatus,
    LaunchSpec,
    Output,
    evaluate_spec,
    evaluator_payload,
    job_environment,
    launch_key,
    parse_metric_bytes,
    read_status_files,
)
from engine.patching import apply_to_copy

log = logging.getLogger(__name__)

#: Where prepared data lives on this machine unless IDEAFORGE_DATA_DIR says otherwise.
DEFAULT_DATA_DIR = Path.home() / ".cache" / "ideaforge" / "data"


def detect_gpus() -> list[int]:
    """GPU indices from nvidia-smi; none when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [int(x) for x in out.split() if x.strip().isdigit()]


class LocalExecutor:
    name = "local"
    host = "local"

    def __init__(self, workspace: Path, *, cpu_slots: int | None = None,
                 gpus: list[int] | None = None, python: str | None = None,
                 grace_s: float = 10.0) -> None:
        self.root = Path(workspace) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        cores = os.cpu_count() or 1
        self._cpu_slots = cpu_slots or max(1, min(cores, 4))
        self._threads = max(1, cores // self._cpu_slots)
        self._gpus = detect_gpus() if gpus is None else list(gpus)
        self.python = python or sys.executable
        self.grace_s = grace_s
        self._versions: dict[int, str] = {}
        self._evaluators: dict[int, tuple[dict[str, str], dict[str, str]]] = {}

    def gpu_indices(self) -> list[int]:
        return list(self._gpus)

    def cpu_slots(self) -> int:
        return self._cpu_slots

    def prepare(self, env: Environment, profile: Profile) -> None:
        """Run the profile's `setup` once per environment version on this machine."""
        if not profile.setup:
            return
        marker = Path(self.root).parent / "setup" / f"{env.name}-{env.version()}-{profile.name}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        log.info("running setup of %s/%s: %s", env.name, profile.name, profile.setup)
        proc = subprocess.run(["bash", "-c", profile.setup], cwd=env.root, env=self._env(),
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-800:]
            raise RuntimeError(f"setup of {env.name}/{profile.name} failed "
                               f"(exit {proc.returncode}): {tail}")
        marker.write_text(json.dumps({"time": time.time(), "command": profile.setup}))

    def job_dir(self, search_id: int, job_id: int) -> Path:
        return self.root / f"search-{search_id}" / f"job-{job_id}"

    def launch(self, spec: LaunchSpec) -> str:
        """Prepare the attempt directory and start the runner detached, exactly once.

        The runner creates `started` exclusively, so launching again (an engine that was
        killed mid-launch and restarted) either adopts the running job or finishes the launch
        that never happened — never a second run.
        """
        job_dir = self.write_attempt(spec)
        if job_dir is None:
            return str(self.job_dir(spec.search_id, spec.job_id))
        with open(job_dir / "runner.err", "ab") as err:
            subprocess.Popen([self.python, runner.__file__, str(job_dir)], cwd=job_dir,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                             start_new_session=True, env=self._env())
        return str(job_dir)

    def write_attempt(self, spec: LaunchSpec) -> Path | None:
        """The attempt directory, ready for its runner; None when a runner started already
        (adopt it). Shared with the Slurm executor, which starts the runner through sbatch."""
        job_dir = self.job_dir(spec.search_id, spec.job_id)
        # The version is hashed once per environment object (the engine keeps one for its
        # life), not once per job: a large repository would cost a full read per launch.
        version = self._versions.get(id(spec.env))
        if version is None:
            version = self._versions[id(spec.env)] = spec.env.version()
        key = launch_key(spec, version)
        mine = {"key": key, "spec": {"command": spec.profile.command, "job_id": spec.job_id,
                                     "idea_id": spec.idea_id}}
        other = attempt_dir.other_job(str(job_dir), mine) if job_dir.exists() else None
        if other:
            # The database was made again beside old job folders: moved aside, never adopted.
            aside = job_dir.with_name(f"{job_dir.name}.other-{int(time.time())}")
            job_dir.rename(aside)
            log.warning("job %d: %s; moved it to %s", spec.job_id, other, aside.name)
        job_dir.mkdir(parents=True, exist_ok=True)
        runner._write(str(job_dir / "launch_key"), key)
        if (job_dir / "started").exists():
            log.info("job %d: already started, adopting it", spec.job_id)
            return None
        if not (job_dir / "spec.json").exists():
            # spec.json is written last: without it the copy may be partial, so redo it.
            work = job_dir / "env"
            shutil.rmtree(work, ignore_errors=True)
            apply_to_copy(spec.env.root, spec.diff, work)
            (job_dir / "metrics.jsonl").touch()
            body = self._spec(spec, job_dir)
            if spec.env.evaluation is not None:
                body["evaluate"] = evaluate_spec(spec.env, spec.profile, self._payload(spec),
                                                 spec.eval_seed)
            runner._write(str(job_dir / "spec.json"), json.dumps(body, indent=1))
        return job_dir

    def _payload(self, spec: LaunchSpec) -> tuple[dict[str, str], dict[str, str]]:
        payload = self._evaluators.get(id(spec.env))
        if payload is None:
            payload = self._evaluators[id(spec.env)] = evaluator_payload(spec.env)
        return payload

    def _spec(self, spec: LaunchSpec, job_dir: Path) -> dict[str, object]:
        env = {
            "IDEAFORGE_METRICS": str(job_dir / "metrics.jsonl"),
            "IDEAFORGE_JOB_DIR": str(job_dir),
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, spec.gpus)),
            "OMP_NUM_THREADS": str(self._threads if not spec.gpus else 4),
            "PATH": self._path(),
            "PYTHONUNBUFFERED": "1",
            "WANDB_DIR": str(job_dir),
            "WANDB_CACHE_DIR": str(job_dir / ".wandb-cache"),
            "IDEAFORGE_PROFILE": spec.profile.name,
            "IDEAFORGE_DATA_DIR": os.environ.get("IDEAFORGE_DATA_DIR") or str(DEFAULT_DATA_DIR),
            **spec.seed_env(),
        }
        return {"command": spec.profile.command, "cwd": str(job_dir / "env"), "env": env,
                "timeout": spec.profile.timeout, "grace": self.grace_s, "heartbeat": 2,
                "job_id": spec.job_id, "idea_id": spec.idea_id, "secret": spec.secret}

    def poll(self, job_dir: str) -> JobStatus:
        path = Path(job_dir)
        alive: bool | None = None
        info: dict[str, object] = {}
        pid_path = path / "pid"
        if pid_path.exists() and not (path / "exit").exists():
            info = json.loads(pid_path.read_text())
            alive = (runner.boot_id() == info.get("boot_id")
                     and runner.proc_start_time(int(info["pid"])) == info.get("start"))
        status = read_status_files(path, alive)
        if status.state == "lost":
            status = replace(status, orphans=len(attempt_dir.job_processes(job_dir, info)))
        return status

    def read_output(self, job_dir: str, metrics_offset: int) -> Output:
        path = Path(job_dir)
        data = b""
        metrics = path / "metrics.jsonl"
        if metrics.exists():
            with open(metrics, "rb") as fh:
                fh.seek(metrics_offset)
                data = fh.read()
        points, new_offset, bad = parse_metric_bytes(data, metrics_offset)
        tail = ""
        out = path / "output.log"
        if out.exists():
            with open(out, "rb") as fh:
                fh.seek(max(0, out.stat().st_size - LOG_TAIL_BYTES))
                tail = fh.read().decode("utf-8", "replace")
        return Output(points, new_offset, tail, bad)

    def cancel(self, job_dir: str) -> str:
        """The runner stops the job; if the runner is gone, what the job left is killed here.
        What happened: requested | killed_orphans | finished (already) | missing."""
        return str(attempt_dir.cancel({"dir": job_dir})["result"])

    def _path(self) -> str:
        return os.pathsep.join([str(Path(self.python).parent), os.environ.get("PATH", "")])

    def _env(self) -> dict[str, str]:
        env = job_environment(dict(os.environ))
        env["PATH"] = self._path()
        # Always set, so that the runner can give the training stage a view of it without
        # the held-out files (environments/CONTRACT.md).
        env.setdefault("IDEAFORGE_DATA_DIR", str(DEFAULT_DATA_DIR))
        return env
