"""GPU placement: which queued job starts on which host's GPUs now.

Pure functions over plain data, so the engine and the simulated-clock benchmark
(`bench/scheduler_sim.py`) run the very same code. The engine turns a placement into a lease
(one transaction, `engine.store.hosts_queries.claim_placement`); nothing here touches the
database or the network.

The policy, in the order it is applied on every pass:

1. **Wide jobs first.** A job that needs several GPUs (a torchrun job wants a whole host) is
   considered before single-GPU jobs queued at the same time, in queue order among
   themselves. Single-GPU jobs never starve: one that has waited longer than `aging_s` joins
   the front class in its queue position.
2. **Best fit, whole GPUs.** A job goes to the host where it leaves the fewest GPUs free
   (ties: the host already running more jobs, then the name), so single-GPU jobs pack onto
   partly used hosts and whole hosts stay whole for wide jobs. GPUs leased to anyone or busy
   with processes we did not start are never handed out.
3. **Reservations.** A wide job that fits nowhere reserves the host expected to have enough
   GPUs free soonest (expected end = start + the job's time limit, an upper bound; ties:
   the host where fewer GPUs would sit idle while it drains). Later jobs may not start on a
   reserved host unless they are expected to end before the reservation is due (backfill),
   so a stream of single-GPU jobs can never hold a wide job back indefinitely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: A single-GPU job waiting longer than this joins the wide jobs' class (no starvation).
DEFAULT_AGING_S = 4 * 3600.0


@dataclass(frozen=True)
class RunningJob:
    """A job holding GPUs (or a CPU slot) on a host, as the scheduler needs to see it."""

    gpus: tuple[int, ...]
    expected_end: float  # start + time limit: an upper bound, in the caller's clock


@dataclass(frozen=True)
class HostSlots:
    name: str
    gpus: tuple[int, ...]  # usable GPU indices (configured subset of the detected ones)
    busy: frozenset[int] = frozenset()  # leased, or busy with foreign processes
    running: tuple[RunningJob, ...] = ()
    cpu_slots: int = 0
    cpu_running: int = 0
    max_jobs: int | None = None
    ready: bool = True  # reachable, not quarantined, environment prepared
    labels: frozenset[str] = frozenset()
    #: Another scheduler (Slurm) places the jobs on its own GPUs: any job fits while
    #: `max_jobs` allows, and it gets a GPU count, not indices to lease.
    elastic: bool = False

    def free(self) -> list[int]:
        return [g for g in self.gpus if g not in self.busy]


@dataclass(frozen=True)
class Waiting:
    job_id: int
    gpus: int
    queued_at: float
    expected_s: float  # the job's time limit: how long it may hold what it gets
    mine: bool = True  # False: another engine's job, seen only so reservations are shared
    hosts: frozenset[str] | None = None  # where it may run (None: anywhere)


@dataclass(frozen=True)
class Placement:
    job_id: int
    host: str
    gpus: tuple[int, ...]
    lease: bool = True  # False on an elastic host: `gpus` only counts them (0..n-1)


@dataclass(frozen=True)
class Reservation:
    job_id: int
    host: str
    due: float  # when the host is expected to have enough GPUs free


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    unplaceable: list[int] = field(default_factory=list)  # no eligible host is big enough

    def mine(self, queue: Sequence[Waiting]) -> list[Placement]:
        own = {w.job_id for w in queue if w.mine}
        return [p for p in self.placements if p.job_id in own]


@dataclass
class _Host:
    """Mutable working copy of a host during one planning pass."""

    slots: HostSlots
    free: list[int]
    jobs: int
    cpu_running: int
    ends: list[tuple[float, int]]  # (expected end, GPUs it releases)
    reserved_due: float | None = None

    @property
    def name(self) -> str:
        return self.slots.name

    def room_for_job(self) -> bool:
        return self.slots.max_jobs is None or self.jobs < self.slots.max_jobs

    def available_at(self, need: int, now: float) -> float:
        """When `need` GPUs are expected free here (now if they already are)."""
        have = len(self.free)
        if have >= need:
            return now
        for end, n in sorted(self.ends):
            have += n
            if have >= need:
                return max(end, now)
        return float("inf")  # foreign processes hold the rest: no estimate

    def idle_while_draining(self, need: int, now: float) -> float:
        """GPU-seconds that would sit idle here between now and `available_at(need)`."""
        due = self.available_at(need, now)
        idle = len(self.free) * (due - now)
        for end, n in self.ends:
            if end < due:
                idle += n * (due - max(end, now))
        return idle


def is_wide(w: Waiting) -> bool:
    return w.gpus > 1


def order(queue: Sequence[Waiting], now: float, aging_s: float = DEFAULT_AGING_S
          ) -> list[Waiting]:
    """Wide jobs and long-waiting single-GPU jobs first, each class in queue order."""
    def key(w: Waiting) -> tuple[int, float, int]:
        front = is_wide(w) or (now - w.queued_at) >= aging_s
        return (0 if front else 1, w.queued_at, w.job_id)

    return sorted(queue, key=key)


def plan(hosts: Sequence[HostSlots], queue: Sequence[Waiting], now: float, *,
         aging_s: float = DEFAULT_AGING_S) -> Plan:
    """Placements for jobs that can start now; reservations for wide jobs that cannot."""
    work = [_Host(h, h.free(), len(h.running), h.cpu_running,
                  [(r.expected_end, len(r.gpus)) for r in h.running if r.gpus])
            for h in hosts]
    out = Plan()
    for w in order(queue, now, aging_s):
        eligible = [h for h in work if h.slots.ready
                    and (w.hosts is None or h.name in w.hosts)]
        if any(h.slots.elastic for h in eligible):
            _place_elastic(w, eligible, out)
            continue
        if w.gpus == 0:
            _place_cpu(w, eligible, out)
            continue
        if not any(len(h.slots.gpus) >= w.gpus for h in eligible):
            if not any(len(h.slots.gpus) >= w.gpus or h.slots.elastic for h in work
                       if w.hosts is None or h.name in w.hosts):
                out.unplaceable.append(w.job_id)
            continue  # eligible hosts that could fit it are down or not ready: wait
        end = now + w.expected_s
        fits = [h for h in eligible if len(h.free) >= w.gpus and h.room_for_job()
                and (h.reserved_due is None or end <= h.reserved_due)]
        if fits:
            best = min(fits, key=lambda h: (len(h.free) - w.gpus, -h.jobs, h.name))
            taken = tuple(sorted(best.free)[: w.gpus])
            best.free = [g for g in best.free if g not in taken]
            best.jobs += 1
            best.ends.append((end, w.gpus))
            out.placements.append(Placement(w.job_id, best.name, taken))
        elif is_wide(w) or (now - w.queued_at) >= aging_s:
            _reserve(w, eligible, now, out)
    return out


def _place_cpu(w: Waiting, eligible: list[_Host], out: Plan) -> None:
    fits = [h for h in eligible if h.cpu_running < h.slots.cpu_slots and h.room_for_job()]
    if not fits:
        return
    # CPU jobs spread out: the host with the most free CPU slots.
    best = min(fits, key=lambda h: (h.cpu_running - h.slots.cpu_slots, h.name))
    best.cpu_running += 1
    best.jobs += 1
    out.placements.append(Placement(w.job_id, best.name, ()))


def _place_elastic(w: Waiting, eligible: list[_Host], out: Plan) -> None:
    fits = [h for h in eligible if h.slots.elastic and h.room_for_job()]
    if fits:
        best = min(fits, key=lambda h: (h.jobs - (h.slots.max_jobs or 0), h.name))
        best.jobs += 1
        out.placements.append(Placement(w.job_id, best.name, tuple(range(w.gpus)), lease=False))


def _reserve(w: Waiting, eligible: list[_Host], now: float, out: Plan) -> None:
    options = [h for h in eligible if h.reserved_due is None and len(h.slots.gpus) >= w.gpus]
    if not options:
        return
    best = min(options, key=lambda h: (h.available_at(w.gpus, now),
                                       h.idle_while_draining(w.gpus, now), h.name))
    due = best.available_at(w.gpus, now)
    best.reserved_due = due
    out.reservations.append(Reservation(w.job_id, best.name, due))
