"""The console's reads: windows of the ideas board, summaries, lineage, jobs and hosts.

Why a module apart from `ops`: the console polls, and a poll must neither wait for nor hold
the write lock. `Store.session()` opens every transaction with BEGIN IMMEDIATE (right for the
engine's compare-and-set), so these reads go through `read_session()`: a second connection pool
on the same file whose transactions are plain deferred BEGINs with `query_only` set. In WAL mode
such a reader sees one consistent snapshot and never blocks the engine, nor does it get blocked.

Every query here is bounded (a page, a window, an aggregate), so a workspace of 100k ideas
costs the same to look at as one of ten. The one write, `import_search`, is the console's import
of a legacy run: a new read-only search created in a single transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import and_, case, func, or_, select, text
from sqlmodel import Session, col

from engine.store import verification
from engine.store.console_rows import (
    HostRow,
    IdeaBrief,
    IdeaDetail,
    JobRow,
    Ranked,
    SearchSummary,
)
from engine.store.db import Store, StoreError

# The board's dataclasses live with the console's first-frame reader (plain sqlite3), which
# returns the same rows as board_page below before SQLAlchemy is imported.
from engine.store.first_frame import SORT_KEYS, BoardPage, BoardQuery, BoardRow  # noqa: F401
from engine.store.hosts_queries import HostInventory, HostInventoryView, HostState
from engine.store.models import (
    Decision,
    Event,
    GpuLease,
    Idea,
    IdeaParent,
    Job,
    LlmCall,
    MetricPoint,
    PatchAttempt,
    Search,
)
from engine.store.verification import Verification
from engine.store.views import AttemptView, EventView, IdeaView, JobView, SearchView

ACTIVE_JOB_STATES = ("queued", "held", "launching", "running", "unreachable")

# ---------------------------------------------------------------------------------------------
# the read-only connection pool


@contextmanager
def read_session(store: Store) -> Iterator[Session]:
    """One read-only snapshot of the database (never takes the write lock)."""
    with store.session(write=False) as s:
        yield s


def _driver(s: Session) -> verification.Execute:
    """Plain SQL with `?` parameters on the session's connection (the SQL that
    `engine.store.verification` shares with the first-frame reader)."""
    connection = s.connection()
    return lambda sql, params: connection.exec_driver_sql(sql, tuple(params)).all()


def close_reader(store: Store) -> None:
    store.read_engine.dispose()


# ---------------------------------------------------------------------------------------------
# searches


def search_summaries(store: Store, search_id: int | None = None, now: float | None = None
                     ) -> list[SearchSummary]:
    """Searches (all, or one) with best score, model cost, GPU hours and idea counts."""
    now = time.time() if now is None else now
    with read_session(store) as s:
        q = select(Search).order_by(Search.id)
        if search_id is not None:
            q = q.where(Search.id == search_id)
        searches = [SearchView.of(r) for r in s.exec(q).scalars().all()]
        if not searches:
            return []
        only = [sv.id for sv in searches]
        tops = _tops(s, searches)
        costs = dict(s.exec(select(LlmCall.search_id, func.sum(LlmCall.cost_usd))
                            .where(col(LlmCall.search_id).in_(only))
                            .group_by(LlmCall.search_id)).all())
        hours = dict(s.exec(select(Job.search_id, func.sum(_gpu_seconds(now)))
                            .where(col(Job.search_id).in_(only))
                            .group_by(Job.search_id)).all())
        active = dict(s.exec(select(Job.search_id, func.count())
                             .where(col(Job.state).in_(ACTIVE_JOB_STATES),
                                    col(Job.search_id).in_(only))
                             .group_by(Job.search_id)).all())
        counts: dict[int, dict[str, int]] = {}
        for sid, status, n in s.exec(select(Idea.search_id, Idea.status, func.count())
                                     .where(col(Idea.search_id).in_(only))
                                     .group_by(Idea.search_id, Idea.status)).all():
            counts.setdefault(sid, {})[status] = int(n)
        pending = dict(s.exec(select(Decision.search_id, func.count())
                              .where(col(Decision.consumed_at).is_(None),
                                     col(Decision.search_id).in_(only))
                              .group_by(Decision.search_id)).all())
    out = []
    for sv in searches:
        best, leading = _best_and_leading(sv, tops.get(sv.id, {}))
        out.append(SearchSummary(
            search=sv, best=best.score if best else None, best_idea=best, leading=leading,
            cost_usd=float(costs.get(sv.id) or 0.0),
            gpu_hours=float(hours.get(sv.id) or 0.0) / 3600, ideas=counts.get(sv.id, {}),
            active_jobs=int(active.get(sv.id) or 0),
            pending_decisions=int(pending.get(sv.id) or 0)))
    return out


def _tops(s: Session, searches: Sequence[SearchView]) -> dict[int, dict[str | None, Ranked]]:
    """Per search and per confirmation (None, unconfirmed, confirmed, refuted): the idea with
    the best score for the search's goal among those that may rank (scored, not the baseline,
    no quarantine pending). Two grouped queries, however many searches."""
    usable = and_(Idea.status == "scored", Idea.origin != "baseline",
                  col(Idea.score).is_not(None),
                  or_(col(Idea.quarantine).is_(None), Idea.quarantine == "accepted"))
    out: dict[int, dict[str | None, Ranked]] = {}
    for lowest in (True, False):
        ids = [sv.id for sv in searches if (sv.goal == "minimize") == lowest]
        if not ids:
            continue
        # SQLite returns the bare columns from the row holding the one min() (max()).
        extreme = func.min(Idea.score) if lowest else func.max(Idea.score)
        for sid, status, score, idea_id, se, runs in s.exec(
                select(Idea.search_id, Idea.confirmation, extreme, Idea.id, Idea.score_se,
                       Idea.runs).where(usable, col(Idea.search_id).in_(ids))
                .group_by(Idea.search_id, Idea.confirmation)).all():
            out.setdefault(sid, {})[status] = Ranked(int(idea_id), float(score), se,
                                                     int(runs or 0), status)
    return out


def _best_and_leading(sv: SearchView, tops: dict[str | None, Ranked]
                      ) -> tuple[Ranked | None, Ranked | None]:
    """(the best, an unconfirmed leader ahead of it): module docstring of SearchSummary."""
    def first(candidates: Iterable[Ranked | None]) -> Ranked | None:
        found = [c for c in candidates if c is not None]
        if not found:
            return None
        return (min if sv.goal == "minimize" else max)(found, key=lambda r: r.score)

    if sv.confirm == "off":
        return first(tops.values()), None
    best = tops.get("confirmed")
    leading = first((tops.get("unconfirmed"), tops.get(None)))
    if leading is not None and best is not None and first((best, leading)) is best:
        leading = None  # the confirmed best leads: nothing to warn about
    return best, leading


def _gpu_seconds(now: float) -> Any:
    """A job's GPU time in GPU-seconds: from its start to its end (or `now` while it runs),
    times the GPUs it leased (the indices in `gpus`, as many as its profile wanted). A CPU job
    leases none; one that never started is NULL, which sums to nothing."""
    leased = case((Job.gpus == "", 0),
                  else_=func.length(Job.gpus) - func.length(func.replace(Job.gpus, ",", "")) + 1)
    return func.max(func.coalesce(Job.finished_at, now) - Job.started_at, 0.0) * leased


def gpu_hours(store: Store, search_id: int, now: float | None = None) -> float:
    """The GPU hours a search's jobs have used (the measure of `--max-gpu-hours`)."""
    now = time.time() if now is None else now
    with read_session(store) as s:
        total = s.exec(select(func.sum(_gpu_seconds(now)))
                       .where(Job.search_id == search_id)).scalar()
    return float(total or 0.0) / 3600


def idea_gpu_hours(store: Store, idea_ids: Iterable[int], now: float | None = None
                   ) -> dict[int, float]:
    """The GPU hours each idea's jobs have used (every attempt); 0.0 for an idea without."""
    ids = list(idea_ids)
    now = time.time() if now is None else now
    with read_session(store) as s:
        rows = dict(s.exec(select(Job.idea_id, func.sum(_gpu_seconds(now)))
                           .where(col(Job.idea_id).in_(ids)).group_by(Job.idea_id)).all())
    return {i: float(rows.get(i) or 0.0) / 3600 for i in ids}


def get_search(store: Store, search_id: int) -> SearchView | None:
    with read_session(store) as s:
        row = s.get(Search, search_id)
        return SearchView.of(row) if row else None


def search_by_name(store: Store, name: str) -> SearchView | None:
    with read_session(store) as s:
        row = s.exec(select(Search).where(Search.name == name)).scalars().first()
        return SearchView.of(row) if row else None


def change_marker(store: Store, search_id: int | None = None) -> tuple[int, int, int]:
    """Cheap to ask every second: it changes whenever anything the console shows could have.

    Every state change appends an event (the store's rule), decisions are counted until the
    engine consumes them, and metric points arrive without events, so their newest id counts too.
    """
    with read_session(store) as s:
        last_event = s.exec(select(func.max(Event.id))).one()[0] or 0
        last_metric = s.exec(select(func.max(MetricPoint.id))).one()[0] or 0
        q = select(func.count()).select_from(Decision).where(col(Decision.consumed_at).is_(None))
        if search_id is not None:
            q = q.where(Decision.search_id == search_id)
        pending = s.exec(q).one()[0] or 0
    return int(last_event), int(pending), int(last_metric)


def epochs_of(store: Store, search_id: int) -> list[int]:
    with read_session(store) as s:
        q = select(Idea.epoch).where(Idea.search_id == search_id).distinct().order_by(Idea.epoch)
        return [int(e) for (e,) in s.exec(q).all()]


# ---------------------------------------------------------------------------------------------
# the ideas board


def _board_filter(q: BoardQuery) -> list[Any]:
    conds: list[Any] = [Idea.search_id == q.search_id]
    if q.epoch is not None:
        conds.append(Idea.epoch == q.epoch)
    if q.statuses:
        conds.append(col(Idea.status).in_(q.statuses))
    if q.origins:
        conds.append(col(Idea.origin).in_(q.origins))
    if q.ids:
        conds.append(col(Idea.id).in_(q.ids))
    if q.confirmations:
        conds.append(col(Idea.confirmation).in_(q.confirmations))
    for word in q.words:
        pattern = f"%{word}%"
        conds.append(or_(col(Idea.title).ilike(pattern), col(Idea.text).ilike(pattern)))
    return conds


def _board_order(q: BoardQuery) -> list[Any]:
    asc = not q.reverse
    def by(column: Any, ascending: bool = True) -> Any:
        return column.asc() if ascending == asc else column.desc()
    if q.sort == "id":
        return [by(Idea.id)]
    if q.sort == "score":
        # best first for the metric's goal; unscored ideas always last
        return [col(Idea.score).is_(None), by(Idea.score, q.goal == "minimize"), Idea.id.asc()]
    if q.sort == "status":
        return [by(Idea.status), Idea.id.asc()]
    if q.sort == "origin":
        return [by(Idea.origin), Idea.id.asc()]
    if q.sort == "epoch":
        return [by(Idea.epoch), Idea.id.asc()]
    # default: the newest epoch first (the one under review), in proposal order within it
    return [by(Idea.epoch, False), by(Idea.id)]


def board_page(store: Store, q: BoardQuery, offset: int, limit: int) -> BoardPage:
    """The count of matching ideas and the rows [offset, offset+limit), from one snapshot."""
    conds = _board_filter(q)
    with read_session(store) as s:
        total = s.exec(select(func.count()).select_from(Idea).where(*conds)).one()[0]
        offset = max(0, min(offset, max(0, total - 1)))
        rows = s.exec(select(Idea.id, Idea.epoch, Idea.origin, Idea.status, Idea.score,
                             Idea.title, Idea.quarantine, Idea.edited_from, Idea.runs,
                             Idea.score_se, Idea.confirmation, Idea.twin_of)
                      .where(*conds).order_by(*_board_order(q)).offset(offset).limit(limit)
                      ).all()
        ids = [r[0] for r in rows]
        attempts: dict[int, int] = {}
        hosts: dict[int, str] = {}
        pending: dict[int, str] = {}
        checked: dict[int, Verification] = {}
        if ids:
            attempts = dict(s.exec(select(PatchAttempt.idea_id, func.count())
                                   .where(col(PatchAttempt.idea_id).in_(ids))
                                   .group_by(PatchAttempt.idea_id)).all())
            # SQLite returns the bare column from the row holding max(): the latest job's host
            for idea_id, host, _ in s.exec(select(Job.idea_id, Job.host, func.max(Job.id))
                                           .where(col(Job.idea_id).in_(ids))
                                           .group_by(Job.idea_id)).all():
                hosts[idea_id] = host
            for idea_id, action in s.exec(select(Decision.idea_id, Decision.action)
                                          .where(col(Decision.idea_id).in_(ids),
                                                 col(Decision.consumed_at).is_(None))
                                          .order_by(Decision.id)).all():
                pending[idea_id] = action
            checked = verification.of_ideas(_driver(s), ids)
    unknown = verification.UNKNOWN
    return BoardPage(total=int(total), offset=offset, rows=tuple(
        BoardRow(id=r[0], epoch=r[1], origin=r[2], status=r[3], score=r[4], title=r[5],
                 quarantine=r[6], edited_from=r[7], attempts=int(attempts.get(r[0], 0)),
                 host=hosts.get(r[0]), pending=pending.get(r[0]),
                 verified=checked.get(r[0], unknown).label,
                 flags=checked.get(r[0], unknown).flags, runs=int(r[8] or 0), score_se=r[9],
                 confirmation=r[10], twin_of=r[11]) for r in rows))


def board_position(store: Store, q: BoardQuery, idea_id: int) -> int | None:
    """Where an idea sits in the board's order (to keep the cursor on it), or None."""
    conds = _board_filter(q)
    with read_session(store) as s:
        if s.exec(select(func.count()).select_from(Idea).where(*conds, Idea.id == idea_id)
                  ).one()[0] == 0:
            return None
        # Rank by walking the ordered ids; bounded by the board's filter, ids only.
        ids = s.exec(select(Idea.id).where(*conds).order_by(*_board_order(q))).all()
    for i, (row_id,) in enumerate(ids):
        if row_id == idea_id:
            return i
    return None


def statuses_of(store: Store, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    with read_session(store) as s:
        return dict(s.exec(select(Idea.id, Idea.status).where(col(Idea.id).in_(list(ids))))
                    .all())


# ---------------------------------------------------------------------------------------------
# ideas, lineage


def _briefs(s: Session, where: Any, order: Sequence[Any] = (), offset: int = 0,
            limit: int | None = None, kinds: dict[int, str] | None = None) -> list[IdeaBrief]:
    q = (select(Idea.id, Idea.epoch, Idea.origin, Idea.status, Idea.score, Idea.title,
                Idea.quarantine, Idea.runs, Idea.score_se, Idea.confirmation)
         .where(where).order_by(*order, Idea.id))
    if offset:
        q = q.offset(offset)
    if limit is not None:
        q = q.limit(limit)
    rows = s.exec(q).all()
    ids = [r[0] for r in rows]
    children: dict[int, int] = {}
    if ids:
        children = dict(s.exec(select(IdeaParent.parent_id, func.count())
                               .where(col(IdeaParent.parent_id).in_(ids))
                               .group_by(IdeaParent.parent_id)).all())
    kinds = kinds or {}
    return [IdeaBrief(id=r[0], epoch=r[1], origin=r[2], status=r[3], score=r[4], title=r[5],
                      quarantine=r[6], children=int(children.get(r[0], 0)),
                      kind=kinds.get(r[0], ""), runs=int(r[7] or 0), score_se=r[8],
                      confirmation=r[9]) for r in rows]


def idea_briefs(store: Store, ids: Iterable[int]) -> list[IdeaBrief]:
    ids = list(ids)
    if not ids:
        return []
    with read_session(store) as s:
        return _briefs(s, col(Idea.id).in_(ids))


def lineage_roots(store: Store, search_id: int, offset: int = 0, limit: int = 200,
                  goal: str = "minimize") -> tuple[int, list[IdeaBrief]]:
    """Founders: ideas without parents that have descendants, best first; and their count."""
    has_parent = select(IdeaParent.child_id)
    has_child = select(IdeaParent.parent_id)
    where = and_(Idea.search_id == search_id, col(Idea.id).not_in(has_parent),
                 col(Idea.id).in_(has_child))
    best = Idea.score.asc() if goal == "minimize" else Idea.score.desc()
    with read_session(store) as s:
        total = s.exec(select(func.count()).select_from(Idea).where(where)).one()[0]
        return int(total), _briefs(s, where, (col(Idea.score).is_(None), best), offset, limit)


def children_briefs(store: Store, idea_id: int) -> list[IdeaBrief]:
    with read_session(store) as s:
        links = dict(s.exec(select(IdeaParent.child_id, IdeaParent.kind)
                            .where(IdeaParent.parent_id == idea_id)).all())
        return _briefs(s, col(Idea.id).in_(list(links)), kinds=links) if links else []


def parent_briefs(store: Store, idea_id: int) -> list[IdeaBrief]:
    with read_session(store) as s:
        links = dict(s.exec(select(IdeaParent.parent_id, IdeaParent.kind)
                            .where(IdeaParent.child_id == idea_id)).all())
        return _briefs(s, col(Idea.id).in_(list(links)), kinds=links) if links else []


def idea_detail(store: Store, idea_id: int) -> IdeaDetail | None:
    """Everything the detail screen shows of one idea, from one snapshot."""
    with read_session(store) as s:
        row = s.get(Idea, idea_id)
        if row is None:
            return None
        parent_links = dict(s.exec(select(IdeaParent.parent_id, IdeaParent.kind)
                                   .where(IdeaParent.child_id == idea_id)).all())
        child_links = dict(s.exec(select(IdeaParent.child_id, IdeaParent.kind)
                                  .where(IdeaParent.parent_id == idea_id)).all())
        parents = (_briefs(s, col(Idea.id).in_(list(parent_links)), kinds=parent_links)
                   if parent_links else [])
        children = (_briefs(s, col(Idea.id).in_(list(child_links)), kinds=child_links)
                    if child_links else [])
        attempts = [AttemptView.of(a) for a in s.exec(
            select(PatchAttempt).where(PatchAttempt.idea_id == idea_id)
            .order_by(PatchAttempt.number)).scalars().all()]
        jobs = [JobView.of(j) for j in s.exec(select(Job).where(Job.idea_id == idea_id)
                                              .order_by(Job.id)).scalars().all()]
        original = s.get(Idea, row.edited_from) if row.edited_from else None
        pending = tuple(a for (a,) in s.exec(
            select(Decision.action).where(Decision.idea_id == idea_id,
                                          col(Decision.consumed_at).is_(None))).all())
        names: tuple[str, ...] = ()
        if jobs:
            names = tuple(n for (n,) in s.exec(
                select(MetricPoint.name).where(MetricPoint.job_id == jobs[-1].id).distinct()
                .order_by(MetricPoint.name)).all())
        checked = (verification.of_ideas(_driver(s), [idea_id]).get(idea_id) if jobs
                   else None) or verification.UNKNOWN
        gpu_seconds = s.exec(select(func.sum(_gpu_seconds(time.time())))
                             .where(Job.idea_id == idea_id)).scalar() if jobs else None
        view = IdeaView.of(row, parents=tuple(sorted(parent_links)), attempts=len(attempts))
        original_view = (IdeaView.of(original, parents=(), attempts=0) if original else None)
        twin = (_briefs(s, Idea.id == row.twin_of, kinds={row.twin_of: "twin"})
                if row.twin_of is not None else [])
        # Twins come later than their original: only ideas after this one (no index on
        # twin_of; the id range bounds the scan).
        twins = _briefs(s, and_(Idea.id > idea_id, Idea.search_id == row.search_id,
                                Idea.twin_of == idea_id), limit=50)
        base = _briefs(s, and_(Idea.search_id == row.search_id, Idea.origin == "baseline"),
                       limit=1) if row.origin != "baseline" else []
    return IdeaDetail(idea=view, parents=tuple(parents), children=tuple(children),
                      edited_from=original_view, attempts=tuple(attempts), jobs=tuple(jobs),
                      pending=pending, metric_names=names, verification=checked,
                      gpu_hours=float(gpu_seconds or 0.0) / 3600,
                      twin=twin[0] if twin else None,
                      twins=tuple(replace(b, kind="twin") for b in twins),
                      baseline=base[0] if base else None)


def verifications(store: Store, ids: Iterable[int] = (), search_id: int | None = None
                  ) -> dict[int, Verification]:
    """Which evaluator judged each idea (of `ids`, or of a whole search) and its flags; an
    idea no job ran for is absent (`verification.UNKNOWN`). A bounded number of queries."""
    with read_session(store) as s:
        if search_id is not None:
            return verification.of_search(_driver(s), search_id)
        return verification.of_ideas(_driver(s), ids)


def metric_series(store: Store, job_id: int) -> dict[str, list[tuple[float, float]]]:
    """A job's metric curves: name → [(step or index, value)] in arrival order."""
    out: dict[str, list[tuple[float, float]]] = {}
    with read_session(store) as s:
        rows = s.exec(select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
                      .where(MetricPoint.job_id == job_id).order_by(MetricPoint.id)).all()
    for name, step, value in rows:
        series = out.setdefault(name, [])
        series.append((float(step) if step is not None else float(len(series)), float(value)))
    return out


def get_job(store: Store, job_id: int) -> JobView | None:
    with read_session(store) as s:
        row = s.get(Job, job_id)
        return JobView.of(row) if row else None


# ---------------------------------------------------------------------------------------------
# jobs, hosts, events


def jobs_overview(store: Store, search_id: int | None = None, finished_limit: int = 100
                  ) -> list[JobRow]:
    """Every active job (queue order), then the most recently finished ones."""
    with read_session(store) as s:
        base = (select(Job, Idea.title, Search.name).join(Idea, Idea.id == Job.idea_id)
                .join(Search, Search.id == Job.search_id))
        if search_id is not None:
            base = base.where(Job.search_id == search_id)
        active = s.exec(base.where(col(Job.state).in_(ACTIVE_JOB_STATES)).order_by(Job.id)).all()
        done = s.exec(base.where(col(Job.state).not_in(ACTIVE_JOB_STATES))
                      .order_by(Job.id.desc()).limit(finished_limit)).all()
    return [JobRow(job=JobView.of(j), idea_title=t, search_name=n) for j, t, n in
            [*active, *done]]


def _gpu_model(inv: HostInventoryView) -> str | None:
    models = dict.fromkeys((g.name or "GPU") + (f" ({g.memory_mib / 1024:.0f} GiB)"
                                                 if g.memory_mib else "")
                           for g in inv.gpu_info)
    return "; ".join(models) or None


def hosts_overview(store: Store) -> list[HostRow]:
    """Every host the SSH fleet polled (idle ones too) and every host that ran a job or holds a
    GPU: its GPUs (which job holds each, which are free or busy with foreign processes), whether
    it answers or is quarantined, how many jobs run and wait there, and the newest heartbeat
    of a job still active on it."""
    leases: dict[str, dict[int, int]] = {}
    counts: dict[str, tuple[int, int, float | None]] = {}
    with read_session(store) as s:
        for host, gpu, job_id in s.exec(select(GpuLease.host, GpuLease.gpu, GpuLease.job_id)
                                        .order_by(GpuLease.host, GpuLease.gpu)).all():
            leases.setdefault(host, {})[int(gpu)] = int(job_id)
        running = func.sum(case((col(Job.state).in_(("running", "launching")), 1), else_=0))
        queued = func.sum(case((Job.state == "queued", 1), else_=0))
        beat = func.max(case((col(Job.state).in_(ACTIVE_JOB_STATES), Job.heartbeat_at)))
        for host, n_running, n_queued, last in s.exec(
                select(Job.host, running, queued, beat).group_by(Job.host)).all():
            counts[host] = (int(n_running or 0), int(n_queued or 0), last)
        # Both tables are created on first use by the engine: an older database (opened
        # read-only here) may have neither, which means "no inventory, no quarantine".
        tables = {name for (name,) in s.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name IN ('host_inventory', 'host_state')")).all()}
        inventory = ({r.name: HostInventoryView.of(r) for r in
                      s.exec(select(HostInventory)).scalars().all()}
                     if "host_inventory" in tables else {})
        quarantine = ({name: (until, error) for name, until, error in s.exec(
            select(HostState.name, HostState.quarantined_until, HostState.last_error)).all()}
                      if "host_state" in tables else {})
    rows = []
    for host in sorted({*leases, *counts, *inventory}):
        n_running, n_queued, last = counts.get(host, (0, 0, None))
        inv = inventory.get(host)
        until, why = quarantine.get(host, (None, None))
        rows.append(HostRow(
            host=host, leases=leases.get(host, {}), running=n_running, queued=n_queued,
            last_heartbeat=last, gpus=inv.gpus if inv else None,
            foreign=inv.foreign if inv else (), gpu_model=_gpu_model(inv) if inv else None,
            reachable=inv.reachable if inv else None, error=inv.error if inv else None,
            seen_at=inv.seen_at if inv else None,
            quarantined_until=until, quarantine_error=why))
    return rows


def recent_events(store: Store, search_id: int | None, after_id: int = 0, limit: int = 50
                  ) -> list[EventView]:
    """The newest events after `after_id`, oldest first (at most `limit`)."""
    with read_session(store) as s:
        q = select(Event).where(Event.id > after_id)
        if search_id is not None:
            q = q.where(Event.search_id == search_id)
        rows = s.exec(q.order_by(Event.id.desc()).limit(limit)).scalars().all()
    return [EventView.of(r) for r in reversed(rows)]


# ---------------------------------------------------------------------------------------------
# the one write: importing a legacy run as a read-only search


@dataclass(frozen=True)
class ImportedIdea:
    epoch: int
    text: str
    title: str
    score: float | None
    status: str  # scored | failed
    reason: str | None = None


def import_search(store: Store, search: dict[str, Any], ideas: Sequence[ImportedIdea],
                  note: str) -> SearchView:
    """Create an imported (read-only) search with its ideas, all in one transaction."""
    with store.session() as s:
        if s.exec(select(Search).where(Search.name == search["name"])).scalars().first():
            raise StoreError(f"a search named {search['name']!r} already exists in "
                             f"{store.workspace}; pass another name")
        row = Search(**{**search, "status": "imported"})
        s.add(row)
        s.flush()
        assert row.id is not None
        s.add_all([Idea(search_id=row.id, epoch=i.epoch, origin="seed", text=i.text,
                        title=i.title, status=i.status, score=i.score, reason=i.reason)
                   for i in ideas])
        s.add(Event(search_id=row.id, kind="search", message=note))
        s.flush()
        return SearchView.of(row)
