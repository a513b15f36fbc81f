"""Plain frozen data that crosses the boundary out of the store (sessions never leak)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class View:
    @classmethod
    def of(cls, row: Any, **extra: Any):
        names = {f.name for f in fields(cls)}
        data = {n: getattr(row, n) for n in names if n not in extra and hasattr(row, n)}
        data.update(extra)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchView(View):
    id: int
    name: str
    env_name: str
    env_path: str
    env_version: str
    profile: str
    model: str
    coder_model: str | None
    api_base: str | None
    epochs: int
    ideas_per_epoch: int
    auto: bool
    review_diffs: bool
    advance_at: float
    max_cost_usd: float | None
    max_attempts: int
    metric_name: str
    goal: str
    baseline: float | None
    status: str
    epoch: int
    phase: str
    message: str | None
    config_json: str
    engine_pid: int | None
    engine_host: str | None
    engine_heartbeat: float | None
    created_at: float
    evaluator: str | None = None
    max_gpu_hours: float | None = None
    confirm: str = "off"
    baseline_runs: int = 1
    fix_attempts: int = 0

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json or "{}")


@dataclass(frozen=True)
class IdeaView(View):
    id: int
    search_id: int
    epoch: int
    origin: str
    text: str
    title: str
    status: str
    score: float | None
    reason: str | None
    quarantine: str | None
    catalog_stem: str | None
    edited_from: int | None
    diff: str | None
    parents: tuple[int, ...] = ()
    attempts: int = 0
    runs: int = 0
    score_se: float | None = None
    confirmation: str | None = None
    twin_of: int | None = None
    note: str | None = None  # the researcher's own (`ideaforge note`, N): never sent to models


@dataclass(frozen=True)
class AttemptView(View):
    id: int
    idea_id: int
    number: int
    model: str
    answer: str
    diff: str | None
    outcome: str
    error: str | None
    repairs: str
    created_at: float
    kind: str = "implement"
    job_id: int | None = None


@dataclass(frozen=True)
class JobView(View):
    id: int
    search_id: int
    idea_id: int
    attempt: int
    executor: str
    host: str
    profile: str
    gpus_wanted: int
    gpus: str
    state: str
    job_dir: str | None
    pid: int | None
    exit_code: int | None
    reason: str | None
    log_tail: str
    metrics_offset: int
    log_offset: int
    queued_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    evaluator: str | None = None
    flags: str = ""
    run: int = 1
    seed: int | None = None
    score: float | None = None
    kind: str = "run"
    external_id: str | None = None  # a scheduler's word (Slurm): job id, state, reason, node
    external_state: str | None = None
    external_reason: str | None = None
    node: str | None = None


@dataclass(frozen=True)
class MetricView(View):
    job_id: int
    name: str
    value: float
    step: int | None
    time_s: float | None


@dataclass(frozen=True)
class DecisionView(View):
    id: int
    search_id: int
    idea_id: int | None
    action: str
    text: str | None
    source: str
    created_at: float
    diff: str | None = None  # attached to an add or edit by the researcher


@dataclass(frozen=True)
class EventView(View):
    id: int
    search_id: int | None
    idea_id: int | None
    job_id: int | None
    kind: str
    message: str
    created_at: float


@dataclass(frozen=True)
class MetricLine:
    """One metric line a job reported, as the metric protocol wrote it."""

    name: str
    step: int | None
    value: float
    time_s: float | None


@dataclass(frozen=True)
class JobRun:
    """A job of an idea and how long it ran (None while it has not started or ended)."""

    id: int
    idea_id: int
    run: int
    attempt: int
    kind: str
    state: str
    host: str
    score: float | None
    started_at: float | None
    finished_at: float | None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    def to_dict(self) -> dict[str, object]:
        return {"job_id": self.id, "run": self.run, "attempt": self.attempt, "kind": self.kind,
                "state": self.state, "host": self.host, "score": self.score,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "seconds": self.seconds}
