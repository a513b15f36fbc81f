"""What the search engine sees of an executor that may span several hosts.

The engine places jobs with `engine.scheduler` across `host_views()`, launches each one into
its attempt directory, and reads every host's jobs in one batched `watch()` per tick. The SSH
executor implements this natively (network I/O in one thread per host, so a slow or dead host
never stalls the engine's loop); `LocalFleet` adapts the local executor (one host, "local"),
which keeps its own interface and tests unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.environments import Environment, Profile
from engine.executors.base import Executor, JobStatus, LaunchSpec, parse_metric_bytes
from engine.patching import PatchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostView:
    name: str
    gpus: tuple[int, ...] | None  # usable GPU indices; None until the host was reached
    foreign_busy: frozenset[int] = frozenset()  # GPUs used by processes we did not start
    cpu_slots: int = 0
    max_jobs: int | None = None
    labels: tuple[str, ...] = ()
    reachable: bool = True
    down_since: float | None = None  # engine clock; None while it answers
    unreachable_after: float = 30.0  # seconds of silence before its jobs count as unreachable
    ready: bool = True  # environment copied and set up, not quarantined
    problem: str | None = None  # why it is not ready, one line
    setup_failed: bool = False
    elastic: bool = False  # Slurm places the jobs: no GPU indices here (scheduler.HostSlots)


@dataclass(frozen=True)
class WatchItem:
    job_id: int
    job_dir: str
    metrics_offset: int
    log_offset: int


@dataclass(frozen=True)
class JobReport:
    status: JobStatus
    metrics_from: int  # the offset this report's metric bytes were read from
    metrics_to: int  # the offset after the last complete line in them
    points: list[dict[str, Any]]
    bad_lines: int = 0
    log_from: int = 0
    log_bytes: bytes = b""  # new output.log bytes to mirror locally (remote hosts only)
    log_tail: str | None = None  # the whole tail, when the log is local already
    complete: bool = True  # everything written so far has been read
    launch_error: str | None = None


@dataclass(frozen=True)
class LaunchOutcome:
    error: str | None = None  # None: started, or an earlier launch of it was adopted
    host_fault: bool = False  # the host, not the job, failed: try another host
    conflict: bool = False  # the job's directory holds another job: run it as a new attempt


class Fleet(Protocol):
    name: str

    def prepare(self, env: Environment, profile: Profile) -> None: ...
    def host_views(self) -> list[HostView]: ...
    def job_dir(self, host: str, search_id: int, job_id: int) -> str: ...
    def launch(self, host: str, spec: LaunchSpec, job_dir: str) -> LaunchOutcome | None: ...
    def watch(self, host: str, items: Sequence[WatchItem]) -> dict[int, JobReport] | None: ...
    def cancel(self, host: str, job_dir: str) -> None: ...
    def log_copy(self, host: str, search_id: int, job_id: int) -> Path | None: ...


def as_fleet(executor: Any) -> Fleet:
    """The executor itself when it spans hosts; the local executor wrapped otherwise."""
    if hasattr(executor, "host_views") and hasattr(executor, "watch"):
        return executor  # type: ignore[no-any-return]
    return LocalFleet(executor)


class LocalFleet:
    """One host ("local"): jobs run on this machine through the local executor."""

    #: Each running job's runner is a process of this machine (its pid in `pid`): the engine
    #: may wait on its exit instead of polling for it.
    local_runners = True

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.name = executor.name

    def prepare(self, env: Environment, profile: Profile) -> None:
        self.executor.prepare(env, profile)

    def host_views(self) -> list[HostView]:
        ex = self.executor
        return [HostView(ex.host, tuple(ex.gpu_indices()), cpu_slots=ex.cpu_slots())]

    def job_dir(self, host: str, search_id: int, job_id: int) -> str:
        return str(self.executor.job_dir(search_id, job_id))  # type: ignore[attr-defined]

    def launch(self, host: str, spec: LaunchSpec, job_dir: str) -> LaunchOutcome | None:
        try:
            self.executor.launch(spec)
        except (PatchError, OSError, RuntimeError, ValueError) as exc:
            # A patch that does not apply here, a full disk: this job fails, not the engine.
            log.warning("job %d: launch failed: %s", spec.job_id, exc)
            return LaunchOutcome(error=f"{type(exc).__name__}: {exc}")
        return LaunchOutcome()

    def watch(self, host: str, items: Sequence[WatchItem]) -> dict[int, JobReport] | None:
        out = {}
        for item in items:
            status = self.executor.poll(item.job_dir)
            got = self.executor.read_output(item.job_dir, item.metrics_offset)
            out[item.job_id] = JobReport(status, item.metrics_offset, got.metrics_offset,
                                         got.metric_lines, got.bad_lines, item.log_offset,
                                         log_tail=got.log_tail)
        return out

    def cancel(self, host: str, job_dir: str) -> None:
        self.executor.cancel(job_dir)

    def log_copy(self, host: str, search_id: int, job_id: int) -> Path | None:
        return None  # the log is on this machine already


def parse_remote_output(data: bytes, offset: int, size: int, finished: bool
                        ) -> tuple[list[dict[str, Any]], int, int]:
    """Metric points from bytes read at `offset` of a file `size` long.

    A partial last line waits for its newline, unless the job has finished and these are the
    file's last bytes: then it is all there will ever be.
    """
    if finished and data and offset + len(data) >= size and not data.endswith(b"\n"):
        points, _, bad = parse_metric_bytes(data + b"\n", offset)
        return points, offset + len(data), bad
    return parse_metric_bytes(data, offset)
