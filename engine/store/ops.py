"""Every query and state change of the engine, the CLI and the console.

Each state change is one transaction: a compare-and-set on the expected old state plus an
event row, so two processes can never both win a transition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from engine.store.db import Store, StoreError
from engine.store.models import (
    Batch,
    Decision,
    Event,
    Idea,
    IdeaParent,
    LlmCall,
    PatchAttempt,
    Search,
    now,
)
from engine.store.views import (
    AttemptView,
    DecisionView,
    EventView,
    IdeaView,
    SearchView,
)

# ---------------------------------------------------------------------------------------------
# generic compare-and-set


def _cas(s: Session, model: type, row_id: int, expect: dict[str, Any], changes: dict[str, Any]
         ) -> bool:
    stmt = update(model).where(model.id == row_id)  # type: ignore[attr-defined]
    for key, value in expect.items():
        column = getattr(model, key)
        if isinstance(value, (set, frozenset, list, tuple)):
            stmt = stmt.where(column.in_(list(value)))
        elif value is None:
            stmt = stmt.where(column.is_(None))
        else:
            stmt = stmt.where(column == value)
    if hasattr(model, "updated_at") and "updated_at" not in changes:
        changes = {**changes, "updated_at": now()}
    result = s.execute(stmt.values(**changes))
    return result.rowcount == 1


def _event(s: Session, kind: str, message: str, *, search_id: int | None = None,
           idea_id: int | None = None, job_id: int | None = None) -> None:
    s.add(Event(search_id=search_id, idea_id=idea_id, job_id=job_id, kind=kind, message=message))


# ---------------------------------------------------------------------------------------------
# searches


def create_search(store: Store, **fields: Any) -> SearchView:
    with store.session() as s:
        if s.exec(select(Search).where(Search.name == fields["name"])).first():
            raise StoreError(
                f"a search named {fields['name']!r} already exists in {store.workspace}; "
                f"resume it with `ideaforge resume {fields['name']}` or pick another --name"
            )
        row = Search(**fields)
        s.add(row)
        s.flush()
        _event(s, "search", f"search {row.name!r} created", search_id=row.id)
        return SearchView.of(row)


def find_search(store: Store, ref: str | int) -> SearchView:
    with store.session(write=False) as s:
        row = None
        if isinstance(ref, int) or str(ref).isdigit():
            row = s.get(Search, int(ref))
        if row is None:
            row = s.exec(select(Search).where(Search.name == str(ref))).first()
        if row is None:
            names = [r.name for r in s.exec(select(Search)).all()]
            known = ", ".join(names) if names else "none yet"
            raise StoreError(f"no search {ref!r} in {store.workspace} (searches: {known})")
        return SearchView.of(row)


def list_searches(store: Store) -> list[SearchView]:
    with store.session(write=False) as s:
        return [SearchView.of(r) for r in s.exec(select(Search).order_by(Search.id)).all()]


def update_search(store: Store, search_id: int, *, expect: dict[str, Any] | None = None,
                  event: str | None = None, **changes: Any) -> bool:
    with store.session() as s:
        ok = _cas(s, Search, search_id, expect or {}, changes)
        if ok and event:
            _event(s, "search", event, search_id=search_id)
        return ok


# ---------------------------------------------------------------------------------------------
# batches and ideas


@dataclass(frozen=True)
class NewIdea:
    text: str
    origin: str
    title: str = ""
    parents: tuple[int, ...] = ()
    parent_kind: str = "exploit"
    catalog_stem: str | None = None
    diff: str | None = None
    status: str = "proposed"
    twin_of: int | None = None  # an earlier idea of the search it nearly repeats


def ensure_batches(store: Store, search_id: int, epoch: int,
                   plan: Sequence[tuple[str, int]]) -> list[Batch]:
    """The epoch's proposal batches, planned once (a restart finds the same plan)."""
    with store.session() as s:
        rows = s.exec(select(Batch).where(Batch.search_id == search_id, Batch.epoch == epoch)
                      .order_by(Batch.number)).all()
        if not rows:
            for number, (kind, size) in enumerate(plan):
                s.add(Batch(search_id=search_id, epoch=epoch, number=number, kind=kind,
                            size=size))
            s.flush()
            rows = s.exec(select(Batch).where(Batch.search_id == search_id,
                                              Batch.epoch == epoch)
                          .order_by(Batch.number)).all()
        return [Batch.model_validate(r.model_dump()) for r in rows]


def finish_batch(store: Store, batch_id: int, ideas: Sequence[NewIdea],
                 error: str | None = None) -> list[int]:
    """Store a batch's ideas and mark it done, atomically; a second call stores nothing."""
    with store.session() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None
        status = "failed" if error and not ideas else "done"
        if not _cas(s, Batch, batch_id, {"status": "planned"}, {"status": status,
                                                                 "error": error}):
            return []
        ids = [_insert_idea(s, batch.search_id, batch.epoch, idea, batch_id) for idea in ideas]
        msg = f"epoch {batch.epoch}: {batch.kind} batch {batch.number} gave {len(ids)} ideas"
        if error:
            msg += f" ({error})"
        _event(s, "propose", msg, search_id=batch.search_id)
        return ids


def reset_failed_batches(store: Store, search_id: int, epoch: int) -> int:
    """Failed proposal batches of an epoch go back to planned, so a resume asks again."""
    with store.session() as s:
        rows = s.exec(select(Batch).where(Batch.search_id == search_id, Batch.epoch == epoch,
                                          Batch.status == "failed")).all()
        for b in rows:
            _cas(s, Batch, b.id, {"status": "failed"}, {"status": "planned"})
        return len(rows)


def _insert_idea(s: Session, search_id: int, epoch: int, idea: NewIdea,
                 batch_id: int | None = None, edited_from: int | None = None) -> int:
    row = Idea(search_id=search_id, epoch=epoch, origin=idea.origin, text=idea.text,
               title=idea.title or _title(idea.text), status=idea.status, batch_id=batch_id,
               catalog_stem=idea.catalog_stem, diff=idea.diff, edited_from=edited_from,
               twin_of=idea.twin_of)
    s.add(row)
    s.flush()
    assert row.id is not None
    for parent in dict.fromkeys(idea.parents):
        s.add(IdeaParent(child_id=row.id, parent_id=parent, kind=idea.parent_kind))
    return row.id


#: A sentence ends at . ! or ? followed by a capital (or the line's end) ...
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z\"'(\[]|\s*$)")
#: ... unless the period closes an abbreviation or an initial ("Su et al. 2021", "e.g. Adam",
#: "J. Smith"): cut there, a title read "RoPE, Su et al".
_ABBREVIATION = re.compile(r"(?:\bet al|\be\.g|\bi\.e|\bvs|\betc|\bcf|\bapprox|\bFig|\bEq"
                           r"|\bNo|\bDr|\bMr|\bMs|(?<![\w.])[A-Z])$")
TITLE_CHARS = 80


def _title(text: str) -> str:
    """An idea's first sentence, or its first ~80 characters cut on a word with "…"."""
    line = text.replace("[Experiment]", "").strip().split("\n", 1)[0].strip()
    for end in _SENTENCE_END.finditer(line):
        if end.group() == "." and _ABBREVIATION.search(line[:end.start()]):
            continue
        line = line[:end.start() + (end.group() != ".")].strip()
        break
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[:TITLE_CHARS]
    word = cut.rfind(" ")
    if word > TITLE_CHARS // 2:
        cut = cut[:word]
    return cut.rstrip(" ,;:(-") + "…"


def add_idea(store: Store, search_id: int, epoch: int, idea: NewIdea,
             edited_from: int | None = None, event: str | None = None) -> int:
    with store.session() as s:
        idea_id = _insert_idea(s, search_id, epoch, idea, edited_from=edited_from)
        _event(s, "idea", event or f"idea {idea_id} added ({idea.origin})", search_id=search_id,
               idea_id=idea_id)
        return idea_id


def add_idea_for_decision(store: Store, decision_id: int, search_id: int, epoch: int,
                          idea: NewIdea) -> int | None:
    """The idea a researcher added, stored together with consuming their decision, so an
    engine that dies in between can never add it twice."""
    with store.session() as s:
        if not _cas(s, Decision, decision_id, {"consumed_at": None},
                    {"consumed_at": now(), "outcome": "added"}):
            return None
        idea_id = _insert_idea(s, search_id, epoch, idea)
        _event(s, "idea", f"idea {idea_id} added by the researcher", search_id=search_id,
               idea_id=idea_id)
        return idea_id


def edit_idea(store: Store, idea_id: int, text: str, from_states: Iterable[str],
              diff: str | None = None) -> int | None:
    """Save an edit as a new approved idea with lineage; the original is superseded.

    `diff`, the researcher's own (checked before it was sent), becomes the new idea's
    implementation. Without one a model implements the new text afresh; the offline catalog
    cannot, so there the edit keeps its old diff source (the CLI and console refuse such an
    edit up front: see `engine.human_diff`)."""
    with store.session() as s:
        old = s.get(Idea, idea_id)
        if old is None or not _cas(s, Idea, idea_id, {"status": set(from_states)},
                                   {"status": "superseded"}):
            return None
        search = s.get(Search, old.search_id)
        catalog = search is not None and search.model == "catalog"
        if diff:
            new = NewIdea(text=text, origin=old.origin, diff=diff, status="approved",
                          parents=(idea_id,), parent_kind="edit")
        else:
            # Before implementation an idea's diff can only be one its researcher attached.
            new = NewIdea(text=text, origin=old.origin, catalog_stem=old.catalog_stem,
                          diff=old.diff if catalog else None, status="approved",
                          parents=(idea_id,), parent_kind="edit")
        new_id = _insert_idea(s, old.search_id, old.epoch, new, edited_from=idea_id)
        # The edited idea keeps the original's exploit parents too, so lineage stays whole.
        for p in s.exec(select(IdeaParent).where(IdeaParent.child_id == idea_id,
                                                 IdeaParent.kind != "edit")).all():
            s.add(IdeaParent(child_id=new_id, parent_id=p.parent_id, kind=p.kind))
        _event(s, "decision", f"idea {idea_id} edited into idea {new_id}",
               search_id=old.search_id, idea_id=new_id)
        return new_id


def transition_idea(store: Store, idea_id: int, from_states: str | Iterable[str], to: str,
                    message: str | None = None, **changes: Any) -> bool:
    expect = {from_states} if isinstance(from_states, str) else set(from_states)
    with store.session() as s:
        ok = _cas(s, Idea, idea_id, {"status": expect}, {"status": to, **changes})
        if ok:
            row = s.get(Idea, idea_id)
            assert row is not None
            _event(s, "idea", message or f"idea {idea_id} → {to}", search_id=row.search_id,
                   idea_id=idea_id)
        return ok


def transition_ideas(store: Store, idea_ids: Sequence[int], from_state: str, to: str,
                     message: str) -> list[int]:
    """Move many ideas at once (one transaction); returns those that moved."""
    moved = []
    with store.session() as s:
        for idea_id in idea_ids:
            if _cas(s, Idea, idea_id, {"status": from_state}, {"status": to}):
                moved.append(idea_id)
                row = s.get(Idea, idea_id)
                _event(s, "idea", message.format(id=idea_id),
                       search_id=row.search_id if row else None, idea_id=idea_id)
    return moved


def set_idea_fields(store: Store, idea_id: int, message: str | None = None, **changes: Any
                    ) -> None:
    with store.session() as s:
        _cas(s, Idea, idea_id, {}, changes)
        if message:
            row = s.get(Idea, idea_id)
            _event(s, "idea", message, search_id=row.search_id if row else None,
                   idea_id=idea_id)


def _idea_views(s: Session, rows: Sequence[Idea]) -> list[IdeaView]:
    ids = [r.id for r in rows]
    parents: dict[int, list[int]] = {}
    attempts: dict[int, int] = {}
    if ids:
        for p in s.exec(select(IdeaParent).where(col(IdeaParent.child_id).in_(ids))).all():
            parents.setdefault(p.child_id, []).append(p.parent_id)
        q = (select(PatchAttempt.idea_id, func.count()).where(col(PatchAttempt.idea_id).in_(ids))
             .group_by(PatchAttempt.idea_id))
        attempts = dict(s.exec(q).all())  # type: ignore[arg-type]
    return [IdeaView.of(r, parents=tuple(sorted(parents.get(r.id, []))),
                        attempts=attempts.get(r.id, 0)) for r in rows]


def list_ideas(store: Store, search_id: int, epoch: int | None = None,
               statuses: Iterable[str] | None = None, limit: int | None = None
               ) -> list[IdeaView]:
    """The search's ideas (of one epoch, in these statuses) in id order; the first `limit`."""
    with store.session(write=False) as s:
        q = select(Idea).where(Idea.search_id == search_id)
        if epoch is not None:
            q = q.where(Idea.epoch == epoch)
        if statuses is not None:
            q = q.where(col(Idea.status).in_(list(statuses)))
        q = q.order_by(Idea.id)
        return _idea_views(s, s.exec(q if limit is None else q.limit(limit)).all())


def get_idea(store: Store, idea_id: int) -> IdeaView:
    with store.session(write=False) as s:
        row = s.get(Idea, idea_id)
        if row is None:
            raise StoreError(f"no idea {idea_id} in {store.workspace}; list them with "
                             "`ideaforge ideas SEARCH`")
        return _idea_views(s, [row])[0]


def children_of(store: Store, idea_id: int) -> list[int]:
    with store.session(write=False) as s:
        q = select(IdeaParent.child_id).where(IdeaParent.parent_id == idea_id)
        return sorted(s.exec(q).all())


# ---------------------------------------------------------------------------------------------
# implementation attempts


def add_attempt(store: Store, idea_id: int, *, model: str, answer: str, diff: str | None,
                outcome: str, error: str | None, repairs: Sequence[str] = (),
                move: tuple[str, str] | None = None, reason: str | None = None,
                kind: str = "implement", job_id: int | None = None) -> int:
    """Append an attempt (never rewrites one); returns its number.

    `move=(from, to)` also moves the idea in the same transaction (storing the diff when the
    attempt is ok), so a crash cannot leave a stored attempt whose idea was not moved on.
    """
    try:
        return _add_attempt(store, idea_id, model=model, answer=answer, diff=diff,
                            outcome=outcome, error=error, repairs=repairs, move=move,
                            reason=reason, kind=kind, job_id=job_id)
    except _Rollback:
        return 0


class _Rollback(Exception):
    """Raised inside a session to roll its transaction back."""


def _add_attempt(store: Store, idea_id: int, *, model: str, answer: str, diff: str | None,
                 outcome: str, error: str | None, repairs: Sequence[str],
                 move: tuple[str, str] | None, reason: str | None, kind: str = "implement",
                 job_id: int | None = None) -> int:
    with store.session() as s:
        last = s.exec(select(func.max(PatchAttempt.number))
                      .where(PatchAttempt.idea_id == idea_id)).one()
        number = int(last or 0) + 1
        s.add(PatchAttempt(idea_id=idea_id, number=number, model=model, answer=answer,
                           diff=diff, outcome=outcome, error=error,
                           repairs="\n".join(repairs), kind=kind, job_id=job_id))
        idea = s.get(Idea, idea_id)
        said = f"repair of job {job_id}" if kind == "repair" else f"attempt {number}"
        _event(s, "implement",
               f"idea {idea_id} {said}: {outcome}" + (f" — {error}" if error else ""),
               search_id=idea.search_id if idea else None, idea_id=idea_id)
        if move is not None:
            changes: dict[str, Any] = {"status": move[1]}
            if outcome == "ok":
                changes["diff"] = diff
            if reason is not None:
                changes["reason"] = reason
            if not _cas(s, Idea, idea_id, {"status": move[0]}, changes):
                # Someone else moved the idea meanwhile: store nothing of this attempt.
                raise _Rollback
        return number


def list_attempts(store: Store, idea_id: int) -> list[AttemptView]:
    with store.session(write=False) as s:
        q = select(PatchAttempt).where(PatchAttempt.idea_id == idea_id).order_by(
            PatchAttempt.number)
        return [AttemptView.of(r) for r in s.exec(q).all()]


# ---------------------------------------------------------------------------------------------
# jobs, GPU leases, metrics


def add_llm_call(store: Store, search_id: int, **fields: Any) -> None:
    with store.session() as s:
        s.add(LlmCall(search_id=search_id, **fields))


def llm_cost(store: Store, search_id: int) -> float:
    with store.session(write=False) as s:
        total = s.exec(select(func.sum(LlmCall.cost_usd)).where(LlmCall.search_id == search_id)
                       ).one()
        return float(total or 0.0)


def llm_call_count(store: Store, search_id: int) -> int:
    with store.session(write=False) as s:
        return int(s.exec(select(func.count()).select_from(LlmCall)
                          .where(LlmCall.search_id == search_id)).one())


class DecisionRefused(StoreError):
    """A decision no engine will ever apply (e.g. `go` on a finished search): nothing stored."""


def add_decision(store: Store, search_id: int, action: str, idea_id: int | None = None,
                 text: str | None = None, source: str = "cli", diff: str | None = None
                 ) -> int:
    with store.session() as s:
        if action == "go":
            search = s.get(Search, search_id)
            if search is not None and search.status in ("finished", "imported"):
                # A later `resume --epochs N` would take it for its next gate and skip that
                # epoch's ideas unasked; refused here, in the transaction that would store it.
                raise DecisionRefused(
                    f"search {search.name!r} is {search.status}: it has no gate to release "
                    "(`go` applies to a search waiting at a gate, or one to resume)")
        row = Decision(search_id=search_id, idea_id=idea_id, action=action, text=text,
                       source=source, diff=diff)
        s.add(row)
        s.flush()
        target = f" idea {idea_id}" if idea_id else ""
        _event(s, "decision", f"{source}: {action}{target}", search_id=search_id,
               idea_id=idea_id)
        assert row.id is not None
        return row.id


def pending_decisions(store: Store, search_id: int) -> list[DecisionView]:
    with store.session(write=False) as s:
        q = select(Decision).where(Decision.search_id == search_id,
                                   col(Decision.consumed_at).is_(None)).order_by(Decision.id)
        return [DecisionView.of(r) for r in s.exec(q).all()]


def consume_decision(store: Store, decision_id: int, outcome: str) -> bool:
    with store.session() as s:
        return _cas(s, Decision, decision_id, {"consumed_at": None},
                    {"consumed_at": now(), "outcome": outcome})


def held_gate(store: Store, search_id: int) -> tuple[int, str] | None:
    """The gate (epoch, phase) a console's `hold` keeps shut until go, from the latest hold or
    go the engine applied (its outcome names the gate): a restarted engine holds it still."""
    with store.session(write=False) as s:
        row = s.exec(select(Decision.action, Decision.outcome).where(
            Decision.search_id == search_id, col(Decision.action).in_(("hold", "go")),
            col(Decision.consumed_at).is_not(None)).order_by(col(Decision.id).desc())
            .limit(1)).first()
    found = re.search(r"epoch (\d+) (review_\w+)", row[1] or "") if row and row[0] == "hold" \
        else None
    return (int(found.group(1)), found.group(2)) if found else None


def reject_reasons(store: Store, search_id: int) -> list[str]:
    """The researcher's reasons for rejecting ideas: steering memory for later prompts."""
    with store.session(write=False) as s:
        q = select(Idea.title, Idea.reason).where(Idea.search_id == search_id,
                                                  Idea.status == "rejected",
                                                  col(Idea.reason).is_not(None))
        return [f"{title}: {reason}" for title, reason in s.exec(q).all()]


def add_event(store: Store, kind: str, message: str, **ids: int | None) -> None:
    with store.session() as s:
        _event(s, kind, message, **ids)


def events(store: Store, search_id: int, after_id: int = 0, limit: int = 200
           ) -> list[EventView]:
    with store.session(write=False) as s:
        q = (select(Event).where(Event.search_id == search_id, Event.id > after_id)
             .order_by(Event.id).limit(limit))
        return [EventView.of(r) for r in s.exec(q).all()]


def counts_by_status(store: Store, search_id: int, epoch: int | None = None
                     ) -> dict[str, int]:
    """How many ideas of the search (of one `epoch`) are in each status: counted in an index
    (`ix_idea_search_epoch_status`), no idea is read."""
    with store.session(write=False) as s:
        q = select(Idea.status, func.count()).where(Idea.search_id == search_id)
        if epoch is not None:
            q = q.where(Idea.epoch == epoch)
        return {status: int(n) for status, n in s.exec(q.group_by(Idea.status)).all()}


def count_ideas(store: Store, search_id: int, epoch: int | None = None,
                statuses: Iterable[str] | None = None,
                not_statuses: Iterable[str] | None = None) -> int:
    """How many ideas match, counted in an index (no idea is read)."""
    with store.session(write=False) as s:
        q = select(func.count()).select_from(Idea).where(Idea.search_id == search_id)
        if epoch is not None:
            q = q.where(Idea.epoch == epoch)
        if statuses is not None:
            q = q.where(col(Idea.status).in_(list(statuses)))
        if not_statuses is not None:
            q = q.where(col(Idea.status).not_in(list(not_statuses)))
        return int(s.exec(q).one())



# ---------------------------------------------------------------------------------------------
# the baseline, held jobs, a search's options


def baseline_idea(store: Store, search_id: int) -> IdeaView | None:
    """The search's baseline idea (the unmodified code), if it has one."""
    with store.session(write=False) as s:
        row = s.exec(select(Idea).where(Idea.search_id == search_id, Idea.origin == "baseline")
                     .order_by(Idea.id)).first()
        return _idea_views(s, [row])[0] if row is not None else None


#: The options a resume may change, as the event names them.
SEARCH_OPTIONS = {"auto": "--auto", "review_diffs": "--review-diffs",
                  "advance_at": "--advance-at", "max_cost_usd": "--max-cost",
                  "max_gpu_hours": "--max-gpu-hours", "epochs": "--epochs",
                  "confirm": "--confirm", "fix_attempts": "--fix-attempts"}


def change_search_options(store: Store, search_id: int, options: dict[str, Any],
                          expect: dict[str, Any] | None = None, note: str = "",
                          **also: Any) -> str | None:
    """Store new values of a search's options (`SEARCH_OPTIONS`) and `also` (e.g. its phase)
    in one transaction, with an event saying what changed. Returns that text; None when
    nothing changed or `expect` no longer holds."""
    unknown = set(options) - set(SEARCH_OPTIONS)
    if unknown:
        raise ValueError(f"not a search option: {', '.join(sorted(unknown))}")
    with store.session() as s:
        row = s.get(Search, search_id)
        if row is None:
            raise StoreError(f"no search {search_id} in {store.workspace}")
        changed = {k: v for k, v in options.items() if getattr(row, k) != v}
        if not changed:
            return None
        text = "options changed: " + ", ".join(
            f"{SEARCH_OPTIONS[k]} {_shown(getattr(row, k))} → {_shown(v)}"
            for k, v in changed.items()) + (f" ({note})" if note else "")
        if not _cas(s, Search, search_id, expect or {}, {**changed, **also}):
            return None
        _event(s, "search", text, search_id=search_id)
        return text


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def latest_search(store: Store) -> SearchView | None:
    """The search most recently active (its row last changed), e.g. the one an engine drives."""
    with store.session(write=False) as s:
        row = s.exec(select(Search).order_by(col(Search.updated_at).desc(),
                                             col(Search.id).desc())).first()
        return SearchView.of(row) if row is not None else None


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
