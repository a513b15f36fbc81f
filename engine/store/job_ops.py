"""Job rows, their GPU leases and their metric points: one transaction per call.

The same pattern as `engine.store.ops` (compare-and-set on the expected old state, an event
row with each change, frozen views out); split from it along the line between what a search
decides (searches, ideas, attempts, decisions) and what its jobs do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from engine.store.db import Store, StoreError
from engine.store.models import GpuLease, GpuLeaseLog, Idea, Job, Meta, MetricPoint, now
from engine.store.ops import _cas, _event
from engine.store.views import JobView, MetricView


def enqueue_job(store: Store, idea_id: int, *, profile: str, gpus_wanted: int,
                from_states: Iterable[str] = ("implemented",),
                executor: str = "local", seed: int | None = None) -> int | None:
    """Idea → queued and a new job row (its first run), atomically (a retry is a new job
    row)."""
    with store.session() as s:
        idea = s.get(Idea, idea_id)
        if idea is None or not _cas(s, Idea, idea_id, {"status": set(from_states)},
                                    {"status": "queued"}):
            return None
        return _add_job(s, idea, 1, seed, profile, gpus_wanted, executor, "")


def enqueue_run(store: Store, idea_id: int, run: int, *, seed: int | None, profile: str,
                gpus_wanted: int, executor: str = "local", why: str = "") -> int | None:
    """Another run of an idea (a repeat: its status stays as it is), unless that run exists
    already: a job row per run, made once however often an engine asks (a restart, a race)."""
    with store.session() as s:
        idea = s.get(Idea, idea_id)
        taken = s.exec(select(Job.id).where(Job.idea_id == idea_id, Job.run == run)).first()
        if idea is None or taken is not None:
            return None
        return _add_job(s, idea, run, seed, profile, gpus_wanted, executor, why)


def enqueue_preflight(store: Store, idea_id: int, *, profile: str, seed: int | None,
                      executor: str = "local") -> int | None:
    """Idea implemented → checking, and a pre-flight job (run 0, never ranked) that runs its
    patch on the environment's cheap profile before any GPU job, atomically."""
    with store.session() as s:
        idea = s.get(Idea, idea_id)
        if idea is None or not _cas(s, Idea, idea_id, {"status": "implemented"},
                                    {"status": "checking"}):
            return None
        return _add_job(s, idea, 0, seed, profile, 0, executor, "", kind="preflight")


#: Meta key: the highest job id a deleted search had. Job ids name job folders on hosts
#: (jobs/WORKSPACE/search-S/job-J), which `delete` cannot always reach: an id is never given
#: twice, or a new job would meet an old folder that is not its own.
JOB_ID_FLOOR = "job_id_floor"


def raise_job_id_floor(s: Session, job_id: int) -> None:
    """Remember that job ids up to `job_id` were used (a search is being deleted)."""
    row = s.get(Meta, JOB_ID_FLOOR)
    if row is None:
        s.add(Meta(key=JOB_ID_FLOOR, value=str(job_id)))
    elif int(row.value) < job_id:
        row.value = str(job_id)
        s.add(row)


def new_job_id(s: Session) -> int | None:
    """The id a new job must take, when SQLite would hand out one a deleted search used
    (None: SQLite's own choice, one above the highest row, is fresh)."""
    row = s.get(Meta, JOB_ID_FLOOR)
    if row is None:
        return None
    top = s.exec(select(func.max(Job.id))).one() or 0
    floor = int(row.value)
    return floor + 1 if floor >= top else None


def _add_job(s: Session, idea: Idea, run: int, seed: int | None, profile: str,
             gpus_wanted: int, executor: str, why: str, kind: str = "run") -> int:
    last = s.exec(select(func.max(Job.attempt))
                  .where(Job.idea_id == idea.id, Job.run == run)).one()
    job = Job(id=new_job_id(s), search_id=idea.search_id, idea_id=idea.id,
              attempt=int(last or 0) + 1, run=run, seed=seed, profile=profile,
              gpus_wanted=gpus_wanted, executor=executor, kind=kind)
    s.add(job)
    s.flush()
    said = (f"the pre-flight check of idea {idea.id} (profile {profile})" if kind == "preflight"
            else f"run {run} of idea {idea.id}" if run > 1 else f"idea {idea.id}")
    _event(s, "job", f"job {job.id} queued for {said}" + (f" ({why})" if why else ""),
           search_id=idea.search_id, idea_id=idea.id, job_id=job.id)
    assert job.id is not None
    return job.id


def list_jobs(store: Store, search_id: int | None = None, states: Iterable[str] | None = None,
              idea_id: int | None = None) -> list[JobView]:
    with store.session(write=False) as s:
        q = select(Job)
        if search_id is not None:
            q = q.where(Job.search_id == search_id)
        if idea_id is not None:
            q = q.where(Job.idea_id == idea_id)
        if states is not None:
            q = q.where(col(Job.state).in_(list(states)))
        return [JobView.of(r) for r in s.exec(q.order_by(Job.id)).all()]


def get_job(store: Store, job_id: int) -> JobView:
    with store.session(write=False) as s:
        row = s.get(Job, job_id)
        if row is None:
            raise StoreError(f"no job {job_id} in {store.workspace}")
        return JobView.of(row)


def update_job(store: Store, job_id: int, *, expect_state: str | Iterable[str] | None = None,
               message: str | None = None, **changes: Any) -> bool:
    expect: dict[str, Any] = {}
    if expect_state is not None:
        expect["state"] = ({expect_state} if isinstance(expect_state, str)
                           else set(expect_state))
    with store.session() as s:
        ok = _cas(s, Job, job_id, expect, changes)
        if ok and message:
            job = s.get(Job, job_id)
            _event(s, "job", message, search_id=job.search_id if job else None,
                   idea_id=job.idea_id if job else None, job_id=job_id)
        return ok


def finish_job(store: Store, job_id: int, *, state: str, exit_code: int | None,
               reason: str | None, log_tail: str, idea_status: str, score: float | None,
               quarantine: str | None, idea_reason: str | None, message: str,
               evaluator: str | None = None, flags: Sequence[str] = (),
               points: Sequence[dict[str, Any]] = ()) -> bool:
    """Job → final state, its GPU leases released and its idea scored, in one transaction.
    `points`: the evaluation stage's metric lines, stored with the job's curves."""
    with store.session() as s:
        job = s.get(Job, job_id)
        changes: dict[str, Any] = {"state": state, "exit_code": exit_code, "reason": reason,
                                   "log_tail": log_tail, "finished_at": now(),
                                   "evaluator": evaluator, "score": score}
        if flags:
            old = [f for f in (job.flags if job else "").splitlines() if f]
            changes["flags"] = "\n".join(dict.fromkeys(old + list(flags)))
        if job is None or not _cas(s, Job, job_id, {"state": {"queued", "held", "launching",
                                                               "running", "unreachable"}},
                                   changes):
            return False
        for p in points:
            try:
                s.add(MetricPoint(job_id=job_id, name=str(p["name"]), value=float(p["value"]),
                                  step=_int_or_none(p.get("step")),
                                  time_s=_float_or_none(p.get("time_s"))))
            except (KeyError, TypeError, ValueError):
                continue
        give_back_leases(s, job_id, state)
        _cas(s, Idea, job.idea_id, {"status": {"queued", "running"}},
             {"status": idea_status, "score": score, "quarantine": quarantine,
              "reason": idea_reason})
        _event(s, "job", message, search_id=job.search_id, idea_id=job.idea_id, job_id=job_id)
        return True


def take_gpus(store: Store, host: str, gpus: Sequence[int], job_id: int) -> bool:
    """Lease whole GPUs for a job in one transaction; False if any is already held."""
    try:
        with store.session() as s:
            for gpu in gpus:
                s.add(GpuLease(host=host, gpu=gpu, job_id=job_id))
            s.flush()
            _cas(s, Job, job_id, {}, {"gpus": ",".join(map(str, gpus))})
        return True
    except IntegrityError:
        return False


def leased_gpus(store: Store, host: str) -> dict[int, int]:
    with store.session(write=False) as s:
        rows = s.exec(select(GpuLease).where(GpuLease.host == host)).all()
        return {r.gpu: r.job_id for r in rows}


def release_gpus(store: Store, job_id: int) -> None:
    with store.session() as s:
        give_back_leases(s, job_id, "released")


def give_back_leases(s: Session, job_id: int, why: str) -> None:
    """Free a job's GPUs inside the caller's transaction, keeping each lease in the log."""
    for lease in s.exec(select(GpuLease).where(GpuLease.job_id == job_id)).all():
        s.add(GpuLeaseLog(host=lease.host, gpu=lease.gpu, job_id=job_id,
                          taken_at=lease.taken_at, why=why))
        s.delete(lease)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def ingest_metrics(store: Store, job_id: int, old_offset: int, new_offset: int,
                   points: Sequence[dict[str, Any]], flag: str | None = None) -> bool:
    """Store points read from bytes [old_offset, new_offset) exactly once; `flag` (what was
    left out of them, and why) is added to the job's flags in the same transaction."""
    with store.session() as s:
        if not _cas(s, Job, job_id, {"metrics_offset": old_offset},
                    {"metrics_offset": new_offset}):
            return False
        job = s.get(Job, job_id)
        if flag and job is not None and flag not in job.flags.splitlines():
            job.flags = (job.flags + "\n" + flag).strip()
            s.add(job)
        for p in points:
            s.add(MetricPoint(job_id=job_id, name=str(p["name"]), value=float(p["value"]),
                              step=p.get("step"), time_s=p.get("time_s")))
        return True


def job_metrics(store: Store, job_id: int, name: str | None = None) -> list[MetricView]:
    with store.session(write=False) as s:
        q = select(MetricPoint).where(MetricPoint.job_id == job_id)
        if name is not None:
            q = q.where(MetricPoint.name == name)
        return [MetricView.of(r) for r in s.exec(q.order_by(MetricPoint.id)).all()]


# ---------------------------------------------------------------------------------------------
# model calls, decisions, events


def hold_queued_jobs(store: Store, search_id: int, keep_idea: int | None,
                     reason: str) -> list[int]:
    """Queued jobs of the search, except `keep_idea`'s (None: all), → `held` (never placed) in
    one transaction with one event; their ideas stay queued. Returns the jobs held."""
    return _move_jobs(store, search_id, "queued", "held", reason, f"held: {reason}",
                      but_idea=keep_idea)


def release_held_jobs(store: Store, search_id: int, why: str) -> list[int]:
    """Held jobs of the search → queued again (they keep their place in the queue)."""
    return _move_jobs(store, search_id, "held", "queued", None, f"queued again: {why}")


def _move_jobs(store: Store, search_id: int, old: str, new: str, reason: str | None,
               said: str, but_idea: int | None = None) -> list[int]:
    """Every job of the search in state `old` → `new`, in one transaction with one event."""
    with store.session() as s:
        q = select(Job).where(Job.search_id == search_id, Job.state == old)
        if but_idea is not None:
            q = q.where(Job.idea_id != but_idea)
        moved = [r.id for r in s.exec(q).all()
                 if _cas(s, Job, r.id, {"state": old}, {"state": new, "reason": reason})]
        if moved:
            _event(s, "job", f"job{'s' if len(moved) > 1 else ''} "
                   f"{', '.join(map(str, moved))} {said}", search_id=search_id)
        return moved
