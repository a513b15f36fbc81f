"""Queries and state changes for running jobs on several hosts (the SSH executor's side).

Same pattern as `engine.store.ops`: one transaction per call, compare-and-set on the expected
old state plus an event row, plain frozen data out. The `host_state` table (failure counts and
quarantine) and the `host_inventory` table (each host's GPUs as the fleet last saw them) are
created on first use, so databases written before them keep working without a schema bump.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import inspect, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from engine.store.db import Store
from engine.store.job_ops import give_back_leases, new_job_id
from engine.store.models import Event, GpuLease, Idea, Job, Search, now
from engine.store.views import JobView, View

ACTIVE = ("launching", "running", "unreachable")


class HostState(SQLModel, table=True):
    """A host's run of infrastructure failures, and its quarantine (None: not quarantined)."""

    __tablename__ = "host_state"
    name: str = Field(primary_key=True)
    failures: int = 0  # consecutive: launch errors, lost jobs, failed setups, outages
    last_error: str | None = None
    quarantined_until: float | None = None
    updated_at: float = Field(default_factory=now)


class HostInventory(SQLModel, table=True):
    """What the SSH fleet last learnt of a host: its usable GPUs, and whether it answers.

    Written when it changes (and at most every ~30 s to move `seen_at`), never once per poll.
    """

    __tablename__ = "host_inventory"
    name: str = Field(primary_key=True)
    gpus_json: str | None = None  # usable GPU indices; None: never learnt (not reached yet)
    gpu_info_json: str = "[]"  # [{"index", "name", "memory_mib"}] of the usable GPUs
    foreign_json: str = "[]"  # usable GPUs busy with processes ideaforge did not start
    reachable: bool = False
    error: str | None = None  # why it does not answer, or why its GPUs could not be read
    seen_at: float | None = None  # when it last answered
    updated_at: float = Field(default_factory=now)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str | None
    memory_mib: float | None


@dataclass(frozen=True)
class HostInventoryView:
    name: str
    gpus: tuple[int, ...] | None
    gpu_info: tuple[GpuInfo, ...]
    foreign: tuple[int, ...]
    reachable: bool
    error: str | None
    seen_at: float | None
    updated_at: float

    @classmethod
    def of(cls, row: HostInventory) -> HostInventoryView:
        return cls(name=row.name,
                   gpus=None if row.gpus_json is None else tuple(json.loads(row.gpus_json)),
                   gpu_info=tuple(GpuInfo(**g) for g in json.loads(row.gpu_info_json or "[]")),
                   foreign=tuple(json.loads(row.foreign_json or "[]")),
                   reachable=bool(row.reachable), error=row.error, seen_at=row.seen_at,
                   updated_at=row.updated_at)


@dataclass(frozen=True)
class HostStateView(View):
    name: str
    failures: int
    last_error: str | None
    quarantined_until: float | None
    updated_at: float

    def quarantined(self, at: float | None = None) -> bool:
        return self.quarantined_until is not None and self.quarantined_until > (at or time.time())


@dataclass(frozen=True)
class QueuedJob:
    job: JobView
    env_path: str  # of its search: where its profile's time limit is read
    mine: bool


_tables_ready: set[str] = set()
_tables_lock = threading.Lock()  # the fleet's host workers may all be first at once


def _ensure_table(store: Store, table: type[SQLModel] = HostState) -> None:
    name = str(table.__tablename__)
    key = f"{store.path}:{name}"
    if key in _tables_ready:
        return
    with _tables_lock:
        if name not in inspect(store.engine).get_table_names():
            table.__table__.create(store.engine, checkfirst=True)  # type: ignore[attr-defined]
        _tables_ready.add(key)


def _event(s: Session, message: str, job: Job | None = None, kind: str = "job") -> None:
    s.add(Event(search_id=job.search_id if job else None, idea_id=job.idea_id if job else None,
                job_id=job.id if job else None, kind=kind, message=message))


# ---------------------------------------------------------------------------------------------
# placement


def active_jobs(store: Store, executor: str) -> list[JobView]:
    """Jobs holding GPUs or CPU slots on this executor's hosts, of every search."""
    with store.session() as s:
        q = select(Job).where(Job.executor == executor, col(Job.state).in_(ACTIVE))
        return [JobView.of(r) for r in s.exec(q.order_by(Job.id)).all()]


def leases(store: Store) -> dict[str, dict[int, int]]:
    """host → {gpu: job id} for every leased GPU."""
    out: dict[str, dict[int, int]] = {}
    with store.session() as s:
        for r in s.exec(select(GpuLease)).all():
            out.setdefault(r.host, {})[r.gpu] = r.job_id
    return out


#: How many queued jobs, oldest first, one placement round reads (every wide job, which the
#: scheduler puts first whatever its place, is read too): a queue of 10,000 jobs costs a tick
#: what a queue of this many does. The next rounds see the rest as the front drains.
QUEUE_WINDOW = 512


def queued_jobs(store: Store, executor: str, own_search: int, live_within_s: float = 30.0,
                window: int | None = None) -> list[QueuedJob]:
    """Queued jobs of this search, and of other searches whose engine is alive (their wide
    jobs' reservations must be respected here too); none when this search has none queued.
    Read from the index on (state, executor, queued_at, id): the oldest `window` of them and
    every wide one."""
    cutoff = time.time() - live_within_s
    window = window or QUEUE_WINDOW
    with store.session(write=False) as s:
        mine = s.exec(select(Job.id).where(Job.state == "queued", Job.executor == executor,
                                           Job.search_id == own_search).limit(1)).first()
        if mine is None:
            return []
        base = (select(Job, Search.env_path).join(Search, Search.id == Job.search_id)  # type: ignore[arg-type]
                .where(Job.state == "queued", Job.executor == executor)
                .where((Job.search_id == own_search) | (col(Search.engine_heartbeat) > cutoff))
                .order_by(Job.queued_at, Job.id))
        rows = list(s.exec(base.limit(window)).all())
        if len(rows) >= window:
            seen = {job.id for job, _ in rows}
            rows += [r for r in s.exec(base.where(Job.gpus_wanted > 1)).all()
                     if r[0].id not in seen]
            rows.sort(key=lambda r: (r[0].queued_at, r[0].id))
        return [QueuedJob(JobView.of(job), env_path, job.search_id == own_search)
                for job, env_path in rows]


def orphan_jobs(store: Store, executor: str, own_search: int, live_within_s: float = 30.0
                ) -> list[JobView]:
    """Active jobs on this executor of searches that no engine drives now (stopped, or their
    engine was killed): they hold GPUs and slots until someone reads how they ended."""
    cutoff = time.time() - live_within_s
    with store.session(write=False) as s:
        q = (select(Job).join(Search, Search.id == Job.search_id)  # type: ignore[arg-type]
             .where(Job.executor == executor, col(Job.state).in_(ACTIVE),
                    Job.search_id != own_search)
             .where(col(Search.engine_pid).is_(None)
                    | col(Search.engine_heartbeat).is_(None)
                    | (col(Search.engine_heartbeat) < cutoff))
             .order_by(Job.id))
        return [JobView.of(r) for r in s.exec(q).all()]


def claim_placement(store: Store, job_id: int, host: str, gpus: Sequence[int], job_dir: str,
                    lease: bool = True) -> bool:
    """Lease the GPUs and move the job queued → launching on `host`, all or nothing.
    `lease` False (Slurm places the job): `gpus` are only counted, nothing is leased."""
    try:
        with store.session() as s:
            for gpu in gpus if lease else ():
                s.add(GpuLease(host=host, gpu=gpu, job_id=job_id))
            s.flush()
            result = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == "queued")
                .values(state="launching", host=host, gpus=",".join(map(str, gpus)),
                        job_dir=job_dir, started_at=now()))
            if result.rowcount != 1:
                raise _Lost()
        # No event here: the "started" event names the host and GPUs once the launch is sure.
        return True
    except (IntegrityError, _Lost):
        return False


class _Lost(Exception):
    """The compare-and-set lost: roll the whole claim back."""


def set_job_state(store: Store, job_id: int, expect: str | Sequence[str], to: str,
                  message: str | None = None, **changes: object) -> bool:
    states = [expect] if isinstance(expect, str) else list(expect)
    with store.session() as s:
        result = s.execute(update(Job)
                           .where(Job.id == job_id, col(Job.state).in_(states))
                           .values(state=to, **changes))
        if result.rowcount != 1:
            return False
        if message:
            _event(s, message, s.get(Job, job_id))
        return True


def advance_log(store: Store, job_id: int, old_offset: int, new_offset: int, log_tail: str
                ) -> bool:
    """Record that the job's log was mirrored up to `new_offset` (exactly once)."""
    with store.session() as s:
        result = s.execute(update(Job)
                           .where(Job.id == job_id, Job.log_offset == old_offset)
                           .values(log_offset=new_offset, log_tail=log_tail))
        return result.rowcount == 1


def retry_job(store: Store, job_id: int, *, reason: str, log_tail: str, max_attempts: int,
              message: str) -> int | None:
    """Fail this attempt (kept, with its reason) and queue the next one, in one transaction.

    Returns the new job's id; None when the attempts are used up (the idea fails) or the job
    was no longer active.
    """
    with store.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        result = s.execute(update(Job)
                           .where(Job.id == job_id, col(Job.state).in_(ACTIVE))
                           .values(state="failed", reason=reason, log_tail=log_tail,
                                   finished_at=now()))
        if result.rowcount != 1:
            return None
        give_back_leases(s, job_id, "retried" if job.attempt < max_attempts else "failed")
        if job.attempt >= max_attempts:
            s.execute(update(Idea)
                      .where(Idea.id == job.idea_id, col(Idea.status).in_(["queued", "running"]))
                      .values(status="failed", reason=f"{reason} (after {job.attempt} "
                              "attempts)", updated_at=now()))
            _event(s, f"{message}; no attempts left", job)
            return None
        s.execute(update(Idea)
                  .where(Idea.id == job.idea_id, col(Idea.status).in_(["queued", "running"]))
                  .values(status="queued", updated_at=now()))
        new = Job(id=new_job_id(s), search_id=job.search_id, idea_id=job.idea_id, attempt=job.attempt + 1,
                  run=job.run, seed=job.seed, profile=job.profile, kind=job.kind,
                  gpus_wanted=job.gpus_wanted, executor=job.executor)
        s.add(new)
        s.flush()
        _event(s, f"{message}; retried as job {new.id} (attempt {new.attempt})", job)
        return new.id


# ---------------------------------------------------------------------------------------------
# host failures and quarantine


def host_states(store: Store) -> dict[str, HostStateView]:
    _ensure_table(store)
    with store.session() as s:
        return {r.name: HostStateView.of(r) for r in s.exec(select(HostState)).all()}


def record_host_failure(store: Store, host: str, error: str, *, threshold: int = 3,
                        quarantine_s: float = 1800.0, search_id: int | None = None) -> bool:
    """Count an infrastructure failure; True when this one puts the host in quarantine."""
    _ensure_table(store)
    with store.session() as s:
        row = s.get(HostState, host) or HostState(name=host)
        row.failures += 1
        row.last_error = error[:500]
        row.updated_at = now()
        quarantined = row.failures >= threshold and not (
            row.quarantined_until and row.quarantined_until > now())
        if quarantined:
            row.quarantined_until = now() + quarantine_s
            s.add(Event(search_id=search_id, kind="host",
                        message=f"host {host} quarantined for {quarantine_s / 60:.0f} min after "
                        f"{row.failures} failures in a row; last: {error[:200]}"))
        s.add(row)
        return quarantined


def record_host_success(store: Store, host: str) -> None:
    _ensure_table(store)
    with store.session() as s:
        row = s.get(HostState, host)
        if row is not None and (row.failures or row.quarantined_until):
            row.failures = 0
            row.quarantined_until = None
            row.updated_at = now()
            s.add(row)


def release_host(store: Store, host: str) -> bool:
    """End a host's quarantine by hand (`ideaforge hosts release`)."""
    _ensure_table(store)
    with store.session() as s:
        row = s.get(HostState, host)
        if row is None or row.quarantined_until is None:
            return False
        row.failures = 0
        row.quarantined_until = None
        row.updated_at = now()
        s.add(row)
        s.add(Event(kind="host", message=f"host {host} released from quarantine by hand"))
        return True


# ---------------------------------------------------------------------------------------------
# host inventory: every host the fleet polled, idle ones included (the console's hosts panel)


def record_inventory(store: Store, host: str, *, gpus: Sequence[int] | None,
                     gpu_info: Sequence[GpuInfo] = (), foreign: Sequence[int] = (),
                     reachable: bool, error: str | None = None, seen_at: float | None = None
                     ) -> None:
    """Replace what is known of `host` (one transaction; the caller writes only on change)."""
    _ensure_table(store, HostInventory)
    with store.session() as s:
        row = s.get(HostInventory, host) or HostInventory(name=host)
        row.gpus_json = None if gpus is None else json.dumps(sorted(gpus))
        row.gpu_info_json = json.dumps([{"index": g.index, "name": g.name,
                                         "memory_mib": g.memory_mib} for g in gpu_info])
        row.foreign_json = json.dumps(sorted(foreign))
        row.reachable = reachable
        row.error = error[:500] if error else None
        row.seen_at = seen_at
        row.updated_at = now()
        s.add(row)


def inventory(store: Store) -> dict[str, HostInventoryView]:
    _ensure_table(store, HostInventory)
    with store.session() as s:
        return {r.name: HostInventoryView.of(r) for r in s.exec(select(HostInventory)).all()}
