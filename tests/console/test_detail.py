"""The idea detail: text and lineage, the diff both ways, attempts with their errors, the job's
log followed as it grows, metric curves, and quarantine decisions."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import OptionList, Static

from console.app import IdeaforgeApp
from console.screens.confirm import ConfirmScreen
from console.screens.idea_detail import IdeaDetailScreen
from console.widgets.diff_view import DiffView
from console.widgets.log_view import LogView
from console.widgets.metric_chart import MetricCharts
from engine.store import ops
from tests.console.builders import Built
from tests.console.helpers import board, cursor_to, until

MakeApp = Callable[..., IdeaforgeApp]


def detail(app: IdeaforgeApp) -> IdeaDetailScreen:
    assert isinstance(app.screen, IdeaDetailScreen)
    return app.screen


def shown(widget: Static) -> str:
    """The plain text a Static shows."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


async def open_detail(pilot: Pilot[Any], built: Built, key: str) -> IdeaDetailScreen:
    await until(pilot, lambda: board(pilot).total == 11, what="the board")
    await cursor_to(pilot, built.ideas[key])
    await pilot.press("enter")
    screen = await until(pilot, lambda: isinstance(pilot.app.screen, IdeaDetailScreen)
                         and pilot.app.screen.detail is not None and pilot.app.screen,
                         what="the detail")
    return screen


async def test_detail_panes_show_text_lineage_diff_attempts_log_and_curves(
        make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        screen = await open_detail(pilot, built, "a")
        assert "Raise bonus A to 1.0" in shown(screen.query_one("#idea-text", Static))
        await pilot.press("right_square_bracket")  # lineage
        options = await until(pilot, lambda: screen.query("#pane-lineage") and
                              screen.query_one("#pane-lineage", OptionList).option_count == 3
                              and screen.query_one("#pane-lineage", OptionList), what="children")
        children = {int(options.get_option_at_index(i).id or 0) for i in range(3)}
        assert children == {built.ideas["cross"], built.ideas["running"], built.ideas["p3"]}
        await pilot.press("right_square_bracket")  # diff, unified
        diff = await until(pilot, lambda: screen.query(DiffView) and screen.query_one(DiffView)
                           .diff and screen.query_one(DiffView), what="the diff")
        assert "+BONUS_A = 1.0" in diff.diff and not diff.split
        await pilot.press("d")
        assert diff.split
        await pilot.press("right_square_bracket")  # attempts
        attempts = await until(pilot, lambda: screen.query("#attempts-text") and shown(
            screen.query_one("#attempts-text", Static)), what="attempts")
        assert "evaluate.py is protected" in attempts and "attempt 2" in attempts
        await pilot.press("right_square_bracket")  # the job's log, from its file
        log = await until(pilot, lambda: screen.query(LogView) and screen.query_one(LogView)
                          .line_count >= 12 and screen.query_one(LogView), what="the log")
        assert log.lines[0] == "step 0: loss 6.00"
        output = built.store.workspace / "jobs" / "output.log"
        append(output, "step 12: loss 4.80\n")  # the job goes on
        await until(pilot, lambda: "step 12: loss 4.80" in log.lines, what="the new line",
                    state=lambda: log.lines[-3:])
        await pilot.press("right_square_bracket")  # curves
        charts = await until(pilot, lambda: screen.query(MetricCharts) and
                             screen.query_one(MetricCharts).charts and
                             screen.query_one(MetricCharts), what="the curves")
        assert list(charts.charts) == ["score", "train_loss"]  # the search's metric first
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, IdeaDetailScreen), what="back")


async def test_relatives_open_their_own_detail(make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        screen = await open_detail(pilot, built, "cross")
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: screen.query("#pane-lineage") and
                    screen.query_one("#pane-lineage", OptionList).option_count == 2, what="parents")
        screen.query_one("#pane-lineage", OptionList).focus()
        await pilot.press("home", "enter")
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen)
                    and app.screen is not screen, what="the parent's detail")
        assert detail(app).idea_id in (built.ideas["a"], built.ideas["b"])


async def test_quarantine_is_accepted_or_discarded_from_the_detail(
        make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        screen = await open_detail(pilot, built, "cross")
        assert screen.check_action("quarantine", ("accept",))
        assert not screen.check_action("approve", ())  # scored: nothing to approve
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asks first")
        await pilot.press("n")
        await until(pilot, lambda: app.screen is screen, what="back to the detail")
        assert not [d for d in ops.pending_decisions(built.store, built.search_id)
                    if d.idea_id == built.ideas["cross"]]
        await pilot.press("y")
        (decision,) = await until(pilot, lambda: [
            d for d in ops.pending_decisions(built.store, built.search_id)
            if d.idea_id == built.ideas["cross"]], what="the accept decision")
        assert decision.action == "accept"


async def test_a_proposed_idea_is_approved_from_its_detail(make_app: MakeApp,
                                                           built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        screen = await open_detail(pilot, built, "p2")
        assert screen.check_action("approve", ()) and screen.check_action("edit", ())
        await pilot.press("a")
        await until(pilot, lambda: any(
            d.idea_id == built.ideas["p2"] and d.action == "approve"
            for d in ops.pending_decisions(built.store, built.search_id)), what="the approval")
        # once it is on its way, the detail stops offering decisions on it
        await until(pilot, lambda: not screen.check_action("approve", ()), what="pending")


async def test_the_detail_screen_is_reused_and_shows_only_the_idea_opened(
        make_app: MakeApp, built: Built) -> None:
    """One installed screen serves every open: each open starts on the Idea pane with that
    idea, and a pane built for an earlier idea shows the new one's content when shown."""
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        screen = await open_detail(pilot, built, "a")
        await pilot.press("right_square_bracket", "right_square_bracket")  # the diff
        diff = await until(pilot, lambda: screen.query(DiffView) and screen.query_one(DiffView)
                           .diff and screen.query_one(DiffView), what="a's diff")
        assert "+BONUS_A = 1.0" in (diff.diff or "")
        await pilot.press("d", "escape")
        await until(pilot, lambda: not isinstance(app.screen, IdeaDetailScreen), what="back")
        await cursor_to(pilot, built.ideas["p2"])
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen and screen.idea_id == built.ideas["p2"]
                    and screen.detail is not None, what="the same screen, on p2")
        assert screen.pane == "idea" and not screen._split
        assert "Sleep less" in shown(screen.query_one("#idea-text", Static))
        await pilot.press("right_square_bracket", "right_square_bracket")
        await until(pilot, lambda: diff.diff is None and not diff.split, what="p2 has no diff")
        # a relative opened from the reused screen is a screen of its own; esc comes back
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: screen.query_one("#pane-lineage", OptionList).option_count
                    == 0 or screen.query_one("#pane-lineage", OptionList).get_option_at_index(
                        0).disabled, what="p2 has no relatives")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, IdeaDetailScreen), what="back")
        await cursor_to(pilot, built.ideas["cross"])
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen and screen.idea_id ==
                    built.ideas["cross"] and screen.detail is not None, what="cross")
        await pilot.press("right_square_bracket")
        options = await until(pilot, lambda: screen.query_one("#pane-lineage", OptionList)
                              .option_count == 2 and screen.query_one("#pane-lineage",
                                                                      OptionList),
                              what="cross's parents")
        options.focus()
        await pilot.press("home", "enter")
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen)
                    and app.screen is not screen, what="the parent's own screen")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, what="back to cross")
        assert screen.idea_id == built.ideas["cross"]
