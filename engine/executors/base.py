"""The executor interface and what every backend shares: reading an attempt directory.

A backend places jobs on GPUs/CPU slots, launches each exactly once into its own attempt
directory, and reports what that directory says. The directory layout is written by
`engine/executors/runner.py`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.environments import Environment, Profile

LOG_TAIL_BYTES = 4000

#: Credentials a training job may legitimately use (W&B logging, Hugging Face downloads).
JOB_SECRETS_ALLOWED = frozenset({"WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})
_SECRET_MARKERS = ("API_KEY", "SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY", "PRIVATE_KEY")


def job_environment(base: dict[str, str]) -> dict[str, str]:
    """The environment a job starts with: model-provider keys and other secrets removed.

    Jobs run code a model wrote; they have no business holding the researcher's API keys.
    """
    return {k: v for k, v in base.items()
            if k in JOB_SECRETS_ALLOWED or not any(m in k.upper() for m in _SECRET_MARKERS)}


@dataclass(frozen=True)
class LaunchSpec:
    job_id: int
    search_id: int
    idea_id: int
    env: Environment
    profile: Profile
    diff: str | None
    gpus: tuple[int, ...]
    workspace_id: str = ""  # the workspace's own identity (Store.workspace_id)
    queued_at: float = 0.0  # when the job row was made: tells apart copies of one workspace
    secret: str = ""  # signs the runner's `exit` record (Store.job_secret); never logged
    eval_seed: int | None = None  # the evaluation stage's IDEAFORGE_EVAL_SEED (Store.eval_seed)
    seed: int | None = None  # the training's IDEAFORGE_SEED: one per run of an idea

    def seed_env(self) -> dict[str, str]:
        """IDEAFORGE_SEED for the job's environment, when it has one."""
        return {} if self.seed is None else {"IDEAFORGE_SEED": str(self.seed)}


@dataclass(frozen=True)
class JobStatus:
    state: str  # starting | pending (in Slurm's queue) | running | finished | lost
    exit_code: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    heartbeat_at: float | None = None
    pid: int | None = None
    orphans: int = 0  # lost only: processes the job left that still run (they hold its GPUs)
    record: dict[str, Any] | None = None  # finished: the runner's `exit` record as written
    note: str | None = None  # Slurm: "pending (Resources)", "running on node7", its job id
    failure: str | None = None  # finished: why the idea failed, told by the scheduler (Slurm's OOM)
    # a scheduler's word on the job (Slurm), stored for the jobs screen: its job id, state
    # (PENDING, RUNNING, COMPLETED…), why it waits (Resources, Priority…) and its node
    external_id: str | None = None
    external_state: str | None = None
    external_reason: str | None = None
    node: str | None = None

    def external(self) -> dict[str, str | None]:
        """The scheduler's fields to store (none without a job id; a state or node once known
        stays until a new one is told)."""
        if self.external_id is None:
            return {}
        out = {"external_id": self.external_id, "external_reason": self.external_reason}
        return out | {k: v for k, v in (("external_state", self.external_state),
                                        ("node", self.node)) if v}


@dataclass(frozen=True)
class Output:
    metric_lines: list[dict[str, Any]]
    metrics_offset: int
    log_tail: str
    bad_lines: int = 0


class Executor(Protocol):
    name: str
    host: str

    def gpu_indices(self) -> list[int]: ...
    def cpu_slots(self) -> int: ...
    def prepare(self, env: Environment, profile: Profile) -> None: ...
    def launch(self, spec: LaunchSpec) -> str: ...
    def poll(self, job_dir: str) -> JobStatus: ...
    def read_output(self, job_dir: str, metrics_offset: int) -> Output: ...
    def cancel(self, job_dir: str) -> str | None: ...


def parse_metric_bytes(data: bytes, offset: int) -> tuple[list[dict[str, Any]], int, int]:
    """Complete JSON lines from `data` (read at `offset`); a partial last line waits.

    Returns (points, new_offset, count of lines that were not valid metric objects).
    """
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset, 0
    points: list[dict[str, Any]] = []
    bad = 0
    for raw in data[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict) or "name" not in obj or "value" not in obj:
                raise ValueError("not a metric object")
            float(obj["value"])
        except (ValueError, TypeError):
            bad += 1
            continue
        points.append(obj)
    return points, offset + end + 1, bad


def read_status_files(job_dir: Path, alive: bool | None) -> JobStatus:
    """Interpret `exit`, `pid` and `hb` of a local attempt directory."""
    exit_path = job_dir / "exit"
    if exit_path.exists():
        info = json.loads(exit_path.read_text())
        return JobStatus("finished", exit_code=info.get("code"),
                         timed_out=bool(info.get("timed_out")),
                         cancelled=bool(info.get("cancelled")), record=info)
    hb = job_dir / "hb"
    beat = float(hb.read_text() or 0) if hb.exists() else None
    pid_path = job_dir / "pid"
    if not pid_path.exists():
        return JobStatus("starting", heartbeat_at=beat)
    pid = json.loads(pid_path.read_text()).get("pid")
    if alive is False:
        # The runner may have written `exit` between our two reads.
        if exit_path.exists():
            return read_status_files(job_dir, None)
        return JobStatus("lost", heartbeat_at=beat, pid=pid)
    return JobStatus("running", heartbeat_at=beat, pid=pid)


def launch_key(spec: LaunchSpec, version: str) -> str:
    """What an attempt directory is for: written there first, checked before it is adopted,
    so that a job never takes another's directory (and its results) for its own."""
    what = [spec.workspace_id, spec.search_id, spec.job_id, spec.queued_at, spec.idea_id,
            spec.profile.command, spec.diff or "", version]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def evaluator_payload(env: Environment) -> tuple[dict[str, str], dict[str, str]]:
    """The evaluator's files as the runner gets them: ({path: SHA-256}, {path: base64 bytes}).

    They travel inside the job's spec, which the runner reads before training starts: no
    copy on disk that the job could change is ever used (environments/CONTRACT.md)."""
    if env.evaluation is None:
        return {}, {}
    files = env.evaluator_files()
    return files, {rel: base64.b64encode((env.root / rel).read_bytes()).decode()
                   for rel in files}


def evaluate_spec(env: Environment, profile: Profile,
                  payload: tuple[dict[str, str], dict[str, str]],
                  seed: int | None = None) -> dict[str, Any] | None:
    """What the runner needs for the evaluation stage (None: a legacy environment). `seed`
    is removed from spec.json by the runner before training starts, like the signing key."""
    ev = env.evaluation
    if ev is None:
        return None
    files, content = payload
    return {"command": ev.command, "files": files, "content": content,
            "timeout": profile.evaluate_timeout or ev.timeout, "held_out": list(ev.held_out),
            "time_limit": profile.time_limit, "time_slack": profile.time_slack, "seed": seed}


def job_time_limit(env: Environment, profile: Profile) -> float:
    """The longest a job may run: training, then its evaluation stage."""
    if env.evaluation is None:
        return profile.timeout
    return profile.timeout + (profile.evaluate_timeout or env.evaluation.timeout)
