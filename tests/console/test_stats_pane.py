"""Mode 4, the execution statistics: the key opens it, it shows the open search's coder models
and every environment of the workspace, and the help lists its key."""

from __future__ import annotations

import io
from collections.abc import Callable

from rich.console import Console

from console.app import IdeaforgeApp
from console.screens.help import HelpScreen
from console.screens.stats import StatsScreen
from console.widgets.stats_tables import StatsTables
from tests.console.builders import Built
from tests.console.helpers import until

MakeApp = Callable[..., IdeaforgeApp]


def _text(tables: StatsTables) -> str:
    console = Console(width=150, record=True, file=io.StringIO())
    console.print(tables.shown)
    return console.export_text()


async def test_key_4_shows_each_coder_models_ideas(make_app: MakeApp, built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 50)) as pilot:
        await until(pilot, lambda: app.search_id is not None, what="the search opens")
        await pilot.press("4")
        screen = await until(pilot, lambda: isinstance(app.screen, StatsScreen) and app.screen,
                             what="the stats screen")
        tables = screen.query_one(StatsTables)
        await until(pilot, lambda: tables.overview is not None, what="the statistics")
        assert tables.search is not None and tables.search.name == "toy-1"
        coder = tables.search.models["openai/gpt-test"]
        # the toy search: a (right at its second answer), b, crash (right at once; its job
        # crashed and was never repaired), broken (no usable diff in two answers)
        assert (coder.ideas, coder.implemented_first, coder.implemented_after_repair,
                coder.never_implemented, coder.crashed, coder.fixed, coder.scored) == \
            (4, 2, 1, 1, 1, 0, 2)
        text = _text(tables)
        row = next(line for line in text.splitlines() if line.strip().startswith(
            "openai/gpt-test"))
        assert row.split()[1:9] == ["4", "2", "1", "1", "3", "1", "0", "2"]
        assert "This search: toy-1" in text and "Environment toy" in text
        assert "Environment grpo" in text  # the imported search: another environment
        await pilot.press("question_mark")
        help_screen = await until(pilot, lambda: isinstance(app.screen, HelpScreen)
                                  and app.screen, what="help")
        assert ("app", "4", "mode.stats") in {(s, k, c.id) for s, k, c in
                                              help_screen.entries()}
