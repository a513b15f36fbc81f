"""Progress of a headless engine (`ideaforge run`, `resume`, `demo --auto`) on stderr.

On a terminal: one line that rewrites itself every second with each running job's step,
latest training metric and time left; log lines print above it (the line is cleared before
each and drawn again after). Without a terminal (a pipe, a log file): a plain log line, at
most one every `IDEAFORGE_PROGRESS_S` seconds (default 30) and only when something moved, so
a week-long run does not flood its log.

The reporter is a thread of its own that reads the database through the store's read-only
pool (`engine.store.progress`); the engine's asyncio loop never waits for it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from typing import Any, TextIO

#: How often a plain (non-terminal) progress line may be written, in seconds.
DEFAULT_PLAIN_S = 30.0
TTY_S = 1.0
#: Jobs named on one line; the rest are counted.
MAX_JOBS = 4


def summary(progress: dict[int, Any], now: float) -> str:
    """`2 jobs running — #3 step 120 · train_loss 2.31 · 4m left; #5 …` ("" when none)."""
    if not progress:
        return ""
    items = list(progress.values())
    parts = []
    for p in items[:MAX_JOBS]:
        who = f"#{p.idea_id}" + (f" run {p.run}" if p.run > 1 else "") + (
            " preflight" if p.kind == "preflight" else "")
        parts.append(f"{who} {p.label(now)}")
    more = f"; +{len(items) - MAX_JOBS} more" if len(items) > MAX_JOBS else ""
    n = len(items)
    return f"{n} job{'s' if n != 1 else ''} running — " + "; ".join(parts) + more


class _KeepsLine:
    """A stream for the log handler that lifts the progress line out of the way."""

    def __init__(self, reporter: ProgressReporter, stream: TextIO) -> None:
        self.reporter = reporter
        self.stream = stream

    def write(self, text: str) -> int:
        with self.reporter.lock:
            self.reporter.erase()
            n = self.stream.write(text)
            if text.endswith("\n"):
                self.reporter.draw()
            return n

    def flush(self) -> None:
        self.stream.flush()


class ProgressReporter:
    """Started around the engine's run; `stop()` clears the line (terminal) and joins."""

    def __init__(self, store: Any, search_id: int, stream: TextIO | None = None,
                 tty: bool | None = None, plain_every_s: float | None = None) -> None:
        self.store = store
        self.search_id = search_id
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        if plain_every_s is None:
            try:
                plain_every_s = float(os.environ.get("IDEAFORGE_PROGRESS_S", DEFAULT_PLAIN_S))
            except ValueError:
                plain_every_s = DEFAULT_PLAIN_S
        self.every = TTY_S if self.tty else max(0.1, plain_every_s)
        self.lock = threading.RLock()
        self.line = ""  # what the terminal line shows now
        self._shown = False
        self._last_plain: object = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    # ---------------------------------------------------------------- life cycle
    def start(self) -> ProgressReporter:
        if self.tty:
            for h in logging.getLogger().handlers:
                if isinstance(h, logging.StreamHandler) and h.stream is self.stream:
                    self._handlers.append((h, h.stream))
                    h.setStream(_KeepsLine(self, self.stream))  # type: ignore[arg-type]
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self.lock:
            self.erase()
            self.line = ""
            for handler, stream in self._handlers:
                handler.setStream(stream)
            self._handlers.clear()

    # ---------------------------------------------------------------- the loop
    def _loop(self) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        from engine.store import progress

        while not self._stop.wait(self.every):
            try:
                running = progress.running(self.store, self.search_id)
            except (SQLAlchemyError, OSError) as exc:  # a locked or vanished file: try again next time
                logging.getLogger("ideaforge").debug("progress not read: %s", exc)
                continue
            self.tick(running, time.time())

    def tick(self, running: dict[int, Any], now: float) -> None:
        text = summary(running, now)
        if self.tty:
            with self.lock:
                self.erase()
                self.line = text
                self.draw()
            return
        # A plain line only when a job moved (a step, a value, a job started or ended): the
        # time left alone is no news for a log file.
        moved = tuple((p.job_id, p.step, p.metric, p.value) for p in running.values())
        if text and moved != self._last_plain:
            logging.getLogger("ideaforge").info("%s", text)
        self._last_plain = moved

    # ---------------------------------------------------------------- the terminal line
    def erase(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self._shown = False

    def draw(self) -> None:
        if self.line:
            width = _columns(self.stream)
            text = self.line if len(self.line) < width else self.line[:max(1, width - 2)] + "…"
            self.stream.write(text)
            self.stream.flush()
            self._shown = True


def _columns(stream: TextIO) -> int:
    """The terminal's width (the line must never wrap: `\r` would then redraw only its end)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    return columns or shutil.get_terminal_size((100, 24)).columns
