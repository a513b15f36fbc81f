"""Quiet ticks: an engine that is only waiting costs nothing per tick but a look (issue 18).

A full tick of the search engine reads about ten things from the store (decisions, active and
orphan jobs, counts, the search row) and writes its heartbeat. Most ticks of a long search find
nothing new: one job runs for an hour, the gate waits for a researcher. Between full ticks the
engine now only looks:

- `PRAGMA data_version` on a connection of its own (stdlib sqlite3). It changes whenever any
  other connection commits, the engine's own ORM connections included, so a decision from the
  console, a GPU freed by another search's engine, or a write by one of the engine's own tasks
  makes the next tick a full one.
- the running jobs it watched at the last full tick, through the fleet (as every tick did
  before): a finished job, new metric lines or log bytes, or a scheduler's new word make the
  tick a full one. A job's newer heartbeat (and its log tail) is stored by the look itself,
  once `JOB_BEAT_STORE_S` newer than the stored one.
- a task that finished sets the engine's wake event: a full tick. So does a local runner's
  exit, seen through a pidfd in the event loop (Linux), which lets the looks be rarer.
- at least every `FULL_EVERY_S` (10 s) a full tick anyway: what depends on the clock alone
  (a host's quarantine ending, a job surely past its time limit, another engine's heartbeat
  aging) is seen within that.

The engine's heartbeat (every `ENGINE_BEAT_S`; readers call an engine gone after 30 s) and the
jobs' heartbeats are written through the marker's connection, whose own commits do not move
its marker: an idle engine's writes never make its next tick a full one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.search_parts import EngineParts
from engine.store import ops

if TYPE_CHECKING:
    from engine.executors.fleet import Fleet, JobReport, WatchItem
    from engine.store.views import JobView

log = logging.getLogger(__name__)

#: After a quiet tick the engine sleeps this many polls (0.5 s → 1 s): a look costs a few ms
#: of cold Python; a job's end is still seen within a second.
QUIET_POLL_FACTOR = 2.0
#: ... and this many when every running job's runner is watched for its exit (local jobs: a
#: pidfd in the event loop wakes the engine the moment a runner ends), so the looks only
#: refresh progress and heartbeats.
QUIET_POLL_FACTOR_WATCHED = 4.0
#: The longest an engine goes without a full tick.
FULL_EVERY_S = 10.0
#: How often the engine's heartbeat is written while it runs.
ENGINE_BEAT_S = 5.0
#: A running job's heartbeat (and its log tail) is stored once it is this much newer.
JOB_BEAT_STORE_S = 10.0


def beat_worth_storing(stored: float | None, seen: float | None) -> bool:
    """A job's heartbeat is stored when it is the first, or `JOB_BEAT_STORE_S` newer."""
    if seen is None:
        return False
    return stored is None or seen - stored >= JOB_BEAT_STORE_S


def report_news(job: JobView, report: JobReport | None) -> str:
    """What this report holds for a full tick: "" nothing, "beat" only a heartbeat worth
    storing (a quiet tick stores it itself), "news" anything else."""
    if report is None:
        return ""
    status = report.status
    if status.state not in ("running", "pending") or report.launch_error:
        return "news"
    if report.points or report.bad_lines or report.log_bytes or not report.complete:
        return "news"
    if report.metrics_from != job.metrics_offset or report.metrics_to != job.metrics_offset:
        return "news"
    if any(getattr(job, k) != v for k, v in status.external().items()):
        return "news"
    if not beat_worth_storing(job.heartbeat_at, status.heartbeat_at):
        return ""
    # the first heartbeat goes through the full tick (Slurm: it starts the job's GPU time)
    return "news" if job.heartbeat_at is None or status.pid != job.pid else "beat"


class QuietTicks(EngineParts):
    """Mixed into `engine.search.SearchEngine`: decides whether a tick may be a quiet one."""

    _marker_conn: sqlite3.Connection | None = None
    _marker: int | None = None
    _last_full: float = 0.0
    _last_beat: float = 0.0
    #: (host, watch items, the jobs they are) of the running jobs at the last full tick.
    _watched: Sequence[tuple[str, list[WatchItem], list[JobView]]] = ()
    #: Reports a quiet tick's look read but did not act on, per host and watch item.
    _prefetched: dict[str, dict[WatchItem, JobReport]] = {}  # noqa: RUF012 (replaced whole)

    def _marker_connection(self) -> sqlite3.Connection | None:
        """The engine's own connection to its database (opened on first use); None when it
        cannot be opened: every tick is then a full one, heartbeats go through the store."""
        if self._marker_conn is None:
            try:
                self._marker_conn = sqlite3.connect(
                    f"{self.store.path.as_uri()}?mode=rw", uri=True, timeout=30,
                    check_same_thread=False, isolation_level=None)
            except sqlite3.Error:
                return None
        return self._marker_conn

    def _data_version(self) -> int | None:
        """This database's change counter, seen from the engine's own connection."""
        conn = self._marker_connection()
        if conn is None:
            return None
        try:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self._close_marker()
            return None  # no marker: every tick is a full one

    def _close_marker(self) -> None:
        if self._marker_conn is not None:
            self._marker_conn.close()
            self._marker_conn = None

    def _begin_full_tick(self) -> None:
        """Called as a full tick starts: what it reads is at least this new."""
        self._marker = self._data_version()
        self._last_full = time.monotonic()

    def _quiet_tick(self, woken: bool) -> bool:
        """True when this tick may skip the full pass: nothing changed since the last one."""
        if woken or self._marker is None:
            return False
        if time.monotonic() - self._last_full >= FULL_EVERY_S:
            return False
        if self._data_version() != self._marker:
            return False
        return self._jobs_quiet()

    def _jobs_quiet(self) -> bool:
        """Look at the running jobs of the last full tick; False on anything to act on (the
        reports read are kept for the full tick that follows)."""
        fleet: Fleet = self._jobs_fleet()  # type: ignore[attr-defined]
        quiet, kept, watched = True, {}, []
        for host, items, jobs in self._watched:
            if any(j.state != "running" or not j.job_dir for j in jobs):
                return False  # launching, unreachable: the full tick handles them each time
            reports = fleet.watch(host, items) or {}
            by_id = {i.job_id: i for i in items}
            kept[host] = {by_id[k]: r for k, r in reports.items() if k in by_id}
            seen = []
            for job in jobs:
                report = reports.get(job.id)
                news = report_news(job, report)
                if news == "beat" and report is not None and self._store_beat(job, report):
                    job = dataclasses.replace(job, heartbeat_at=report.status.heartbeat_at)
                elif news:
                    quiet = False
                seen.append(job)
            watched.append((host, items, seen))
        self._watched = watched
        self._prefetched = {} if quiet else kept
        return quiet

    def _store_beat(self, job: JobView, report: JobReport) -> bool:
        """A running job's newer heartbeat and log tail, through the marker's connection (the
        next tick stays quiet); False when that did not work (the full tick stores it)."""
        if self._marker_conn is None:
            return False
        tail = report.log_tail if report.log_tail is not None else job.log_tail
        try:
            cur = self._marker_conn.execute(
                "UPDATE job SET heartbeat_at = ?, log_tail = ? WHERE id = ? AND state = 'running'",
                (report.status.heartbeat_at, tail, job.id))
        except sqlite3.Error:
            return False
        return cur.rowcount == 1

    def _quiet_sleep_s(self) -> float:
        poll: float = self.poll_s  # type: ignore[attr-defined]
        exits = self.__dict__.get("_exit_fds", {})
        watched = [i.job_id for _, items, _ in self._watched for i in items]
        if watched and all(j in exits for j in watched):
            return QUIET_POLL_FACTOR_WATCHED * poll
        return QUIET_POLL_FACTOR * poll

    def _watch_exits(self) -> None:
        """After a full tick: a pidfd for each running local job's runner, in the event loop,
        whose end wakes the engine at once (no poll needed to see a job end)."""
        fleet = self._jobs_fleet()  # type: ignore[attr-defined]
        fds: dict[int, int] = self.__dict__.setdefault("_exit_fds", {})
        fired: set[int] = self.__dict__.setdefault("_exits_fired", set())
        local = getattr(fleet, "local_runners", False) and hasattr(os, "pidfd_open")
        wanted = {i.job_id: i.job_dir for _, items, _ in self._watched for i in items} \
            if local else {}
        loop = asyncio.get_running_loop()
        for job_id in [j for j in fds if j not in wanted]:
            self._unwatch_exit(loop, job_id)
        fired &= set(wanted)
        for job_id, job_dir in wanted.items():
            if job_id in fds or job_id in fired:
                continue
            try:
                pid = int(json.loads((Path(job_dir) / "pid").read_text())["pid"])
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                fired.add(job_id)
                self._wake.set()  # gone already
                continue
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not started yet, or no pidfd here: polled as before
            fds[job_id] = fd
            loop.add_reader(fd, self._runner_exited, loop, job_id)

    def _runner_exited(self, loop: asyncio.AbstractEventLoop, job_id: int) -> None:
        self._unwatch_exit(loop, job_id)
        self.__dict__.setdefault("_exits_fired", set()).add(job_id)
        self._wake.set()

    def _unwatch_exit(self, loop: asyncio.AbstractEventLoop, job_id: int) -> None:
        fd = self.__dict__.get("_exit_fds", {}).pop(job_id, None)
        if fd is not None:
            loop.remove_reader(fd)
            os.close(fd)

    def _close_exit_watches(self) -> None:
        fds = self.__dict__.get("_exit_fds", {})
        if fds:
            loop = asyncio.get_running_loop()
            for job_id in list(fds):
                self._unwatch_exit(loop, job_id)

    def _beat(self) -> None:
        """Write the engine's heartbeat when `ENGINE_BEAT_S` have passed, quiet tick or not.

        Through the marker's own connection: a connection's own commits leave its
        `data_version` as it was, so the heartbeat does not make the next tick a full one."""
        now = time.monotonic()
        if now - self._last_beat < ENGINE_BEAT_S:
            return
        self._last_beat = now
        conn = self._marker_connection()
        if conn is not None:
            try:
                conn.execute("UPDATE search SET engine_heartbeat = ? WHERE id = ?",
                                          (time.time(), self.search_id))
                return
            except sqlite3.Error as exc:
                log.warning("heartbeat through the marker connection failed (%s); writing "
                            "it through the store", exc)
        ops.update_search(self.store, self.search_id, engine_heartbeat=time.time())
