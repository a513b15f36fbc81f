"""The bottom line of keys: what the focused screen offers now.

Textual's Footer builds a widget per key and rebuilds them all whenever bindings change, which
costs tens of milliseconds on every screen push here; this is one line of text, redrawn only
when what it says changes. A click on a key presses it.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.screen import Screen
from textual.widgets import Static


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._text = Text()
        self._spans: list[tuple[int, int, str]] = []  # (start, end, key) for clicks

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.rebuild()  # in the screen's first frame already

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        if self.is_attached and screen is self.screen:
            self.rebuild()

    def rebuild(self) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        spans: list[tuple[int, int, str]] = []
        seen: set[str] = set()
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            start = len(text)
            text.append(self.app.get_key_display(binding),
                        style="bold" if enabled else "dim")
            text.append(f" {binding.description}", style="" if enabled else "dim")
            spans.append((start, len(text), binding.key.split(",")[0]))
            text.append("  ")
        if text.plain != self._text.plain or text.spans != self._text.spans:
            self._text, self._spans = text, spans
            self.refresh()  # one line of fixed height: no layout pass

    def render(self) -> Text:
        return self._text

    @property
    def plain(self) -> str:
        return self._text.plain

    def on_click(self, event: events.Click) -> None:
        x = event.x - 1  # the left padding
        for start, end, key in self._spans:
            if start <= x < end:
                self.app.simulate_key(key)
                return
