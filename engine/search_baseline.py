"""The baseline side of the search engine: the unmodified code measured on the search's
profile (its runs give the noise of issue 13), a failed baseline that stops the search before
any idea job runs, and the GPU-hour budget that holds queued jobs back.

`BaselineMixin` is mixed into `engine.search.SearchEngine`, which provides `store`,
`search_id`, `env`, `profile`, `executor`, `progress`, `search` and `_note_waiting`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.outcome import EXIT_BUDGET, EXIT_ERROR, Outcome
from engine.search_confirm import seed_for
from engine.search_parts import EngineParts
from engine.store import console_queries, job_ops, ops
from engine.store import hosts_queries as hq

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.executors.fleet import HostView
    from engine.store.views import IdeaView

#: How many lines of a failed baseline's log the search's last message quotes.
BASELINE_TAIL_LINES = 12


class BaselineMixin(EngineParts):
    _baseline_first: bool
    _baseline_known: bool
    _note_waiting: Callable[[str], None]

    def _ensure_baseline_job(self) -> None:
        if any(i.origin == "baseline" for i in ops.list_ideas(self.store, self.search_id, 0)):
            return
        idea_id = ops.add_idea(self.store, self.search_id, 0, ops.NewIdea(
            text="[Experiment] Baseline: the unmodified environment, measured on this profile.",
            origin="baseline", title="baseline (unmodified code)", status="implemented"))
        job_ops.enqueue_job(self.store, idea_id, profile=self.profile.name,
                            gpus_wanted=self.profile.gpus, executor=self.executor.name,
                            seed=seed_for(self.search_id, 1))
        runs = self.search.baseline_runs
        for run in range(2, runs + 1):
            job_ops.enqueue_run(self.store, idea_id, run, seed=seed_for(self.search_id, run),
                                profile=self.profile.name, gpus_wanted=self.profile.gpus,
                                executor=self.executor.name, why="the baseline's noise")
        self.progress(f"measuring the baseline on profile {self.profile.name!r} (idea {idea_id}"
                      + (f", {runs} runs" if runs > 1 else "") + ")")

    # ------------------------------------------------------------------ baseline
    # Ideas are measured against the unmodified code: when it finishes without a score on
    # this profile (a missing package, a broken host python), every idea would fail the same
    # way. The search stops at once, nothing more launches, and a resume measures the
    # baseline again before any held idea job may start.
    def _place_and_launch(self, views: dict[str, HostView]) -> None:
        if not self._baseline_known and self._failed_baseline() is not None:
            return  # the baseline just failed in this tick's watch: _loop stops the search
        if self._gpu_budget_holds():
            return
        super()._place_and_launch(views)

    # ------------------------------------------------------------------ GPU-hour budget
    # Like `--max-cost`, `--max-gpu-hours` stops only what would spend more: once the
    # search's jobs have used it, no queued job starts; running ones finish and are collected,
    # then the search stops (exit 3), and a resume with a larger budget goes on.
    def _gpu_budget_holds(self) -> bool:
        """True while the spent budget holds queued jobs back."""
        s = self.search
        if s.max_gpu_hours is None:
            return False
        spent = console_queries.gpu_hours(self.store, self.search_id)
        if spent < s.max_gpu_hours:
            return False
        queued = job_ops.list_jobs(self.store, self.search_id, ("queued",))
        if not queued:
            return True  # nothing wants to start: a search that ends here ends as usual
        said = (f"--max-gpu-hours {s.max_gpu_hours:g} reached (spent {spent:.4f} GPU h): "
                f"no new job starts ({len(queued)} queued)")
        running = job_ops.list_jobs(self.store, self.search_id, hq.ACTIVE)
        if running:
            self._note_waiting(f"{said}; waiting for {len(running)} running job(s)")
        else:
            hint = f"`ideaforge resume {s.name} --max-gpu-hours MORE` continues"
            self._fatal = (EXIT_BUDGET, f"{said}; {hint}")
        return True

    def _enqueue(self, epoch: int) -> None:
        if not self._baseline_first:
            super()._enqueue(epoch)

    def _baseline_scored(self) -> bool:
        """Whether the baseline is known: its idea has scored (a run of it did), or the
        profile declares it and the search measures none."""
        idea = ops.baseline_idea(self.store, self.search_id)
        return idea.status == "scored" if idea is not None else self.search.baseline is not None

    def _failed_baseline(self) -> IdeaView | None:
        """The baseline idea if it finished without a score and none is measured yet."""
        if self._baseline_known:
            return None
        if self._baseline_scored():
            self._baseline_known = not self._baseline_first
            return None
        idea = ops.baseline_idea(self.store, self.search_id)
        return idea if idea is not None and idea.status == "failed" else None

    def _check_baseline(self) -> Outcome | None:
        """Release held idea jobs once the baseline has scored; stop if it failed."""
        if self._baseline_first and self._baseline_scored():
            self._baseline_first = False
            released = job_ops.release_held_jobs(self.store, self.search_id,
                                                 "the baseline is measured")
            if released:
                self.progress(f"baseline measured: {len(released)} held idea job(s) queued")
        idea = self._failed_baseline()
        return None if idea is None else self._stop_on_failed_baseline(idea)

    def _stop_on_failed_baseline(self, idea: IdeaView) -> Outcome:
        s = self.search
        # The run that failed (the baseline's other runs may not have started).
        jobs = [j for j in job_ops.list_jobs(self.store, self.search_id, idea_id=idea.id)
                if j.state == "failed"]
        held = job_ops.hold_queued_jobs(self.store, self.search_id, None,
                                        "the baseline failed; `ideaforge resume` measures it "
                                        "again first")
        # Its other runs wait too: they would fail alike, and a resume measures it first.
        held = [j for j in held if job_ops.get_job(self.store, j).idea_id != idea.id]
        running = [j for j in job_ops.list_jobs(self.store, self.search_id, hq.ACTIVE)
                   if j.idea_id != idea.id]
        summary = (f"the baseline (the unmodified code, idea {idea.id}) failed on profile "
                   f"{s.profile!r}: {idea.reason or 'it reported no score'}")
        hint = ("the unmodified code fails on this profile: fix the environment or the host's "
                f"python, then `ideaforge resume {s.name}` (it measures the baseline again "
                "before any idea job launches)")
        ops.update_search(self.store, self.search_id, status="failed",
                          message=f"{summary}; {hint}", event=f"search failed: {summary}")
        parts = [summary]
        tail = jobs[-1].log_tail.strip().splitlines()[-BASELINE_TAIL_LINES:] if jobs else []
        if tail:
            parts.append(f"last lines of its log (job {jobs[-1].id}):")
            parts += [f"    {line}" for line in tail]
        if held:
            parts.append(f"{len(held)} queued idea job(s) held back: none of them launched")
        if running:
            parts.append(f"{len(running)} idea job(s) already started keep running; a resume "
                         "collects their results")
        parts.append(hint)
        return Outcome(EXIT_ERROR, "\n".join(parts))

    def _remeasure_failed_baseline(self) -> None:
        """On resume after a failed baseline: queue it again, and hold idea jobs until it has
        scored (a held job survives a restart: a later engine keeps holding it)."""
        self._baseline_first = bool(job_ops.list_jobs(self.store, self.search_id, ("held",)))
        idea = self._failed_baseline()
        if idea is None:
            return
        self._baseline_first = True
        job_ops.hold_queued_jobs(self.store, self.search_id, idea.id,
                                 "the baseline is measured again first")
        job_id = job_ops.enqueue_job(self.store, idea.id, profile=self.profile.name,
                                     gpus_wanted=self.profile.gpus, executor=self.executor.name,
                                     from_states=("failed",), seed=seed_for(self.search_id, 1))
        self.progress(f"measuring the baseline again (job {job_id}); idea jobs wait for it")
