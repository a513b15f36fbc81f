"""`?`: every key of the console, generated from the command registry (so it cannot lie), and
what the marks on the ideas board mean."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console import commands, fmt
from console.config import config_path

#: The board's marks, as `IdeaBoard._row_strip` draws them; `ideaforge show N` explains a flag.
MARKS: tuple[tuple[str, str], ...] = (
    ("●", "marked for a batch decision (space)"),
    (fmt.score(4.2) + fmt.UNVERIFIED_MARK, "unverified score: the training process measured it"),
    (fmt.FLAG_MARK, "flagged: something in its result was ignored or doubtful (open it)"),
    *((fmt.score(4.2) + " " + fmt.CONFIRMATION_MARK[c], fmt.CONFIRMATION_MEANING[c])
      for c in ("confirmed", "unconfirmed", "refuted")),
    (fmt.spread(0.0083, 3), "a mean of 3 runs and its standard error; the score is the mean"),
    (f"{fmt.TWIN_MARK}#N", "a near duplicate of idea N (its detail links to it)"),
    ("⚠", "quarantined: beyond the environment's suspicious bound (y / x)"),
    ("✎#N", "an edit of idea N"),
    ("→approve", "a decision sent, not yet applied by the engine"),
)


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
                yield Static(self._tables(), id="keys")
            yield Static(Text(f"Remap a key by its id in {config_path()}, in a [keys] table: "
                              'approve = "A".  esc closes.'), id="hint")

    def entries(self) -> list[tuple[str, str, commands.Command]]:
        """(scope, the key in effect, command), the screen the reader came from first."""
        scopes = list(commands.SCOPES)
        if self.scope in scopes:
            scopes.remove(self.scope)
            scopes.insert(0, self.scope)
        return [(scope, commands.effective_key(self.app, c), c) for scope in scopes
                for c in commands.commands_for(scope)]

    def _tables(self) -> Group:
        parts: list[Text | Table] = []
        table: Table | None = None
        current = ""
        for scope, key, c in self.entries():
            if scope != current:
                current = scope
                here = " (here)" if scope == self.scope else ""
                parts.append(Text(commands.SCOPES[scope] + here, style="bold underline"))
                table = Table(box=None, expand=True, show_header=False, padding=(0, 1))
                table.add_column("key", width=10, style="bold cyan")
                table.add_column("command", ratio=1)
                table.add_column("id", style="dim", width=20)
                parts.append(table)
            assert table is not None
            table.add_row(key, f"{c.label} — {c.help}", c.id)
        parts.append(Text("Marks on the ideas board", style="bold underline"))
        marks = Table(box=None, expand=True, show_header=False, padding=(0, 1))
        marks.add_column("mark", width=11, style="bold")
        marks.add_column("meaning", ratio=1)
        for mark, meaning in MARKS:
            marks.add_row(mark, meaning)
        parts.append(marks)
        return Group(*parts)

    def action_close(self) -> None:
        self.dismiss(None)
