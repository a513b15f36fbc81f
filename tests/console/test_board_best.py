"""The best at a glance (issue 15): the search's best idea is starred and bold on the board in
every view of it, and a finished search's board lists its results best first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from console.app import IdeaforgeApp
from engine.store import ops
from tests.console.builders import Built
from tests.console.helpers import board, header_text, loaded_rows, until

MakeApp = Callable[..., IdeaforgeApp]


def line_of(pilot: Pilot[Any], idea_id: int) -> tuple[str, bool]:
    """The board line of an idea as shown: its text, and whether its id cell is bold."""
    b = board(pilot)
    index = next(i for i, r in b._rows.items() if r.id == idea_id)
    strip = b.render_line(index - int(b.scroll_y) + 1)
    id_cell = next(seg for seg in strip if seg.text.strip() == str(idea_id))
    return strip.text, bool(id_cell.style and id_cell.style.bold)


async def test_the_best_idea_is_starred_and_bold_wherever_it_is_shown(
        make_app: MakeApp, built: Built) -> None:
    app = make_app()
    best = built.ideas["a"]  # 4.0: the best usable score (the cross's 0.2 is in quarantine)
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).best_id is not None, what="the summary")
        assert f"#{best}" in header_text(pilot)  # the header names the same idea
        text, bold = line_of(pilot, best)
        assert text.lstrip().startswith("★") and bold, text
        for row in loaded_rows(pilot):
            if row.id != best:
                other, other_bold = line_of(pilot, row.id)
                assert "★" not in other and not other_bold, other
        # Another view of the board (a filter, the cursor elsewhere): still starred.
        await pilot.press("slash", *"origin:seed", "enter")
        await until(pilot, lambda: board(pilot).total == 3, what="the filtered board")
        await pilot.press("end")
        text, bold = line_of(pilot, best)
        assert text.lstrip().startswith("★") and bold, text


async def test_a_finished_search_lists_its_results_best_first(
        make_app: MakeApp, built: Built) -> None:
    ops.update_search(built.store, built.search_id, status="finished", phase="done")
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        rows = loaded_rows(pilot)
        scores = [r.score for r in rows if r.score is not None]
        assert scores == sorted(scores) and rows[0].score == min(scores)  # minimize
        assert all(r.score is None for r in rows[len(scores):])  # unscored ones last
        assert "sorted by score (best first)" in header_text(pilot)
        await pilot.press("s")  # the researcher can still sort otherwise
        await until(pilot, lambda: "sorted by status" in header_text(pilot), what="re-sort")
        statuses = [r.status for r in loaded_rows(pilot)]
        assert statuses == sorted(statuses)


async def test_a_search_that_finishes_while_open_sorts_by_score(
        make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        assert "newest epoch first" in header_text(pilot)
        ops.update_search(built.store, built.search_id, status="finished", phase="done",
                          event="search finished")
        await until(pilot, lambda: "sorted by score (best first)" in header_text(pilot), 10,
                    "the finished search's order", state=lambda: header_text(pilot))
        # The lowest score first (the cross's 0.2, marked as quarantined), then the best.
        want = [built.ideas["cross"], built.ideas["a"]]
        await until(pilot, lambda: [r.id for r in loaded_rows(pilot)][:2] == want, 10,
                    "the scores on top", state=lambda: [r.id for r in loaded_rows(pilot)])
