"""The search state machine: propose → [review ideas] → implement → [review diffs] → run → rank.

One `SearchEngine` drives one search. Every step reads its state from the store and writes
each change as a compare-and-set, so the process can be killed at any point and a new one
continues where it stopped — re-attaching to running jobs, never launching one twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import catalog, ideation
from engine.environments import Environment
from engine.environments import load as load_environment
from engine.executors.base import Executor
from engine.outcome import (
    EXIT_BUDGET,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_STOPPED,
    EngineBusy,
    Outcome,
)
from engine.patching import PatchError, combine_diffs, prepare_patch
from engine.protection import DiffRules
from engine.search_baseline import BaselineMixin
from engine.search_confirm import ConfirmMixin
from engine.search_ideas import IdeasMixin
from engine.search_jobs import JobsMixin
from engine.search_repair import RepairMixin
from engine.store import Store, job_ops, ops
from engine.store.views import IdeaView, SearchView

log = logging.getLogger(__name__)

TERMINAL = {"scored", "failed", "implement_failed", "rejected", "skipped", "superseded"}
#: Ended ideas that do not count towards an epoch's share (they never ran).
SET_ASIDE = {"rejected", "skipped", "superseded"}


class SearchEngine(ConfirmMixin, IdeasMixin, RepairMixin, BaselineMixin, JobsMixin):
    def __init__(self, store: Store, search: SearchView, executor: Executor,
                 llm: Any | None = None, *, poll_s: float = 0.5,
                 progress: Callable[[str], None] | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.store = store
        self.search_id = search.id
        self.executor = executor
        self.llm = llm
        self.poll_s = poll_s
        self.progress = progress or log.info
        #: How the search goes on from here (`resume --auto` …): stored once this engine
        #: holds the search, so an engine that is refused changes nothing.
        self.options = dict(options or {})
        self.env: Environment = load_environment(search.env_path)
        self.profile = self.env.profile(search.profile)
        self.rng = random.Random(search.id * 7919 + search.epoch)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._lock_fh: Any = None
        self._stop: str | None = None
        self._fatal: tuple[int, str] | None = None
        self._wake = asyncio.Event()
        self._task_failures: dict[str, int] = {}
        self._waiting_note: str | None = None
        #: (epoch, gate phase) the console asked to hold shut once every idea is decided,
        #: until the researcher says go (a `hold` decision; the CLI's decisions do not hold).
        self._held: tuple[int, str] | None = None
        #: After a failed baseline: idea jobs wait until a new baseline run has scored.
        self._baseline_first = False
        self._baseline_known = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def search(self) -> SearchView:
        return ops.find_search(self.store, self.search_id)

    def acquire(self) -> None:
        """One engine per search: an advisory lock the kernel drops if this process dies."""
        path = lock_path(self.store.workspace, self.search_id)
        path.parent.mkdir(exist_ok=True)
        # Held open for the engine's life: closing it is what releases the lock.
        fh = open(path, "a+")  # noqa: SIM115
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            s = self.search
            raise EngineBusy(
                f"search {s.name!r} is already driven by engine pid {s.engine_pid} on "
                f"{s.engine_host}; stop it with `ideaforge stop {s.name}` or wait for it"
            ) from None
        self._lock_fh = fh
        ops.update_search(self.store, self.search_id, engine_pid=os.getpid(),
                          engine_host=socket.gethostname(), engine_heartbeat=time.time(),
                          status="running", message=None,
                          event=f"engine pid {os.getpid()} attached")
        if self.options:
            self._store_options()

    def _store_options(self) -> None:
        s = self.search
        also: dict[str, Any] = {}
        note = ""
        if self.options.get("epochs", s.epochs) > s.epochs and s.phase in ("finishing", "done"):
            # The run phase starts the next epoch once this one's share has reported.
            also["phase"] = "run"
            note = f"the search goes on with epoch {s.epoch + 2}"
        changed = ops.change_search_options(self.store, self.search_id, self.options,
                                            expect={"phase": s.phase}, note=note, **also)
        if changed:
            self.progress(changed)

    def release(self) -> None:
        ops.update_search(self.store, self.search_id, engine_pid=None, engine_heartbeat=None)
        if self._lock_fh:
            self._lock_fh.close()
            self._lock_fh = None

    async def run(self) -> Outcome:
        self.acquire()
        try:
            return await self._loop()
        finally:
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            self._close_marker()
            self._close_exit_watches()
            self._close_launcher()
            self.release()

    def _warn_if_evaluator_changed(self, ranked_by: str | None) -> None:
        now = self.env.evaluator_id()
        if ranked_by and now != ranked_by:
            message = (f"the evaluator's files changed since this search began (it ranks by "
                       f"{ranked_by[:12]}, the environment now has {(now or 'none')[:12]}): new "
                       "results will be shown but not ranked; start a new search to rank by "
                       "the new evaluator")
            ops.add_event(self.store, "search", message, search_id=self.search_id)
            self.progress("warning: " + message)

    async def _loop(self) -> Outcome:
        s = self.search
        self.progress(f"search {s.name!r}: {s.env_name}/{s.profile}, model "
                      f"{catalog.LABEL if s.model == 'catalog' else s.model}, "
                      f"{s.epochs} epochs × {s.ideas_per_epoch} ideas")
        self.executor.prepare(self.env, self.profile)
        self._warn_if_evaluator_changed(s.evaluator)
        self._remeasure_failed_baseline()
        self._resume_checks()
        self._held = ops.held_gate(self.store, self.search_id)
        woken = True
        while True:
            if self._quiet_tick(woken):  # nothing changed: only looked (engine.search_quiet)
                self._beat()
                woken = await self._sleep(self._quiet_sleep_s())
                continue
            self._begin_full_tick()
            self._apply_decisions()
            if self._stop:
                ops.update_search(self.store, self.search_id, status="stopped",
                                  message=self._stop, event=f"stopped: {self._stop}")
                return Outcome(EXIT_STOPPED, self._stop)
            self._tick_jobs()
            self._queue_repeats()
            self._start_repairs()
            failed = self._check_baseline()
            if failed is not None:
                return failed
            done = self._tick_epoch()
            self._reap_tasks()
            if self._fatal:
                code, message = self._fatal
                ops.update_search(self.store, self.search_id, status="stopped",
                                  message=message, event=f"stopped: {message}")
                return Outcome(code, message)
            if done is not None:
                return done
            self._beat()
            self._watch_exits()
            woken = await self._sleep()

    async def _sleep(self, seconds: float | None = None) -> bool:
        """Sleep until the next poll, or until a proposal/implementation task finishes (a
        finished task usually unblocks the next phase, which should not wait a tick); True
        when woken."""
        # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow a cancellation that
        # arrives as the wake is set (gh-86296), and the engine would then never stop
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds or self.poll_s)
        finally:
            waiter.cancel()
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

    def _start(self, key: str, coro: Any) -> None:
        task = asyncio.create_task(coro)
        task.add_done_callback(lambda t: self._task_done(key, t))
        self.tasks[key] = task

    def _task_done(self, key: str, task: asyncio.Task[None]) -> None:
        """Wake the loop when a finished task may unblock something now: the last task of
        its kind (N implementations finishing cost one pass, not N), or a failed one. The
        others are picked up by the next tick."""
        kind = key.split(":", 1)[0] + ":"
        failed = not task.cancelled() and task.exception() is not None
        if failed or not any(k.startswith(kind) and not t.done()
                             for k, t in self.tasks.items()):
            self._wake.set()

    def _reap_tasks(self) -> None:
        for key, task in list(self.tasks.items()):
            if not task.done():
                continue
            del self.tasks[key]
            exc = None if task.cancelled() else task.exception()
            if exc is None:
                continue
            names = {c.__name__ for c in type(exc).__mro__}
            if "BudgetExceeded" in names:
                self._fatal = (EXIT_BUDGET, str(exc))
            elif "LlmError" in names:
                # The model is unreachable or unusable: stop cleanly; `resume` continues.
                self._fatal = (EXIT_ERROR, str(exc))
            else:
                log.error("%s failed: %s", key, exc, exc_info=exc)
                ops.add_event(self.store, "error", f"{key}: {exc}", search_id=self.search_id)
                self._task_failures[key] = self._task_failures.get(key, 0) + 1
                if self._task_failures[key] >= 3:
                    self._fatal = (EXIT_ERROR, f"{key} failed 3 times: {exc}")

    # ------------------------------------------------------------------ decisions
    def _apply_decisions(self) -> None:
        for d in ops.pending_decisions(self.store, self.search_id):
            if d.action == "add":
                # Not idempotent: the idea is stored in the transaction that consumes the
                # decision.
                new_id = ops.add_idea_for_decision(
                    self.store, d.id, self.search_id, self.search.epoch,
                    ops.NewIdea(text=d.text or "", origin="human", status="approved",
                                diff=d.diff))
                if new_id is not None:
                    self.progress(f"decision: add → idea {new_id}")
                continue
            outcome = self._apply(d.action, d.idea_id, d.text, d.diff)
            ops.consume_decision(self.store, d.id, outcome)
            if outcome != "ignored":
                self.progress(f"decision: {d.action}" +
                              (f" idea {d.idea_id}" if d.idea_id else "") + f" → {outcome}")

    def _apply(self, action: str, idea_id: int | None, text: str | None,
               diff: str | None = None) -> str:
        st = self.store
        if action == "stop":
            self._stop = "stopped by the researcher"
            return "stopping"
        if action == "hold":
            s = self.search
            self._held = (s.epoch, "review_diffs" if s.phase == "review_diffs"
                          else "review_ideas")
            return f"gate held until go (epoch {self._held[0]} {self._held[1]})"
        if action == "go":
            s = self.search
            self._held = None
            n = 0
            for idea in ops.list_ideas(st, self.search_id, s.epoch, ("proposed", "diff_review")):
                n += ops.transition_idea(st, idea.id, idea.status, "skipped",
                                         reason="undecided when the researcher said go")
            return f"gate released ({n} undecided skipped)"
        if idea_id is None:
            return "ignored"
        if action == "approve":
            if ops.transition_idea(st, idea_id, "proposed", "approved"):
                return "approved"
            if ops.transition_idea(st, idea_id, "diff_review", "implemented"):
                return "diff approved"
            return "ignored"
        if action == "reject":
            if ops.transition_idea(st, idea_id, {"proposed", "approved", "diff_review"},
                                   "rejected", reason=text or None):
                return "rejected"
            return "ignored"
        if action == "edit":
            new_id = ops.edit_idea(st, idea_id, text or "", {"proposed", "approved"}, diff)
            return f"edited into idea {new_id}" if new_id else "ignored"
        if action in ("accept", "discard"):
            idea = ops.get_idea(st, idea_id)
            if idea.quarantine == "pending":
                ops.set_idea_fields(st, idea_id, quarantine="accepted" if action == "accept"
                                    else "rejected", message=f"quarantine of idea {idea_id}: "
                                    f"{action}ed by the researcher")
                return action + "ed"
        return "ignored"

    # ------------------------------------------------------------------ epochs
    def _tick_epoch(self) -> Outcome | None:
        s = self.search
        e = s.epoch
        if s.phase == "propose":
            if self._propose(s):
                self._set_phase("review_ideas", f"epoch {e}: proposals in")
        elif s.phase == "review_ideas":
            waiting = ops.list_ideas(self.store, self.search_id, e, ("proposed",))
            if waiting and s.auto:
                ops.transition_ideas(self.store, [i.id for i in waiting], "proposed", "approved",
                                     "idea {id} approved automatically (--auto)")
                waiting = []
            if waiting:
                self._note_waiting(f"epoch {e}: waiting for decisions on {len(waiting)} ideas "
                                   f"(ideaforge approve/reject/edit, or the console)")
                return None
            if self._holds(s, "ideas"):
                return None
            self._set_phase("implement", f"epoch {e}: ideas reviewed")
        elif s.phase == "implement":
            if self._implement(e):
                self._set_phase("review_diffs" if s.review_diffs else "run",
                                f"epoch {e}: implementation done")
        elif s.phase == "review_diffs":
            waiting = ops.list_ideas(self.store, self.search_id, e, ("diff_review",))
            if waiting and s.auto:
                for idea in waiting:
                    ops.transition_idea(self.store, idea.id, "diff_review", "implemented")
                waiting = []
            if waiting:
                self._note_waiting(f"epoch {e}: waiting for decisions on {len(waiting)} diffs")
                return None
            if self._holds(s, "diffs"):
                return None
            self._set_phase("run", f"epoch {e}: diffs reviewed")
        elif s.phase == "run":
            self._implement(e)  # ideas added by the researcher during the run
            self._enqueue(e)
            if self._epoch_share_done(e) >= s.advance_at:
                if e + 1 < s.epochs:
                    ops.update_search(self.store, self.search_id, expect={"epoch": e},
                                      epoch=e + 1, phase="propose",
                                      event=f"epoch {e + 1} begins")
                    self.progress(f"epoch {e + 1} begins")
                else:
                    self._set_phase("finishing", "last epoch: waiting for running jobs")
        elif s.phase == "finishing":
            self._implement(e)
            self._enqueue(e)
            unfinished = job_ops.list_jobs(self.store, self.search_id,
                                           ("queued", "launching", "running", "unreachable"))
            busy = ops.list_ideas(self.store, self.search_id, None,
                                  ("approved", "implementing", "implemented", "queued",
                                   "checking", "repairing"))
            if not unfinished and not busy and not self.tasks:
                self._set_phase("done", "search finished")
                ops.update_search(self.store, self.search_id, status="finished")
                return Outcome(EXIT_OK, "finished")
        elif s.phase == "done":
            return Outcome(EXIT_OK, "finished")
        return None

    def _set_phase(self, phase: str, message: str) -> None:
        ops.update_search(self.store, self.search_id, phase=phase, event=message)
        self._wake.set()  # the next phase can start at once
        self._waiting_note = None
        self.progress(message)

    def _holds(self, s: SearchView, what: str) -> bool:
        """Every idea at the gate is decided, but the console asked to wait for go."""
        if s.auto or self._held != (s.epoch, s.phase):
            return False
        self._note_waiting(f"epoch {s.epoch}: every {what[:-1]} decided; the gate waits for go "
                           "(g in the console, or ideaforge go)")
        return True

    def _note_waiting(self, note: str) -> None:
        if note != self._waiting_note:
            self._waiting_note = note
            self.progress(note)

    def _epoch_share_done(self, epoch: int) -> float:
        """The share of the epoch's ideas that ended (rejected, skipped and superseded ones
        left out). Counted in an index: the unfinished ones first (few, while the epoch
        runs), and the whole epoch only when a threshold below 1 needs the exact share."""
        unfinished = ops.count_ideas(self.store, self.search_id, epoch, not_statuses=TERMINAL)
        if not unfinished:
            return 1.0
        if self.search.advance_at >= 1.0:
            return 0.0  # below any threshold of 1: the exact share is not needed
        counts = ops.counts_by_status(self.store, self.search_id, epoch)
        done = sum(n for st, n in counts.items() if st in TERMINAL and st not in SET_ASIDE)
        return done / (done + unfinished)

    # ------------------------------------------------------------------ propose
    def _propose(self, s: SearchView) -> bool:
        """Start missing proposal tasks; True once every batch of the epoch is settled."""
        if s.epoch == 0 and (s.baseline is None or s.confirm != "off"):
            # A declared baseline needs no run, unless repeats compare ideas with it.
            self._ensure_baseline_job()
        plan = ideation.plan_batches(s.epoch, s.ideas_per_epoch)
        batches = ops.ensure_batches(self.store, self.search_id, s.epoch, plan)
        pending = [b for b in batches if b.status == "planned"]
        hold = self._exploit_waits(pending)
        for b in pending:
            key = f"propose:{b.id}"
            if key not in self.tasks and not (hold and b.kind == "exploit"):
                self._start(key, self._propose_batch(b.id, b.kind, b.size, s.epoch))
        if pending:
            return False
        if not [i for i in ops.list_ideas(self.store, self.search_id, s.epoch)
                if i.origin != "baseline"]:
            # Batches often fail alike (each says the catalog is used up): say it once.
            errors = "; ".join(dict.fromkeys(b.error for b in batches if b.error))[:300]
            message = (f"epoch {s.epoch} produced no ideas ({errors}); check --model, then "
                       "`ideaforge resume` asks again")
            if s.model == "catalog" and s.epoch > 0:
                # The offline catalog is finite: used up, the search ends with what it has.
                self._set_phase("finishing", f"epoch {s.epoch}: the catalog has no ideas "
                                "left; the search ends once its jobs are done")
                return False
            self._fatal = (EXIT_ERROR, message)
            # Let a resume ask again instead of finding the same failed batches.
            ops.reset_failed_batches(self.store, self.search_id, s.epoch)
            return False
        return True

    def _exploit_waits(self, pending: list[Any]) -> bool:
        """An exploit batch waits while repeats are still deciding whether any idea is a
        parent: proposed now, it would fall back to exploring, or build on nothing."""
        if self.search.confirm == "off" or not any(b.kind == "exploit" for b in pending):
            return False
        if len(self._winners()) >= 2 or not self._repeats_in_flight():
            return False  # two parents to choose from (or cross), or nothing more will come
        self._note_waiting(f"epoch {self.search.epoch}: the exploit batch waits for repeats "
                           "to confirm a parent")
        return True

    def _population(self) -> list[IdeaView]:
        return [i for i in ops.list_ideas(self.store, self.search_id)
                if i.origin != "baseline"]

    def _winners(self) -> list[IdeaView]:
        s = self.search
        metric = self.env.metric.__class__(self.env.metric.name, self.env.metric.goal,
                                           s.baseline)
        # With repeats on, only a confirmed idea is built on: a lucky score seeds nothing.
        confirmed_only = s.confirm != "off"
        return [i for i in self._population() if i.status == "scored"
                and i.quarantine in (None, "accepted") and metric.beats_baseline(i.score)
                and (not confirmed_only or i.confirmation == "confirmed")]

    async def _propose_batch(self, batch_id: int, kind: str, size: int, epoch: int) -> None:
        s = self.search
        if s.model == "catalog":
            used = {i.catalog_stem for i in self._population() if i.catalog_stem}
            ideas = catalog.propose(self.env, kind, size, self.rng, used, self._winners())
            error = None if ideas else "the catalog has no unused ideas left"
            ops.finish_batch(self.store, batch_id, ideas, error)
            return
        assert self.llm is not None
        # Prompts quote the baseline of this search's profile, not the paper-scale one.
        env = dataclasses.replace(self.env, metric=dataclasses.replace(self.env.metric,
                                                                       baseline=s.baseline))
        population = self._population()
        previous = [i.text for i in population]
        steering = ops.reject_reasons(self.store, self.search_id)
        parents: list[IdeaView] = []
        winners = self._winners()
        if kind == "exploit" and not winners:
            kind = "explore"  # nothing beats the baseline yet: there is nothing to exploit
        if kind == "seed":
            messages = ideation.seed_prompt(env, size, previous, steering)
        elif kind == "exploit":
            scored = [self._scored(i) for i in winners]
            chosen = ideation.sample_parents(scored, env.metric.goal, s.baseline, rng=self.rng)
            parents = [i for i in population if i.id in {c.id for c in chosen}]
            messages = ideation.exploit_prompt(env, size, chosen, previous, steering)
        else:
            sample = ideation.sample_population([self._scored(i) for i in population],
                                                rng=self.rng)
            messages = ideation.explore_prompt(env, size, sample, previous, steering)
        new, problems = await self._ask_ideas(kind, epoch, size, messages,
                                              tuple(p.id for p in parents))
        if new:
            ops.finish_batch(self.store, batch_id, new,
                             "; ".join(problems)[:500] if problems else None)
            return
        ops.finish_batch(self.store, batch_id, [], "no parseable ideas in the model's answer: "
                         + ("; ".join(problems) or "no [Experiment] blocks")[:400])

    @staticmethod
    def _scored(i: IdeaView) -> Any:
        return ideation.ScoredIdea(id=i.id, text=i.text, score=i.score, status=i.status)

    # ------------------------------------------------------------------ implement
    def _implement(self, epoch: int) -> bool:
        """Start implementation tasks; True once no idea of the epoch awaits one.

        Per tick this reads only what is new: approved ideas (moved on at once), and the
        implementing ones only when fewer tasks run than ideas wait (an engine that restarted,
        or a task that failed): the ideas already being implemented are counted, not read."""
        waiting = ops.count_ideas(self.store, self.search_id, epoch, ("approved", "implementing"))
        if not waiting:
            return True
        if self._fatal:
            return False
        # A task not yet done holds its idea in implementing: fewer such tasks than ideas in
        # implementing (any epoch) means some idea has none.
        busy = sum(k.startswith("implement:") and not t.done() for k, t in self.tasks.items())
        implementing = ops.count_ideas(self.store, self.search_id, None, ("implementing",))
        todo = ops.list_ideas(self.store, self.search_id, epoch,
                              ("approved", "implementing") if implementing > busy
                              else ("approved",))
        fresh = [i.id for i in todo if i.status == "approved"
                 and f"implement:{i.id}" not in self.tasks]
        if fresh:
            # One transaction for the whole batch, before any model call goes out.
            moved = set(ops.transition_ideas(self.store, fresh, "approved", "implementing",
                                             "idea {id} → implementing"))
            todo = [dataclasses.replace(i, status="implementing") if i.id in moved else i
                    for i in todo]
        for idea in todo:
            key = f"implement:{idea.id}"
            if key not in self.tasks:
                self._start(key, self._implement_idea(idea))
        return False

    async def _implement_idea(self, idea: IdeaView) -> None:
        st = self.store
        s = self.search
        if idea.status == "approved" and not ops.transition_idea(st, idea.id, "approved",
                                                                 "implementing"):
            return
        done_ok = "diff_review" if s.review_diffs else "implemented"
        protected, lines = self.env.protected, self.env.protected_lines
        rules = DiffRules.of(self.env)  # protected regions, evaluator files
        if self._implement_attached(idea, done_ok):  # the researcher's own diff
            return
        if s.model == "catalog":
            try:
                if idea.catalog_stem:
                    answer = catalog.diff_for(self.env, idea.catalog_stem)
                else:
                    parents = [ops.get_idea(st, p) for p in idea.parents]
                    answer = combine_diffs(self.env.root, [p.diff for p in parents if p.diff])
            except PatchError as exc:
                self._implement_failed(idea.id, "catalog", "", f"the parents' diffs conflict: "
                                       f"{exc}")
                return
            outcome = prepare_patch(answer, self.env.root, protected, lines, rules=rules)
            ops.add_attempt(st, idea.id, model="catalog", answer=answer, diff=outcome.diff,
                            outcome="ok" if outcome.ok else "failed", error=outcome.error,
                            repairs=outcome.repairs,
                            move=("implementing", done_ok if outcome.ok else "implement_failed"),
                            reason=None if outcome.ok else outcome.error)
            return
        assert self.llm is not None
        attempts = ops.list_attempts(st, idea.id)
        previous = [(a.answer, a.error or "") for a in attempts if a.outcome != "ok"]
        while len(previous) < s.max_attempts:
            messages = ideation.implement_prompt(self.env, idea.text, previous[-3:])
            answer = await self.llm.complete("coder", f"implement:idea{idea.id}", messages)
            # an answer cut at the output limit is refused whole, however whole it looks
            outcome = prepare_patch(answer, self.env.root, protected, lines, rules=rules,
                                    cut_off=getattr(answer, "cut_off", False))
            last = outcome.ok or len(previous) + 1 >= s.max_attempts
            reason = None if outcome.ok else (
                f"no usable diff after {len(previous) + 1} attempts; last error: "
                f"{outcome.error}")
            ops.add_attempt(st, idea.id, model=s.coder_model or s.model, answer=answer,
                            diff=outcome.diff, outcome="ok" if outcome.ok else "failed",
                            error=outcome.error, repairs=outcome.repairs,
                            move=(("implementing", done_ok if outcome.ok else "implement_failed")
                                  if last else None), reason=reason)
            if last:
                return
            previous.append((answer, outcome.error or "unknown error"))
        # Attempts were used up by an earlier engine that stopped before moving the idea on.
        ops.transition_idea(st, idea.id, "implementing", "implement_failed",
                            reason=f"no usable diff after {len(previous)} attempts")

    def _implement_failed(self, idea_id: int, model: str, answer: str, error: str) -> None:
        ops.add_attempt(self.store, idea_id, model=model, answer=answer, diff=None,
                        outcome="failed", error=error, move=("implementing", "implement_failed"),
                        reason=error)


def workspace_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("IDEAFORGE_WORKSPACE") or ".ideaforge").expanduser()


def lock_path(workspace: Path, search_id: int) -> Path:
    """The file whose lock an engine holds while it drives the search."""
    return Path(workspace) / "locks" / f"search-{search_id}.lock"


def engine_alive(workspace: Path, search_id: int) -> bool:
    """Whether an engine on this machine drives the search now: it holds the search's lock
    (see `SearchEngine.acquire`), which the kernel drops when that process dies, however."""
    try:
        fh = open(lock_path(workspace, search_id))  # noqa: SIM115 - closed below, after the probe
    except OSError:
        return False
    try:
        fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        fh.close()
    return False
