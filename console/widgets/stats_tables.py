"""The execution statistics as Rich tables: one search's coder models, then every environment
of the workspace and every model over all of them (the tables of `ideaforge stats`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.cli_stats import LEGEND, OUTCOME_COLUMNS, SPENT_COLUMNS, outcome_rows, spent_rows

if TYPE_CHECKING:
    from engine.store.stats import Counts, Overview, SearchStats


def _table(first: str, headings: list[str], rows: list[list[str]]) -> Table:
    table = Table(box=None, show_edge=False, padding=(0, 1), header_style="bold")
    table.add_column(first, no_wrap=True)
    for heading in headings:
        table.add_column(heading, justify="right", no_wrap=True)
    for i, row in enumerate(rows):
        table.add_row(*row, style="bold" if i == len(rows) - 1 else None)  # "all" last
    return table


def tables(title: str, models: dict[str, Counts], total: Counts) -> list[RenderableType]:
    return [Text(title, style="bold underline"),
            _table("model", [h for h, _ in OUTCOME_COLUMNS], outcome_rows(models, total)),
            Text(""),
            _table("spent (wasted)", [h for h, *_ in SPENT_COLUMNS],
                   spent_rows(models, total)),
            Text("")]


class StatsTables(Static):
    DEFAULT_CSS = """
    StatsTables { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(Text("reading…", style="dim"), id=id)
        self.search: SearchStats | None = None
        self.overview: Overview | None = None
        self.shown: Group = Group()  # what it draws (tests print it)

    def show(self, search: SearchStats | None, overview: Overview) -> None:
        self.search, self.overview = search, overview
        parts: list[RenderableType] = []
        if search is not None:
            parts += tables(f"This search: {search.name} · environment {search.environment} · "
                            f"{search.total.ideas} ideas, {search.total.attempted} given to a "
                            "coder", search.models, search.total)
        if not overview.searches:
            parts.append(Text("No searches in this workspace yet.", style="dim"))
        else:
            for env, group in overview.environments.items():
                parts += tables(f"Environment {env} · searches {', '.join(group.searches)}",
                                group.models, group.total)
            parts += tables(f"Every environment · {len(overview.searches)} searches",
                            overview.workspace.models, overview.workspace.total)
        parts.append(Text(LEGEND, style="dim"))
        self.shown = Group(*parts)
        self.update(self.shown)
