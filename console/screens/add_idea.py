"""Writing a new idea for the search, in the reference's `[Experiment] … [Code Changes]` form."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static, TextArea

TEMPLATE = "[Experiment] \n[Code Changes] \n"


class AddIdeaScreen(ModalScreen[str | None]):
    """Dismisses with the idea's text on ctrl+s, or None on escape (or when left empty)."""

    CSS_PATH = "add_idea.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, search_name: str, epoch: int, text: str = TEMPLATE) -> None:
        super().__init__()
        self.search_name = search_name
        self.epoch = epoch
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"A new idea for {self.search_name} (epoch {self.epoch})",
                         id="title")
            yield TextArea(self.text, id="text", soft_wrap=True, show_line_numbers=False)
            yield Static("ctrl+s: add it · esc: cancel — it is approved as a human idea and "
                         "implemented like the others", id="hint")

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        first = self.text.split("\n", 1)[0]
        area.cursor_location = (0, len(first))

    def action_save(self) -> None:
        text = self.query_one(TextArea).text.strip()
        empty = text.replace("[Experiment]", "").replace("[Code Changes]", "").strip()
        if not empty:
            self.notify("the idea is empty; write what to try, or esc to cancel",
                        severity="warning")
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)
