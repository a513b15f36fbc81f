"""Mode 1: the ideas board of the open search — where the researcher decides."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

from textual import events, on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Input
from textual.worker import Worker

from console import commands, filtering, fmt
from console.screens import board_reasons, manage_keys
from console.screens.base import ConsoleScreen
from console.widgets import search_header
from console.widgets.event_feed import EventFeed
from console.widgets.idea_board import IdeaBoard
from console.widgets.key_bar import KeyBar
from console.widgets.search_header import SearchHeader, at_gate, engine_alive
from engine.store import first_frame

if TYPE_CHECKING:
    from engine.store.console_queries import BoardPage, BoardRow, SearchSummary
    from engine.store.views import EventView, SearchView

# engine.store (SQLAlchemy + SQLModel, ~0.33 s to import) is imported in the workers, after
# the board's first frame: that frame is read by engine.store.first_frame (plain sqlite3).
BoardQuery = first_frame.BoardQuery

#: How long the first page's worker waits for the board's first frame before it imports
#: SQLAlchemy for the rest (an import holds the interpreter, and the frame comes first).
FIRST_FRAME_WAIT_S = 0.5

#: How long the cursor rests on a row before its detail is fetched ahead.
PREFETCH_REST_S = 0.1

#: Decisions at a gate: from the console they hold the gate shut until go (see `_with_hold`).
GATE_ACTIONS = ("approve", "reject", "edit")

#: Keys that say why when they cannot apply (see `on_key`).
WHY_NOT = frozenset({"approve", "reject", "edit", "go", "add_idea", "stop_search",
                     "resume_search", "note", "retry"})

SORT_LABELS = {"default": "newest epoch first", "id": "id", "score": "score (best first)",
               "status": "status", "origin": "origin", "epoch": "epoch"}


class IdeasScreen(ConsoleScreen):
    SCOPE = "ideas"
    CSS_PATH = "ideas.tcss"
    BINDINGS = commands.bindings("ideas")

    class Opened(Message):
        """The search and the board's first page, loaded together."""

        def __init__(self, summary: SearchSummary | None, page: BoardPage | None,
                     query: BoardQuery | None, events: list[EventView], problem: str = "",
                     painted: threading.Event | None = None) -> None:
            super().__init__()
            self.painted = painted  # set once the page is on screen
            self.summary = summary
            self.page = page
            self.query = query
            self.events = events
            self.problem = problem

    class Refreshed(Message):
        def __init__(self, summary: SearchSummary | None, events: list[EventView],
                     marker: tuple[int, int, int], search_id: int) -> None:
            super().__init__()
            self.search_id = search_id
            self.summary = summary
            self.events = events
            self.marker = marker

    class Sent(Message):
        def __init__(self, note: str) -> None:
            super().__init__()
            self.note = note

    def __init__(self) -> None:
        super().__init__()
        self.search: SearchView | None = None
        self.summary: SearchSummary | None = None
        self.filter = filtering.Filter()
        self.filter_text = ""
        self.epoch: int | None = None
        self.sort: str | None = None  # the user's choice; None: by the search's state
        self.reverse = False
        self._marker: tuple[int, int, int] | None = None
        self._applicable: frozenset[str] = frozenset()
        self._rest_since = 0.0
        self._prefetched: int | None = None
        self._held_at: tuple[int, int, str] | None = None  # the gate this console held

    def compose(self) -> ComposeResult:
        yield SearchHeader(id="header")
        yield IdeaBoard(self._load_page, id="board")
        yield Input(placeholder="filter: words, status:proposed, origin:exploit, epoch:3, #12, "
                    "c:confirmed — enter applies, esc closes", id="filter")
        yield EventFeed(id="feed")
        yield KeyBar()

    @property
    def board(self) -> IdeaBoard:
        return self.query_one(IdeaBoard)

    def on_mount(self) -> None:
        self.board.focus()
        self.watch(self.app, "search_ref", self._search_changed, init=False)
        self.open_search()
        self.start_polling()
        self.set_interval(PREFETCH_REST_S, self._prefetch_tick)

    def _search_changed(self) -> None:
        # Until the new search's summary arrives, a poll still under way for the old one
        # must not put its header (and its id, for the next polls) back.
        self.search = None
        self.epoch, self.filter, self.filter_text = None, filtering.Filter(), ""
        self.board.clear_marks()
        self.query_one(EventFeed).reset()
        self.open_search()

    # ------------------------------------------------------------------ loading
    def _load_page(self, query: BoardQuery, offset: int, limit: int) -> BoardPage:
        from engine.store import console_queries as cq

        return cq.board_page(self.console.store(), query, offset, limit)

    def _query(self, search: SearchView) -> BoardQuery:
        f = self.filter
        return BoardQuery(search_id=search.id,
                          epoch=f.epoch if f.epoch is not None else self.epoch,
                          statuses=f.statuses, origins=f.origins, ids=f.ids, words=f.words,
                          confirmations=f.confirmations, sort=self._sort_of(search),
                          reverse=self.reverse, goal=search.goal)

    def _sort_of(self, search: SearchView | None) -> str:
        """The user's sort, else by score (best first) once a search is finished: what is
        left to read of it is its results; the newest epoch first while it runs."""
        if self.sort is not None:
            return self.sort
        return "score" if search is not None and search.status == "finished" else "default"

    def open_search(self) -> None:
        ref = self.console.search_ref
        header = self.query_one(SearchHeader)
        if ref is None:
            header.empty_note = "no search is open — press 0 to pick one, or n there to start one"
            header.show(None)
            self.board.placeholder = "no search open"
            self.board.refresh()
            return
        self._open(ref, self.board.page_rows + 40)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False,
          name="open the search")
    def _open(self, ref: int | str, limit: int) -> None:
        # The board first, read with sqlite3 alone: it is what the researcher came for.
        ff = first_frame
        page = None
        try:
            with ff.reader(self.console.workspace) as conn:
                search = ff.find_search(conn, ref)
                if search is not None:
                    query = self._query(search)
                    page = ff.board_page(conn, query, 0, limit)
        except ff.Unavailable:
            page = None  # the store below says why, or prepares the database
        if page is not None:
            painted = threading.Event()
            self.post_message(self.Opened(None, page, query, [], painted=painted))
            painted.wait(FIRST_FRAME_WAIT_S)
        from engine.store import StoreError
        from engine.store import console_queries as cq

        try:
            store = self.console.store()
        except StoreError as exc:
            self.post_message(self.Opened(None, None, None, [], str(exc)))
            return
        if page is None:
            search = (cq.get_search(store, ref) if isinstance(ref, int)
                      else cq.search_by_name(store, ref))
            if search is None and isinstance(ref, str) and ref.isdigit():
                search = cq.get_search(store, int(ref))
            if search is None:
                self.post_message(self.Opened(None, None, None, [], f"no search {ref!r} in "
                                              f"{store.workspace}"))
                return
            query = self._query(search)
            page = cq.board_page(store, query, 0, limit)
            self.post_message(self.Opened(None, page, query, []))
        summaries = cq.search_summaries(store, search.id, now=fmt.clock())
        events = cq.recent_events(store, search.id, 0, 100)
        self.post_message(self.Opened(summaries[0] if summaries else None, None, None, events))

    def on_ideas_screen_opened(self, message: Opened) -> None:
        if message.problem:
            header = self.query_one(SearchHeader)
            header.empty_note = message.problem
            header.show(None)
            self.board.placeholder = "no search open"
            self.board.refresh()
            return
        if message.page is not None and message.query is not None:
            self.board.query_ = message.query
            self.board.set_page(message.page)
        if message.painted is not None:
            self.call_after_refresh(message.painted.set)
        if message.summary is not None:
            self._take_summary(message.summary)
            self.console.search_id = message.summary.search.id
            self.query_one(EventFeed).add(message.events)

    def _take_summary(self, summary: SearchSummary) -> None:
        self.summary = summary
        self.search = summary.search
        best = summary.best_idea.id if summary.best_idea is not None else None
        self.board.set_context(summary.search.baseline, summary.search.goal, best)
        shown = self.board.query_
        if shown is not None and shown.sort != self._sort_of(summary.search):
            self._requery()  # the search finished while open: its board sorts by score
        self.query_one(SearchHeader).show(summary, self._view_line())
        self._bindings_changed()

    def poll(self) -> Worker[None] | None:
        if self.search is None:
            return None
        return self._refresh(self.search.id, self._marker,
                             self.query_one(EventFeed).last_id)

    @work(thread=True, group="poll", exit_on_error=False, name="refresh the ideas board")
    def _refresh(self, search_id: int, marker: tuple[int, int, int] | None,
                 last_event: int) -> None:
        from engine.store import console_queries as cq

        store = self.console.store()
        now = cq.change_marker(store, search_id)
        if now == marker and not self._heartbeat_aging():
            self.post_message(self.Refreshed(None, [], now, search_id))
            return
        summaries = cq.search_summaries(store, search_id, now=fmt.clock())
        events = cq.recent_events(store, search_id, last_event, 100)
        self.post_message(self.Refreshed(summaries[0] if summaries else None, events, now,
                                         search_id))

    def _heartbeat_aging(self) -> bool:
        """An engine's heartbeat writes no event (it would flood the feed), so the change
        marker misses it: an engine waiting at a gate would look gone after ENGINE_STALE_S.
        Re-read the summary once the shown heartbeat is a third of that old."""
        s = self.search
        return bool(s is not None and s.engine_pid and s.engine_heartbeat
                    and fmt.clock() - s.engine_heartbeat > search_header.ENGINE_STALE_S / 3)

    def on_ideas_screen_refreshed(self, message: Refreshed) -> None:
        if self.search is None or message.search_id != self.search.id:
            return  # a poll of the search shown before another was opened: stale
        changed = message.marker != self._marker
        self._marker = message.marker
        if message.summary is not None:
            self._take_summary(message.summary)
        else:  # nothing new in the database; ages in the header still move
            self.query_one(SearchHeader).show(self.summary)
        if changed:
            self.board.reload()
            self.query_one(EventFeed).add(message.events)

    # ------------------------------------------------------------------ view state
    def _view_line(self) -> str:
        if self.search is None:
            return ""
        parts = ["all epochs" if self.epoch is None and self.filter.epoch is None
                 else f"epoch {self.filter.epoch if self.filter.epoch is not None else self.epoch}"]
        parts.append(f"{self.board.total} ideas")
        parts.append(f"sorted by {SORT_LABELS[self._sort_of(self.search)]}"
                     f"{' (reversed)' if self.reverse else ''}")
        if self.filter_text:
            parts.append(f"filter “{self.filter_text}”")
        if self.board.marked:
            parts.append(f"{len(self.board.marked)} marked")
        return " · ".join(parts)

    def _requery(self) -> None:
        if self.search is not None:
            self.board.set_query(self._query(self.search))
            self.query_one(SearchHeader).set_view_line(self._view_line())

    def on_idea_board_loaded(self, message: IdeaBoard.Loaded) -> None:
        self.query_one(SearchHeader).set_view_line(self._view_line())

    def on_idea_board_highlighted(self, message: IdeaBoard.Highlighted) -> None:
        self._bindings_changed()
        self._rest_since = time.monotonic()

    def _prefetch_tick(self) -> None:
        """Fetch the detail of the row the cursor has rested on, so that enter opens it whole
        at once (moving the cursor stays free of any query)."""
        row = self.board.current
        if (row is None or row.id == self._prefetched or not self.is_active
                or time.monotonic() - self._rest_since < PREFETCH_REST_S):
            return
        self._prefetched = row.id
        self._prefetch(row.id)

    @work(thread=True, exclusive=True, group="prefetch", exit_on_error=False,
          name="prefetch the idea")
    def _prefetch(self, idea_id: int) -> None:
        from engine.store import console_queries as cq

        store = self.console.store()
        marker = cq.change_marker(store)
        known = self.console.details.get(idea_id)
        if known is not None and known[0] == marker:
            return
        detail = cq.idea_detail(store, idea_id)
        if detail is not None:
            search = cq.get_search(store, detail.idea.search_id)
            self.app.call_from_thread(self.console.remember_detail, idea_id, marker, detail,
                                      search)

    def on_idea_board_opened(self, message: IdeaBoard.Opened) -> None:
        self.console.open_idea(message.row.id)

    def _bindings_changed(self) -> None:
        """Refresh the footer only when what applies changed (a cursor move stays cheap)."""
        names = ("approve", "reject", "edit", "add_idea", "go", "stop_search", "resume_search")
        applicable = frozenset(n for n in names if self.check_action(n, ()))
        if applicable != self._applicable:
            self._applicable = applicable
            self.refresh_bindings()

    # ------------------------------------------------------------------ what applies
    def _writable(self) -> bool:
        return self.search is not None and self.search.status != "imported"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("approve", "reject", "edit"):
            if not self._writable():
                return False
            allowed = {"approve": fmt.APPROVABLE, "reject": fmt.REJECTABLE,
                       "edit": fmt.EDITABLE}[action]
            if action == "edit":
                row = self.board.current
                return row is not None and row.status in allowed and not row.pending
            return any(r.status in allowed for r in self.board.targets())
        if action == "note":
            return self._writable() and self.board.current is not None
        if action == "retry":
            row = self.board.current
            return self._writable() and row is not None and row.status in manage_keys.RETRYABLE
        if action == "add_idea":
            return self._writable() and self.search is not None and \
                self.search.status != "finished"
        if action == "go":
            return self._writable() and self.search is not None and at_gate(self.search)
        if action == "stop_search":
            return self._writable() and self.search is not None and engine_alive(self.search)
        if action == "resume_search":
            return (self._writable() and self.search is not None
                    and self.search.status != "finished" and not engine_alive(self.search))
        return True

    def on_key(self, event: events.Key) -> None:
        """A key of this board that cannot apply now says why, instead of doing nothing."""
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            name = binding.action.split("(", 1)[0]
            if name in WHY_NOT and not self.check_action(name, ()):
                event.stop()
                event.prevent_default()
                self.notify(self.why_not(name), title=f"{event.key}: {binding.description}",
                            severity="warning")
                return

    def why_not(self, action: str) -> str:
        return board_reasons.why_not(self.search, self.board, action)

    # ------------------------------------------------------------------ actions
    def action_open(self) -> None:
        self.board.open_current()

    def action_mark(self) -> None:
        if self.board.toggle_mark() is not None:
            self.board.action_cursor(1)
            self.query_one(SearchHeader).set_view_line(self._view_line())
            self._bindings_changed()

    def action_mark_all(self) -> None:
        n = self.board.mark_where(lambda r: r.status in fmt.REJECTABLE)
        self.notify(f"marked {n} idea(s) that await a decision" if n else
                    "no loaded idea awaits a decision")
        self.query_one(SearchHeader).set_view_line(self._view_line())
        self._bindings_changed()

    def action_compare(self) -> None:
        """The marked ideas' curves (else the highlighted one's) beside the baseline's."""
        from console.screens.compare import CompareScreen

        ids = list(self.board.marked) or [r.id for r in self.board.targets()]
        if self.search is None or not ids:
            self.notify("mark ideas with space first, then press c to compare their curves",
                        severity="warning")
            return
        self.app.push_screen(CompareScreen(self.search, ids))

    def action_epoch(self, step: int) -> None:
        if self.search is None:
            return
        options: list[int | None] = [None, *range(self.search.epoch + 1)]
        index = options.index(self.epoch) if self.epoch in options else 0
        self.epoch = options[(index + step) % len(options)]
        self._requery()

    def action_sort(self) -> None:
        keys = list(first_frame.SORT_KEYS)
        self.sort = keys[(keys.index(self._sort_of(self.search)) + 1) % len(keys)]
        self._requery()

    def action_sort_reverse(self) -> None:
        self.reverse = not self.reverse
        self._requery()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = self.filter_text
        box.display = True
        box.focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        parsed = filtering.parse(event.value)
        if parsed.problems:
            self.notify("; ".join(parsed.problems), severity="warning", title="filter")
        self.filter, self.filter_text = parsed, event.value.strip()
        event.input.display = False
        self.board.focus()
        self._requery()

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.display = False
            self.board.focus()
        elif self.board.marked:
            self.board.clear_marks()
            self.query_one(SearchHeader).set_view_line(self._view_line())
            self._bindings_changed()
        elif self.filter_text or self.epoch is not None:
            self.filter, self.filter_text, self.epoch = filtering.Filter(), "", None
            self._requery()
        else:
            self.console.action_mode("searches")

    def action_approve(self) -> None:
        rows = [r for r in self.board.targets() if r.status in fmt.APPROVABLE]
        self._decide([("approve", r.id, None) for r in rows], f"approve → {_ids(rows)}")
        self._next_undecided()

    @work(exclusive=True, group="dialog")
    async def action_reject(self) -> None:
        rows = [r for r in self.board.targets() if r.status in fmt.REJECTABLE]
        if not rows:
            return
        from console.screens.prompt import PromptScreen

        titles = "\n".join(f"#{r.id} {fmt.clip(r.title, 70)}" for r in rows[:6])
        more = f"\n… and {len(rows) - 6} more" if len(rows) > 6 else ""
        reason = await self.app.push_screen_wait(PromptScreen(
            f"Reject {len(rows)} idea(s)?", titles + more,
            placeholder="why (optional) — the reason steers the next proposals"))
        if reason is None:
            return
        self._decide([("reject", r.id, reason or None) for r in rows],
                     f"reject → {_ids(rows)}" + (f" ({reason})" if reason else ""))
        self._next_undecided()

    @work(exclusive=True, group="dialog")
    async def action_edit(self) -> None:
        row = self.board.current
        if row is None or row.status not in fmt.EDITABLE:
            return
        from engine.store import ops

        store = self.console.store()
        idea = await asyncio.to_thread(ops.get_idea, store, row.id)
        if self.search is not None and self.search.model == "catalog":
            # the catalog cannot implement edited text: the edit needs its own diff
            from console.screens.add_idea import AddIdeaScreen

            s = self.search
            edited = await self.app.push_screen_wait(AddIdeaScreen(
                s.name, s.epoch, idea.text, env_path=s.env_path, catalog=True, editing=idea.id))
            if edited:
                self._decide([("edit", idea.id, edited.text)], f"edit of #{idea.id} saved "
                             "with your diff", diff=edited.diff)
            return
        text = self.console.edit_text(idea.text, f"idea-{idea.id}")
        if text is None:
            return
        if text.strip() == idea.text.strip():
            self.notify("the text is unchanged; nothing was saved")
            return
        self._decide([("edit", idea.id, text)], f"edit of #{idea.id} saved as a new version")

    @work(exclusive=True, group="dialog")
    async def action_add_idea(self) -> None:
        if self.search is None:
            return
        from console.screens.add_idea import AddIdeaScreen

        s = self.search
        added = await self.app.push_screen_wait(AddIdeaScreen(
            s.name, s.epoch, env_path=s.env_path, catalog=s.model == "catalog"))
        if added:
            self._decide([("add", None, added.text)], added.note, diff=added.diff)

    @work(exclusive=True, group="dialog")
    async def action_note(self) -> None:
        if self.board.current is not None:
            await manage_keys.note_idea(self, self.board.current.id)

    @work(exclusive=True, group="dialog")
    async def action_retry(self) -> None:
        row = self.board.current
        if row is not None and await manage_keys.retry_idea(self, row.id, row.status):
            self._marker = None  # show the new attempt at the next poll
            self._tick()

    @work(exclusive=True, group="dialog")
    async def action_go(self) -> None:
        if self.search is None:
            return
        from console.screens.confirm import ConfirmScreen

        diffs = self.search.phase == "review_diffs"
        waiting = (self.summary.ideas.get("diff_review" if diffs else "proposed", 0)
                   if self.summary else 0)
        what = "diff(s)" if diffs else "idea(s)"
        body = (f"{waiting} undecided {what} will be skipped; decided ones go on." if waiting
                else f"Every {what[:-3]} is decided: the search goes on with them.")
        if await self.app.push_screen_wait(ConfirmScreen("Release the gate?", body, yes="Go")):
            self._decide([("go", None, None)], "gate released")

    @work(exclusive=True, group="dialog")
    async def action_stop_search(self) -> None:
        if self.search is not None:
            await self.console.stop_search(self.search)

    def action_resume_search(self) -> None:
        if self.search is not None:
            self.console.resume_search(self.search)

    # ------------------------------------------------------------------ decisions
    def _decide(self, decisions: list[tuple[str, int | None, str | None]], note: str,
                diff: str | None = None) -> None:
        if not decisions or self.search is None:
            return
        for action, idea_id, _ in decisions:
            if idea_id is not None:  # shown at once; the engine's answer replaces it
                self.board.update_row(idea_id, pending=action)
        self.board.clear_marks()
        decisions = self._with_hold(decisions)
        if not engine_alive(self.search):
            note += " — no engine is attached: it applies when the search resumes (R)"
        self._send(self.search.id, decisions, note, diff)

    def _with_hold(self, decisions: list[tuple[str, int | None, str | None]]
                   ) -> list[tuple[str, int | None, str | None]]:
        """Decisions at a gate go with a `hold`: once every idea is decided the engine waits
        for go (g) instead of releasing the gate by itself. Sent once per gate, and again with
        a batch that may decide the last waiting ideas (an engine restarted since forgets)."""
        s = self.search
        if s is None or not at_gate(s) or not any(a in GATE_ACTIONS for a, _, _ in decisions):
            return decisions
        gate = (s.id, s.epoch, s.phase)
        waiting = (self.summary.ideas.get("diff_review" if s.phase == "review_diffs"
                                          else "proposed", 0) if self.summary else 0)
        deciding = sum(1 for a, _, _ in decisions if a in GATE_ACTIONS)
        if gate == self._held_at and deciding < waiting:
            return decisions
        self._held_at = gate
        return [("hold", None, None), *decisions]

    def _next_undecided(self) -> None:
        """After a decision the cursor goes on to the next idea that awaits one."""
        self.board.next_row(lambda r: r.status in fmt.APPROVABLE and not r.pending)

    @work(thread=True, group="decide", exit_on_error=False, name="send decisions")
    def _send(self, search_id: int, decisions: list[tuple[str, int | None, str | None]],
              note: str, diff: str | None = None) -> None:
        from engine.store import ops

        store = self.console.store()
        for action, idea_id, text in decisions:
            ops.add_decision(store, search_id, action, idea_id=idea_id, text=text,
                             source="console", diff=diff if action in ("add", "edit") else None)
        self.post_message(self.Sent(note))

    def on_ideas_screen_sent(self, message: Sent) -> None:
        self.notify(message.note, title="sent")
        self.query_one(SearchHeader).set_view_line(self._view_line())
        self._bindings_changed()
        self._tick()


def _ids(rows: list[BoardRow]) -> str:
    shown = ", ".join(f"#{r.id}" for r in rows[:8])
    return shown + (f" +{len(rows) - 8}" if len(rows) > 8 else "")

