"""The compare view (`c` on the board): the marked ideas' curves and the baseline's on one chart
whose axes come from the values shown, a legend naming each series, and a metric measured once
per run drawn as labelled markers."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Static

from console.app import IdeaforgeApp
from console.screens.compare import CompareScreen
from console.screens.help import HelpScreen
from console.screens.ideas import IdeasScreen
from console.widgets.key_bar import KeyBar
from console.widgets.metric_chart import PALETTE, MetricChart
from tests.console.builders import Built
from tests.console.helpers import board, cursor_to, until

MakeApp = Callable[..., IdeaforgeApp]


def plain(renderable: object, width: int = 160) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def legend_rows(screen: CompareScreen) -> dict[str, list[str]]:
    """The legend's rows by their idea label: [final, best, points, run, title…]."""
    rows: dict[str, list[str]] = {}
    for line in plain(screen.query_one("#compare-legend", Static).content).splitlines():
        cells = line.split()
        if len(cells) > 1 and cells[0] in ("━━", "──"):
            rows[cells[1]] = cells[2:]
    return rows


async def open_compare(pilot: Pilot[Any], built: Built, keys: list[str]) -> CompareScreen:
    await until(pilot, lambda: board(pilot).total == 11, what="the board")
    for key in keys:
        await cursor_to(pilot, built.ideas[key])
        await pilot.press("space")
    assert set(board(pilot).marked) == {built.ideas[k] for k in keys}
    await pilot.press("c")
    return await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen)
                       and pilot.app.screen.curves and pilot.app.screen, what="the compare view")


async def test_compare_overlays_marked_ideas_and_the_baseline_on_axes_of_their_values(
        make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 45)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        assert "c Compare" in pilot.app.screen.query_one(KeyBar).plain
        screen = await open_compare(pilot, built, ["a", "b", "baseline"])
        a, b = built.ideas["a"], built.ideas["b"]
        # the search's metric first; then the training curve, a metric of several points
        assert screen.metric == "score"
        await pilot.press("m")
        assert screen.metric == "train_loss"
        chart = screen.query_one(MetricChart)
        assert [s.label for s in chart.shown] == [f"#{a}", f"#{b}", "baseline"]
        assert len({s.color for s in chart.shown}) == 3
        # every value shown lies inside the y range, and the range is theirs (4.2 … 6.0)
        assert chart.y_range is not None and not chart.single
        lo, hi = chart.y_range
        assert 3.9 < lo <= 4.2 and 6.0 <= hi < 6.3, chart.y_range
        assert chart.x_range == (1.0, 4.0)
        drawn = str(chart.render())
        assert "train_loss" in drawn and ("⠉" in drawn or "⣀" in drawn)  # braille curves
        ticks = [float(line.split("┤")[0]) for line in drawn.splitlines() if "┤" in line
                 and line.split("┤")[0].strip()]
        assert ticks and min(ticks) >= lo - 1e-9 and max(ticks) <= hi + 1e-9, ticks
        rows = legend_rows(screen)
        assert rows[f"#{a}"][:3] == ["4.2000", "4.2000", "4"]  # final, best (lowest), points
        assert rows[f"#{b}"][:3] == ["4.6000", "4.6000", "4"]
        assert rows["baseline"][:3] == ["5.1000", "5.1000", "4"]
        header = plain(screen.query_one("#compare-header", Static).content)
        assert "train_loss (2 of 2" in header
        # m again: back to the score; esc: back to the board, marks kept
        await pilot.press("m")
        assert screen.metric == "score"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(pilot.app.screen, IdeasScreen), what="the board")
        assert len(board(pilot).marked) == 3


async def test_a_metric_measured_once_per_run_is_labelled_markers_in_columns(
        make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 45)) as pilot:
        screen = await open_compare(pilot, built, ["a", "b"])  # the baseline comes along
        a, b = built.ideas["a"], built.ideas["b"]
        assert screen.metric == "score"
        chart = screen.query_one(MetricChart)
        assert chart.single and [s.label for s in chart.shown] == [f"#{a}", f"#{b}",
                                                                  "baseline"]
        lo, hi = chart.y_range or (0.0, 0.0)
        assert 3.8 < lo < 4.0 and 5.0 < hi < 5.2, chart.y_range  # 4.0 … 5.0, padded
        drawn = str(chart.render())
        for value in ("● 4.0000", "● 4.5000", "● 5.0000"):
            assert value in drawn, drawn
        axis = drawn.splitlines()[-1]
        assert axis.split() == [f"#{a}", f"#{b}", "baseline"], axis
        rows = legend_rows(screen)
        assert rows[f"#{a}"][:3] == ["4.0000", "4.0000", "1"]
        assert rows["baseline"][:3] == ["5.0000", "5.0000", "1"]


async def test_compare_without_marks_takes_the_highlighted_idea_and_help_lists_its_keys(
        make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 45)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        await cursor_to(pilot, built.ideas["cross"])
        await pilot.press("c")
        screen = await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen)
                             and pilot.app.screen.curves and pilot.app.screen,
                             what="the compare view")
        assert [s.label for s in screen.query_one(MetricChart).shown] == [
            f"#{built.ideas['cross']}", "baseline"]
        await pilot.press("question_mark")
        help_screen = await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen)
                                  and pilot.app.screen, what="help")
        text = plain(help_screen.query_one("#keys", Static).content)
        assert "Compare (c on the board) (here)" in text
        assert "Metric — Show the next metric" in text
        assert "Compare — Overlay the marked ideas' curves" in text


async def test_the_detail_draws_a_single_value_on_an_axis_around_it(
        make_app: MakeApp, built: Built) -> None:
    """Before, val_loss measured once was one dot on a 30–90 axis: now the axis is the value's
    (and the environment's baseline line, 5.0 here), and the value is written beside it."""
    from console.screens.idea_detail import IdeaDetailScreen
    from console.widgets.metric_chart import MetricCharts

    app = make_app()
    async with app.run_test(size=(150, 45)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        await cursor_to(pilot, built.ideas["a"])
        await pilot.press("enter")
        screen = await until(pilot, lambda: isinstance(pilot.app.screen, IdeaDetailScreen)
                             and pilot.app.screen.detail is not None and pilot.app.screen,
                             what="the detail")
        await pilot.press(*["right_square_bracket"] * 5)  # the curves pane
        charts = await until(pilot, lambda: screen.query(MetricCharts) and
                             screen.query_one(MetricCharts).charts.get("score")
                             and screen.query_one(MetricCharts), what="the curves")
        chart = charts.charts["score"]
        assert chart.single and chart.y_range is not None
        lo, hi = chart.y_range
        assert 3.9 < lo < 4.0 and 5.0 < hi < 5.1, chart.y_range  # 4.0 and the baseline 5.0
        assert "● 4.0000" in str(chart.render())


async def test_compare_draws_one_idea_per_colour_and_says_how_many_it_left_out(
        make_app: MakeApp, built: Built) -> None:
    from console.screens.compare import MAX_IDEAS
    from engine.store.console_queries import get_search
    from tests.console.builders import add_many_ideas

    add_many_ideas(built.store, built.search_id, MAX_IDEAS + 3)
    search = get_search(built.store, built.search_id)
    assert search is not None
    with sqlite3.connect(built.store.path) as db:
        bulk = [i for (i,) in db.execute("SELECT id FROM idea WHERE title LIKE 'Bulk idea%' "
                                         "ORDER BY id")]
    many = [built.ideas["a"], *bulk[:MAX_IDEAS + 2]]
    app = make_app()
    async with app.run_test(size=(150, 45)) as pilot:
        await until(pilot, lambda: board(pilot).total > 11, what="the board")
        await pilot.app.push_screen(CompareScreen(search, many))
        screen = await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen)
                             and pilot.app.screen.curves and pilot.app.screen,
                             what="the compare view")
        assert len(screen.idea_ids) == MAX_IDEAS and screen.idea_ids[0] == built.ideas["a"]
        assert MAX_IDEAS == len(PALETTE)
        header = plain(screen.query_one("#compare-header", Static).content, width=250)
        assert f"the first {MAX_IDEAS} marked ideas shown (3 left out)" in header
        # the bulk ideas have no runs: the chart holds #a's point and the baseline's
        assert [s.label for s in screen.query_one(MetricChart).shown] == [
            f"#{built.ideas['a']}", "baseline"]
