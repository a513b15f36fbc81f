"""The gate as a researcher works it (issue 15): a and r go on to the next idea that awaits a
decision, deciding the last one does not release the gate (g does), a key that cannot apply
says why, and the palette jumps to an idea by its id."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from console.app import IdeaforgeApp
from console.screens.confirm import ConfirmScreen
from console.screens.idea_detail import IdeaDetailScreen
from console.screens.prompt import PromptScreen
from engine.store import Store, ops
from tests.conftest import start_cli, wait_for
from tests.console.builders import Built
from tests.console.helpers import board, cursor_to, header_text, loaded_rows, until

MakeApp = Callable[..., IdeaforgeApp]


def notes(app: IdeaforgeApp) -> list[str]:
    return [n.message for n in app._notifications]


def decisions(store: Store, search_id: int) -> list[tuple[str, int | None]]:
    return [(d.action, d.idea_id) for d in ops.pending_decisions(store, search_id)]


async def test_approve_and_reject_move_on_to_the_next_undecided_idea(
        make_app: MakeApp, built: Built) -> None:
    p1, p2, p3 = (built.ideas[k] for k in ("p1", "p2", "p3"))  # p1's approval is on its way
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        await cursor_to(pilot, p3)
        await pilot.press("a")
        # p1 already has a decision: the next one that awaits one is p2 (wrapping up).
        await until(pilot, lambda: board(pilot).current.id == p2, 5, "the cursor on p2",
                    state=lambda: board(pilot).current)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the reason")
        await pilot.press("enter")
        await until(pilot, lambda: ("reject", p2) in decisions(built.store, built.search_id),
                    what="the rejection")
        assert board(pilot).current.id == p2  # nothing else waits: the cursor stays
        # The console's first decision at this gate holds it shut until go.
        sent = decisions(built.store, built.search_id)
        assert sent == [("approve", p1), ("hold", None), ("approve", p3), ("reject", p2)]
        assert p1 not in {r.id for r in loaded_rows(pilot) if not r.pending}


async def test_a_key_that_cannot_apply_says_why(make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        await cursor_to(pilot, built.ideas["a"])
        await pilot.press("a")
        await until(pilot, lambda: any(f"#{built.ideas['a']} is scored: only a proposed idea"
                                       in n for n in notes(app)), 5, "the reason",
                    state=lambda: notes(app))
        # the idea's detail says why too
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen)
                    and app.screen.detail is not None, what="the detail")
        before = len(notes(app))
        await pilot.press("a")
        await until(pilot, lambda: any(f"#{built.ideas['a']} is scored: only a proposed idea"
                                       in n for n in notes(app)[before:]), 5,
                    "the detail's reason", state=lambda: notes(app))
        await pilot.press("y")
        await until(pilot, lambda: any("no suspicious result waiting" in n
                                       for n in notes(app)), 5, "quarantine's reason")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, IdeaDetailScreen), what="back")
        await cursor_to(pilot, built.ideas["p1"])
        await pilot.press("e")
        await until(pilot, lambda: any("already has a decision on its way (approve)" in n
                                       for n in notes(app)), 5, "the pending reason")
        assert decisions(built.store, built.search_id) == [("approve", built.ideas["p1"])]
    ops.update_search(built.store, built.search_id, status="finished", phase="done")
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        await pilot.press("g")
        await until(pilot, lambda: any("finished: it has no gate to release" in n
                                       for n in notes(app)), 5, "go's reason",
                    state=lambda: notes(app))
        assert not isinstance(app.screen, ConfirmScreen)
        assert ("go", None) not in decisions(built.store, built.search_id)


async def test_the_palette_jumps_to_an_idea_by_its_id(make_app: MakeApp, built: Built) -> None:
    target = built.ideas["b"]
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        await pilot.press("colon", *f"#{target}")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen)
                    and app.screen.detail is not None
                    and app.screen.detail.idea.id == target, 10, "the idea's detail")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, IdeaDetailScreen), what="back")
        await pilot.press("colon", *str(built.ideas["p2"]))  # a bare number works too
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen)
                    and app.screen.detail is not None
                    and app.screen.detail.idea.id == built.ideas["p2"], 10, "p2's detail")


def _phase(workspace: Path) -> str:
    with sqlite3.connect(workspace / "ideaforge.db") as db:
        return db.execute("SELECT phase FROM search WHERE name = 't'").fetchone()[0]


def _engine_pid(workspace: Path) -> int | None:
    with sqlite3.connect(workspace / "ideaforge.db") as db:
        return db.execute("SELECT engine_pid FROM search WHERE name = 't'").fetchone()[0]


@pytest.mark.slow
async def test_deciding_the_last_idea_leaves_the_engine_at_the_gate_until_go(
        toy_env: Path, workspace: Path) -> None:
    engine = start_cli("run", str(toy_env), "--name", "t", "--epochs", "1",
                       "--ideas-per-epoch", "2", "--confirm", "off", workspace=workspace)
    app = IdeaforgeApp(workspace, "t", poll_s=0.2, keys={})
    try:
        wait_for(lambda: (workspace / "ideaforge.db").exists(), 60, "the workspace")
        async with app.run_test(size=(160, 40)) as pilot:
            def proposed() -> list[Any]:
                return [r for r in loaded_rows(pilot) if r.status == "proposed"]

            await until(pilot, lambda: len(proposed()) == 2, 90, "the gate")
            await until(pilot, lambda: app.screen.check_action("stop_search", ()), 10,
                        "the engine's heartbeat")
            first, second = proposed()
            await cursor_to(pilot, first.id)
            await pilot.press("a")
            assert board(pilot).current.id == second.id
            await pilot.press("a")
            await until(pilot, lambda: all(r.status == "approved" for r in loaded_rows(pilot)
                                           if r.id in (first.id, second.id)), 30,
                        "the engine to apply both")
            await until(pilot, lambda: "every idea is decided — g go releases it"
                        in header_text(pilot), 10, "the held gate",
                        state=lambda: header_text(pilot))
            held = time.monotonic()
            while time.monotonic() - held < 3:  # many engine ticks (it polls every 0.5 s)
                assert _phase(workspace) == "review_ideas"
                await pilot.pause(0.3)
            # An engine started again (after a crash) keeps the gate shut too.
            engine.kill()
            engine.wait()
            engine = start_cli("resume", "t", workspace=workspace)
            await until(pilot, lambda: _engine_pid(workspace) == engine.pid, 60,
                        "the new engine", state=lambda: engine.poll())
            await until(pilot, lambda: app.screen.check_action("stop_search", ()), 30,
                        "the new engine's heartbeat")
            held = time.monotonic()
            while time.monotonic() - held < 3:
                assert _phase(workspace) == "review_ideas" and engine.poll() is None
                await pilot.pause(0.3)
            await pilot.press("g")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "confirm")
            await pilot.press("y")
            await until(pilot, lambda: _phase(workspace) != "review_ideas", 30,
                        "the gate to open")
            await until(pilot, lambda: engine.poll() is not None, 120, "the search to end")
            assert engine.returncode == 0
        assert not app.worker_errors
    finally:
        engine.kill()
        engine.wait()
