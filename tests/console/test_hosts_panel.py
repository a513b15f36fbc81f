"""The hosts panel lists every host the engine polled — idle ones with their free GPUs, hosts
that do not answer, quarantined ones — beside those holding jobs (real SQLite, Pilot)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from console import fmt
from console.app import IdeaforgeApp
from console.screens.jobs import JobsScreen
from console.widgets.hosts_panel import HostsPanel
from engine.store import Store
from engine.store import hosts_queries as hq
from tests.console.builders import NOW, Built
from tests.console.helpers import board, jobs_settled, until

MakeApp = Callable[..., IdeaforgeApp]
H100 = "NVIDIA H100 80GB HBM3"


def add_inventory(store: Store) -> None:
    """As the SSH fleet would record it: gpu-1 runs job #6 on GPUs 0-1 (see builders), gpu-2
    is idle with GPU 3 taken by someone else's process, gpu-3 stopped answering."""
    four = [hq.GpuInfo(g, H100, 81559.0) for g in range(4)]
    hq.record_inventory(store, "gpu-1", gpus=range(4), gpu_info=four, reachable=True,
                        seen_at=NOW - 3)
    hq.record_inventory(store, "gpu-2", gpus=range(4), gpu_info=four, foreign=[3],
                        reachable=True, seen_at=NOW - 3)
    hq.record_inventory(store, "gpu-3", gpus=[0, 1], reachable=False, seen_at=NOW - 600,
                        error="host gpu-3: cannot connect to 10.0.0.3:22: timed out")


def cells(panel: HostsPanel, host: str) -> dict[str, str]:
    return {str(col.key.value): str(value)
            for col, value in zip(panel.ordered_columns, panel.get_row(host), strict=True)}


async def open_hosts(pilot: Pilot[Any], rows: int) -> HostsPanel:
    await until(pilot, lambda: board(pilot).total == 11, what="the board")
    await pilot.press("2")
    return await until(pilot, lambda: isinstance(pilot.app.screen, JobsScreen)
                       and pilot.app.screen.query_one(HostsPanel).row_count == rows
                       and pilot.app.screen.query_one(HostsPanel), what="the hosts")


async def test_idle_hosts_show_their_free_gpus_and_the_panel_follows_changes(
        make_app: MakeApp, built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    add_inventory(built.store)
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        panel = await open_hosts(pilot, 4)  # local, gpu-1, gpu-2, gpu-3
        idle = cells(panel, "gpu-2")
        assert idle["gpus"] == "free 0-2  foreign 3"
        assert idle["state"] == "ok" and idle["running"] == "0" and idle["queued"] == "0"
        busy = cells(panel, "gpu-1")
        assert busy["gpus"] == "0→#6 1→#6  free 2-3" and busy["running"] == "1"
        down = cells(panel, "gpu-3")
        assert down["gpus"] == "last known 0-1"
        assert down["state"].startswith("unreachable: cannot connect to 10.0.0.3:22")
        assert cells(panel, "local")["gpus"] == "none leased"  # never polled: leases only

        # the foreign process ends, gpu-3 is quarantined; the next refresh (5 s later) shows it
        hq.record_inventory(built.store, "gpu-2", gpus=range(4), reachable=True, seen_at=NOW)
        hq.record_host_failure(built.store, "gpu-3", "host gpu-3: no answer for 2 s", threshold=1,
                               quarantine_s=NOW + 1800 - time.time())  # the pinned clock's
        monkeypatch.setattr(fmt, "clock", lambda: NOW + 6)
        await until(pilot, lambda: cells(panel, "gpu-2")["gpus"] == "free 0-3",
                    what="gpu-2 all free", state=lambda: cells(panel, "gpu-2"))
        await until(pilot, lambda: cells(panel, "gpu-3")["state"].startswith("quarantined"),
                    what="gpu-3 quarantined", state=lambda: cells(panel, "gpu-3"))
        assert cells(panel, "gpu-3")["state"] == "quarantined (30m left): no answer for 2 s"
        assert panel.row_count == 4  # updated in place, not added again


def test_jobs_and_hosts_with_idle_hosts(snap_compare: Any, make_app: MakeApp, built: Built
                                        ) -> None:
    """Snapshot: busy, idle (one foreign-busy GPU) and unreachable hosts side by side."""
    add_inventory(built.store)

    async def steps(pilot: Pilot[Any]) -> None:
        await open_hosts(pilot, 4)
        await jobs_settled(pilot)

    assert snap_compare(make_app(poll_s=3600), terminal_size=(150, 40), run_before=steps)
