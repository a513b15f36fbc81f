"""Stopping a search from the console and resuming it in a background engine, for real."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from console.app import IdeaforgeApp
from console.screens.confirm import ConfirmScreen
from tests.conftest import cli, start_cli, wait_for
from tests.console.helpers import board, header_text, loaded_rows, until


def status(ws: Path) -> dict:
    return json.loads(cli("status", "t", "--json", workspace=ws, check=True).stdout)


@pytest.mark.slow
async def test_stop_then_resume_from_the_console(toy_env: Path, workspace: Path) -> None:
    engine = start_cli("run", str(toy_env), "--name", "t", "--epochs", "1",
                       "--ideas-per-epoch", "4", workspace=workspace)
    app = IdeaforgeApp(workspace, "t", poll_s=0.2, keys={})
    try:
        wait_for(lambda: (workspace / "ideaforge.db").exists(), 60, "the workspace")
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: len([r for r in loaded_rows(pilot)
                                            if r.status == "proposed"]) == 4, 90, "the gate")
            await until(pilot, lambda: app.screen.check_action("stop_search", ()), 10,
                        "the engine's heartbeat")
            await pilot.press("X")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "confirm")
            await pilot.press("y")
            await until(pilot, lambda: engine.poll() is not None, 60, "the engine to stop")
            assert engine.returncode == 5  # stopped by the researcher
            await until(pilot, lambda: app.screen.check_action("resume_search", ()), 20,
                        "resume to be offered", state=lambda: header_text(pilot))
            await pilot.press("R")  # a detached `ideaforge resume t`
            await until(pilot, lambda: app.engines, 20, "the new engine")
            await until(pilot, lambda: app.screen.check_action("go", ()) and
                        app.screen.check_action("stop_search", ()), 60, "it to attach")
            await pilot.press("g")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "confirm")
            await pilot.press("y")
            resumed = app.engines[0]
            await until(pilot, lambda: resumed.poll() is not None, 90, "the resumed engine")
            assert resumed.returncode == 0
            await until(pilot, lambda: all(r.status in ("skipped", "scored")
                                           for r in loaded_rows(pilot)), 10, "final board")
            assert board(pilot).total == 5
        assert not app.worker_errors
    finally:
        engine.kill()
        for proc in app.engines:  # detached on purpose; the test cleans up after itself
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert status(workspace)["status"] == "finished"
    assert (workspace / "logs" / "engine-t.log").exists()


@pytest.mark.slow
async def test_a_search_started_from_the_console_runs_and_shows_up(
        toy_env: Path, workspace: Path) -> None:
    from textual.widgets import Checkbox, Input

    from console.screens.new_search import NewSearchScreen
    from console.screens.searches import SearchesScreen

    app = IdeaforgeApp(workspace, None, poll_s=0.2, keys={})
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, SearchesScreen), 10, "searches")
            await pilot.press("n")
            form = await until(pilot, lambda: isinstance(app.screen, NewSearchScreen)
                               and app.screen, 10, "the form")
            form.query_one("#env-path", Input).value = str(toy_env)
            form.query_one("#name", Input).value = "mine"
            form.query_one("#epochs", Input).value = "1"
            form.query_one("#ideas", Input).value = "0"
            await pilot.press("ctrl+s")
            assert "at least 1" in str(form.query_one("#problem").content)  # nothing started
            assert not app.engines
            form.query_one("#ideas", Input).value = "4"
            form.query_one("#auto", Checkbox).value = True
            await pilot.press("ctrl+s")
            screen = await until(pilot, lambda: isinstance(app.screen, SearchesScreen)
                                 and app.screen, 10, "back to the list")
            await until(pilot, lambda: [s for s in screen.summaries.values()
                                        if s.search.name == "mine"], 60, "the new search")
            await until(pilot, lambda: app.engines and app.engines[0].poll() is not None,
                        120, "the engine to finish")
            assert app.engines[0].returncode == 0
            finished = await until(pilot, lambda: [s for s in screen.summaries.values()
                                                   if s.search.status == "finished"], 20,
                                   "the list to show it finished")
            assert finished[0].best == 4.0 and finished[0].search.auto
        assert not app.worker_errors
    finally:
        for proc in app.engines:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
