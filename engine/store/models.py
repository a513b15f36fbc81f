"""SQLModel tables: the data model of ARCHITECTURE.md.

Times are UNIX seconds (float, UTC). Enumerated states are plain strings; the allowed values
and transitions live in `engine.store.states`.
"""

from __future__ import annotations

import time

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def now() -> float:
    return time.time()


class Meta(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class Search(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    env_name: str
    env_path: str
    env_version: str
    profile: str
    model: str
    coder_model: str | None = None
    api_base: str | None = None
    epochs: int
    ideas_per_epoch: int
    auto: bool = False
    review_diffs: bool = False
    advance_at: float = 1.0
    max_cost_usd: float | None = None
    max_gpu_hours: float | None = None  # no job of the search starts once this is spent
    max_attempts: int = 10
    confirm: str = "off"  # off | top-K (e.g. top-4) | all: which ideas get repeat runs
    fix_attempts: int = 0  # crash repairs the coder may make per idea (issue 14)
    baseline_runs: int = 1  # how often the unmodified code is measured at the start
    metric_name: str
    goal: str
    baseline: float | None = None  # from the environment/profile, or measured by the baseline job
    evaluator: str | None = None  # SHA-256 of the evaluator that ranks this search's results
    status: str = "created"  # created | running | stopped | finished | failed | imported
    epoch: int = 0  # the epoch being proposed/reviewed/implemented (jobs of earlier ones may run)
    phase: str = "propose"  # see engine.store.states.EPOCH_PHASES
    message: str | None = None  # why it stopped or failed, one line
    config_json: str = "{}"  # everything else the search was started with (no secrets)
    engine_pid: int | None = None
    engine_host: str | None = None
    engine_heartbeat: float | None = None
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)


class Batch(SQLModel, table=True):
    """One planned proposal call of an epoch; done once its ideas are stored."""

    __table_args__ = (UniqueConstraint("search_id", "epoch", "number"),)
    id: int | None = Field(default=None, primary_key=True)
    search_id: int = Field(foreign_key="search.id", index=True)
    epoch: int
    number: int
    kind: str  # seed | exploit | explore
    size: int
    status: str = "planned"  # planned | done | failed
    error: str | None = None


class Idea(SQLModel, table=True):
    # The ideas board pages through one search's epoch in id order.
    __table_args__ = (Index("ix_idea_search_epoch_id", "search_id", "epoch", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    search_id: int = Field(foreign_key="search.id", index=True)
    epoch: int = Field(index=True)
    origin: str  # baseline | seed | exploit | explore | human | catalog
    text: str
    title: str = ""
    status: str = Field(default="proposed", index=True)
    score: float | None = None
    reason: str | None = None  # failure reason or the researcher's reject reason
    quarantine: str | None = None  # None | pending | accepted | rejected
    batch_id: int | None = Field(default=None, foreign_key="batch.id")
    catalog_stem: str | None = None
    edited_from: int | None = Field(default=None, foreign_key="idea.id")
    diff: str | None = None  # the accepted diff (normalised unified diff)
    runs: int = 0  # scored runs (the first and its repeats); `score` is their mean
    score_se: float | None = None  # standard error of `score` (two runs or more)
    confirmation: str | None = None  # None | unconfirmed | confirmed | refuted
    twin_of: int | None = None  # an earlier idea of the search whose text it nearly repeats
    note: str | None = None  # the researcher's note (`ideaforge note`); never shown to models
    created_at: float = Field(default_factory=now)
    updated_at: float = Field(default_factory=now)


class IdeaParent(SQLModel, table=True):
    __tablename__ = "idea_parent"
    child_id: int = Field(foreign_key="idea.id", primary_key=True)
    parent_id: int = Field(foreign_key="idea.id", primary_key=True, index=True)
    kind: str = "exploit"  # exploit | edit | combine


class PatchAttempt(SQLModel, table=True):
    __tablename__ = "patch_attempt"
    __table_args__ = (UniqueConstraint("idea_id", "number"),)
    id: int | None = Field(default=None, primary_key=True)
    idea_id: int = Field(foreign_key="idea.id", index=True)
    number: int
    model: str
    answer: str = ""
    diff: str | None = None
    outcome: str  # ok | failed
    error: str | None = None
    repairs: str = ""  # newline-separated mechanical repairs
    kind: str = "implement"  # implement | repair (an answer to a crash: `job_id`'s log)
    job_id: int | None = None  # repair: the crashed job whose traceback the coder was shown
    created_at: float = Field(default_factory=now)


class Job(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    search_id: int = Field(foreign_key="search.id", index=True)
    idea_id: int = Field(foreign_key="idea.id", index=True)
    attempt: int = 1
    kind: str = "run"  # run | preflight (the patch checked on a cheap profile: never ranked)
    run: int = 1  # which run of the idea: 1 is the first, 2… are repeats (a retry keeps it)
    seed: int | None = None  # IDEAFORGE_SEED: the same for a retry, new for each run
    score: float | None = None  # this run's score, when it has one
    executor: str = "local"
    host: str = "local"
    profile: str
    gpus_wanted: int = 0
    gpus: str = ""  # leased GPU indices, comma separated
    state: str = Field(default="queued", index=True)
    job_dir: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    reason: str | None = None  # crashed | timed_out | no_metric | void | lost | cancelled
    log_tail: str = ""
    metrics_offset: int = 0
    log_offset: int = 0
    evaluator: str | None = None  # the evaluator that produced its score (None: unverified)
    flags: str = ""  # one line each: what was ignored or is doubtful about its result
    queued_at: float = Field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    # a scheduler's word on the job (Slurm): its job id, state, pending reason, node
    external_id: str | None = None
    external_state: str | None = None
    external_reason: str | None = None
    node: str | None = None


class GpuLease(SQLModel, table=True):
    """A whole GPU held by a job; the unique key makes double booking impossible."""

    __tablename__ = "gpu_lease"
    host: str = Field(primary_key=True)
    gpu: int = Field(primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    taken_at: float = Field(default_factory=now)


class GpuLeaseLog(SQLModel, table=True):
    """A lease that was given back: who held which GPU, from when until when, and why it
    ended, so a double booking can be audited after the fact."""

    __tablename__ = "gpu_lease_log"
    id: int | None = Field(default=None, primary_key=True)
    host: str = Field(index=True)
    gpu: int
    job_id: int = Field(foreign_key="job.id", index=True)
    taken_at: float
    released_at: float = Field(default_factory=now)
    why: str  # the job's final state: finished | failed | cancelled | retried | released


class MetricPoint(SQLModel, table=True):
    __tablename__ = "metric"
    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    name: str
    value: float
    step: int | None = None
    time_s: float | None = None


class LlmCall(SQLModel, table=True):
    __tablename__ = "llm_call"
    id: int | None = Field(default=None, primary_key=True)
    search_id: int = Field(foreign_key="search.id", index=True)
    role: str
    purpose: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float = 0.0
    error: str | None = None
    attempt: int = 1
    created_at: float = Field(default_factory=now)


class Decision(SQLModel, table=True):
    """A researcher's decision, written by the CLI or console, consumed by the engine."""

    id: int | None = Field(default=None, primary_key=True)
    search_id: int = Field(foreign_key="search.id", index=True)
    idea_id: int | None = Field(default=None, foreign_key="idea.id")
    action: str  # approve | reject | edit | add | go | stop | accept | discard
    text: str | None = None  # edited/added idea text, or the reject reason
    diff: str | None = None  # a diff the researcher attached to an added or edited idea
    source: str = "cli"
    created_at: float = Field(default_factory=now)
    consumed_at: float | None = None
    outcome: str | None = None  # what the engine did with it


class Event(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    search_id: int | None = Field(default=None, foreign_key="search.id", index=True)
    idea_id: int | None = None
    job_id: int | None = None
    kind: str
    message: str
    created_at: float = Field(default_factory=now)
