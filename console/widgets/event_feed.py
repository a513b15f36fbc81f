"""The activity feed under the board: the newest events of the search, as they happen."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual.widgets import Log

if TYPE_CHECKING:
    from engine.store.views import EventView


class EventFeed(Log):
    DEFAULT_CSS = """
    EventFeed { height: 6; border-top: solid $panel; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_lines=500, auto_scroll=True, id=id)
        self.last_id = 0

    def add(self, events: Sequence[EventView]) -> None:
        fresh = [e for e in events if e.id > self.last_id]
        if not fresh:
            return
        self.last_id = fresh[-1].id
        # Follow the newest line only while the reader is at the bottom.
        follow = self.is_vertical_scroll_end or self.max_scroll_y == 0
        self.write_lines([f"{time.strftime('%H:%M:%S', time.localtime(e.created_at))} "
                          f"{e.kind:<9} {e.message}" for e in fresh], scroll_end=follow)

    def reset(self) -> None:
        self.clear()
        self.last_id = 0
