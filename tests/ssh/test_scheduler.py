"""GPU placement (engine.scheduler): pure functions, so plain unit tests with a fake clock."""

from __future__ import annotations

import sys

from engine.scheduler import HostSlots, Placement, RunningJob, Waiting, plan
from tests.conftest import REPO

H = 3600.0


def host(name: str, busy: tuple[int, ...] = (), ends: float = H, **kw: object) -> HostSlots:
    running = tuple(RunningJob((g,), ends) for g in busy)
    return HostSlots(name, tuple(range(8)), frozenset(busy), running, **kw)  # type: ignore[arg-type]


def small(job_id: int, at: float = 0.0, **kw: object) -> Waiting:
    return Waiting(job_id, 1, at, H, **kw)  # type: ignore[arg-type]


def wide(job_id: int, at: float = 0.0) -> Waiting:
    return Waiting(job_id, 8, at, H)


def test_single_gpu_jobs_pack_onto_the_busiest_host_and_keep_whole_hosts_whole() -> None:
    hosts = [host("a"), host("b", busy=(0, 1, 2)), host("c")]
    got = plan(hosts, [small(1), small(2)], now=0).placements
    assert got == [Placement(1, "b", (3,)), Placement(2, "b", (4,))]
    got = plan(hosts, [small(1), wide(2)], now=0).placements
    assert {p.job_id: p.host for p in got} == {2: "a", 1: "b"}  # the wide job got a whole host


def test_leased_and_foreign_busy_gpus_are_never_handed_out() -> None:
    h = HostSlots("a", (0, 1, 2, 3), busy=frozenset({0, 2}))
    got = plan([h], [small(1), small(2), small(3)], now=0).placements
    assert sorted(g for p in got for g in p.gpus) == [1, 3]


def test_a_wide_job_is_not_starved_by_a_stream_of_single_gpu_jobs() -> None:
    """Every host runs 1-GPU jobs; new ones keep arriving. The 8-GPU job reserves the host
    that drains first, and no 1-GPU job may start there, so it gets that host in time."""
    now = 0.0
    hosts = [host("a", busy=tuple(range(8)), ends=1 * H),
             host("b", busy=tuple(range(8)), ends=2 * H)]
    queue = [wide(100, at=-1.0)] + [small(i, at=float(i)) for i in range(1, 50)]
    result = plan(hosts, queue, now)
    assert result.placements == []
    assert [(r.job_id, r.host, r.due) for r in result.reservations] == [(100, "a", H)]
    # Half of host a frees up: single-GPU jobs may not take it, the wide job still waits.
    half = [host("a", busy=(4, 5, 6, 7), ends=1 * H), hosts[1]]
    assert plan(half, queue, now=0.5 * H).placements == []
    # Host a is empty: the wide job starts there before any of the 49 single-GPU jobs.
    empty = [host("a"), hosts[1]]
    assert plan(empty, queue, now=H).placements == [Placement(100, "a", tuple(range(8)))]


def test_a_short_job_may_backfill_a_reserved_host_if_it_ends_before_the_reservation() -> None:
    hosts = [host("a", busy=(0, 1, 2, 3), ends=2 * H)]
    quick, slow = Waiting(2, 1, 1.0, 0.5 * H), Waiting(3, 1, 2.0, 3 * H)
    got = plan(hosts, [wide(1), quick, slow], now=0).placements
    assert [p.job_id for p in got] == [2]  # the slow one would still hold a GPU at 2 h


def test_long_waiting_single_gpu_jobs_go_first_after_aging() -> None:
    hosts = [host("a")]
    old = small(1, at=-5 * H)
    got = plan(hosts, [wide(2, at=-1.0), old], now=0, aging_s=4 * H).placements
    assert [p.job_id for p in got] == [1]
    got = plan(hosts, [wide(2, at=-1.0), old], now=0, aging_s=6 * H).placements
    assert [p.job_id for p in got] == [2]


def test_hosts_not_ready_limits_cpu_slots_and_unplaceable_jobs() -> None:
    hosts = [HostSlots("down", tuple(range(8)), ready=False),
             HostSlots("up", (0, 1), max_jobs=1, cpu_slots=2)]
    result = plan(hosts, [small(1), small(2), Waiting(3, 16, 0.0, H)], now=0)
    assert result.placements == [Placement(1, "up", (0,))]  # max_jobs = 1
    assert result.unplaceable == [3]  # no host has 16 GPUs
    cpu = plan([HostSlots("up", (), cpu_slots=2, cpu_running=1)],
               [Waiting(4, 0, 0.0, H), Waiting(5, 0, 1.0, H)], now=0)
    assert cpu.placements == [Placement(4, "up", ())]


def test_other_engines_jobs_take_their_place_but_only_mine_are_returned() -> None:
    hosts = [host("a", busy=tuple(range(7)))]
    queue = [Waiting(1, 1, 0.0, H, mine=False), small(2, at=1.0)]
    result = plan(hosts, queue, now=0)
    assert result.placements == [Placement(1, "a", (7,))]
    assert result.mine(queue) == []  # job 1's own engine starts it; job 2 must wait


def test_the_simulation_meets_its_targets_on_a_few_mixes() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import scheduler_sim

    summary = scheduler_sim.run(mixes=5, seed=7)
    assert summary["ideaforge"]["busy_median_pct"] >= 97.0
    assert summary["ideaforge"]["wide_jobs_later_than_fifo"] == 0
    assert summary["fifo"]["busy_median_pct"] < summary["ideaforge"]["busy_median_pct"]
