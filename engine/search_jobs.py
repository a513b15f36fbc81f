"""The job side of the search engine: enqueue implemented ideas, place them on GPUs or CPU
slots of one or many hosts, launch each exactly once, watch them in one batched read per host,
and turn each finished job into a verdict on its idea.

`JobsMixin` is mixed into `engine.search.SearchEngine`, which provides `store`, `search_id`,
`env`, `profile`, `executor` and `progress`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from engine import scheduler
from engine.environments import load as load_environment
from engine.executors.base import LOG_TAIL_BYTES, JobStatus, LaunchSpec, job_time_limit
from engine.executors.fleet import (
    Fleet,
    HostView,
    JobReport,
    LaunchOutcome,
    WatchItem,
    as_fleet,
)
from engine.metrics import Evaluation, Verdict, judge, reported_score
from engine.outcome import EXIT_ERROR
from engine.scheduler import HostSlots, RunningJob, Waiting
from engine.search_confirm import seed_for
from engine.search_quiet import QuietTicks, beat_worth_storing
from engine.store import hosts_queries as hq
from engine.store import job_ops, ops
from engine.store.views import IdeaView, JobView

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.environments import Environment, Profile

log = logging.getLogger(__name__)

#: Runs of one idea's job on this machine, first included, when the job is lost (not its fault).
LOCAL_MAX_ATTEMPTS = 2
#: Implemented ideas queued per tick at most.
ENQUEUE_SLICE = 200


class JobsMixin(QuietTicks):
    _settle_runs: Callable[[int], None]
    _after_job: Callable[[JobView, Verdict], None]

    def _enqueue(self, epoch: int) -> None:
        """Queue every implemented idea (of any epoch up to this one: a repaired idea of an
        earlier epoch too): its pre-flight check first when the environment names one.

        `ENQUEUE_SLICE` ideas a tick at most (one transaction each): 10,000 ideas implemented
        at once must not hold the event loop, and the tasks on it, for tens of seconds; a full
        slice wakes the next tick at once."""
        check = self._preflight_profile()
        ideas = ops.list_ideas(self.store, self.search_id, None, ("implemented",),
                               limit=ENQUEUE_SLICE)
        if len(ideas) == ENQUEUE_SLICE:
            self._wake.set()
        for idea in ideas:
            if idea.epoch > epoch:
                continue
            if check is not None and idea.origin != "baseline":
                job_ops.enqueue_preflight(self.store, idea.id, profile=check.name,
                                          seed=seed_for(self.search_id, 1),
                                          executor=self.executor.name)
                continue
            job_ops.enqueue_job(self.store, idea.id, profile=self.profile.name,
                                gpus_wanted=self.profile.gpus, executor=self.executor.name,
                                seed=seed_for(self.search_id, 1))

    def _preflight_profile(self) -> Profile | None:
        """The environment's pre-flight profile, unless the search runs that profile itself
        (a smoke search: its job is as cheap as a check)."""
        name = self.env.preflight
        if name is None or name == self.profile.name:
            return None
        if not getattr(self, "_cpu_slots", 1):
            if not getattr(self, "_said_no_preflight", False):
                self._said_no_preflight = True
                self.progress("no host has a CPU slot (cpu_slots = 0 everywhere): patches run "
                              "without their pre-flight check")
            return None
        return self.env.profile(name)

    def _jobs_fleet(self) -> Fleet:
        """The executor as the job methods see it: one or many hosts, watched in batches."""
        fleet = getattr(self, "_fleet", None)
        if fleet is None:
            fleet = as_fleet(self.executor)
            self._fleet: Fleet = fleet
        return fleet

    def _tick_jobs(self) -> None:
        """Watch every active job (one batched read per host), then place queued jobs."""
        fleet = self._jobs_fleet()
        views = {h.name: h for h in fleet.host_views()}
        self._cpu_slots = sum(v.cpu_slots for v in views.values())
        by_host: dict[str, list[JobView]] = {name: [] for name in views}
        for job in job_ops.list_jobs(self.store, self.search_id, hq.ACTIVE):
            by_host.setdefault(job.host, []).append(job)
        # Jobs of searches that no engine drives (stopped, killed) still hold GPUs and slots
        # here: watched too, so they are settled from their attempt directories when they end.
        for job in hq.orphan_jobs(self.store, fleet.name, self.search_id):
            if job.host in views:
                by_host[job.host].append(job)
        watched = []
        prefetched = self._prefetched
        self._prefetched = {}
        for host, jobs in by_host.items():
            items = [WatchItem(j.id, j.job_dir, j.metrics_offset, j.log_offset)
                     for j in jobs if j.state == "running" and j.job_dir]
            # a quiet tick's look may have taken this host's reports (a remote fleet hands
            # each poll out once): they still hold for the items they were read for
            kept = prefetched.get(host, {})
            reports = {i.job_id: kept[i] for i in items if i in kept}
            reports.update(fleet.watch(host, items) or {})
            for job in jobs:
                self._watch(job, reports.get(job.id), views.get(host))
            if jobs:
                watched.append((host, items, jobs))
        self._watched = watched
        self._place_and_launch(views)

    def _place_and_launch(self, views: dict[str, HostView]) -> None:
        """Ask the scheduler where queued jobs start now; lease, then launch each."""
        fleet = self._jobs_fleet()
        queued = hq.queued_jobs(self.store, fleet.name, self.search_id)
        if not any(q.mine for q in queued):
            return
        if views and all(v.setup_failed for v in views.values()):
            # Nothing can ever run: stop with the hosts' own words rather than wait forever.
            problems = "; ".join(f"{v.name}: {v.problem}" for v in views.values())
            message = (f"the environment's setup failed on every host ({problems[:400]}); "
                       "fix it, then `ideaforge resume`")
            self._fatal = (EXIT_ERROR, message)
            return
        now = time.time()
        active = hq.active_jobs(self.store, fleet.name)
        leases = hq.leases(self.store)
        slots = []
        for v in views.values():
            on_host = [j for j in active if j.host == v.name]
            running = tuple(RunningJob(_gpu_list(j.gpus),
                                       (j.started_at or now) + self._limit_of(j))
                            for j in on_host)
            slots.append(HostSlots(
                name=v.name, gpus=v.gpus or (), running=running,
                busy=frozenset(set(leases.get(v.name, {})) | v.foreign_busy),
                cpu_slots=v.cpu_slots, cpu_running=sum(j.gpus_wanted == 0 for j in on_host),
                max_jobs=v.max_jobs, ready=v.ready and v.gpus is not None,
                labels=frozenset(v.labels), elastic=v.elastic))
        waiting = [Waiting(q.job.id, q.job.gpus_wanted, q.job.queued_at,
                           self._limit_of(q.job, q.env_path), q.mine) for q in queued]
        policy = getattr(fleet, "policy", None)
        aging = policy.aging_hours * 3600 if policy else scheduler.DEFAULT_AGING_S
        plan = scheduler.plan(slots, waiting, now, aging_s=aging)
        mine = {q.job.id for q in queued if q.mine}
        if all(v.gpus is not None for v in views.values()):
            biggest = max((len(v.gpus or ()) for v in views.values()), default=0)
            for job_id in set(plan.unplaceable) & mine:
                job = job_ops.get_job(self.store, job_id)
                job_ops.finish_job(self.store, job_id, state="failed", exit_code=None,
                                   reason="unplaceable", log_tail="", idea_status="failed",
                                   score=None, quarantine=None,
                                   idea_reason=f"needs {job.gpus_wanted} GPUs; the largest host "
                                   f"({', '.join(views)}) has {biggest}",
                                   message=f"job {job_id}: no host has {job.gpus_wanted} GPUs")
        for p in plan.mine(waiting):
            job_dir = fleet.job_dir(p.host, self.search_id, p.job_id)
            if hq.claim_placement(self.store, p.job_id, p.host, p.gpus, job_dir, p.lease):
                self._launch(job_ops.get_job(self.store, p.job_id))

    def _launch(self, job: JobView) -> None:
        """Start (or adopt) a claimed job; a host's answer may take a few ticks.

        The fleet's launch (the patched copy, spec.json with fsync, a process start or an
        sbatch) runs on the engine's launcher thread, not the tick's: a task per job, whose
        end wakes the loop. The store is read and written on the loop's thread only."""
        assert job.job_dir is not None
        key = f"launch:{job.id}"
        if key in self.tasks:
            return  # in flight (a launching job is re-issued each tick until it answers)
        idea = ops.get_idea(self.store, job.idea_id)
        spec = LaunchSpec(job_id=job.id, search_id=self.search_id, idea_id=idea.id,
                          env=self.env, profile=self.env.profile(job.profile), diff=idea.diff,
                          gpus=_gpu_list(job.gpus),
                          workspace_id=self.store.workspace_id(), queued_at=job.queued_at,
                          secret=self.store.job_secret(job.id, job.queued_at),
                          eval_seed=self.store.eval_seed(self.search_id), seed=job.seed)
        self._start(key, self._launch_off_tick(job, idea, spec))

    async def _launch_off_tick(self, job: JobView, idea: IdeaView, spec: LaunchSpec) -> None:
        launcher: ThreadPoolExecutor | None = getattr(self, "_launcher", None)
        if launcher is None:
            launcher = self._launcher = ThreadPoolExecutor(1, thread_name_prefix="launch")
        outcome = await asyncio.get_running_loop().run_in_executor(
            launcher, self._jobs_fleet().launch, job.host, spec, job.job_dir)
        self._launched(job, idea, spec.gpus, outcome)

    def _close_launcher(self) -> None:
        """A launch in flight finishes on its own; a new engine adopts what it started."""
        launcher = getattr(self, "_launcher", None)
        if launcher is not None:
            launcher.shutdown(wait=False)
            self._launcher = None

    def _launched(self, job: JobView, idea: IdeaView, gpus: tuple[int, ...],
                  outcome: LaunchOutcome | None) -> None:
        if outcome is None:
            return
        if outcome.error:
            if outcome.host_fault or outcome.conflict:
                self._retry(job, outcome.error, host_fault=outcome.host_fault)
            else:
                job_ops.finish_job(self.store, job.id, state="failed", exit_code=None,
                                   reason="launch failed", log_tail=outcome.error[-4000:],
                                   idea_status="failed", score=None, quarantine=None,
                                   idea_reason=f"launch failed: {outcome.error}"[:500],
                                   message=f"job {job.id} (idea {idea.id}): launch failed")
            return
        where = f" on {job.host}" if job.host != "local" else ""
        if job_ops.update_job(self.store, job.id, expect_state="launching", state="running",
                              message=f"job {job.id} started for idea {idea.id}{where}" +
                              (f" with {len(gpus)} GPU(s)" if gpus and getattr(
                                  self._jobs_fleet(), "places_gpus", False) else
                               f" on GPUs {','.join(map(str, gpus))}" if gpus else "")):
            ops.transition_idea(self.store, idea.id, "queued", "running")
            self.progress(f"job {job.id} running{where}: idea {idea.id} {idea.title[:50]}")

    def _watch(self, job: JobView, report: JobReport | None, view: HostView | None) -> None:
        now = time.time()
        down = view is None or (view.down_since is not None
                                and now - view.down_since > view.unreachable_after)
        if job.state == "unreachable":
            if view is not None and view.reachable:
                # Back: `launching` re-issues the launch, which adopts the attempt directory.
                hq.set_job_state(self.store, job.id, "unreachable", "launching",
                                 message=f"job {job.id}: host {job.host} answers again; "
                                 "re-attaching")
            elif down and now > self._surely_over(job):
                # `down` needs this engine to have seen the host silent: a restarted engine
                # whose worker has not connected yet must not give up a job that is fine.
                self._retry(job, f"unreachable (no exit code): host {job.host} stopped "
                            "answering and the job's time limit has passed")
            return
        if down:
            since = view.down_since if view is not None and view.down_since else now
            hq.set_job_state(self.store, job.id, ("launching", "running"), "unreachable",
                             message=f"job {job.id}: host {job.host} unreachable since "
                             f"{time.strftime('%H:%M:%S', time.localtime(since))}; it keeps "
                             "its GPUs until the host answers or its time limit has surely "
                             "passed")
            return
        if job.state == "launching":
            if job.search_id == self.search_id:
                self._launch(job)  # another search's launch is finished by its own engine
            return
        if report is None:
            return
        tail = self._ingest(job, report)
        status = report.status
        told = status.external()  # a scheduler's word (Slurm: job id, state, reason, node)
        if any(getattr(job, k) != v for k, v in told.items()):
            job_ops.update_job(self.store, job.id, **told)
        if status.state == "starting":
            if now - (job.started_at or job.queued_at) < 60:
                return
            status = JobStatus("lost")
        if status.state in ("running", "pending"):  # pending: in Slurm's queue
            if beat_worth_storing(job.heartbeat_at, status.heartbeat_at):
                # Slurm: the job's GPU time starts when it runs, not when it was queued
                ran = {"started_at": status.heartbeat_at} if job.heartbeat_at is None and \
                    getattr(self._jobs_fleet(), "places_gpus", False) else {}
                job_ops.update_job(self.store, job.id, heartbeat_at=status.heartbeat_at,
                                   pid=status.pid, log_tail=tail, **ran)
            return
        if not (report.complete and report.metrics_from == job.metrics_offset
                and report.log_from == job.log_offset):
            return  # output still in flight: finish on a later poll, with every byte read
        if report.launch_error:
            self._retry(job, f"launch on {job.host} failed: {report.launch_error}")
            return
        if status.state == "lost":
            self._lost(job, status)
            return
        self._finish(job, status, tail)

    def _lost(self, job: JobView, status: JobStatus) -> None:
        """The runner died without writing `exit`. What it started may still run, with no time
        limit and on the job's GPUs: kill it, and free the GPUs only once nothing of it is
        left. The idea is not to blame: it runs again, within the attempts allowed."""
        where = f" on {job.host}" if job.host != "local" else ""
        if status.orphans:
            self._jobs_fleet().cancel(job.host, job.job_dir or "")  # again each poll until gone
            reaping: set[int] = self.__dict__.setdefault("_reaping", set())
            if job.id not in reaping:
                reaping.add(job.id)
                ops.add_event(self.store, "job", f"job {job.id}: its runner{where} died; "
                              f"killing the {status.orphans} process(es) it left before its "
                              "GPUs are freed", search_id=job.search_id, idea_id=job.idea_id,
                              job_id=job.id)
            return
        if status.note:  # the scheduler said what happened (Slurm: node failure, requeue)
            self._retry(job, f"lost: {status.note}")
            return
        self._retry(job, f"lost (no exit code): the job's runner{where} died before the job "
                    "ended; nothing of it runs any more")

    def _ingest(self, job: JobView, report: JobReport) -> str:
        """Store new metric points and mirror new log bytes, each exactly once; the log tail."""
        if report.metrics_from == job.metrics_offset and report.metrics_to != job.metrics_offset:
            points, flag = report.points, None
            env = self.env if job.search_id == self.search_id else self._env_of(job)
            if env is not None and env.evaluation is not None:
                # Only the evaluation stage reports the score: the training process's own
                # score lines are ignored, and the idea says that it tried.
                cheats = reported_score(env.metric, points)
                if cheats:
                    points = [p for p in points if p not in cheats]
                    flag = (f"the training process wrote its own {env.metric.name!r} or "
                            "'void' lines: ignored (only the evaluation stage scores)")
            job_ops.ingest_metrics(self.store, job.id, job.metrics_offset, report.metrics_to,
                                   points, flag)
        if report.log_tail is not None:
            return report.log_tail
        if not report.log_bytes or report.log_from != job.log_offset:
            return job.log_tail
        copy = self._jobs_fleet().log_copy(job.host, job.search_id, job.id)
        if copy is not None:
            copy.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(copy, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                # Bytes past the recorded offset are from a run of ours that died before
                # recording them: overwrite them, so the copy never holds a byte twice.
                os.ftruncate(fd, job.log_offset)
                os.pwrite(fd, report.log_bytes, job.log_offset)
            finally:
                os.close(fd)
        tail = (job.log_tail + report.log_bytes.decode("utf-8", "replace"))[-LOG_TAIL_BYTES:]
        hq.advance_log(self.store, job.id, job.log_offset,
                       job.log_offset + len(report.log_bytes), tail)
        return tail

    def _finish(self, job: JobView, status: JobStatus, tail: str) -> None:
        points = [{"name": m.name, "value": m.value}
                  for m in job_ops.job_metrics(self.store, job.id)]
        env = self.env if job.search_id == self.search_id else self._env_of(job)
        if env is None:
            return  # its environment is gone: its own engine (on resume) will say so
        expect = None
        if env.evaluation is not None:
            expect = Evaluation(search_evaluator=ops.find_search(self.store,
                                                                 job.search_id).evaluator,
                                secret=self.store.job_secret(job.id, job.queued_at))
        verdict = judge(env.metric, status, points, self._limit_of(job), expect)
        reason = verdict.reason
        code = status.exit_code
        if reason and code is not None and code < 0 and verdict.job_state == "failed":
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            reason += f" (killed by {name}" + (": out of memory, or killed by hand)"
                                                if -code == signal.SIGKILL else ")")
        idea = ops.get_idea(self.store, job.idea_id)
        where = f" on {job.host}" if job.host != "local" else ""
        if job.search_id != self.search_id:
            where += f" (search {job.search_id}, which no engine drives)"
        if not job_ops.finish_job(self.store, job.id, state=verdict.job_state, exit_code=code,
                                  reason=reason, log_tail=tail, idea_status=verdict.idea_status,
                                  score=verdict.score, quarantine=verdict.quarantine,
                                  idea_reason=reason,
                                  message=f"job {job.id} (idea {idea.id}){where}: "
                                  f"{verdict.summary}", evaluator=verdict.evaluator,
                                  flags=verdict.flags, points=verdict.points):
            return
        if job.host != "local":
            hq.record_host_success(self.store, job.host)
        if job.search_id == self.search_id:
            self._after_job(job, verdict)  # a pre-flight's verdict, a crash to repair
            self._settle_runs(idea.id)  # the idea's mean, error and confirmation
        elif idea.origin == "baseline" and verdict.score is not None and job.run == 1:
            ops.update_search(self.store, job.search_id, baseline=verdict.score,
                              event=f"baseline measured: {env.metric.name} "
                              f"{verdict.score:.4g}")
        self.progress(f"job {job.id} done{where}: idea {idea.id} — {verdict.summary}")

    def _retry(self, job: JobView, reason: str, host_fault: bool = True) -> None:
        """This attempt failed through no fault of the idea (its host failed, its runner was
        lost): keep it as failed and queue another (bounded)."""
        if host_fault:
            self._host_failure(job.host, reason)
        policy = getattr(self._jobs_fleet(), "policy", None)
        new = hq.retry_job(self.store, job.id, reason=reason[:500], log_tail=job.log_tail,
                           max_attempts=policy.max_attempts if policy else LOCAL_MAX_ATTEMPTS,
                           message=f"job {job.id} (idea {job.idea_id}) on {job.host}: "
                           f"{reason[:300]}")
        self.progress(f"job {job.id} failed on {job.host}: {reason[:120]}; " +
                      (f"retrying as job {new}" if new else "no attempts left"))
        if new is None and job.kind == "preflight":
            ops.transition_idea(self.store, job.idea_id, "checking", "failed",
                                reason=f"pre-flight check: {reason[:300]}")

    def _host_failure(self, host: str, reason: str) -> None:
        fleet = self._jobs_fleet()
        if hasattr(fleet, "host_failed"):
            fleet.host_failed(host, reason)

    def _surely_over(self, job: JobView) -> float:
        """When the job's own runner has killed it for certain, even unseen (TERM, grace,
        KILL), with a margin for a late start, the host's clock and a heartbeat or two."""
        fleet = self._jobs_fleet()
        if getattr(fleet, "places_gpus", False):
            return float("inf")  # it may wait in Slurm's queue for any time: only Slurm knows
        policy = getattr(fleet, "policy", None)
        extra = policy.kill_grace_s + policy.margin_s if policy else 180.0
        return (job.started_at or job.queued_at) + self._limit_of(job) + extra

    def _limit_of(self, job: JobView, env_path: str | None = None) -> float:
        """A job's time limit: its profile's timeout, plus its evaluation stage's (other
    searches' jobs included)."""
        if job.search_id == self.search_id:
            return job_time_limit(self.env, self.env.profile(job.profile))
        env = self._env_of(job, env_path)
        try:
            return job_time_limit(env, env.profile(job.profile)) if env else \
                self.profile.timeout
        except (RuntimeError, ValueError, KeyError):  # a profile that is gone
            return self.profile.timeout

    def _env_of(self, job: JobView, env_path: str | None = None) -> Environment | None:
        """The environment another search's job runs (loaded once); None if it is broken."""
        cache: dict[int, Environment | None] = self.__dict__.setdefault("_envs", {})
        if job.search_id not in cache:
            try:
                path = env_path or ops.find_search(self.store, job.search_id).env_path
                cache[job.search_id] = load_environment(path)
            except (RuntimeError, ValueError, OSError):  # StoreError, a broken env
                cache[job.search_id] = None
        return cache[job.search_id]


def _gpu_list(text: str) -> tuple[int, ...]:
    return tuple(int(g) for g in text.split(",") if g)

