"""Managing searches and ideas by hand: delete a search, rename it, note an idea, retry a
failed one. Each change is one transaction with its event (the rows of a deleted search go
with it, events included)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Table, delete, or_, select
from sqlmodel import SQLModel

from engine.store.db import Store, StoreError
from engine.store.job_ops import raise_job_id_floor
from engine.store.models import Idea, Job, PatchAttempt, Search
from engine.store.ops import NewIdea, _cas, _event, _insert_idea

#: Ideas a retry may start again: they ended without a result (a cancelled job leaves its
#: idea failed, with the reason "cancelled").
RETRYABLE = ("failed", "implement_failed")

#: Job states of a job that may still run on its host.
LIVE_JOBS = ("queued", "launching", "running", "unreachable")


class ManageRefused(StoreError):
    """The change cannot be made as asked; the message says why and what to do (exit 2)."""


# ------------------------------------------------------------------------------ delete


@dataclass(frozen=True)
class Deleted:
    name: str
    rows: dict[str, int]  # table → rows deleted
    folders: tuple[str, ...]  # local folders removed
    remote: tuple[str, ...]  # hosts whose job folders of the search are left in place


def _linked(table: Table, ids: dict[str, list[int]]) -> list:
    """The WHERE clauses that tie a table's rows to the search: its `search_id` column, or
    a foreign key to a deleted idea or job."""
    clauses = []
    for column in table.columns:
        if column.name == "search_id" and ids["search"]:
            clauses.append(column.in_(ids["search"]))
            continue
        for fk in column.foreign_keys:
            target = fk.column.table.name
            if target in ("idea", "job") and ids[target]:
                clauses.append(column.in_(ids[target]))
    return clauses


def delete_search(store: Store, search_id: int) -> Deleted:
    """Delete a search: every row of it (ideas, lineage, attempts, jobs, metrics, leases,
    model calls, decisions, events) and its job folders in this workspace. Tables are found
    through their `search_id` columns and foreign keys, so a table added later goes too."""
    with store.session() as s:
        row = s.get(Search, search_id)
        if row is None:
            raise ManageRefused(f"no search {search_id} in {store.workspace}")
        name = row.name
        idea_ids = list(s.execute(select(Idea.id).where(Idea.search_id == search_id)).scalars())
        jobs = s.execute(select(Job.id, Job.host, Job.job_dir, Job.state)
                      .where(Job.search_id == search_id)).all()
        live = [j for j in jobs if j.state in LIVE_JOBS and j.job_dir]
        if live:
            raise ManageRefused(
                f"search {name!r} has {len(live)} job(s) still running (job "
                f"{', '.join(str(j.id) for j in live[:5])}); stop them first with "
                f"`ideaforge stop {name} --cancel-jobs`, then delete it")
        ids = {"search": [search_id], "idea": idea_ids, "job": [j.id for j in jobs]}
        if jobs:  # their ids name folders on hosts that may outlive this: never given again
            raise_job_id_floor(s, max(j.id for j in jobs))
        rows: dict[str, int] = {}
        # Children before parents, so that no foreign key is left pointing at a gone row.
        for table in reversed(SQLModel.metadata.sorted_tables):
            if table.name == "search":
                continue
            clauses = _linked(table, ids)
            if not clauses:
                continue
            n = s.execute(delete(table).where(or_(*clauses))).rowcount
            if n:
                rows[table.name] = n
        s.execute(delete(Search).where(Search.id == search_id))
        rows["search"] = 1
        _event(s, "search", f"search {name!r} (id {search_id}) deleted with its "
               f"{len(idea_ids)} idea(s) and {len(jobs)} job(s)")
    folders = _remove_folders(store.workspace, search_id, [j.job_dir for j in jobs])
    remote = tuple(sorted({j.host for j in jobs if j.host != "local" and j.job_dir
                           and not Path(j.job_dir).is_absolute()}))
    return Deleted(name, rows, folders, remote)


def _remove_folders(workspace: Path, search_id: int, job_dirs: list[str | None]) -> tuple[str, ...]:
    """The search's folders under the workspace: its local job folders, the copies of its
    SSH jobs' logs, its engine lock. Nothing outside the workspace is touched."""
    root = Path(workspace).resolve()
    jobs = root / "jobs"
    candidates = {jobs / f"search-{search_id}", root / "locks" / f"search-{search_id}.lock"}
    if jobs.is_dir():
        candidates |= set(jobs.glob(f"*/*/search-{search_id}"))  # jobs/ssh/<host>/search-N
    for d in job_dirs:
        if d and Path(d).is_absolute():
            candidates.add(Path(d))
    removed = []
    for path in sorted(candidates):
        path = path.resolve()
        if not path.is_relative_to(root) or path == root or not path.exists():
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(str(path))
    return tuple(removed)


# ------------------------------------------------------------------------------ rename


def rename_search(store: Store, search_id: int, new: str) -> str:
    """Give a search a new, unique name; returns the old one."""
    new = new.strip()
    if not new or new.isdigit() or any(c.isspace() for c in new):
        raise ManageRefused(f"{new!r} cannot name a search: give a name without spaces that "
                            "is not only digits (a number is read as a search id)")
    with store.session() as s:
        row = s.get(Search, search_id)
        if row is None:
            raise ManageRefused(f"no search {search_id} in {store.workspace}")
        old = row.name
        if old == new:
            raise ManageRefused(f"the search is already named {new!r}; nothing was changed")
        taken = s.execute(select(Search.id).where(Search.name == new)).first()
        if taken is not None:
            raise ManageRefused(f"a search named {new!r} already exists in {store.workspace}; "
                                "pick another name")
        _cas(s, Search, search_id, {"name": old}, {"name": new})
        _event(s, "search", f"search {old!r} renamed {new!r}", search_id=search_id)
        return old


# ------------------------------------------------------------------------------ notes


def set_note(store: Store, idea_id: int, text: str | None) -> None:
    """Store the researcher's note on an idea (None or blank: remove it)."""
    text = (text or "").strip() or None
    with store.session() as s:
        row = s.get(Idea, idea_id)
        if row is None:
            raise ManageRefused(f"no idea {idea_id} in {store.workspace}; list them with "
                                "`ideaforge ideas SEARCH`")
        # The note is no step of the search: its time of change is left as it was.
        _cas(s, Idea, idea_id, {}, {"note": text, "updated_at": row.updated_at})
        _event(s, "idea", f"note on idea {idea_id} " + ("removed" if text is None else
                                                         "saved"),
               search_id=row.search_id, idea_id=idea_id)


def get_note(store: Store, idea_id: int) -> str | None:
    with store.session(write=False) as s:
        return s.execute(select(Idea.note).where(Idea.id == idea_id)).scalar()


# ------------------------------------------------------------------------------ retry


@dataclass(frozen=True)
class Retried:
    idea_id: int  # the new attempt
    search: str
    status: str  # approved (to be implemented) or implemented (its diff runs again)
    reopened: bool  # the search had finished: it was set to go on at its resume


def retry_idea(store: Store, idea_id: int) -> Retried:
    """A failed idea starts again as a new idea of the search's current epoch, with the failed
    one as its parent (kind "retry"); the failed one is left as it was. With a diff that
    applied, the new idea runs it again (status implemented, its attempt row says so);
    without one it is implemented afresh (status approved). An engine driving the search picks
    it up on its next step, as it picks up an idea the researcher added; a stopped search on
    its resume. A finished search is set back to its last phase, so that `resume` runs it."""
    with store.session() as s:
        old = s.get(Idea, idea_id)
        if old is None:
            raise ManageRefused(f"no idea {idea_id} in {store.workspace}; list them with "
                                "`ideaforge ideas SEARCH`")
        search = s.get(Search, old.search_id)
        assert search is not None
        if old.status not in RETRYABLE:
            raise ManageRefused(
                f"idea {idea_id} is {old.status}; only a failed or cancelled idea can be "
                "retried (an idea that scored gets more runs from --confirm)")
        if old.origin == "baseline":
            raise ManageRefused(f"idea {idea_id} is the baseline: `ideaforge resume "
                                f"{search.name}` measures it again")
        if search.status == "imported":
            raise ManageRefused(f"search {search.name!r} was imported read-only; it cannot run")
        status = "implemented" if old.diff else "approved"
        new_id = _insert_idea(s, search.id, search.epoch, NewIdea(
            text=old.text, origin=old.origin, title=old.title, parents=(idea_id,),
            parent_kind="retry", catalog_stem=old.catalog_stem, diff=old.diff, status=status))
        if old.diff:
            s.add(PatchAttempt(idea_id=new_id, number=1, model="retry", diff=old.diff,
                               outcome="ok", answer=f"the diff of idea {idea_id}, run again"))
        reopened = search.status == "finished"
        if reopened:
            _cas(s, Search, search.id, {"status": "finished"},
                 {"status": "stopped", "phase": "finishing",
                  "message": f"reopened to retry idea {idea_id}; `ideaforge resume "
                  f"{search.name}` runs it"})
        _event(s, "idea", f"idea {idea_id} retried as idea {new_id}", search_id=search.id,
               idea_id=new_id)
        return Retried(new_id, search.name, status, reopened)
