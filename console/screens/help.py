"""`?`: every key of the console, generated from the command registry (so it cannot lie)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console import commands
from console.config import config_path


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, scope: str = "") -> None:
        super().__init__()
        self.scope = scope

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("ideaforge — keys", id="title")
            with VerticalScroll(id="body"):
                yield Static(self._table(), id="keys")
            yield Static(f"Remap any key by its id in {config_path()} under [keys], e.g. "
                         'approve = "A".  esc closes.', id="hint")

    def _table(self) -> Table:
        table = Table(box=None, expand=True, show_header=True, header_style="bold",
                      padding=(0, 1))
        table.add_column("key", width=8)
        table.add_column("command", ratio=1)
        table.add_column("id", style="dim", width=20)
        scopes = list(commands.SCOPES)
        if self.scope in scopes:  # the screen the reader came from first
            scopes.remove(self.scope)
            scopes.insert(0, self.scope)
        for scope in scopes:
            here = scope == self.scope
            table.add_row(Text(commands.SCOPES[scope], style="bold underline" if here
                               else "bold"), "", "")
            for c in commands.commands_for(scope):
                table.add_row(Text(commands.effective_key(self.app, c), style="bold cyan"),
                              f"{c.label} — {c.help}", c.id)
            table.add_row("", "", "")
        return table

    def action_close(self) -> None:
        self.dismiss(None)
