"""Pre-flight checks and crash repair (issue 14): a patch that crashes goes back to its coder
with the traceback, never on to a GPU.

`RepairMixin` is mixed into `engine.search.SearchEngine` (which provides `store`, `search_id`,
`env`, `llm`, `progress`, `search`, `_start` and `tasks`).

- After a **pre-flight** job (the patch run on the environment's cheap `preflight` profile):
  passed → the idea's real job is queued; crashed → repaired (below); anything else (void, no
  score, timed out) → the idea fails with the pre-flight's reason. Never ranked.
- After a **crash** of the training process (the runner's exit code, no score: "crashed: exit
  code N") of a pre-flight or of an idea's first run, the idea goes to `repairing` while
  it has fix attempts left (`--fix-attempts`, default 2): the coder gets the idea, the diff
  that crashed and the end of its log, and answers with a corrected diff, which is checked
  and run again as a new attempt of the same idea (every attempt is kept). A void result, a
  refused or crashed evaluation, a time-limit kill or a lost job is never repaired: the
  evaluation said no, or the fault was not the code's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine import ideation
from engine.patching import prepare_patch
from engine.protection import DiffRules
from engine.search_confirm import seed_for
from engine.search_parts import EngineParts
from engine.store import job_ops, ops

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.metrics import Verdict
    from engine.store.views import IdeaView, JobView

#: Coder answers per repair until one gives a diff that applies.
ANSWERS_PER_REPAIR = 3


def repairable(verdict: Verdict) -> bool:
    """A crash of the training code itself: the only failure a coder may repair."""
    return verdict.job_state == "failed" and (verdict.reason or "").startswith("crashed:")


class RepairMixin(EngineParts):
    _start: Callable[[str, Any], None]

    # ------------------------------------------------------------------ after a job
    def _after_job(self, job: JobView, verdict: Verdict) -> None:
        """A finished job's consequences beyond its own row: the pre-flight's verdict on the
        idea, or a crash handed to the coder."""
        idea = ops.get_idea(self.store, job.idea_id)
        if job.kind == "preflight":
            self._after_preflight(job, verdict, idea)
        elif (job.run == 1 and idea.origin != "baseline" and repairable(verdict)
              and self._fixes_left(idea)
              and ops.transition_idea(self.store, idea.id, "failed", "repairing",
                                      reason=f"{verdict.reason}; its coder is fixing it")):
            self.progress(f"idea {idea.id} crashed on job {job.id}: back to its coder with "
                          "the traceback")

    def _resume_checks(self) -> None:
        """On start: an idea still `checking` whose pre-flight ended while no engine drove the
        search (another search's engine settled it) gets that verdict now."""
        from engine.metrics import Verdict

        for idea in ops.list_ideas(self.store, self.search_id, None, ("checking",)):
            jobs = [j for j in job_ops.list_jobs(self.store, self.search_id, idea_id=idea.id)
                    if j.kind == "preflight"]
            if jobs and jobs[-1].state in ("finished", "failed", "cancelled"):
                last = jobs[-1]
                self._after_preflight(last, Verdict(
                    last.state, "scored" if last.state == "finished" else "failed", last.score,
                    last.reason, None, last.reason or last.state), idea)

    def _after_preflight(self, job: JobView, verdict: Verdict, idea: IdeaView) -> None:
        if verdict.job_state == "finished":
            new = job_ops.enqueue_job(self.store, idea.id, profile=self.profile.name,
                                      gpus_wanted=self.profile.gpus,
                                      executor=self.executor.name, from_states=("checking",),
                                      seed=seed_for(self.search_id, 1))
            if new is not None:
                self.progress(f"idea {idea.id} passed its pre-flight check (job {job.id}): "
                              f"job {new} queued")
            return
        if repairable(verdict) and self._fixes_left(idea):
            if ops.transition_idea(self.store, idea.id, "checking", "repairing",
                                   reason=f"pre-flight {verdict.reason}; its coder is fixing "
                                   "it"):
                self.progress(f"idea {idea.id} crashed in its pre-flight check (job {job.id}): "
                              "back to its coder with the traceback; no GPU was used")
            return
        why = verdict.reason or verdict.summary
        if repairable(verdict):
            why += f" (after {self._fixes_used(idea)} repair(s))"
        ops.transition_idea(self.store, idea.id, "checking", "failed",
                            reason=f"pre-flight check: {why}"[:500])

    def _fixes_used(self, idea: IdeaView) -> int:
        return len({a.job_id for a in ops.list_attempts(self.store, idea.id)
                    if a.kind == "repair"})

    def _fixes_left(self, idea: IdeaView) -> bool:
        s = self.search
        return s.model != "catalog" and self._fixes_used(idea) < s.fix_attempts

    # ------------------------------------------------------------------ repairing
    def _start_repairs(self) -> None:
        """Start a repair task for each idea waiting for one (any epoch)."""
        if self._fatal:
            return
        for idea in ops.list_ideas(self.store, self.search_id, None, ("repairing",)):
            key = f"repair:{idea.id}"
            if key not in self.tasks:
                self._start(key, self._repair_idea(idea))

    async def _repair_idea(self, idea: IdeaView) -> None:
        st = self.store
        s = self.search
        crashed = [j for j in job_ops.list_jobs(st, self.search_id, idea_id=idea.id)
                   if (j.reason or "").startswith("crashed:")]
        if not crashed or self.llm is None or not idea.diff:
            ops.transition_idea(st, idea.id, "repairing", "failed",
                                reason=idea.reason or "crashed; nothing to repair from")
            return
        job = crashed[-1]
        done_ok = "diff_review" if s.review_diffs else "implemented"
        rules = DiffRules.of(self.env)
        tried = [(a.answer, a.error or "") for a in ops.list_attempts(st, idea.id)
                 if a.kind == "repair" and a.job_id == job.id and a.outcome != "ok"]
        while len(tried) < ANSWERS_PER_REPAIR:
            messages = ideation.implement_prompt(self.env, idea.text, tried[-2:],
                                                 crash=(idea.diff, job.log_tail))
            answer = await self.llm.complete("coder", f"repair:idea{idea.id}", messages)
            outcome = prepare_patch(answer, self.env.root, self.env.protected,
                                    self.env.protected_lines, rules=rules,
                                    cut_off=getattr(answer, "cut_off", False))
            last = outcome.ok or len(tried) + 1 >= ANSWERS_PER_REPAIR
            reason = None if outcome.ok else (
                f"{job.reason}; the repair gave no usable diff after {len(tried) + 1} answers: "
                f"{outcome.error}")
            move = ("repairing", done_ok if outcome.ok else "failed") if last else None
            ops.add_attempt(st, idea.id, model=s.coder_model or s.model, answer=answer,
                            diff=outcome.diff, outcome="ok" if outcome.ok else "failed",
                            error=outcome.error, repairs=outcome.repairs, move=move,
                            reason=reason, kind="repair", job_id=job.id)
            if outcome.ok:
                self.progress(f"idea {idea.id}: repaired after the crash of job {job.id}; "
                              "it runs again")
            if last:
                return
            tried.append((answer, outcome.error or "unknown error"))
        ops.transition_idea(st, idea.id, "repairing", "failed",
                            reason=f"{job.reason}; no usable repair after {len(tried)} answers")
