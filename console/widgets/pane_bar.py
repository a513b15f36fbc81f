"""The row of pane names on the idea detail: one line of text (a click picks a pane)."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widgets import Static


class PaneBar(Static):
    DEFAULT_CSS = """
    PaneBar { height: 1; padding: 0 1; background: $boost; }
    """

    class Picked(Message):
        def __init__(self, pane: str) -> None:
            super().__init__()
            self.pane = pane

    def __init__(self, panes: tuple[tuple[str, str], ...], active: str, *,
                 id: str | None = None) -> None:
        super().__init__("", id=id)
        self.panes = panes
        self.active = active
        self._spans: list[tuple[int, int, str]] = []
        self._text = self._render_text()

    def render(self) -> Text:
        return self._text

    def show(self, active: str) -> None:
        if active != self.active:
            self.active = active
            self._text = self._render_text()
            self.refresh()

    def _render_text(self) -> Text:
        text = Text(no_wrap=True)
        self._spans = []
        for key, label in self.panes:
            start = len(text)
            text.append(f" {label} ", style="bold reverse" if key == self.active else "")
            self._spans.append((start, len(text), key))
            text.append(" ")
        text.append("  [ ] switch panes", style="dim")
        return text

    def on_click(self, event: events.Click) -> None:
        x = event.x - 1
        for start, end, key in self._spans:
            if start <= x < end:
                self.post_message(self.Picked(key))
