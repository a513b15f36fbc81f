"""A job's output, following its tail (toolong's manner): new lines scroll into view only
while the reader is at the bottom; scrolling up stops following, `end` resumes it."""

from __future__ import annotations

from textual.widgets import Log

#: How much of an existing log is shown when a job is first opened.
INITIAL_BYTES = 64 * 1024


class LogView(Log):
    DEFAULT_CSS = """
    LogView { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_lines=10_000, auto_scroll=False, id=id)
        self.source: str | None = None  # a file path, or "db:<job id>"
        self.read_offset = 0
        self.snapshot = ""

    @property
    def following(self) -> bool:
        return self.is_vertical_scroll_end or self.max_scroll_y == 0

    def append(self, text: str) -> None:
        if text:
            follow = self.following
            self.write(text, scroll_end=follow)

    def replace_all(self, text: str) -> None:
        """Show `text` (a tail kept in the database) in place of what is there."""
        if text == self.snapshot:
            return
        follow = self.following
        if self.snapshot and text.startswith(self.snapshot):
            self.write(text[len(self.snapshot):], scroll_end=follow)
        else:
            self.clear()
            self.write(text, scroll_end=True)
        self.snapshot = text

    def switch_source(self, source: str) -> None:
        if source != self.source:
            self.source = source
            self.read_offset = 0
            self.snapshot = ""
            self.clear()


def read_from(path: str, offset: int) -> tuple[str, int]:
    """New text of a log file from `offset` (the first read takes the last 64 KB)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        if size < offset:  # truncated or replaced: start again
            offset = 0
        start = max(offset, size - INITIAL_BYTES) if offset == 0 else offset
        fh.seek(start)
        data = fh.read(size - start)
    end = data.rfind(b"\n")
    if end < 0 and size - start < INITIAL_BYTES:
        return "", start  # a partial line waits for its end
    data = data if end < 0 else data[: end + 1]
    return data.decode("utf-8", errors="replace"), start + len(data)
