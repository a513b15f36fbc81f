"""Driving the console in tests: waiting on conditions (never sleeping as synchronisation),
finding rows on the board, moving the cursor to an idea with real key presses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from console.widgets.idea_board import IdeaBoard
from console.widgets.key_bar import KeyBar
from console.widgets.search_header import SearchHeader
from engine.store.console_queries import BoardRow


async def until(pilot: Pilot[Any], cond: Callable[[], object], timeout: float = 30,
                what: str = "condition", state: Callable[[], object] | None = None) -> Any:
    """Let the app run until `cond()` is truthy; fail after `timeout` seconds (saying
    `state()` then, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        await pilot.pause(0.05)
    seen = f"; state: {state()!r}" if state is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{seen}")


def board(pilot: Pilot[Any]) -> IdeaBoard:
    return pilot.app.screen.query_one(IdeaBoard)


def header_text(pilot: Pilot[Any]) -> str:
    """The ideas screen's header as plain text ("" until the search is loaded)."""
    header = pilot.app.screen.query_one(SearchHeader)
    return str(header.render_text()) if header.summary is not None else ""


def loaded_rows(pilot: Pilot[Any]) -> list[BoardRow]:
    b = board(pilot)
    return [b._rows[i] for i in sorted(b._rows)]


async def cursor_to(pilot: Pilot[Any], idea_id: int) -> BoardRow:
    """Move the board's cursor onto an idea with home/down, as a researcher would."""
    b = board(pilot)
    index = next(i for i, r in sorted(b._rows.items()) if r.id == idea_id)
    await pilot.press("home")
    if index:
        await pilot.press(*["down"] * index)
    assert b.current is not None and b.current.id == idea_id, (b.cursor, index)
    return b.current


async def jobs_settled(pilot: Pilot[Any]) -> None:
    """Before a picture of the jobs screen: background work done and the key bar caught up.
    The key bar follows the highlighted running job a frame after the table fills (its
    bindings signal); a loaded machine could take the picture before it offers c Cancel."""
    await until(pilot, lambda: not any(w.is_running for w in pilot.app.workers),
                what="background work to finish")
    bar = pilot.app.screen.query_one(KeyBar)
    await until(pilot, lambda: "Cancel" in bar.plain, what="the key bar's c Cancel")
    await pilot.pause()
