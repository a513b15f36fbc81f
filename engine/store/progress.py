"""How far the running jobs have got: step, latest training metric, time against the limit.

One call reads every running job of a search (or of the workspace) in one read session: the
jobs by their state's index, then for each the last few metric lines by the metric table's
job index (newest first, a handful of rows). Its cost follows the number of running jobs —
bounded by the GPUs and CPU slots — never the number of ideas or of metric lines, so the
ideas board can ask once per refresh for all of its rows.

The time limit is the one the runner enforces on the training process: the profile's
`timeout`, or with an evaluation stage and a `time_limit` that budget plus its slack when
sooner; read from the search's environment.toml once per (environment, profile). Past it, a
job of an environment with an evaluation stage is being evaluated: its time left is then
counted against the evaluation stage's limit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import select

from engine.store.console_queries import read_session
from engine.store.db import Store
from engine.store.models import Job, MetricPoint, Search

#: Metric lines read per running job: enough to pass over a score line or two at the end.
TAIL = 8

_limits: dict[tuple[str, str], tuple[float, float | None] | None] = {}


@dataclass(frozen=True)
class JobProgress:
    """A running job and the newest training metric it reported (None: none yet)."""

    job_id: int
    idea_id: int
    search_id: int
    run: int
    kind: str
    host: str
    started_at: float | None
    limit_s: float | None  # the profile's time limit; None when the environment is gone
    step: int | None
    metric: str | None
    value: float | None
    evaluate_s: float | None = None  # the evaluation stage's limit, after training's

    def elapsed(self, now: float) -> float | None:
        return None if self.started_at is None else max(0.0, now - self.started_at)

    def evaluating(self, now: float) -> bool:
        """Past the training limit with an evaluation stage: training has ended, the
        evaluation stage runs (the runner stops training at its limit)."""
        elapsed = self.elapsed(now)
        return bool(elapsed is not None and self.limit_s is not None and self.evaluate_s
                    and elapsed > self.limit_s)

    def left(self, now: float) -> float | None:
        elapsed = self.elapsed(now)
        if elapsed is None or self.limit_s is None:
            return None
        if self.evaluating(now):
            return self.limit_s + (self.evaluate_s or 0.0) - elapsed
        return self.limit_s - elapsed

    def label(self, now: float) -> str:
        """`step 120 · train_loss 2.31 · 4m left`: what the board, jobs table and the
        headless progress line show."""
        parts = []
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.metric is not None and self.value is not None:
            parts.append(f"{self.metric} {self.value:.4g}")
        if self.evaluating(now):
            parts.append("evaluating")
        elif not parts:
            parts.append("no metric yet")
        left = self.left(now)
        if left is not None:
            parts.append(f"{short(left)} left" if left >= 0 else f"{short(-left)} over limit")
        else:
            elapsed = self.elapsed(now)
            if elapsed is not None:
                parts.append(f"{short(elapsed)} in")
        return " · ".join(parts)


def short(seconds: float) -> str:
    """`45s`, `4m`, `2h05m`: a time to the nearest unit a glance needs."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def time_limits(env_path: str, profile: str) -> tuple[float, float | None] | None:
    """(the profile's training `timeout`, its evaluation stage's limit or None) in seconds,
    read once per environment and profile; None when the environment cannot be read."""
    key = (env_path, profile)
    if key not in _limits:
        from engine import environments

        try:
            env = environments.load(env_path)
            p = env.profile(profile)
            ev = env.evaluation
            train = float(p.timeout)
            if ev is not None and p.time_limit:  # the runner stops training at the budget
                train = min(train, p.time_limit + p.time_slack)
            _limits[key] = (train, None if ev is None
                            else float(p.evaluate_timeout or ev.timeout))
        except (ValueError, KeyError, RuntimeError, OSError):  # gone, broken, or renamed
            _limits[key] = None
    return _limits[key]


def running(store: Store, search_id: int | None = None) -> dict[int, JobProgress]:
    """Every running job (of one search, or of all), by job id, in job order."""
    out: dict[int, JobProgress] = {}
    where: dict[int, tuple[str, str]] = {}  # job id → (environment path, profile)
    with read_session(store) as s:
        q = (select(Job.id, Job.idea_id, Job.search_id, Job.run, Job.kind, Job.host,
                    Job.profile, Job.started_at, Search.env_path, Search.metric_name)
             .join(Search, Search.id == Job.search_id).where(Job.state == "running"))
        if search_id is not None:
            q = q.where(Job.search_id == search_id)
        jobs = s.exec(q.order_by(Job.id)).all()
        for (job_id, idea_id, sid, run, kind, host, profile, started_at, env_path,
             score_name) in jobs:
            tail = s.exec(select(MetricPoint.name, MetricPoint.value, MetricPoint.step)
                          .where(MetricPoint.job_id == job_id)
                          .order_by(MetricPoint.id.desc()).limit(TAIL)).all()  # type: ignore[union-attr]
            # The training metric: the newest loss line (what a researcher watches), else
            # the newest line that is not the score (which only the evaluation stage
            # writes: a throughput, an accuracy…), else whatever came last.
            curves = [t for t in tail if t[0] not in (score_name, "void")]
            pick = next((t for t in curves if "loss" in t[0].lower()),
                        curves[0] if curves else tail[0] if tail else None)
            step = pick[2] if pick is not None else None
            if step is None:
                step = next((t[2] for t in tail if t[2] is not None), None)
            where[job_id] = (env_path, profile)
            out[job_id] = JobProgress(
                job_id=job_id, idea_id=idea_id, search_id=sid, run=run, kind=kind, host=host,
                started_at=started_at, limit_s=None, step=step,
                metric=pick[0] if pick is not None else None,
                value=float(pick[1]) if pick is not None else None)
    # environment.toml is read outside the database snapshot (once per profile, cached)
    return {job_id: _limited(p, time_limits(*where[job_id])) for job_id, p in out.items()}


def _limited(p: JobProgress, limits: tuple[float, float | None] | None) -> JobProgress:
    return p if limits is None else replace(p, limit_s=limits[0], evaluate_s=limits[1])


def by_idea(progress: dict[int, JobProgress]) -> dict[int, JobProgress]:
    """The newest running job of each idea (a repeat may run while its idea shows a score)."""
    return {p.idea_id: p for p in progress.values()}
