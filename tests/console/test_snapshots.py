"""SVG snapshots of the main screens, on the deterministic workspace with the clock pinned.
Record or refresh them with `pytest tests/console/test_snapshots.py --snapshot-update`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot

from console.app import IdeaforgeApp
from console.screens.help import HelpScreen
from console.screens.idea_detail import IdeaDetailScreen
from console.screens.jobs import JobsScreen
from console.screens.lineage import LineageScreen
from console.screens.searches import SearchesScreen
from console.widgets.diff_view import DiffView
from console.widgets.hosts_panel import HostsPanel
from console.widgets.lineage_tree import LineageTree
from tests.console.builders import Built
from tests.console.helpers import board, cursor_to, header_text, jobs_settled, until

SIZE = (150, 40)
MakeApp = Callable[..., IdeaforgeApp]
Steps = Callable[[Pilot[Any]], Awaitable[None]]


def app_of(make_app: MakeApp, **kwargs: Any) -> IdeaforgeApp:
    """No live polling during a snapshot: what is on screen comes from the steps alone."""
    return make_app(poll_s=3600, **kwargs)


async def settled(pilot: Pilot[Any]) -> None:
    await until(pilot, lambda: not any(w.is_running for w in pilot.app.workers),
                what="background work to finish")


async def board_ready(pilot: Pilot[Any]) -> None:
    await until(pilot, lambda: board(pilot).total == 11 and header_text(pilot)
                and "approve" in header_text(pilot), what="the board")


def test_ideas_board(snap_compare: Any, make_app: MakeApp, built: Built) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await board_ready(pilot)
        await cursor_to(pilot, built.ideas["p2"])
        await pilot.press("space")
        await settled(pilot)

    assert snap_compare(app_of(make_app), terminal_size=SIZE, run_before=steps)


def test_searches(snap_compare: Any, make_app: MakeApp) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchesScreen)
                    and len(pilot.app.screen.summaries) == 2, what="the searches")
        await settled(pilot)

    assert snap_compare(app_of(make_app, search=None), terminal_size=SIZE, run_before=steps)


def test_idea_detail_split_diff(snap_compare: Any, make_app: MakeApp, built: Built) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await board_ready(pilot)
        await cursor_to(pilot, built.ideas["a"])
        await pilot.press("enter")
        screen = await until(pilot, lambda: isinstance(pilot.app.screen, IdeaDetailScreen)
                             and pilot.app.screen.detail and pilot.app.screen, what="detail")
        await pilot.press("right_square_bracket", "right_square_bracket", "d")
        await until(pilot, lambda: screen.query(DiffView) and screen.query_one(DiffView).split
                    and screen.query_one(DiffView).diff, what="the split diff")
        await settled(pilot)

    assert snap_compare(app_of(make_app), terminal_size=SIZE, run_before=steps)


def test_jobs_and_hosts(snap_compare: Any, make_app: MakeApp) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await board_ready(pilot)
        await pilot.press("2")
        await until(pilot, lambda: isinstance(pilot.app.screen, JobsScreen)
                    and pilot.app.screen.query_one(HostsPanel).row_count == 2, what="jobs")
        await jobs_settled(pilot)

    assert snap_compare(app_of(make_app), terminal_size=SIZE, run_before=steps)


def test_lineage(snap_compare: Any, make_app: MakeApp) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await board_ready(pilot)
        await pilot.press("3")
        tree = await until(pilot, lambda: isinstance(pilot.app.screen, LineageScreen)
                           and len(pilot.app.screen.query_one(LineageTree).root.children) == 2
                           and pilot.app.screen.query_one(LineageTree), what="founders")
        await pilot.press("down", "space")
        await until(pilot, lambda: len(tree.root.children[0].children) == 3, what="children")
        await settled(pilot)

    assert snap_compare(app_of(make_app), terminal_size=SIZE, run_before=steps)


def test_help(snap_compare: Any, make_app: MakeApp) -> None:
    async def steps(pilot: Pilot[Any]) -> None:
        await board_ready(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), what="help")
        await settled(pilot)

    assert snap_compare(app_of(make_app), terminal_size=SIZE, run_before=steps)
