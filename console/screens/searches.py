"""Mode 0: every search of the workspace — open, start, stop, resume, import."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import DataTable, Static
from textual.worker import Worker

from console import commands, fmt
from console.screens.base import ConsoleScreen
from console.widgets.key_bar import KeyBar
from console.widgets.search_header import engine_alive
from engine.store import StoreError
from engine.store import console_queries as cq
from engine.store.console_queries import SearchSummary

COLUMNS = (("name", "search"), ("env", "environment"), ("status", "status"),
           ("phase", "phase"), ("epoch", "epoch"), ("best", "best"), ("delta", "Δ baseline"),
           ("cost", "model $"), ("gpuh", "GPU h"), ("ideas", "ideas"), ("engine", "engine"))


class SearchesScreen(ConsoleScreen):
    SCOPE = "searches"
    CSS_PATH = "searches.tcss"
    BINDINGS = commands.bindings("searches")

    class Loaded(Message):
        def __init__(self, summaries: list[SearchSummary] | None, marker: object,
                     problem: str = "") -> None:
            super().__init__()
            self.summaries = summaries
            self.marker = marker
            self.problem = problem

    def __init__(self) -> None:
        super().__init__()
        self.summaries: dict[int, SearchSummary] = {}
        self._marker: object = None

    def compose(self) -> ComposeResult:
        yield Static(f"ideaforge · workspace {self.console.workspace_label}", id="title")
        table: DataTable[Text | str] = DataTable(id="searches", cursor_type="row",
                                                 zebra_stripes=True)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static("", id="empty")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self._tick()
        self.start_polling()

    @property
    def current(self) -> SearchSummary | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.summaries.get(int(key)) if key is not None else None

    # ------------------------------------------------------------------ loading
    def poll(self) -> Worker[None] | None:
        return self._load(self._marker)

    @work(thread=True, group="poll", exit_on_error=False, name="list the searches")
    def _load(self, marker: object) -> None:
        try:
            store = self.console.store()
        except StoreError as exc:
            self.post_message(self.Loaded(None, None, str(exc)))
            return
        now = cq.change_marker(store)
        # Engine heartbeats change no marker, but their age is shown: refresh every 10 s.
        stamp = (now, int(fmt.clock() // 10))
        if stamp == marker:
            return
        self.post_message(self.Loaded(cq.search_summaries(store, now=fmt.clock()), stamp))

    def on_searches_screen_loaded(self, message: Loaded) -> None:
        empty = self.query_one("#empty", Static)
        if message.summaries is None:
            empty.update(Text(f"{message.problem}\n\nPress n to start a search here, or i to "
                              "import a reference run.", style="yellow"))
            return
        self._marker = message.marker
        table = self.query_one(DataTable)
        fresh = {s.search.id: s for s in message.summaries}
        for gone in set(self.summaries) - set(fresh):
            table.remove_row(str(gone))
        for sid, summary in fresh.items():
            cells = _cells(summary)
            if sid in self.summaries:  # in place, so the cursor stays where it is
                for (key, _), value in zip(COLUMNS, cells, strict=True):
                    table.update_cell(str(sid), key, value, update_width=True)
            else:
                table.add_row(*cells, key=str(sid))
        self.summaries = fresh
        empty.update("" if fresh else Text(
            "No searches yet. Press n to start one, or i to import a reference run.",
            style="dim"))
        self.refresh_bindings()

    # ------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        s = self.current.search if self.current else None
        if action == "open":
            return s is not None
        if action == "stop_search":
            return s is not None and s.status != "imported" and engine_alive(s)
        if action == "resume_search":
            return (s is not None and s.status not in ("imported", "finished")
                    and not engine_alive(s))
        if action in ("delete_search", "rename_search"):
            return s is not None
        return True

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        if self.current:
            self.console.open_search(self.current.search.id)

    @work(exclusive=True, group="dialog")
    async def action_stop_search(self) -> None:
        if self.current:
            await self.console.stop_search(self.current.search)

    def action_resume_search(self) -> None:
        if self.current:
            self.console.resume_search(self.current.search)

    @work(exclusive=True, group="dialog")
    async def action_delete_search(self) -> None:
        from console.screens import manage_keys

        if self.current:
            await manage_keys.delete_search(self, self.current.search)
            self._marker = None
            self._tick()

    @work(exclusive=True, group="dialog")
    async def action_rename_search(self) -> None:
        from console.screens import manage_keys

        if self.current:
            await manage_keys.rename_search(self, self.current.search)
            self._marker = None
            self._tick()

    @work(exclusive=True, group="dialog")
    async def action_new_search(self) -> None:
        from console.screens.new_search import NewSearchScreen

        latest = max(self.summaries.values(), key=lambda s: s.search.id, default=None)
        started = await self.app.push_screen_wait(NewSearchScreen(
            self.console.workspace,
            (latest.search.env_name, latest.search.env_path) if latest else None))
        if started:
            self.notify(started, title="new search", timeout=8)
            self._marker = None

    @work(exclusive=True, group="dialog")
    async def action_import_legacy(self) -> None:
        from console.screens.prompt import PromptScreen

        folder = await self.app.push_screen_wait(PromptScreen(
            "Import a reference run", "A folder holding ideas_<run>/ideas_epoch<N>.json and "
            "database.json; it becomes a read-only search.", placeholder="/path/to/run"))
        if folder:
            self._import(Path(folder).expanduser())

    @work(thread=True, exit_on_error=False, name="import a legacy run")
    def _import(self, folder: Path) -> None:
        from console.legacy import import_legacy
        from engine.store import Store

        store = Store(self.console.workspace, create=True)
        try:
            view = import_legacy(store, folder, None)
        finally:
            store.close()
        self._marker = None
        self.app.call_from_thread(self.notify, f"imported {view.name} (read-only)",
                                  title="import")


def _cells(summary: SearchSummary) -> list[Text | str]:
    s = summary.search
    total = sum(summary.ideas.values())
    status = Text(s.status, style=fmt.SEARCH_STATUS_STYLE.get(s.status, ""))
    alive = engine_alive(s)
    engine = (Text(f"pid {s.engine_pid} · {fmt.age(s.engine_heartbeat)}", style="green")
              if alive else Text("—", style="dim"))
    # With confirmation on, the best is the best confirmed idea; while none is, the leader
    # is shown in brackets with its mark (○: unconfirmed).
    shown = summary.best_idea or summary.leading
    if shown is None:
        best = Text(fmt.score(None), style="dim")
    else:
        text = fmt.ranked_score(shown)
        best = Text(text if shown is summary.best_idea else f"({text})",
                    style=fmt.verdict_style(shown.score, s.baseline, s.goal,
                                            shown.confirmation))
    best_style = fmt.verdict_style(shown.score if shown else None, s.baseline, s.goal,
                                   shown.confirmation if shown else None)
    return [Text(s.name, style="bold"), f"{s.env_name}/{s.profile}", status,
            "" if s.status == "imported" else s.phase,
            "" if s.status == "imported" else f"{s.epoch} (0–{s.epochs - 1})",
            best, Text(fmt.delta(shown.score if shown else None, s.baseline), style=best_style),
            fmt.money(summary.cost_usd), f"{summary.gpu_hours:.2f}",
            f"{total}" + (f" ({summary.ideas.get('proposed', 0)} to decide)"
                          if summary.ideas.get("proposed") else ""), engine]
