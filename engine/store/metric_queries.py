"""Metric curves and run times of several ideas at once: the console's compare view and
`ideaforge export --metrics` read them here (plain frozen dataclasses, one read session)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import col

from engine.store.console_queries import read_session
from engine.store.db import Store
from engine.store.models import Idea, Job, MetricPoint
from engine.store.views import JobRun, MetricLine


@dataclass(frozen=True)
class IdeaCurves:
    """An idea's jobs (in order) and each job's metric lines (in arrival order)."""

    idea_id: int
    title: str
    origin: str
    status: str
    score: float | None
    jobs: tuple[JobRun, ...]
    lines: dict[int, tuple[MetricLine, ...]]  # job id → its lines

    def names(self) -> list[str]:
        return list(dict.fromkeys(m.name for j in self.jobs for m in self.lines.get(j.id, ())))

    def series(self, name: str) -> tuple[JobRun, list[tuple[float, float]]] | None:
        """The curve of `name` from the idea's latest run that reported it: (that job,
        [(step, or the index when a line has no step, value)])."""
        for job in reversed(self.jobs):
            points: list[tuple[float, float]] = []
            for m in self.lines.get(job.id, ()):
                if m.name == name:
                    points.append((float(m.step) if m.step is not None else float(len(points)),
                                   m.value))
            if points:
                return job, points
        return None

    def runs_with(self, name: str) -> int:
        return sum(1 for j in self.jobs if any(m.name == name for m in self.lines.get(j.id, ())))


def job_runs(store: Store, search_id: int) -> dict[int, list[JobRun]]:
    """Every job of a search, by idea id, in job order."""
    with read_session(store) as s:
        rows = s.exec(select(Job).where(Job.search_id == search_id).order_by(Job.id)
                      ).scalars().all()
        out: dict[int, list[JobRun]] = {}
        for j in rows:
            out.setdefault(j.idea_id, []).append(_run(j))
    return out


def metric_lines(store: Store, job_ids: Iterable[int]) -> dict[int, tuple[MetricLine, ...]]:
    """The metric lines of the given jobs, by job id, in the order they arrived."""
    ids = list(job_ids)
    out: dict[int, list[MetricLine]] = {}
    with read_session(store) as s:
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            rows = s.exec(select(MetricPoint.job_id, MetricPoint.name, MetricPoint.step,
                                 MetricPoint.value, MetricPoint.time_s)
                          .where(col(MetricPoint.job_id).in_(ids[start:start + 500]))
                          .order_by(MetricPoint.id)).all()
            for job_id, name, step, value, time_s in rows:
                out.setdefault(job_id, []).append(MetricLine(name, step, float(value), time_s))
    return {k: tuple(v) for k, v in out.items()}


def idea_curves(store: Store, idea_ids: Iterable[int]) -> list[IdeaCurves]:
    """The ideas asked for (in that order; unknown ids left out) with their runs and lines.
    Preflight jobs (the patch checked on a cheap profile) are left out: not the idea's run."""
    wanted = list(dict.fromkeys(idea_ids))
    with read_session(store) as s:
        ideas = {i.id: i for i in s.exec(select(Idea).where(col(Idea.id).in_(wanted))
                                         ).scalars().all()}
        jobs: dict[int, list[JobRun]] = {}
        for j in s.exec(select(Job).where(col(Job.idea_id).in_(wanted), Job.kind != "preflight")
                        .order_by(Job.id)).scalars().all():
            jobs.setdefault(j.idea_id, []).append(_run(j))
        found = [(i, ideas[i]) for i in wanted if i in ideas]
    lines = metric_lines(store, [j.id for runs in jobs.values() for j in runs])
    return [IdeaCurves(idea_id=i, title=row.title, origin=row.origin, status=row.status,
                       score=row.score, jobs=tuple(jobs.get(i, ())),
                       lines={j.id: lines.get(j.id, ()) for j in jobs.get(i, ())})
            for i, row in found]


def baseline_idea(store: Store, search_id: int) -> int | None:
    """The id of the search's baseline idea (the unmodified environment's run), if any."""
    with read_session(store) as s:
        return s.exec(select(Idea.id).where(Idea.search_id == search_id,
                                            Idea.origin == "baseline")
                      .order_by(Idea.id).limit(1)).scalar()


def _run(j: Job) -> JobRun:
    assert j.id is not None
    return JobRun(id=j.id, idea_id=j.idea_id, run=j.run, attempt=j.attempt, kind=j.kind,
                  state=j.state, host=j.host, score=j.score, started_at=j.started_at,
                  finished_at=j.finished_at)
