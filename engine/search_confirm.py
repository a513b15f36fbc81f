"""Repeats and confirmation inside the search (issue 13): one run is not a result.

`ConfirmMixin` is mixed into `engine.search.SearchEngine` (which provides `store`,
`search_id`, `env`, `profile`, `executor`, `progress`). After every finished job it settles
the idea's runs — the mean of its scored runs becomes the idea's score, their standard error
`score_se`, the verdict of `engine.confirmation.decide` its `confirmation` — and, each tick,
it queues repeat runs of the unconfirmed ideas that lead (and of the baseline) as ordinary
jobs, within the policy's share of the search's compute.

Every job gets `IDEAFORGE_SEED`: run k of every idea (the baseline's included) gets the same
seed, so that the k-th runs of two ideas differ by their code, not by their luck, and a retry
of a run repeats it exactly.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from engine import confirmation as cf
from engine.search_parts import EngineParts
from engine.store import hosts_queries as hq
from engine.store import job_ops, ops

if TYPE_CHECKING:

    from engine.store.views import IdeaView, JobView, SearchView

#: What `--confirm` accepts, for its error message.
CONFIRM_HELP = "off, all, or top-K with K a whole number ≥ 1 (e.g. top-4)"


def parse_confirm(text: str) -> tuple[str, int]:
    """`--confirm off|all|top-K` → (mode, K); ValueError names what is wrong and the fix."""
    word = text.strip().lower()
    if word in ("off", "all"):
        return word, 0
    if word.startswith("top-"):
        k = word[4:]
        if k.isdigit() and int(k) >= 1:
            return "top-K", int(k)
    raise ValueError(f"--confirm {text!r}: must be {CONFIRM_HELP}")


def policy_for(search: SearchView) -> cf.ConfirmationPolicy | None:
    """The confirmation policy of a search (`confirm`, and `confirm_share` in its config);
    None when repeats are off."""
    mode, k = parse_confirm(search.confirm)
    if mode == "off":
        return None
    share = search.config.get("confirm_share")
    return cf.ConfirmationPolicy(
        mode=mode, top_k=k or cf.ConfirmationPolicy.top_k,  # type: ignore[arg-type]
        gpu_share=cf.ConfirmationPolicy.gpu_share if share is None else float(share))


def seed_for(search_id: int, run: int) -> int:
    """IDEAFORGE_SEED of run `run` of every idea of a search (module docstring)."""
    return (search_id * 1_000_003 + run * 7_919) % 2_147_483_647


class ConfirmMixin(EngineParts):

    # ------------------------------------------------------------------ settling runs
    def _settle_runs(self, idea_id: int) -> None:
        """After a job of the idea finished: its score is the mean of its scored runs; the
        baseline's mean is the search's baseline, and a new baseline run re-judges every idea."""
        self._repeats_dirty = True
        idea = ops.get_idea(self.store, idea_id)
        if idea.status != "scored":
            return
        scores = self._run_scores(idea_id)
        if not scores:
            return
        mean, se = cf.mean_se(scores)
        if idea.origin == "baseline":
            ops.set_idea_fields(self.store, idea_id, score=mean, runs=len(scores), score_se=se)
            said = (f"baseline measured: {self.env.metric.name} {mean:.4g}" if se is None
                    else f"baseline: {self.env.metric.name} {mean:.4g} ± {se:.2g} over "
                    f"{len(scores)} runs")
            ops.update_search(self.store, self.search_id, baseline=mean, event=said)
            for other in ops.list_ideas(self.store, self.search_id, None, ("scored",)):
                if other.origin != "baseline":
                    self._judge(other, scores)
            return
        ops.set_idea_fields(self.store, idea_id, score=mean, runs=len(scores), score_se=se)
        self._judge(ops.get_idea(self.store, idea_id), self._run_scores(self._baseline_id()))

    def _run_scores(self, idea_id: int | None) -> list[float]:
        """The idea's scores, one per scored run, in the order of the runs."""
        if idea_id is None:
            return []
        jobs = job_ops.list_jobs(self.store, self.search_id, ("finished",), idea_id=idea_id)
        # A pre-flight check's score is never a run's: it ran another, cheaper profile.
        return [j.score for j in sorted(jobs, key=lambda j: j.run)
                if j.score is not None and j.kind == "run"]

    def _baseline_id(self) -> int | None:
        idea = ops.baseline_idea(self.store, self.search_id)
        return idea.id if idea is not None else None

    def _judge(self, idea: IdeaView, baseline: list[float]) -> None:
        """Store the idea's confirmation: None while it has not beaten the baseline once."""
        policy = policy_for(self.search)
        if policy is None or idea.quarantine not in (None, "accepted"):
            return
        scores = self._run_scores(idea.id)
        if not scores or not baseline:
            return
        decision = cf.decide(baseline, scores, self.env.metric.goal, policy, self.profile.noise)
        voided = [j for j in job_ops.list_jobs(self.store, self.search_id, idea_id=idea.id)
                  if j.run > 1 and j.reason == "void"]
        if voided:
            status: str | None = "refuted"
            why = f"run {voided[0].run} was void: {voided[0].log_tail.strip()[-120:]}"
        elif len(scores) == 1 and decision.gain <= 0:
            status, why = None, ""  # not a candidate: it did not beat the baseline

        else:
            status, why = decision.status, decision.reason
        if status == idea.confirmation:
            return
        message = None
        if status in ("confirmed", "refuted"):
            message = f"idea {idea.id} {status} after {len(scores)} runs: {why}"
            self.progress(message)
        ops.set_idea_fields(self.store, idea.id, message=message, confirmation=status)

    def _repeats_in_flight(self) -> bool:
        """Whether a run that may still confirm an idea is queued or running."""
        base_id = self._baseline_id()
        open_ = {i.id for i in ops.list_ideas(self.store, self.search_id, None, ("scored",))
                 if i.confirmation == "unconfirmed"}
        return any(j.idea_id in open_ or (j.idea_id == base_id and j.run > 1)
                   for j in job_ops.list_jobs(self.store, self.search_id,
                                              ("queued", "held", *hq.ACTIVE)))

    # ------------------------------------------------------------------ queueing repeats
    def _queue_repeats(self) -> None:
        """Queue the repeats the policy asks for now: at most one unfinished run per idea.
        Looked at again only after a run was settled (or once when the engine starts)."""
        if not getattr(self, "_repeats_dirty", True):
            return
        self._repeats_dirty = False
        s = self.search
        policy = policy_for(s)
        base_id = self._baseline_id()
        if policy is None or base_id is None:
            return
        baseline = self._run_scores(base_id)
        if not baseline:
            return
        jobs = job_ops.list_jobs(self.store, self.search_id)
        busy = {j.idea_id for j in jobs if j.state in ("queued", "held", *hq.ACTIVE)}
        runs: dict[int, int] = {}
        for j in jobs:
            runs[j.idea_id] = max(runs.get(j.idea_id, 0), j.run)
        candidates = []
        for idea in ops.list_ideas(self.store, self.search_id, None, ("scored",)):
            if (idea.confirmation == "unconfirmed" and idea.id not in busy
                    and idea.quarantine in (None, "accepted")):
                candidates.append(cf.Candidate(str(idea.id), tuple(self._run_scores(idea.id))))
        if not candidates:
            return
        per_run = self._run_hours(jobs)
        candidates = [cf.Candidate(c.idea_id, c.scores, per_run) for c in candidates]
        spent, total = self._compute_hours(jobs, s.baseline_runs, per_run)
        picked = cf.pick_repeats(candidates, baseline, self.env.metric.goal, policy,
                                 repeat_hours=spent, total_hours=total,
                                 prior_sigma=self.profile.noise)
        for key in picked:
            idea_id = base_id if key == cf.BASELINE else int(key)
            if idea_id in busy:
                continue
            run = runs.get(idea_id, 0) + 1
            job_id = job_ops.enqueue_run(
                self.store, idea_id, run, seed=seed_for(self.search_id, run),
                profile=self.profile.name, gpus_wanted=self.profile.gpus,
                executor=self.executor.name, why="a repeat: the baseline's noise" if
                key == cf.BASELINE else "a repeat: is its lead real?")
            if job_id is not None:
                self.progress(f"job {job_id} queued: run {run} of "
                              f"{'the baseline' if key == cf.BASELINE else f'idea {idea_id}'}")

    def _run_hours(self, jobs: list[JobView]) -> float:
        """What one run costs, in slot-hours (GPUs × wall time, a CPU job counting as one
        slot): the mean of the search's finished runs, or the time limit before any."""
        done = [(j.finished_at - j.started_at) * max(1, j.gpus_wanted) for j in jobs
                if j.state == "finished" and j.started_at and j.finished_at]
        if done:
            return sum(done) / len(done) / 3600
        seconds = self.profile.time_limit or self.profile.timeout
        return seconds * max(1, self.profile.gpus) / 3600

    def _compute_hours(self, jobs: list[JobView], baseline_runs: int,
                       per_run: float) -> tuple[float, float]:
        """(repeats', everything's) slot-hours; a job not finished counts `per_run`. The
        baseline's first `baseline_runs` runs are measurement, not repeats."""
        base_id = self._baseline_id()
        now = time.time()
        repeat = total = 0.0
        for j in jobs:
            if j.state in ("queued", "held", *hq.ACTIVE):
                hours = per_run
            elif j.started_at is not None:
                hours = ((j.finished_at or now) - j.started_at) * max(1, j.gpus_wanted) / 3600
            else:
                continue
            total += hours
            first = baseline_runs if j.idea_id == base_id else 1
            if j.run > first:
                repeat += hours
        return repeat, total
