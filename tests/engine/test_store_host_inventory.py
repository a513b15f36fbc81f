"""The hosts' inventory in the store: what the console's hosts panel lists, idle hosts included."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from engine.store import Store, job_ops, ops
from engine.store import console_queries as cq
from engine.store import hosts_queries as hq

H100 = hq.GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559.0)


def _leased_job(store: Store, host: str, gpus: list[int]) -> int:
    sid = ops.create_search(store, name="s", env_name="toy", env_path="/x", env_version="v",
                            profile="smoke", model="catalog", epochs=1, ideas_per_epoch=2,
                            metric_name="score", goal="minimize").id
    idea = ops.add_idea(store, sid, 0, ops.NewIdea(text="[Experiment] a", origin="seed",
                                                   status="implemented"))
    job = job_ops.enqueue_job(store, idea, profile="gpu2", gpus_wanted=len(gpus), executor="ssh")
    assert job is not None
    assert hq.claim_placement(store, job, host, gpus, f"jobs/job-{job}")
    assert hq.set_job_state(store, job, "launching", "running", heartbeat_at=time.time())
    return job


def _tables(db: Path) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()


def test_idle_and_busy_hosts_show_free_held_and_foreign_gpus(tmp_path: Path) -> None:
    store = Store(tmp_path)
    job = _leased_job(store, "busy", [0, 1])
    seen = time.time()
    hq.record_inventory(store, "idle", gpus=[0, 1, 2, 3],
                        gpu_info=[hq.GpuInfo(g, H100.name, H100.memory_mib) for g in range(4)],
                        reachable=True, seen_at=seen)
    hq.record_inventory(store, "busy", gpus=[0, 1, 2, 3], foreign=[3], reachable=True,
                        seen_at=seen)
    hq.record_inventory(store, "down", gpus=None, reachable=False,
                        error="host down: connection refused")
    hq.record_host_failure(store, "down", "host down: connection refused", threshold=1)

    rows = {r.host: r for r in cq.hosts_overview(store)}
    assert set(rows) == {"idle", "busy", "down"}

    idle = rows["idle"]
    assert idle.gpus == (0, 1, 2, 3) and idle.free == (0, 1, 2, 3) and not idle.leases
    assert idle.running == 0 and idle.reachable and idle.seen_at == seen
    assert idle.gpu_model == "NVIDIA H100 80GB HBM3 (80 GiB)"

    busy = rows["busy"]
    assert busy.leases == {0: job, 1: job} and busy.foreign == (3,) and busy.free == (2,)
    assert busy.running == 1 and busy.last_heartbeat is not None

    down = rows["down"]
    assert down.reachable is False and down.gpus is None and down.free == ()
    assert down.error == "host down: connection refused"
    assert down.quarantined_until is not None and down.quarantined_until > time.time()

    # written again as the fleet learns more: the row is replaced, not duplicated
    hq.record_inventory(store, "down", gpus=[0], reachable=True, seen_at=time.time())
    rows = {r.host: r for r in cq.hosts_overview(store)}
    assert rows["down"].reachable and rows["down"].free == (0,) and rows["down"].error is None
    assert set(hq.inventory(store)) == {"idle", "busy", "down"}


def test_a_database_from_before_the_inventory_still_lists_leased_hosts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    job = _leased_job(store, "gpu-1", [0])
    store.close()
    con = sqlite3.connect(tmp_path / "ideaforge.db")
    con.executescript("DROP TABLE IF EXISTS host_inventory; DROP TABLE IF EXISTS host_state;")
    con.close()

    old = Store(tmp_path)
    (row,) = [r for r in cq.hosts_overview(old) if r.host == "gpu-1"]
    assert row.leases == {0: job} and row.gpus is None and row.reachable is None
    assert row.quarantined_until is None
    # the console's read neither failed nor created anything in the old file
    assert not {"host_inventory", "host_state"} & _tables(tmp_path / "ideaforge.db")

    hq.record_inventory(old, "spare", gpus=[0, 1], reachable=True, seen_at=time.time())
    assert "host_inventory" in _tables(tmp_path / "ideaforge.db")
    assert {r.host: r.free for r in cq.hosts_overview(old)}["spare"] == (0, 1)
