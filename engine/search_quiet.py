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
  before): a finished job, new metric lines or log bytes, a scheduler's new word, or a heartbeat
  worth storing make the tick a full one.
- a task that finished sets the engine's wake event: a full tick.
- at least every `FULL_EVERY_S` a full tick anyway: what depends on the clock alone (a host's
  quarantine ending, a job surely past its time limit, another engine's heartbeat aging) is seen
  within that.

The engine's heartbeat is written at most every `ENGINE_BEAT_S` (readers call an engine gone
after 30 s), and a running job's heartbeat is stored once it is `JOB_BEAT_STORE_S` newer than
the stored one, so that an idle full tick writes nothing and the next tick is quiet again.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.search_parts import EngineParts
from engine.store import ops

if TYPE_CHECKING:
    from engine.executors.fleet import Fleet, JobReport, WatchItem
    from engine.store.views import JobView

#: The longest an engine goes without a full tick.
FULL_EVERY_S = 5.0
#: How often the engine's heartbeat is written while it runs.
ENGINE_BEAT_S = 5.0
#: A running job's heartbeat (and its log tail) is stored once it is this much newer.
JOB_BEAT_STORE_S = 10.0


def beat_worth_storing(stored: float | None, seen: float | None) -> bool:
    """A job's heartbeat is stored when it is the first, or `JOB_BEAT_STORE_S` newer."""
    if seen is None:
        return False
    return stored is None or seen - stored >= JOB_BEAT_STORE_S


def quiet_report(job: JobView, report: JobReport | None) -> bool:
    """Nothing in this report that a full tick would act on for this job."""
    if report is None:
        return True
    status = report.status
    if status.state not in ("running", "pending") or report.launch_error:
        return False
    if report.points or report.bad_lines or report.log_bytes or not report.complete:
        return False
    if report.metrics_from != job.metrics_offset or report.metrics_to != job.metrics_offset:
        return False
    if any(getattr(job, k) != v for k, v in status.external().items()):
        return False
    return not beat_worth_storing(job.heartbeat_at, status.heartbeat_at)


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

    def _data_version(self) -> int | None:
        """This database's change counter, from a connection of the engine's own."""
        try:
            if self._marker_conn is None:
                self._marker_conn = sqlite3.connect(
                    f"{self.store.path.as_uri()}?mode=ro", uri=True, timeout=30,
                    check_same_thread=False, isolation_level=None)
            row = self._marker_conn.execute("PRAGMA data_version").fetchone()
            return int(row[0])
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

    def _remember_watched(self, watched: Sequence[tuple[str, list[WatchItem], list[JobView]]]
                          ) -> None:
        self._watched = watched

    def _jobs_quiet(self) -> bool:
        """Look at the running jobs of the last full tick; False on anything to act on (the
        reports read are kept for the full tick that follows)."""
        fleet: Fleet = self._jobs_fleet()  # type: ignore[attr-defined]
        quiet, kept = True, {}
        for host, items, jobs in self._watched:
            if any(j.state != "running" or not j.job_dir for j in jobs):
                return False  # launching, unreachable: the full tick handles them each time
            reports = fleet.watch(host, items) or {}
            by_id = {i.job_id: i for i in items}
            kept[host] = {by_id[k]: r for k, r in reports.items() if k in by_id}
            quiet = quiet and all(quiet_report(j, reports.get(j.id)) for j in jobs)
        self._prefetched = {} if quiet else kept
        return quiet

    def _beat(self) -> None:
        """Write the engine's heartbeat when `ENGINE_BEAT_S` have passed, quiet tick or not."""
        now = time.monotonic()
        if now - self._last_beat >= ENGINE_BEAT_S:
            self._last_beat = now
            ops.update_search(self.store, self.search_id, engine_heartbeat=time.time())
