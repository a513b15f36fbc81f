"""An engine that waits at a gate writes no events, only heartbeats: the console must still
see it attached (and offer Stop, not Resume) however long the researcher takes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from console.app import IdeaforgeApp
from console.widgets import search_header
from tests.conftest import start_cli, wait_for
from tests.console.helpers import header_text, loaded_rows, until


@pytest.mark.slow
async def test_an_engine_waiting_at_the_gate_stays_attached(
        toy_env: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 30 s in real use; the engine writes its heartbeat every 5 s (engine.search_quiet)
    monkeypatch.setattr(search_header, "ENGINE_STALE_S", 11.0)
    engine = start_cli("run", str(toy_env), "--name", "t", "--epochs", "1",
                       "--ideas-per-epoch", "2", workspace=workspace)
    app = IdeaforgeApp(workspace, "t", poll_s=0.2, keys={})
    try:
        wait_for(lambda: (workspace / "ideaforge.db").exists(), 60, "the workspace")
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: len([r for r in loaded_rows(pilot)
                                            if r.status == "proposed"]) == 2, 90, "the gate")
            await until(pilot, lambda: app.screen.check_action("stop_search", ()), 10,
                        "the engine's heartbeat")
            waited = time.monotonic()
            while time.monotonic() - waited < 23:  # over twice the stale limit, no event
                assert "no engine attached" not in header_text(pilot)
                assert app.screen.check_action("stop_search", ())
                await pilot.pause(0.5)
        assert not app.worker_errors
    finally:
        engine.kill()
        engine.wait()
