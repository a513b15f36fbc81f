"""The app as a whole: two consoles on one workspace, logs kept off the terminal, $EDITOR."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from console.app import IdeaforgeApp, _logs_off_the_terminal
from engine.store import ops
from tests.console.builders import Built
from tests.console.helpers import board, cursor_to, until

MakeApp = Callable[..., IdeaforgeApp]


async def test_two_consoles_at_once_both_see_and_decide(make_app: MakeApp,
                                                        built: Built) -> None:
    first, second = make_app(), make_app()
    async with first.run_test(size=(150, 40)) as one, second.run_test(size=(150, 40)) as two:
        for pilot in (one, two):
            await until(pilot, lambda p=pilot: board(p).total == 11, what="both boards")
        await cursor_to(one, built.ideas["p2"])
        await one.press("a")
        await cursor_to(two, built.ideas["p3"])
        await two.press("a")
        pending = await until(one, lambda: {d.idea_id for d in ops.pending_decisions(
            built.store, built.search_id) if d.action == "approve"} >= {
            built.ideas["p2"], built.ideas["p3"]}, what="both decisions")
        assert pending
        # each console shows the other's decision on its way, live
        await until(two, lambda: next(r for r in board(two)._rows.values()
                                      if r.id == built.ideas["p2"]).pending == "approve",
                    what="the other console's decision")


def test_log_records_go_to_a_file_while_the_console_runs(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        with _logs_off_the_terminal(tmp_path):
            logging.getLogger("engine.store.migrations").info("upgraded workspace schema")
        logging.getLogger("ideaforge").info("after the console")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    err = capsys.readouterr().err
    assert "upgraded" not in err and "after the console" in err
    assert "upgraded workspace schema" in (tmp_path / "logs" / "console.log").read_text()


async def test_an_editor_that_fails_saves_nothing(make_app: MakeApp, built: Built,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    script = tmp_path / "bad_editor.py"
    script.write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.delenv("VISUAL", raising=False)
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        await cursor_to(pilot, built.ideas["p2"])
        await pilot.press("e")
        await pilot.pause(0.3)
        assert not [d for d in ops.pending_decisions(built.store, built.search_id)
                    if d.action == "edit"]
