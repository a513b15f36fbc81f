"""A diff, syntax coloured, unified or split side by side (`unidiff` parses it)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

REMOVED = "on #4b1d1d"
ADDED = "on #1d4b24"


def unified(diff: str) -> RenderableType:
    return Syntax(diff, "diff", theme="ansi_dark", background_color="default",
                  word_wrap=False)


def _highlight(lines: list[str], path: str) -> list[Text]:
    """Colour one side of a hunk as the language of its file, line by line."""
    if not lines:
        return []
    lexer = Syntax.guess_lexer(path, "\n".join(lines))
    syntax = Syntax("", lexer, theme="ansi_dark", background_color="default")
    text = syntax.highlight("\n".join(lines))
    parts = text.split("\n", allow_blank=True)
    return [parts[i] if i < len(parts) else Text("") for i in range(len(lines))]


Row = tuple[int | None, str | None, int | None, str | None]


def _pair_rows(hunk: object) -> list[Row]:
    """Side-by-side rows of a hunk: a run of removed lines faces the added run after it."""
    rows: list[Row] = []
    removed: list[tuple[int | None, str]] = []
    added: list[tuple[int | None, str]] = []

    def flush() -> None:
        for i in range(max(len(removed), len(added))):
            old_no, old = removed[i] if i < len(removed) else (None, None)
            new_no, new = added[i] if i < len(added) else (None, None)
            rows.append((old_no, old, new_no, new))
        removed.clear()
        added.clear()

    for line in hunk:  # type: ignore[attr-defined]
        value = line.value.rstrip("\n")
        if line.is_removed:
            removed.append((line.source_line_no, value))
        elif line.is_added:
            added.append((line.target_line_no, value))
        else:
            flush()
            rows.append((line.source_line_no, value, line.target_line_no, value))
    flush()
    return rows


def split(diff: str) -> RenderableType:
    """Old on the left, new on the right; falls back to unified when the diff won't parse."""
    from unidiff import PatchSet
    from unidiff.errors import UnidiffParseError

    try:
        patch = PatchSet(diff)
    except UnidiffParseError:
        return unified(diff)
    if not len(patch):
        return unified(diff)
    blocks: list[RenderableType] = []
    for pfile in patch:
        blocks.append(Text(f"{pfile.path}  (+{pfile.added} −{pfile.removed})", style="bold"))
        table = Table(box=None, expand=True, show_header=False, padding=(0, 1))
        table.add_column(justify="right", style="dim", width=5)
        table.add_column(ratio=1, overflow="fold")
        table.add_column(justify="right", style="dim", width=5)
        table.add_column(ratio=1, overflow="fold")
        for hunk in pfile:
            table.add_row("", Text(f"@@ -{hunk.source_start},{hunk.source_length} "
                                   f"+{hunk.target_start},{hunk.target_length} @@",
                                   style="cyan"), "", "")
            rows = _pair_rows(hunk)
            left = _highlight([r[1] or "" for r in rows], pfile.path)
            right = _highlight([r[3] or "" for r in rows], pfile.path)
            for (old_no, old, new_no, new), lt, rt in zip(rows, left, right, strict=True):
                changed = old != new
                if old is not None and changed:
                    lt.stylize(REMOVED)
                if new is not None and changed:
                    rt.stylize(ADDED)
                table.add_row(str(old_no or ""), lt if old is not None else "",
                              str(new_no or ""), rt if new is not None else "")
        blocks.append(table)
    return Group(*blocks)


class DiffView(VerticalScroll):
    DEFAULT_CSS = """
    DiffView { height: 1fr; }
    DiffView > Static { width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.diff: str | None = None
        self.split = False
        self.empty_note = "no diff yet"

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static(Text(self.empty_note, style="dim"), id="diff-body")

    def show(self, diff: str | None, split_view: bool | None = None,
             empty_note: str | None = None) -> None:
        if split_view is not None:
            self.split = split_view
        if empty_note is not None:
            self.empty_note = empty_note
        self.diff = diff
        body = self.query_one("#diff-body", Static)
        if not diff:
            body.update(Text(self.empty_note, style="dim"))
        else:
            body.update(split(diff) if self.split else unified(diff))
