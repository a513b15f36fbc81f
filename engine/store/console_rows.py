"""The plain rows the console's queries return (`engine.store.console_queries`): frozen data,
no session; split from the queries so that each module stays readable."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.store import verification
from engine.store.verification import Verification
from engine.store.views import AttemptView, IdeaView, JobView, SearchView


@dataclass(frozen=True)
class Ranked:
    """An idea in the running for "best": its mean score over `runs` scored runs, the mean's
    standard error (None under two runs) and its confirmation (None, or a verdict)."""

    id: int
    score: float
    score_se: float | None
    runs: int
    confirmation: str | None


@dataclass(frozen=True)
class SearchSummary:
    search: SearchView
    # The best score the search may call best: with confirmation on (search.confirm != "off")
    # only a confirmed idea's; None while none is confirmed.
    best: float | None
    cost_usd: float
    gpu_hours: float
    ideas: dict[str, int]
    active_jobs: int
    pending_decisions: int
    best_idea: Ranked | None = None  # the idea `best` is the score of
    # With confirmation on: the idea that scores better than `best_idea` (or is first while none
    # is confirmed) but is not confirmed yet (unconfirmed, or not a candidate); never a
    # refuted one. None when the best is also the leader, or with confirmation off.
    leading: Ranked | None = None

    @property
    def confirming(self) -> bool:
        return self.search.confirm != "off"


@dataclass(frozen=True)
class IdeaBrief:
    id: int
    epoch: int
    origin: str
    status: str
    score: float | None
    title: str
    quarantine: str | None
    children: int = 0
    kind: str = ""  # the lineage link that led here (exploit | edit | combine | twin), if known
    runs: int = 0  # scored runs; `score` is their mean
    score_se: float | None = None
    confirmation: str | None = None  # None | unconfirmed | confirmed | refuted


@dataclass(frozen=True)
class IdeaDetail:
    idea: IdeaView
    parents: tuple[IdeaBrief, ...]
    children: tuple[IdeaBrief, ...]
    edited_from: IdeaView | None
    attempts: tuple[AttemptView, ...]
    jobs: tuple[JobView, ...]
    pending: tuple[str, ...]
    metric_names: tuple[str, ...] = ()
    verification: Verification = verification.UNKNOWN
    gpu_hours: float = 0.0  # of all its jobs, running ones up to now
    # Near duplicates (issue 13): the earlier idea this one nearly repeats, and the later
    # ideas that nearly repeat this one; kind "twin".
    twin: IdeaBrief | None = None
    twins: tuple[IdeaBrief, ...] = ()
    baseline: IdeaBrief | None = None  # the search's baseline idea: its mean, error and runs


@dataclass(frozen=True)
class JobRow:
    job: JobView
    idea_title: str
    search_name: str


@dataclass(frozen=True)
class HostRow:
    host: str
    leases: dict[int, int] = field(default_factory=dict)  # gpu index → job id
    running: int = 0
    queued: int = 0
    last_heartbeat: float | None = None
    # From the SSH fleet's inventory; None / () where the engine never polled the host (the
    # local executor, or a database from before the inventory existed).
    gpus: tuple[int, ...] | None = None  # usable GPUs
    foreign: tuple[int, ...] = ()  # usable GPUs busy with processes ideaforge did not start
    gpu_model: str | None = None  # e.g. "NVIDIA H100 80GB HBM3 (80 GiB)"; mixed: "; "-joined
    reachable: bool | None = None
    error: str | None = None  # why it does not answer, or why its GPUs could not be read
    seen_at: float | None = None  # when the engine last heard from it
    quarantined_until: float | None = None
    quarantine_error: str | None = None

    @property
    def free(self) -> tuple[int, ...]:
        """GPUs neither leased nor busy with foreign processes."""
        return tuple(g for g in self.gpus or () if g not in self.leases and
                     g not in self.foreign)
