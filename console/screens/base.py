"""What every console screen shares: its scope in the command registry, live polling without
overlap, and worker failures turned into notifications."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker

from console.workers import ReportsWorkerErrors, busy

if TYPE_CHECKING:
    from console.app import IdeaforgeApp


class ConsoleScreen(ReportsWorkerErrors, Screen[None]):
    #: The registry scope whose commands bind on this screen (see `console.commands`).
    SCOPE: ClassVar[str] = ""
    #: How long a screen shown again waits before it polls (its frame comes first).
    RECHECK_S: ClassVar[float] = 0.1

    def __init__(self) -> None:
        super().__init__()
        self._poll_timer: Timer | None = None
        self._poll_worker: Worker[None] | None = None

    @property
    def console(self) -> IdeaforgeApp:
        return self.app  # type: ignore[return-value]

    # ------------------------------------------------------------------ live polling
    def start_polling(self) -> None:
        """Timer → worker → message → update; a tick is skipped while the last one runs,
        and while this screen is hidden (another mode, or a detail pushed on top)."""
        if self._poll_timer is None:
            self._poll_timer = self.set_interval(self.console.poll_s, self._tick)

    def _tick(self) -> None:
        if self.is_current and not busy(self._poll_worker):
            self._poll_worker = self.poll()

    def poll(self) -> Worker[None] | None:
        """Start one refresh worker (override); return it so ticks never overlap."""
        return None

    def on_screen_resume(self) -> None:
        self.resumed()

    def resumed(self) -> None:
        """The screen is shown again (override to poll otherwise): it still shows its rows,
        so the check for anything newer waits until that frame is drawn. Polled at once, the
        worker's queries competed with the repaint: `esc` from a detail took ~165 ms where a
        key takes ~60 (the detail screen waits the same way, `IdeaDetailScreen.resumed`)."""
        self.set_timer(self.RECHECK_S, self._tick)
