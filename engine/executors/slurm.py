"""The Slurm executor: jobs go through a Slurm cluster's own queue (ideaforge on a login node).

Slurm places the jobs on its nodes and GPUs; ideaforge leases nothing and only keeps at most
`max_queued` of its jobs in Slurm's queue. Each job is one batch job of one node that runs the
same runner as local jobs (`engine/executors/runner.py`) in the job's attempt directory, on
storage the compute nodes share (`[slurm] workdir`); `CUDA_VISIBLE_DEVICES` is Slurm's. That
directory stays the ground truth: `exit` says how the job ended, whatever Slurm says.

- Exactly once: every batch job carries a tag (`--comment`: workspace, job id, launch key).
  Before `sbatch`, the queue is searched for that tag, so an engine that died between `sbatch`
  and its database write adopts the job it submitted instead of submitting it again.
- One `squeue` per poll for all jobs (plus at most one `sacct` for jobs that left the queue
  without an `exit`; without accounting it fails, which is fine).
- How a job ended, where `exit` alone cannot tell: Slurm's own state (squeue, else sacct).
  Its infrastructure failing the job (NODE_FAIL, BOOT_FAIL, PREEMPTED, a requeue: the job
  is back in the queue after its runner started) is no fault of the idea: lost, and the
  engine runs it again within its attempts (as the SSH fleet's lost jobs). OUT_OF_MEMORY and
  TIMEOUT are the idea's own: it fails, with that reason. A TERM ideaforge did not send
  (scancel by hand) ends it cancelled. Gone without a word from Slurm or an `exit`: lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import posixpath
import shlex
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.environments import Environment, Profile
from engine.executors import attempt_dir, runner, slurm_access, slurm_cli
from engine.executors.base import JobStatus, LaunchSpec, job_environment, job_time_limit
from engine.executors.fleet import HostView, JobReport, LaunchOutcome, WatchItem
from engine.executors.hosts import HostsFile
from engine.executors.slurm_access import ClusterPath
from engine.executors.slurm_cli import QueueRow, SlurmError
from engine.executors.slurm_config import SlurmConfig
from engine.executors.slurm_dirs import SlurmJobDirs
from engine.patching import PatchError

log = logging.getLogger(__name__)

HOST = "slurm"  # the one "host" the engine sees: the whole cluster
TAG = "ideaforge"
#: A job just submitted may not show in squeue yet; nor may `exit` on shared storage the
#: moment Slurm says the job ended (attribute caches): both get this long.
SETTLE_S = 30.0
#: How long before Slurm's own limit the runner gets USR1 (--signal): it stops the job as
#: past its time limit, cleanly.
SIGNAL_LEAD_S = 60
#: A runner's `started` this much older than a squeue that says the job waits: requeued
#: (the compute node's clock may differ a little from this one's).
RUN_SKEW_S = 5.0
#: Slurm states of a job put back in its queue after it ran (its runner had started).
REQUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
#: How Slurm's infrastructure ends a job through no fault of its own: the engine retries it.
INFRASTRUCTURE = {"NODE_FAIL": "its node failed", "BOOT_FAIL": "its node failed to boot",
                  "PREEMPTED": "preempted by a job of higher priority"}


class SlurmFleet:
    """The Fleet (engine/executors/fleet.py) of one Slurm cluster, seen as one host."""

    name = "slurm"
    places_gpus = True  # jobs get a GPU count; Slurm picks the GPUs

    def __init__(self, hosts: HostsFile, store: Any, *, background: bool = False) -> None:
        """`background`: squeue runs in a thread of its own, so a slow controller never holds
        up the engine's loop (the engine's way); without it, `refresh` calls it in line."""
        assert hosts.slurm is not None
        self.cfg: SlurmConfig = hosts.slurm
        self.policy = hosts.policy
        self.workspace_id: str = store.workspace_id()
        self.access = slurm_access.access_for(self.cfg)
        if self.cfg.login is not None:  # the attempt folders are staged here, then copied
            assert self.cfg.workdir  # (hosts.py: login needs an absolute workdir)
            remote: str | None = posixpath.join(self.cfg.workdir, self.workspace_id)
            local = Path(store.workspace) / "slurm-stage"
        else:
            remote = None
            local = (Path(self.cfg.workdir).expanduser() / self.workspace_id if
                     self.cfg.workdir else Path(store.workspace) / "slurm")
        self.base = ClusterPath(self.access, remote or str(local))
        self.dirs = SlurmJobDirs(local, self.cfg, hosts.policy.kill_grace_s, self.access,
                                 remote)
        self._rows: dict[int, QueueRow] | None = None  # ideaforge job id → its queue row
        self._snap: dict[int, QueueRow] = {}  # the rows one watch() reads
        self._rows_at = self._snap_at = 0.0  # when the squeue behind them was asked
        self._polled_at = 0.0
        self.down_since: float | None = None
        self.error: str | None = None
        self._keys: dict[str, str] = {}  # job dir → its launch key (tag)
        self._gone: dict[int, float] = {}  # job id → when it was first missed in squeue
        self._sacct: dict[str, str] = {}  # Slurm id → ended state, for jobs squeue forgot
        self._sacct_live: dict[str, str] = {}  # the last sacct's jobs that still wait or run
        self._sacct_at = -math.inf
        self._runner: Path | None = None
        self._dropped: set[str] = set()  # requeued Slurm jobs this fleet scancelled
        self.calls = {"squeue": 0, "sacct": 0, "sbatch": 0, "scancel": 0}
        self.settle_s = SETTLE_S
        self.background = background
        self._poller: threading.Thread | None = None

    # -- the engine's view ---------------------------------------------------------------
    def prepare(self, env: Environment, profile: Profile) -> None:
        """The profile's setup, once per environment version, here on the login node (its
        data dir must be on the shared storage the jobs read)."""
        self.dirs.prepare(env, profile)

    def host_views(self) -> list[HostView]:
        self.refresh()
        return [HostView(HOST, (), cpu_slots=self.cfg.max_queued, max_jobs=self.cfg.max_queued,
                         reachable=self.down_since is None, down_since=self.down_since,
                         unreachable_after=self.cfg.unreachable_after,
                         ready=self._rows is not None, problem=self.error, elastic=True)]

    def job_dir(self, host: str, search_id: int, job_id: int) -> str:
        return self.dirs.cluster_dir(search_id, job_id)

    def log_copy(self, host: str, search_id: int, job_id: int) -> Path | None:
        return None  # the log is on storage this machine reads

    def refresh(self, force: bool = False) -> None:
        """ONE squeue call for every job, at most every `poll_interval` (unless forced)."""
        if self.background and not force:
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll_forever, daemon=True,
                                                name="slurm-squeue")
                self._poller.start()
            return
        if not force and time.monotonic() - self._polled_at < self.cfg.poll_interval:
            return  # (a controller that does not answer is not asked more often either)
        self._poll()

    def _poll_forever(self) -> None:
        while True:
            self._poll()
            time.sleep(self.cfg.poll_interval)

    def _poll(self) -> None:
        """Read the queue; what the engine reads is replaced whole, never changed in place."""
        asked = time.time()
        try:
            rows = self._queue()
        except SlurmError as exc:
            self._polled_at = time.monotonic()
            if self.down_since is None:
                self.down_since = time.time()
                log.warning("slurm: %s", exc)
            self.error = str(exc)
            self._rows = None
            return
        mine = {}
        for row in rows:
            tag = self._parse_tag(row.comment)
            if tag is not None:
                mine[tag[0]] = row
        self._polled_at = time.monotonic()
        self.down_since, self.error = None, None
        self._rows, self._rows_at = mine, asked

    def _queue(self) -> list[QueueRow]:
        self.calls["squeue"] += 1
        return slurm_cli.squeue(self.access)

    def _tag(self, job_id: int, key: str) -> str:
        return f"{TAG}:{self.workspace_id}:{job_id}:{key[:16]}"

    def _parse_tag(self, comment: str) -> tuple[int, str] | None:
        parts = comment.split(":")
        if len(parts) != 4 or parts[0] != TAG or parts[1] != self.workspace_id \
                or not parts[2].isdigit():
            return None
        return int(parts[2]), parts[3]

    # -- launching -----------------------------------------------------------------------
    def launch(self, host: str, spec: LaunchSpec, job_dir: str) -> LaunchOutcome | None:
        """Submit the job once. None: Slurm did not answer; the engine asks again later."""
        try:
            written = self.dirs.write_attempt(spec)
        except SlurmError as exc:
            if exc.unreachable:  # the login node: ask again later
                self.error = str(exc)
                return None
            return LaunchOutcome(error=f"{type(exc).__name__}: {exc}")
        except (PatchError, OSError, RuntimeError, ValueError) as exc:
            log.warning("job %d: launch failed: %s", spec.job_id, exc)
            return LaunchOutcome(error=f"{type(exc).__name__}: {exc}")
        path = self._at(job_dir)
        if written is None or (path / "slurm_job").exists():
            return LaunchOutcome()  # its runner started, or it was submitted: adopt it
        key = (path / "launch_key").read_text().strip()
        self._keys[job_dir] = key
        # The queue as read this poll (a job submitted before this engine started is in it):
        # a job that already carries this tag is adopted, never submitted again.
        self.refresh()
        rows = self._rows  # (the poller replaces it whole: read it once)
        if rows is None:
            return None
        row = rows.get(spec.job_id)
        if row is not None and row.comment == self._tag(spec.job_id, key):
            log.info("job %d: Slurm job %s has its tag; adopting it", spec.job_id, row.slurm_id)
            self._record(path, row.slurm_id, spec)
            return LaunchOutcome()
        try:
            script = self._script(path)
            options = self._options(spec, path, key)
            self.calls["sbatch"] += 1
            slurm_id = slurm_cli.sbatch(options, str(script), self._submit_env(), self.access)
        except SlurmError as exc:
            if exc.unreachable:
                self.down_since = self.down_since or time.time()
                self.error = str(exc)
                return None
            return LaunchOutcome(error=f"Slurm refused the job: {exc}")
        except OSError as exc:
            return LaunchOutcome(error=f"{type(exc).__name__}: {exc}")
        self._record(path, slurm_id, spec)
        log.info("job %d: submitted as Slurm job %s", spec.job_id, slurm_id)
        return LaunchOutcome()

    def _record(self, path: ClusterPath, slurm_id: str, spec: LaunchSpec) -> None:
        (path / "slurm_job").write_text(json.dumps(
            {"id": slurm_id, "submitted": time.time(), "time_min": self._minutes(spec)[0]}))

    def _minutes(self, spec: LaunchSpec) -> tuple[int, int]:
        """Slurm's --time (minutes) for the job, and how long before it the runner gets USR1."""
        limit = job_time_limit(spec.env, spec.profile) + self.policy.kill_grace_s \
            + self.cfg.time_margin_s
        lead = int(max(10, min(SIGNAL_LEAD_S, self.cfg.time_margin_s / 2)))
        return max(1, math.ceil((limit + lead) / 60)), lead

    def _options(self, spec: LaunchSpec, path: ClusterPath, key: str) -> list[str]:
        gpus = spec.profile.gpus
        minutes, lead = self._minutes(spec)
        out = [f"--job-name={TAG}-{spec.job_id}", f"--comment={self._tag(spec.job_id, key)}",
               "--nodes=1", "--ntasks=1", f"--time={minutes}",
               f"--signal=B:USR1@{lead}", f"--output={path / 'slurm.out'}",
               f"--chdir={path}", "--requeue", "--open-mode=append"]
        if gpus:
            out.append(f"--gres=gpu:{gpus}")
            if self.cfg.mem_per_gpu:
                out.append(f"--mem-per-gpu={self.cfg.mem_per_gpu}")
        if self.cfg.cpus_per_gpu:
            out.append(f"--cpus-per-task={self.cfg.cpus_per_gpu * max(1, gpus)}")
        return out + self.cfg.sbatch_options()

    def _script(self, path: ClusterPath) -> ClusterPath:
        """The batch script: it becomes the runner (exec), so Slurm's signals reach it."""
        script = path / "job.sbatch"
        runner_py = self._runner_copy()
        py = shlex.quote(self.dirs.python)
        pydir = shlex.quote(posixpath.dirname(self.dirs.python) or "/usr/bin")
        script.write_text("#!/bin/bash\n# ideaforge job: the runner does the rest\n"
                              f"export PATH={pydir}:\"$PATH\"\n"
                          "# a port free on this node, for torchrun (--rdzv-endpoint=localhost:$IDEA"
                          "FORGE_RDZV_PORT)\n"
                          f"port=$({py} -c 'import socket; s = socket.socket(); "
                          "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])')\n"
                          "export MASTER_PORT=$port IDEAFORGE_RDZV_PORT=$port "
                          "IDEAFORGE_HOST=\"${SLURMD_NODENAME:-$(hostname -s)}\"\n"
                          "# Slurm requeued this job after it ran: the engine runs it again itself\n"
                          "if [ \"${SLURM_RESTART_COUNT:-0}\" != 0 ] && [ -e started ]; then\n"
                          "  echo \"$SLURM_RESTART_COUNT\" >> requeued; exit 0\nfi\n"
                          f"exec {py} {shlex.quote(str(runner_py))} {shlex.quote(str(path))}\n")
        return script

    def _runner_copy(self) -> ClusterPath:
        """runner.py and attempt_dir.py on the shared storage (content-hashed folder), so the
        compute nodes need nothing of ideaforge's installation."""
        if self._runner is not None and self._runner.exists():
            return self._runner
        sources = [Path(runner.__file__), Path(attempt_dir.__file__)]
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
        folder = self.base / f"runner-{digest}"
        if not (folder / "runner.py").exists():
            for src in sources:
                (folder / src.name).write_text(src.read_text())
        self._runner = folder / "runner.py"
        return self._runner

    def _submit_env(self) -> dict[str, str]:
        """sbatch's environment, which the job inherits (--export=ALL): no secrets, and no
        GPU selection of the login node's."""
        env = job_environment(dict(os.environ))
        env.pop("CUDA_VISIBLE_DEVICES", None)
        env["PATH"] = self.dirs._path()
        return env if self.cfg.login is None else {}  # (over SSH: the login node's own)

    # -- watching ------------------------------------------------------------------------
    def watch(self, host: str, items: Sequence[WatchItem]) -> dict[int, JobReport] | None:
        try:
            return self._watch(items)
        except SlurmError as exc:  # the login node stopped answering mid-read: as squeue
            self.error = str(exc)
            return None

    def _watch(self, items: Sequence[WatchItem]) -> dict[int, JobReport] | None:
        rows = self._rows  # (the poller replaces it whole: read it once)
        if rows is None:
            return None  # squeue failed: nothing is known, nothing is concluded
        self._snap, self._snap_at = rows, self._rows_at
        statuses = {item.job_id: self._status(item) for item in items}
        gone = [sid for sid in (self._slurm_id(i.job_dir) for i in items
                                if statuses[i.job_id] is None and self._row(i) is None)
                if sid and sid not in self._sacct]
        if gone and time.monotonic() - self._sacct_at >= self.cfg.poll_interval:
            self._ask_sacct(gone)  # at most once per poll, for all of them
        out = {}
        for item in items:
            status = self._told(item, statuses[item.job_id] or self._conclude(item))
            if status.state in ("finished", "lost"):
                self._gone.pop(item.job_id, None)
            got = self.dirs.read_output(item.job_dir, item.metrics_offset)
            out[item.job_id] = JobReport(status, item.metrics_offset, got.metrics_offset,
                                         got.metric_lines, got.bad_lines, item.log_offset,
                                         log_tail=got.log_tail)
        return out

    def _told(self, item: WatchItem, status: JobStatus) -> JobStatus:
        """The status with Slurm's word on the job, for the jobs screen: its Slurm job id, its
        state in this poll's squeue (else accounting's), why it waits, its node."""
        row = self._row(item)
        sid = row.slurm_id if row is not None else self._slurm_id(item.job_dir)
        if sid is None:
            return status
        state = row.state if row is not None else \
            self._sacct.get(sid) or self._sacct_live.get(sid) or None
        reason = row.reason if row is not None and row.state in slurm_cli.PENDING \
            and row.reason not in ("", "None") else None
        node = row.nodes if row is not None and row.nodes not in ("", "(null)") else None
        return replace(status, external_id=sid, external_state=state, external_reason=reason,
                       node=node)

    def _row(self, item: WatchItem) -> QueueRow | None:
        """The job's row in this poll's squeue (None: not there, or another copy's)."""
        row = self._snap.get(item.job_id)
        if row is not None and row.comment != self._tag(item.job_id, self._key(item.job_dir)):
            return None
        return row

    def _status(self, item: WatchItem) -> JobStatus | None:
        """What the attempt directory and squeue say; None: Slurm's last word on the job is
        needed (it left the queue, or its `exit` alone does not tell why it ended)."""
        path = self._at(item.job_dir)
        row = self._row(item)
        state = row.state if row is not None else None
        if (path / "requeued").exists():  # a requeued copy ran (and did nothing)
            return self._ended(item, "REQUEUED", None)
        if (path / "exit").exists():
            ended = attempt_dir_status(path)
            if not self._needs_word(path, ended):
                return ended
            if state is None:
                return None
            if state in slurm_cli.RUNNING:
                return JobStatus("running", note=f"Slurm job {row and row.slurm_id} ending")
            return self._ended(item, state, ended)
        if state is not None and state in REQUEUED and self._ran_before_poll(path):
            return self._ended(item, state, None)  # it ran, and Slurm put it back in the queue
        if state is None or not (state in slurm_cli.PENDING or state in slurm_cli.RUNNING):
            submitted = self._submitted(item.job_dir)
            if state is None and submitted and time.time() - submitted < self.settle_s \
                    and not (path / "started").exists():  # (a job that ran was seen)
                return JobStatus("pending", note="submitted")
            return None
        assert row is not None
        self._gone.pop(item.job_id, None)
        if state in slurm_cli.PENDING:
            return JobStatus("pending", note=f"Slurm job {row.slurm_id} pending ({row.reason})")
        beat = _heartbeat(path)
        return JobStatus("running", heartbeat_at=beat,
                         note=f"Slurm job {row.slurm_id} running on {row.nodes} "
                         f"for {row.elapsed}")

    def _ran_before_poll(self, path: ClusterPath) -> bool:
        """Whether the job's runner had started before the squeue read this poll (a job seen
        pending then was not requeued: it started since); or a requeued copy of it ran."""
        if (path / "requeued").exists():
            return True
        try:
            started = (path / "started").mtime()
        except OSError:
            return False
        return started + RUN_SKEW_S < self._snap_at

    @staticmethod
    def _needs_word(path: ClusterPath, ended: JobStatus) -> bool:
        """Whether Slurm must say how a job with an `exit` ended: its runner was stopped by a
        TERM ideaforge did not send (scancel by hand, preemption, requeue, a failing node),
        or its job was killed by KILL (Slurm's OOM killer?)."""
        if ended.cancelled:
            return not (path / "cancel").exists()
        return ended.exit_code in (-9, 137) and not ended.timed_out

    def _conclude(self, item: WatchItem) -> JobStatus:
        """The job left Slurm's queue (or `exit` needs Slurm's word): decide with what
        accounting said, once `exit` has had time to show on shared storage."""
        path = self._at(item.job_dir)
        row = self._row(item)
        sid = self._slurm_id(item.job_dir)
        said = row.state if row is not None else \
            self._sacct.get(sid or "", self._sacct_live.get(sid or "", ""))
        if said in REQUEUED and self._ran_before_poll(path):
            return self._ended(item, said, None)
        if said in slurm_cli.PENDING or said in slurm_cli.RUNNING:
            return JobStatus("pending", note=f"Slurm job {sid}: {said} (accounting)")
        first = self._gone.setdefault(item.job_id, time.monotonic())
        waited = time.monotonic() - first >= self.settle_s
        ended = attempt_dir_status(path) if (path / "exit").exists() else None
        if not said and not waited and not (ended is None and (path / "cancel").exists()):
            return JobStatus("running", note=f"Slurm job {sid} ended; waiting for "
                             + ("Slurm's word on why" if ended else "its exit record"))
        return self._ended(item, said, ended)

    def _ended(self, item: WatchItem, state: str, ended: JobStatus | None) -> JobStatus:
        """How a job ended, from Slurm's state (empty: Slurm no longer knows) and its `exit`
        (None: none was written). Slurm's infrastructure failing the job (node failure,
        preemption, requeue) is not the idea's fault: lost, and the engine runs it again;
        running out of memory or out of Slurm's time is the idea's own doing: it fails."""
        path = self._at(item.job_dir)
        sid = self._slurm_id(item.job_dir) or "?"
        if state in REQUEUED or state in INFRASTRUCTURE:
            if state in REQUEUED and sid not in self._dropped:
                self._dropped.add(sid)  # the engine runs it again as a new job: not this one
                self._scancel(sid)
            what = "was requeued" if state in REQUEUED else f"ended {state}"
            why = INFRASTRUCTURE.get(state, "back in Slurm's queue after it ran: requeued")
            note = f"Slurm job {sid} {what} ({why})"
            log.warning("job %d: %s; it runs again", item.job_id, note)
            return JobStatus("lost", note=note)
        if state == "OUT_OF_MEMORY":
            mem = f" (--mem-per-gpu={self.cfg.mem_per_gpu})" if self.cfg.mem_per_gpu else ""
            return JobStatus("finished", failure=f"out of memory: Slurm ended job {sid} "
                             f"OUT_OF_MEMORY: it used more than its allocation{mem}; raise "
                             "[slurm] mem_per_gpu or make the idea use less", record=
                             ended.record if ended else None)
        if state == "TIMEOUT" and not (ended and ended.timed_out):
            info = (path / "slurm_job").read_json() or {}
            limit = f"{info['time_min']} min" if info.get("time_min") else "its limit"
            return JobStatus("finished", failure=f"timed out: Slurm's time limit for job {sid} "
                             f"({limit}: the profile's timeout + kill grace + [slurm] "
                             "time_margin_s) ended it", record=ended.record if ended else None)
        if ended is not None:
            if ended.cancelled and not (path / "cancel").exists():
                return JobStatus("finished", exit_code=ended.exit_code, cancelled=True,
                                 record=ended.record, note=f"Slurm job {sid} "
                                 f"{state.lower() or 'stopped'} from outside ideaforge (scancel)")
            return ended
        note = f"Slurm job {sid} ended {state or 'out of the queue'} without an exit record"
        if (path / "cancel").exists() or state == "CANCELLED":
            return JobStatus("finished", exit_code=None, cancelled=True, note=note)
        log.warning("job %d: %s", item.job_id, note)
        return JobStatus("lost", note=note)

    def _scancel(self, sid: str, *extra: str) -> None:
        self.calls["scancel"] += 1
        try:
            slurm_cli.scancel(sid, *extra, access=self.access)
        except SlurmError as exc:
            log.warning("slurm: scancel %s: %s", sid, exc)

    def _ask_sacct(self, slurm_ids: list[str]) -> None:
        self.calls["sacct"] += 1
        self._sacct_at = time.monotonic()
        try:
            said = slurm_cli.sacct(slurm_ids, self.access)
            # an ended state is kept; one that says the job still waits or runs is asked again
            self._sacct.update({k: v for k, v in said.items() if v not in slurm_cli.PENDING
                                and v not in slurm_cli.RUNNING})
            self._sacct_live = {k: v for k, v in said.items() if k not in self._sacct}
        except SlurmError as exc:
            log.debug("slurm: sacct: %s", exc)  # no accounting: the files decide
            for sid in slurm_ids:
                self._sacct.setdefault(sid, "")

    def _at(self, job_dir: str) -> ClusterPath:
        return ClusterPath(self.access, job_dir)

    def _key(self, job_dir: str) -> str:
        key = self._keys.get(job_dir)
        if key is None:
            try:
                key = self._keys[job_dir] = (self._at(job_dir) / "launch_key").read_text().strip()
            except OSError:
                return ""
        return key

    def _slurm_id(self, job_dir: str) -> str | None:
        info = (self._at(job_dir) / "slurm_job").read_json()
        return str(info["id"]) if info and info.get("id") else None

    def _submitted(self, job_dir: str) -> float | None:
        info = (self._at(job_dir) / "slurm_job").read_json()
        return float(info["submitted"]) if info and info.get("submitted") else None

    # -- cancelling ----------------------------------------------------------------------
    def cancel(self, host: str, job_dir: str) -> str:
        """The runner stops the job (the `cancel` file, and TERM through Slurm); a job still
        waiting in the queue is removed from it. What happened: requested | finished |
        missing."""
        path = self._at(job_dir)
        if not path.exists():
            return "missing"
        if (path / "exit").exists():
            return "finished"
        (path / "cancel").touch()
        sid = self._slurm_id(job_dir)
        if sid is None:
            return "requested"
        row = next((r for r in (self._rows or {}).values() if r.slurm_id == sid), None)
        if row is not None and row.state in slurm_cli.RUNNING:
            self._scancel(sid, "--batch", "--signal=TERM")
        else:
            self._scancel(sid)
        return "requested"


def attempt_dir_status(path: ClusterPath) -> JobStatus:
    info = json.loads((path / "exit").read_text())
    return JobStatus("finished", exit_code=info.get("code"),
                     timed_out=bool(info.get("timed_out")),
                     cancelled=bool(info.get("cancelled")), record=info)


def _heartbeat(path: ClusterPath) -> float | None:
    try:
        return float((path / "hb").read_text() or 0)
    except (OSError, ValueError):
        return None


def cancel_job(hosts: HostsFile, store: Any, job_dir: str) -> str:
    """Cancel one job from outside the engine (`ideaforge cancel`, `stop --cancel-jobs`):
    what `SlurmFleet.cancel` answered. Raises SlurmError where the cluster (its login node)
    cannot be reached."""
    fleet = SlurmFleet(hosts, store)
    try:
        fleet.refresh(force=True)  # a running job gets TERM through Slurm; a queued one leaves
        return fleet.cancel(HOST, job_dir)
    finally:
        fleet.access.close()


def executor_from_config(hosts: HostsFile, store: Any) -> SlurmFleet:
    if hosts.slurm is not None and hosts.slurm.login is None and shutil.which("sbatch") is None:
        log.warning("slurm: sbatch is not on PATH; jobs will wait until it is")
    return SlurmFleet(hosts, store, background=True)
