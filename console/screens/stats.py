"""Mode 4: execution statistics — for the open search and for every search of the workspace,
per environment and per coder model: ideas implemented at the first answer, after a repair,
never; ran, crashed, fixed, scored; and what unscored ideas cost (`ideaforge stats`)."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker

from console import commands, fmt
from console.screens.base import ConsoleScreen
from console.widgets.key_bar import KeyBar
from console.widgets.stats_tables import StatsTables
from engine.store import StoreError, stats
from engine.store.stats import Overview, SearchStats

#: How often the tables are read again (a workspace-wide aggregate: ~1 s at 100k ideas on a
#: slow machine, so not at every poll), and at once when another search is opened.
REFRESH_S = 5.0


class StatsScreen(ConsoleScreen):
    SCOPE = "stats"
    CSS_PATH = "stats.tcss"
    BINDINGS = commands.bindings("stats")

    class Loaded(Message):
        def __init__(self, search: SearchStats | None, overview: Overview,
                     marker: object) -> None:
            super().__init__()
            self.search = search
            self.overview = overview
            self.marker = marker

    def __init__(self) -> None:
        super().__init__()
        self._marker: object = None

    def compose(self) -> ComposeResult:
        yield Static("Execution statistics: what became of the ideas given to a coder",
                     id="stats-title")
        with VerticalScroll(id="stats-body"):
            yield StatsTables(id="stats")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#stats-body").focus()
        self.watch(self.app, "search_id", self._search_changed, init=False)
        self._tick()
        self.start_polling()

    def _search_changed(self) -> None:
        self._marker = None
        self._tick()

    def poll(self) -> Worker[None] | None:
        return self._load(self.console.search_id, self._marker)

    @work(thread=True, group="poll", exit_on_error=False, name="read the execution statistics")
    def _load(self, search_id: int | None, marker: object) -> None:
        try:
            store = self.console.store()
        except StoreError as exc:  # no workspace yet: say so, quietly
            note = str(exc)
            self.app.call_from_thread(
                lambda: self.query_one("#stats-title", Static).update(note))
            return
        stamp = (search_id, int(fmt.clock() // REFRESH_S))
        if stamp == marker:
            return
        # One overview of every search: the open one is among them, so one query serves both.
        with stats.store_reader(store) as execute:
            overview = stats.overview(execute)
        search = next((s for s in overview.searches if s.search_id == search_id), None)
        self.post_message(self.Loaded(search, overview, stamp))

    def on_stats_screen_loaded(self, message: Loaded) -> None:
        self._marker = message.marker
        self.query_one(StatsTables).show(message.search, message.overview)
