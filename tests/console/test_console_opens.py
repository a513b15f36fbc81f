"""What `ideaforge console` opens: the most recent search's board, not an empty one."""

from __future__ import annotations

from pathlib import Path

from console.app import console_app
from console.screens.ideas import IdeasScreen
from console.screens.searches import SearchesScreen
from engine.store import ops
from tests.console.builders import NOW, Built
from tests.console.helpers import board, header_text, until


async def test_console_opens_on_the_most_recent_searchs_board(built: Built,
                                                              tmp_path: Path) -> None:
    # toy-1 is the one an engine wrote to last, though the imported search came after it
    ops.update_search(built.store, built.search_id, updated_at=NOW + 1)
    app = console_app(built.store.workspace)
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, IdeasScreen)
                    and board(pilot).total > 2, what="toy-1's board",
                    state=lambda: type(app.screen).__name__)
        assert app.search_id == built.search_id
        await until(pilot, lambda: "toy-1" in header_text(pilot), what="its header")
        await pilot.press("0")
        assert isinstance(app.screen, SearchesScreen)
        await pilot.press("1")  # back on the same board, never "no search is open"
        assert isinstance(app.screen, IdeasScreen) and app.search_id == built.search_id
        assert "no search is open" not in header_text(pilot)
    assert not app.worker_errors

    # A search named still opens that one; a workspace with none opens the searches list.
    app = console_app(built.store.workspace, "legacy-grpo")
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, IdeasScreen)
                    and app.search_id == built.imported_id, what="the named search")
    empty = console_app(tmp_path / "nothing-here")
    async with empty.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: isinstance(empty.screen, SearchesScreen), what="the list")
    assert not app.worker_errors and not empty.worker_errors
