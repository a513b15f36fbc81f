"""The ideas board: what it shows, filtering, sorting, marks, decisions written as rows, the
cursor surviving live updates, and only a window of rows in memory."""

from __future__ import annotations

from collections.abc import Callable

from console.app import IdeaforgeApp
from console.screens.confirm import ConfirmScreen
from console.screens.ideas import IdeasScreen
from console.screens.prompt import PromptScreen
from engine.store import ops
from tests.console.builders import Built, add_many_ideas
from tests.console.helpers import board, cursor_to, header_text, loaded_rows, until

MakeApp = Callable[..., IdeaforgeApp]


def footer_keys(app: IdeaforgeApp) -> set[str]:
    """The actions the footer offers right now (what check_action lets through)."""
    return {b.action for _, b, enabled, _tooltip in app.screen.active_bindings.values()
            if enabled}


async def test_board_lists_every_idea_newest_epoch_first_with_scores(
        make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        rows = loaded_rows(pilot)
        assert [r.epoch for r in rows] == [1] * 5 + [0] * 6
        a = next(r for r in rows if r.id == built.ideas["a"])
        assert (a.status, a.score, a.attempts, a.host) == ("scored", 4.0, 2, "local")
        p1 = next(r for r in rows if r.id == built.ideas["p1"])
        assert p1.pending == "approve"  # written, not yet applied by the engine
        header = await until(pilot, lambda: header_text(pilot), what="the header")
        assert "3 ideas wait for a decision" in header and "best score 4.0000" in header


async def test_filter_epochs_and_sort(make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        await pilot.press("slash", *"status:prop", "enter")
        await until(pilot, lambda: board(pilot).total == 3, what="the filter")
        assert {r.status for r in loaded_rows(pilot)} == {"proposed"}
        await pilot.press("escape")  # clears the filter
        await until(pilot, lambda: board(pilot).total == 11, what="no filter")
        await pilot.press("slash", *"warm", "enter")
        await until(pilot, lambda: board(pilot).total == 2, what="a word filter")
        await pilot.press("escape", "right_square_bracket")  # epoch 0
        await until(pilot, lambda: board(pilot).total == 6, what="epoch 0")
        await pilot.press("right_square_bracket")  # epoch 1
        await until(pilot, lambda: board(pilot).total == 5, what="epoch 1")
        await pilot.press("escape")
        await until(pilot, lambda: board(pilot).total == 11, what="every epoch")
        await pilot.press("s", "s")  # default → id → score (best first for minimize)
        await until(pilot, lambda: loaded_rows(pilot)[0].id == built.ideas["cross"],
                    what="sorted by score")
        scores = [r.score for r in loaded_rows(pilot) if r.score is not None]
        assert scores == sorted(scores)
        assert loaded_rows(pilot)[-1].score is None  # unscored last
        await pilot.press("S")
        await until(pilot, lambda: loaded_rows(pilot)[0].score == 5.0, what="reversed")


async def test_decisions_apply_only_where_they_make_sense(make_app: MakeApp,
                                                          built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        await cursor_to(pilot, built.ideas["a"])  # scored: nothing to decide
        keys = footer_keys(app)
        assert "approve" not in keys and "reject" not in keys and "edit" not in keys
        assert "go" in keys and "add_idea" in keys  # the search waits at its gate
        await cursor_to(pilot, built.ideas["p2"])
        keys = footer_keys(app)
        assert {"approve", "reject", "edit"} <= keys
        await cursor_to(pilot, built.ideas["p1"])  # its approval is on its way
        assert "edit" not in footer_keys(app)


async def test_imported_searches_are_read_only(make_app: MakeApp, built: Built) -> None:
    app = make_app(search=built.imported_id)
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 2 and app.screen.search, what="board")
        screen = app.screen
        assert isinstance(screen, IdeasScreen)
        for action in ("approve", "reject", "edit", "add_idea", "go", "stop_search",
                       "resume_search"):
            assert screen.check_action(action, ()) is False, action
        await pilot.press("a", "n", "g")
        assert not ops.pending_decisions(built.store, built.imported_id)
        assert "imported read-only" in await until(pilot, lambda: header_text(pilot))


async def test_marked_rows_are_rejected_together_with_a_reason(make_app: MakeApp,
                                                                built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        await cursor_to(pilot, built.ideas["p2"])
        await pilot.press("space", "space")  # marks p2, then p3 (the cursor moves down)
        assert set(board(pilot).marked) == {built.ideas["p2"], built.ideas["p3"]}
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the reason")
        await pilot.press(*"too", "space", *"slow", "enter")
        pending = await until(pilot, lambda: [d for d in ops.pending_decisions(
            built.store, built.search_id) if d.action == "reject"], what="the decisions")
        assert {d.idea_id for d in pending} == {built.ideas["p2"], built.ideas["p3"]}
        assert all(d.source == "console" and d.text == "too slow" for d in pending)
        assert not board(pilot).marked
        rows = {r.id: r for r in loaded_rows(pilot)}
        assert rows[built.ideas["p2"]].pending == "reject"


async def test_cancelled_dialogs_write_nothing(make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        before = len(ops.pending_decisions(built.store, built.search_id))
        await cursor_to(pilot, built.ideas["p2"])
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the reason")
        await pilot.press("escape")
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm go")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, IdeasScreen), what="the board")
        assert len(ops.pending_decisions(built.store, built.search_id)) == before
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm go")
        await pilot.press("y")
        await until(pilot, lambda: any(d.action == "go" for d in ops.pending_decisions(
            built.store, built.search_id)), what="the go decision")


async def test_cursor_stays_on_its_idea_while_new_ideas_arrive_above(
        make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        await cursor_to(pilot, built.ideas["b"])
        for n in range(3):  # the engine proposes more ideas for epoch 1 (shown above)
            ops.add_idea(built.store, built.search_id, 1, ops.NewIdea(
                text=f"[Experiment] Late idea {n}.", origin="explore"))
        await until(pilot, lambda: board(pilot).total == 14, what="the new ideas")
        assert board(pilot).current is not None
        assert board(pilot).current.id == built.ideas["b"]


async def test_board_keeps_only_a_window_of_a_large_search(make_app: MakeApp,
                                                            built: Built) -> None:
    add_many_ideas(built.store, built.search_id, 3000)
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        b = await until(pilot, lambda: board(pilot).total == 3011 and board(pilot),
                        what="the board")
        window = len(b._rows)
        assert window < 200  # a few screens' worth, not 3011 rows
        await pilot.press("end")
        await until(pilot, lambda: b.current is not None and b.cursor == 3010,
                    what="the last row loaded", state=lambda: (
                        b.cursor, b.scroll_y, b.max_scroll_y, b._window, b._inflight, b._seq,
                        b._worker, b.total))
        assert b.current.title == "Bulk idea 2999"  # the last of epoch 0 in id order
        assert len(b._rows) < 200
        await pilot.press("home")
        await until(pilot, lambda: b.current is not None and b.current.epoch == 1,
                    what="back at the top")
