"""The ideas board: a Line API widget that holds only the rows around what is on screen.

A search may hold 100k ideas. A DataTable would build a row object for each of them before
anything is shown (seconds); this widget knows only the total, and asks its loader — in a
thread worker — for the window of rows around the viewport whenever that window moves. Rows
not yet loaded draw as placeholders for the few milliseconds a page takes.

The cursor is an index into the board's order; on a live reload it follows its idea when the
idea moves within the loaded window (new proposals arrive above it in the default order).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console import fmt
from console.workers import ReportsWorkerErrors, busy
from engine.store import first_frame
from engine.store.verification import UNVERIFIED

# The same classes as engine.store.console_queries' (defined in first_frame, stdlib only).
BoardPage, BoardQuery, BoardRow = (first_frame.BoardPage, first_frame.BoardQuery,
                                   first_frame.BoardRow)

Loader = Callable[[BoardQuery, int, int], BoardPage]
#: Running jobs of a search → idea id → a progress line (`engine.store.progress`).
ProgressLoader = Callable[[int], dict[int, object]]


@dataclass(frozen=True)
class Column:
    title: str
    width: int  # 0: takes what is left
    right: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("", 2),
    Column("id", 6, right=True),
    Column("ep", 4, right=True),
    Column("origin", 9),
    Column("status", 19),
    Column("score", 11, right=True),
    Column("±se ×n", 12, right=True),
    Column("Δ", 10, right=True),
    Column("att", 4, right=True),
    Column("host", 10),
    Column("title", 0),
)

#: Columns given up, in this order, when the title would get narrower than this.
MIN_TITLE = 30
DROPPABLE = ("host", "att", "Δ", "origin", "±se ×n")


def columns_for(width: int) -> tuple[Column, ...]:
    """The columns that fit: narrow terminals lose host, attempts, Δ, origin and the mean's
    error, in that order (the score keeps its confirmation mark)."""
    shown = list(COLUMNS)
    for title in DROPPABLE:
        if width - sum(c.width for c in shown) >= MIN_TITLE:
            break
        shown = [c for c in shown if c.title != title]
    return tuple(shown)


PENDING_ARROW = {"approve": "→approve", "reject": "→reject", "edit": "→edit",
                 "accept": "→accept", "discard": "→discard"}


class IdeaBoard(ReportsWorkerErrors, ScrollView, can_focus=True):
    """Ideas of a search, windowed; `loader(query, offset, limit)` runs in a thread."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "idea-board--header",
        "idea-board--cursor",
        "idea-board--marked",
        "idea-board--placeholder",
        "idea-board--best",
    }

    DEFAULT_CSS = """
    IdeaBoard { height: 1fr; }
    IdeaBoard > .idea-board--header { text-style: bold; background: $panel; }
    IdeaBoard > .idea-board--cursor { background: $accent 40%; }
    IdeaBoard:focus > .idea-board--cursor { background: $accent 70%; }
    IdeaBoard > .idea-board--marked { background: $warning 20%; }
    IdeaBoard > .idea-board--placeholder { color: $text-muted; }
    IdeaBoard > .idea-board--best { text-style: bold; color: $success; }
    """

    class Highlighted(Message):
        def __init__(self, board: IdeaBoard, row: BoardRow | None) -> None:
            super().__init__()
            self.board = board
            self.row = row

    class Opened(Message):
        def __init__(self, board: IdeaBoard, row: BoardRow) -> None:
            super().__init__()
            self.board = board
            self.row = row

    class Loaded(Message):
        def __init__(self, board: IdeaBoard, total: int) -> None:
            super().__init__()
            self.board = board
            self.total = total

    class ProgressLoaded(Message):
        def __init__(self, search_id: int, progress: dict[int, object]) -> None:
            super().__init__()
            self.search_id = search_id
            self.progress = progress

    class PageLoaded(Message):
        def __init__(self, page: BoardPage, seq: int, follow: int | None) -> None:
            super().__init__()
            self.page = page
            self.seq = seq
            self.follow = follow

    def __init__(self, loader: Loader, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.loader = loader
        self.query_: BoardQuery | None = None
        self.total = 0
        self.cursor = 0
        self.marked: dict[int, str] = {}  # idea id → status when marked
        self.baseline: float | None = None
        self.goal = "minimize"
        self.best_id: int | None = None  # the search's best idea: starred and bold
        self.loaded_once = False
        self.first_rows_painted_at: float | None = None  # perf_counter(); the bench reads it
        self.placeholder = "loading…"
        self._rows: dict[int, BoardRow] = {}
        self._window = (0, 0)
        self._inflight = (0, 0)
        self._seq = 0
        self._worker = None
        self._stale = False
        self._last_highlight: int | None = None
        self._cache: dict[tuple[int, bool, bool, int], Strip] = {}
        # Live progress of running rows: one query per tick for all of them, never per row.
        self.progress_loader: ProgressLoader | None = None  # None: from the app's store
        self.progress: dict[int, str] = {}  # idea id → "step 120 · loss 2.31 · 4m left"
        self._progress_raw: dict[int, object] = {}
        self._progress_worker = None
        self._progress_timer = None

    # ------------------------------------------------------------------ public API
    @property
    def current(self) -> BoardRow | None:
        return self._rows.get(self.cursor)

    @property
    def page_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def set_query(self, query: BoardQuery) -> None:
        """Show another selection of ideas: the cursor goes to the top."""
        self.query_ = query
        self.cursor = 0
        self._rows.clear()
        self._cache.clear()
        self._window = (0, 0)
        self.scroll_to(y=0, animate=False)
        self._request(0, follow=None)

    def set_context(self, baseline: float | None, goal: str, best: int | None = None) -> None:
        if (baseline, goal, best) != (self.baseline, self.goal, self.best_id):
            self.baseline, self.goal, self.best_id = baseline, goal, best
            self._cache.clear()
            self.refresh()

    def set_page(self, page: BoardPage) -> None:
        """Take rows loaded elsewhere (the screen's first load) as if this board had asked."""
        self._seq += 1
        self._apply(page, follow=None)

    def reload(self) -> None:
        """Fetch the rows on screen again (something changed); the cursor keeps its idea."""
        if self.query_ is None:
            return
        if busy(self._worker):
            self._stale = True
            return
        row = self.current
        self._request(max(0, int(self.scroll_y) - self.page_rows),
                      follow=row.id if row else None)

    def toggle_mark(self) -> BoardRow | None:
        row = self.current
        if row is None:
            return None
        if row.id in self.marked:
            del self.marked[row.id]
        else:
            self.marked[row.id] = row.status
        self._cache.clear()
        self.refresh_line(self._line_of(self.cursor))
        return row

    def mark_where(self, keep: Callable[[BoardRow], bool]) -> int:
        n = 0
        for row in self._rows.values():
            if keep(row) and row.id not in self.marked:
                self.marked[row.id] = row.status
                n += 1
        self._cache.clear()
        self.refresh()
        return n

    def clear_marks(self) -> None:
        if self.marked:
            self.marked.clear()
            self._cache.clear()
            self.refresh()

    def targets(self) -> list[BoardRow]:
        """What a decision applies to: the marked rows loaded, else the cursor's row."""
        if self.marked:
            rows = {r.id: r for r in self._rows.values() if r.id in self.marked}
            return [rows.get(i) or BoardRow(id=i, epoch=0, origin="", status=s, score=None,
                                            title="", attempts=0, host=None, quarantine=None,
                                            edited_from=None, pending=None)
                    for i, s in self.marked.items()]
        return [self.current] if self.current else []

    # ------------------------------------------------------------------ loading
    def _request(self, offset: int, follow: int | None) -> None:
        query = self.query_
        if query is None:
            return
        self._seq += 1
        seq = self._seq
        limit = max(60, self.page_rows * 3)
        loader = self.loader
        self._inflight = (offset, offset + limit)

        def load() -> None:
            page = loader(query, offset, limit)
            self.post_message(self.PageLoaded(page, seq, follow))

        self._worker = self.run_worker(load, thread=True, exclusive=True, group="board",
                                       exit_on_error=False, name="load the ideas board")

    def on_idea_board_page_loaded(self, message: PageLoaded) -> None:
        message.stop()
        if message.seq != self._seq:
            return
        self._inflight = (0, 0)
        self._apply(message.page, message.follow)
        if self._stale:
            self._stale = False
            self.reload()

    def _apply(self, page: BoardPage, follow: int | None) -> None:
        old_cursor_line = self.cursor - int(self.scroll_y)
        self.total = page.total
        self._rows = {page.offset + i: row for i, row in enumerate(page.rows)}
        self._window = (page.offset, page.offset + len(page.rows))
        self._cache.clear()
        if follow is not None:
            for index, row in self._rows.items():
                if row.id == follow:
                    if index != self.cursor:
                        self.cursor = index
                        # keep the row on the same screen line while others arrive above it
                        self.scroll_to(y=max(0, index - old_cursor_line), animate=False)
                    break
        self.cursor = max(0, min(self.cursor, self.total - 1))
        self.virtual_size = Size(self.scrollable_content_region.width, self.total + 1)
        self.loaded_once = True
        self._start_progress()
        self.refresh()
        self._highlight()
        self.post_message(self.Loaded(self, self.total))
        self._ensure_window()  # the reader may have scrolled on while this page travelled

    def _ensure_window(self) -> None:
        if self.query_ is None or not self.loaded_once:
            return
        top = int(self.scroll_y)
        bottom = min(self.total, top + self.page_rows)
        for start, end in (self._window, self._inflight):
            if start <= top and bottom <= end:
                return  # on screen already, or on its way
        self._request(max(0, top - self.page_rows), follow=None)

    # ------------------------------------------------------------------ cursor
    def _line_of(self, index: int) -> int:
        return index - int(self.scroll_y) + 1

    def _move_to(self, index: int) -> None:
        if self.total == 0:
            return
        index = max(0, min(index, self.total - 1))
        if index == self.cursor:
            return
        old = self.cursor
        self.cursor = index
        if not self._reveal_cursor():
            self.refresh_line(self._line_of(old))
            self.refresh_line(self._line_of(index))
        # A jump right after the first page arrived may precede the layout that makes the
        # new virtual height scrollable: check again once the screen has been refreshed.
        self.call_after_refresh(self._reveal_cursor)
        self._highlight()

    def _reveal_cursor(self, tries: int = 0) -> bool:
        """Scroll so that the cursor's row is on screen; True if it scrolled."""
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + self.page_rows:
            want = self.cursor - self.page_rows + 1
            self.scroll_to(y=want, animate=False)
            if want > self.max_scroll_y and tries < 20:
                # the layout has not caught up with a new virtual height yet (a loaded
                # machine): the scroll was clamped, so try again after the next refresh
                self.call_after_refresh(self._reveal_cursor, tries + 1)
        else:
            return False
        return True

    def _highlight(self) -> None:
        row = self.current
        key = row.id if row else None
        if key != self._last_highlight or row is None:
            self._last_highlight = key
            self.post_message(self.Highlighted(self, row))

    def next_row(self, keep: Callable[[BoardRow], bool]) -> bool:
        """Move the cursor to the next loaded row below it that `keep` accepts, else the
        first above it; False (the cursor stays) when no loaded row is accepted."""
        order = sorted(self._rows)
        after = [i for i in order if i > self.cursor] + [i for i in order if i < self.cursor]
        for index in after:
            if keep(self._rows[index]):
                self._move_to(index)
                return True
        return False

    def action_cursor(self, step: int) -> None:
        self._move_to(self.cursor + step)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * self.page_rows)

    def action_jump(self, where: int) -> None:
        self._move_to(self.total - 1 if where < 0 else where)

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            index = int(self.scroll_y) + event.y - 1
            if index < self.total:
                self._move_to(index)
                if event.chain == 2 and self.current:
                    self.post_message(self.Opened(self, self.current))

    def open_current(self) -> None:
        if self.current:
            self.post_message(self.Opened(self, self.current))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._ensure_window()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, self.total + 1)
        self._cache.clear()
        self._ensure_window()

    def update_row(self, idea_id: int, **changes: object) -> None:
        """Change a loaded row in place (an optimistic mark while a decision travels)."""
        for index, row in self._rows.items():
            if row.id == idea_id:
                self._rows[index] = replace(row, **changes)  # type: ignore[arg-type]
                self._cache.clear()
                self.refresh_line(self._line_of(index))

    # ------------------------------------------------------------------ live progress
    def _start_progress(self) -> None:
        if self._progress_timer is None:
            every = max(0.2, float(getattr(self.app, "poll_s", 1.0)))
            # the first read waits a tick too: the first frame and its queries come first
            self._progress_timer = self.set_interval(every, self._progress_tick)

    def _progress_tick(self) -> None:
        query = self.query_
        if query is None or busy(self._progress_worker) or not self.screen.is_current:
            self._labels()  # times left still count down
            return
        loader = self.progress_loader or self._app_progress()
        if loader is None:
            return
        search_id = query.search_id

        def load() -> None:
            self.post_message(self.ProgressLoaded(search_id, loader(search_id)))

        self._progress_worker = self.run_worker(load, thread=True, exclusive=True,
                                                group="progress", exit_on_error=False,
                                                name="read the running jobs' progress")

    def _app_progress(self) -> ProgressLoader | None:
        store = getattr(self.app, "store", None)
        if store is None:
            return None

        def load(search_id: int) -> dict[int, object]:
            from engine.store import StoreError, progress

            try:
                return dict(progress.by_idea(progress.running(store(), search_id)))
            except StoreError:  # no workspace yet: nothing runs
                return {}

        return load

    def on_idea_board_progress_loaded(self, message: ProgressLoaded) -> None:
        message.stop()
        if self.query_ is None or message.search_id != self.query_.search_id:
            return
        self._progress_raw = message.progress
        self._labels()

    def _labels(self) -> None:
        now = fmt.clock()
        labels = {idea: p.label(now) for idea, p in self._progress_raw.items()}  # type: ignore[attr-defined]
        if labels != self.progress:
            self.progress = labels
            self._cache.clear()
            self.refresh()

    # ------------------------------------------------------------------ drawing
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y == 0:
            return self._header(width)
        index = int(self.scroll_y) + y - 1
        if index >= self.total:
            if index == 0 and self.loaded_once:
                style = self.get_component_rich_style("idea-board--placeholder")
                return Strip([Segment(fmt.clip("  no ideas match", width), style)]
                             ).extend_cell_length(width)
            return Strip.blank(width, self.rich_style)
        row = self._rows.get(index)
        if row is None:
            style = self.get_component_rich_style("idea-board--placeholder")
            return Strip([Segment(fmt.clip(f"  {self.placeholder}", width), style)]
                          ).extend_cell_length(width)
        if self.first_rows_painted_at is None:
            self.first_rows_painted_at = time.perf_counter()
        is_cursor = index == self.cursor
        is_marked = row.id in self.marked
        key = (row.id, is_cursor, is_marked, width)
        strip = self._cache.get(key)
        if strip is None:
            strip = self._row_strip(row, width, is_cursor, is_marked)
            if len(self._cache) > 500:
                self._cache.clear()
            self._cache[key] = strip
        return strip

    def _header(self, width: int) -> Strip:
        style = self.get_component_rich_style("idea-board--header")
        cells = {c.title: c.title for c in COLUMNS}
        return self._cells_strip(cells, dict.fromkeys(cells, style), width, style)

    def _row_strip(self, row: BoardRow, width: int, is_cursor: bool, is_marked: bool) -> Strip:
        base = self.rich_style
        if is_marked:
            base = base + self.get_component_rich_style("idea-board--marked")
        if is_cursor:
            base = base + self.get_component_rich_style("idea-board--cursor")
        is_best = row.id == self.best_id
        if is_best:  # the best at a glance: ★, bold, in the success colour
            base = base + self.get_component_rich_style("idea-board--best", partial=True)
        status = row.status + (f" {PENDING_ARROW.get(row.pending, '→' + row.pending)}"
                               if row.pending else "")
        verdict_style = fmt.verdict_style(row.score, self.baseline, self.goal,
                                          row.confirmation)
        title = row.title or ""
        if row.quarantine == "pending":
            title = "⚠ quarantined · " + title
        if row.edited_from:
            title = f"✎#{row.edited_from} " + title
        if row.twin_of:  # a near duplicate of an earlier idea (the detail links to it)
            title = f"{fmt.TWIN_MARK}#{row.twin_of} " + title
        if row.flags:  # the detail screen lists them
            title = f"{fmt.FLAG_MARK} " + title
        progress = self.progress.get(row.id)
        if progress:  # a running job of the idea: how far it got, and the time it has left
            title = f"▶ {progress} │ {title}"
        # A score the training process measured itself: shown, but marked as unverified (in
        # a cell of its own, so that the decimal points stay aligned).
        # Then whether repeats upheld it (✓ ○ ✗, or a blank), and in the next column the
        # error of the mean and the number of runs (a mean of several runs only).
        score = (fmt.score(row.score) + (fmt.UNVERIFIED_MARK if row.verified == UNVERIFIED
                                         else " ") + (fmt.mark(row.confirmation) or " "))
        star = "●" if is_marked else "★" if is_best else ""
        texts = [star, str(row.id), str(row.epoch), row.origin, status,
                 score, fmt.spread(row.score_se, row.runs), fmt.delta(row.score, self.baseline),
                 str(row.attempts) if row.attempts else "", row.host or "", title]
        looks = ["bold yellow", "", "dim", "", fmt.STATUS_STYLE.get(row.status, ""),
                 verdict_style, "dim", verdict_style, "dim", "dim", ""]
        titles = [c.title for c in COLUMNS]
        cells = dict(zip(titles, texts, strict=True))
        styles = {t: base + Style.parse(look) if look else base
                  for t, look in zip(titles, looks, strict=True)}
        return self._cells_strip(cells, styles, width, base)

    @staticmethod
    def _cells_strip(cells: dict[str, str], styles: dict[str, Style], width: int,
                     fill: Style) -> Strip:
        segments: list[Segment] = []
        used = 0
        for column in columns_for(width):
            text, style = cells[column.title], styles[column.title]
            w = column.width or max(0, width - used)
            if w <= 0:
                break
            body = fmt.clip(text, w - 1) if column.width else fmt.clip(text, w)
            cell = body.rjust(w - 1) + " " if column.right else body.ljust(w)
            segments.append(Segment(cell[:w], style))
            used += w
        return Strip(segments).adjust_cell_length(width, fill)
