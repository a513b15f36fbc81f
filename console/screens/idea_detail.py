"""One idea, pushed over a mode: its text, lineage, diff, attempts, job log and curves.

Opening a detail must cost about what any key that paints costs, so the app keeps one instance
installed (`IdeaforgeApp.open_idea`) and points it at the next idea with `show_idea` rather than
composing a screen on every open: a push then only restyles and draws what is there. The detail
comes fetched ahead (the board prefetches the row the cursor rests on) or from a worker that
answers within the first frame; each pane's widgets are built the first time the pane is shown,
and a pane that is not on show is refilled only when it is shown again.
"""

from __future__ import annotations

import os
from typing import ClassVar

from rich.console import Group
from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import ContentSwitcher, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from console import commands, fmt
from console.screens.base import ConsoleScreen
from console.screens.board_reasons import DETAIL_WHY_NOT, why_not_in_detail
from console.widgets.key_bar import KeyBar
from console.widgets.pane_bar import PaneBar
from console.widgets.search_header import engine_alive
from engine.store import console_queries as cq
from engine.store import ops
from engine.store.console_queries import IdeaBrief, IdeaDetail
from engine.store.views import JobView, SearchView

PANES: tuple[tuple[str, str], ...] = (("idea", "Idea"), ("lineage", "Lineage"),
                                      ("diff", "Diff"), ("attempts", "Attempts"),
                                      ("log", "Log"), ("curves", "Curves"))


class IdeaDetailScreen(ConsoleScreen):
    SCOPE = "detail"
    CSS_PATH = "idea_detail.tcss"
    BINDINGS = commands.bindings("detail")
    FOLLOW_S: ClassVar[float] = 1.0

    #: After an open with the detail fetched ahead, how long the screen waits before it asks
    #: whether the database moved on: the first frame comes first.
    RECHECK_S: ClassVar[float] = 0.1

    class Loaded(Message):
        def __init__(self, idea_id: int, detail: IdeaDetail | None, search: SearchView | None,
                     marker: object, series: dict[str, list[tuple[float, float]]] | None
                     ) -> None:
            super().__init__()
            self.idea_id = idea_id
            self.detail = detail
            self.search = search
            self.marker = marker
            self.series = series

    class LogRead(Message):
        def __init__(self, idea_id: int, source: str, text: str, offset: int, whole: bool
                     ) -> None:
            super().__init__()
            self.idea_id = idea_id
            self.source = source
            self.text = text
            self.offset = offset
            self.whole = whole

    class Sent(Message):
        def __init__(self, idea_id: int, note: str) -> None:
            super().__init__()
            self.idea_id = idea_id
            self.note = note

    def __init__(self, idea_id: int, pane: str = "idea",
                 known: tuple[object, IdeaDetail, SearchView | None] | None = None) -> None:
        """`known`: (change marker, detail, search) fetched ahead (the board prefetches the
        row the cursor rests on), so that the screen opens complete in one frame."""
        super().__init__()
        self.idea_id = idea_id
        self.pane = pane
        self.detail: IdeaDetail | None = None
        self.search: SearchView | None = None
        self._marker: object = None
        if known is not None:
            self._marker, self.detail, self.search = known
        self._built: set[str] = set()
        self._stale: set[str] = set()  # built panes that still show an earlier idea
        self._relatives_of: int | None = None
        self._log_worker: Worker[None] | None = None
        self._split = False

    def show_idea(self, idea_id: int,
                  known: tuple[object, IdeaDetail, SearchView | None] | None = None) -> None:
        """Point this screen at an idea before it is pushed (again): it opens on the Idea pane
        as a new screen would, and only that pane is filled now."""
        if idea_id != self.idea_id:
            self._poll_worker = self._log_worker = None  # their answers are for the last one
        self.idea_id = idea_id
        self._marker, self.detail, self.search = known if known is not None else (None, None,
                                                                                  None)
        self._split = False
        self.pane = "idea"
        if not self.is_mounted:
            return  # compose builds it as it is now
        self._stale = self._built - {"idea"}
        self.query_one(PaneBar).show("idea")
        self._header()
        self.query_one("#idea-text", Static).update(
            self._idea_text(self.detail) if self.detail else "")
        self.query_one(ContentSwitcher).current = "pane-idea"
        idea = self.query_one("#pane-idea", VerticalScroll)
        idea.scroll_home(animate=False, immediate=True)
        self.set_focus(idea, scroll_visible=False)
        self.refresh_bindings()

    def compose(self) -> ComposeResult:
        yield Static(self._header_text(), id="header")
        yield PaneBar(PANES, self.pane, id="panes")
        # Only the pane on show exists; the others are built the first time they are shown.
        self._built.add(self.pane)
        with ContentSwitcher(initial=f"pane-{self.pane}", id="switcher"):
            yield self._pane_widget(self.pane)
        yield KeyBar()

    def on_mount(self) -> None:
        if self.detail is not None and self.pane != "idea":
            self.call_after_refresh(self._fill, self.pane)
        self.start_polling()
        self.set_interval(self.FOLLOW_S, self._follow_log)

    def resumed(self) -> None:
        # Without its detail the screen asks at once (the answer lands in the first frame);
        # with it, the check for anything newer waits until that frame is drawn.
        if self.detail is None:
            self._tick()
        else:
            self.set_timer(self.RECHECK_S, self._tick)

    # ------------------------------------------------------------------ panes
    async def _build(self, pane: str) -> None:
        if pane in self._built:
            if pane in self._stale:  # curves: cleared until the poll brings the new ones
                self._stale.discard(pane)
                self._fill(pane, {} if pane == "curves" else None)
            return
        self._built.add(pane)
        await self.query_one(ContentSwitcher).add_content(self._pane_widget(pane))
        if self.detail is not None:
            self._fill(pane)

    def _pane_widget(self, pane: str) -> Widget:
        widget: Widget
        if pane == "idea":
            text = self._idea_text(self.detail) if self.detail else ""
            widget = VerticalScroll(Static(text, id="idea-text"), id="pane-idea")
        elif pane == "lineage":
            widget = OptionList(id="pane-lineage")
        elif pane == "diff":
            from console.widgets.diff_view import DiffView

            widget = DiffView(id="pane-diff")
        elif pane == "attempts":
            widget = VerticalScroll(Static(id="attempts-text"), id="pane-attempts")
        elif pane == "log":
            from console.widgets.log_view import LogView

            widget = LogView(id="pane-log")
        else:
            from console.widgets.metric_chart import MetricCharts

            widget = MetricCharts(id="pane-curves")
        widget.add_class("pane")
        return widget

    async def show_pane(self, pane: str) -> None:
        if pane == self.pane and pane in self._built:
            return
        self.pane = pane
        self.query_one(PaneBar).show(pane)
        await self._build(pane)
        self.query_one(ContentSwitcher).current = f"pane-{pane}"
        if pane in ("log", "curves"):
            self._marker = None  # fetch the newest now
            self._tick()
            self._follow_log()
        self.refresh_bindings()

    async def on_pane_bar_picked(self, message: PaneBar.Picked) -> None:
        await self.show_pane(message.pane)

    async def action_pane(self, step: int) -> None:
        keys = [k for k, _ in PANES]
        await self.show_pane(keys[(keys.index(self.pane) + step) % len(keys)])

    # ------------------------------------------------------------------ loading
    def poll(self) -> Worker[None] | None:
        return self._load(self.idea_id, self._marker, self.pane == "curves")

    @work(thread=True, group="poll", exit_on_error=False, name="load the idea")
    def _load(self, idea_id: int, marker: object, with_series: bool) -> None:
        store = self.console.store()
        now = cq.change_marker(store)
        if now == marker:
            return
        detail = cq.idea_detail(store, idea_id)
        search = cq.get_search(store, detail.idea.search_id) if detail else None
        series = None
        if detail and detail.jobs and with_series:
            series = cq.metric_series(store, detail.jobs[-1].id)
        self.post_message(self.Loaded(idea_id, detail, search, now, series))

    def on_idea_detail_screen_loaded(self, message: Loaded) -> None:
        if message.idea_id != self.idea_id:
            return  # asked for the idea this screen showed before
        self._marker = message.marker
        if message.detail is None:
            self.query_one("#header", Static).update(Text(
                f"no idea #{self.idea_id} in this workspace", style="red"))
            return
        self.detail, self.search = message.detail, message.search
        self.console.remember_detail(self.idea_id, message.marker, message.detail,
                                     message.search)
        self._header()
        # The pane on show now; the others when they are shown next.
        self._fill(self.pane, message.series)
        self._stale = self._built - {self.pane}
        self.refresh_bindings()

    def _header(self) -> None:
        self.query_one("#header", Static).update(self._header_text())

    def _header_text(self) -> Text:
        d, s = self.detail, self.search
        if d is None:
            return Text(f"idea #{self.idea_id} — loading…", style="dim")
        i = d.idea
        baseline = s.baseline if s else None
        goal = s.goal if s else "minimize"
        t = Text()
        t.append(f"#{i.id} ", style="bold")
        t.append(i.title or "", style="bold")
        t.append("\n")
        t.append(f"epoch {i.epoch} · {i.origin} · ")
        t.append(i.status, style=fmt.STATUS_STYLE.get(i.status, ""))
        t.append(f" · {s.metric_name if s else 'score'} ")
        t.append(" ".join(p for p in (fmt.mean_se(i.score, i.score_se, i.runs),
                                      fmt.mark(i.confirmation)) if p),
                 style=fmt.verdict_style(i.score, baseline, goal, i.confirmation))
        if i.score is not None and baseline is not None:
            t.append(f" ({fmt.delta(i.score, baseline)} vs baseline {fmt.score(baseline)})",
                     style="dim")
        t.append(f" · {len(d.attempts)} attempt(s) · {len(d.jobs)} job(s)")
        if d.jobs:
            j = d.jobs[-1]
            t.append(f" · job {j.id} {j.state} on {j.host} · {d.gpu_hours:.4f} GPU h", style="dim")
        if i.reason:
            t.append("\n")
            t.append(fmt.first_line(i.reason, 200), style="yellow")
        b = d.baseline
        said = fmt.confirmation_line(i.score, i.score_se, i.runs, i.confirmation,
                                     (b.score, b.score_se, b.runs) if b else None)
        if said is not None and (i.confirmation or i.runs > 1):
            t.append("\n")
            t.append(said[0], style=said[1])
        if d.twin is not None:
            t.append(f"\n{fmt.TWIN_MARK} a near duplicate of #{d.twin.id} "
                     f"“{fmt.clip(d.twin.title, 60)}” ({d.twin.status}) — open it from the "
                     "Lineage pane", style="magenta")
        if d.twins:
            t.append(f"\n{fmt.TWIN_MARK} nearly repeated by "
                     + ", ".join(f"#{b.id}" for b in d.twins[:8])
                     + (f" +{len(d.twins) - 8}" if len(d.twins) > 8 else ""), style="dim")
        for line, style in fmt.verification_lines(d.verification):
            t.append("\n")
            t.append(line, style=style)
        if i.quarantine == "pending":
            t.append("\n⚠ quarantined: the result is beyond the environment's suspicious "
                     "bound — y accepts it, x discards it", style="bold magenta")
        elif i.quarantine:
            t.append(f"\nquarantine: {i.quarantine}", style="magenta")
        if d.pending:
            t.append(f"\n→ {', '.join(d.pending)} sent; waiting for the engine", style="cyan")
        return t

    def _fill(self, pane: str, series: dict[str, list[tuple[float, float]]] | None = None
              ) -> None:
        d = self.detail
        if d is None:
            return
        if pane == "idea":
            self.query_one("#idea-text", Static).update(self._idea_text(d))
        elif pane == "lineage":
            self._relatives(d)
        elif pane == "diff":
            from console.widgets.diff_view import DiffView

            note = ("no diff: " + (d.idea.reason or d.idea.status)
                    if d.idea.status in ("implement_failed", "rejected", "skipped")
                    else "no diff yet (the idea is not implemented)")
            self.query_one(DiffView).show(d.idea.diff or _last_diff(d), self._split, note)
        elif pane == "attempts":
            self.query_one("#attempts-text", Static).update(self._attempts(d))
        elif pane == "log":
            self._follow_log()
        elif pane == "curves" and series is not None:
            from console.widgets.metric_chart import MetricCharts

            s = self.search
            self.query_one(MetricCharts).show(series, s.metric_name if s else "",
                                              s.baseline if s else None)

    @staticmethod
    def _idea_text(d: IdeaDetail) -> Group:
        parts: list[Text] = [Text(d.idea.text)]
        if d.idea.note:
            parts = [Text("Note: ", style="bold").append(d.idea.note, style="italic"),
                     Text(""), *parts]
        if d.edited_from is not None:
            parts += [Text(""), Text(f"Edited from #{d.edited_from.id} — the original:",
                                     style="bold"),
                      Text(d.edited_from.text, style="dim")]
        edits = [c for c in d.children if c.kind == "edit"]
        if edits:
            parts += [Text(""), Text("Edited into " + ", ".join(f"#{c.id}" for c in edits)
                                     + " (open it from the Lineage pane)", style="italic")]
        if d.jobs:
            parts += [Text(""), *_runs(d)]
        return Group(*parts)

    def _relatives(self, d: IdeaDetail) -> None:
        options = self.query_one("#pane-lineage", OptionList)
        highlighted = options.highlighted if self._relatives_of == d.idea.id else None
        self._relatives_of = d.idea.id
        options.clear_options()
        s = self.search
        def line(kind: str, b: IdeaBrief, suffix: str = "") -> Option:
            t = Text(f"{kind:<9}", style="dim")
            t.append(f"#{b.id:<6}", style="bold")
            t.append(f"{fmt.score(b.score):>9}{fmt.mark(b.confirmation) or ' '} ",
                     style=fmt.verdict_style(b.score, s.baseline if s else None,
                                             s.goal if s else "minimize", b.confirmation))
            t.append(f"{b.status:<16}", style=fmt.STATUS_STYLE.get(b.status, ""))
            # "exploit" is every link's default (a combined catalog idea's too): it says
            # nothing of the relative, whose origin (catalog, explore, human…) does.
            label = b.kind if b.kind and b.kind != "exploit" else b.origin
            t.append(f"{b.title}" + (f"  ({label})" if label else ""))
            # A twin may also be a parent: option ids must differ, the idea is the number.
            return Option(t, id=f"{b.id}{suffix}")
        opts = ([line("parent", b) for b in d.parents] + [line("child", b) for b in d.children]
                + ([line("twin of", d.twin, ".twin")] if d.twin else [])
                + [line("twin", b, ".twin") for b in d.twins])
        if not opts:
            options.add_option(Option(Text("no parents and no children: a founder with no "
                                           "descendants yet", style="dim"), disabled=True))
            return
        options.add_options(opts)
        if highlighted is not None and highlighted < len(opts):
            options.highlighted = highlighted

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.console.open_idea(int(event.option.id.partition(".")[0]))

    @staticmethod
    def _attempts(d: IdeaDetail) -> Group:
        if not d.attempts:
            return Group(Text("no implementation attempts yet", style="dim"))
        parts: list[Text] = []
        for a in d.attempts:
            head = Text(f"attempt {a.number} · {a.model} · ", style="bold")
            head.append(a.outcome, style="green" if a.outcome == "ok" else "red")
            parts.append(head)
            if a.error:
                parts.append(Text(a.error, style="red"))
            if a.repairs:
                parts.append(Text("repaired: " + "; ".join(a.repairs.splitlines()),
                                  style="dim"))
            answer = a.answer.strip().splitlines()
            if answer:
                shown = "\n".join(answer[:15]) + (f"\n… {len(answer) - 15} more lines"
                                                   if len(answer) > 15 else "")
                parts.append(Text(shown, style="dim"))
            parts.append(Text(""))
        return Group(*parts)

    # ------------------------------------------------------------------ the log, followed
    def _follow_log(self) -> None:
        if (self.pane != "log" or "log" not in self._built or self.detail is None
                or not self.is_current):
            return
        if not self.detail.jobs or (self._log_worker and self._log_worker.is_running):
            if not self.detail.jobs:
                from console.widgets.log_view import LogView

                log = self.query_one(LogView)
                log.replace_all("no job has run for this idea yet\n")
            return
        from console.widgets.log_view import LogView

        log = self.query_one(LogView)
        job = self.detail.jobs[-1]
        path = os.path.join(job.job_dir, "output.log") if job.job_dir else None
        self._log_worker = self._read_log(self.idea_id, job, path, log.source,
                                          log.read_offset)

    @work(thread=True, group="log", exit_on_error=False, name="read the job log")
    def _read_log(self, idea_id: int, job: JobView, path: str | None, source: str | None,
                  offset: int) -> None:
        from console.widgets.log_view import read_from

        if path and os.path.exists(path):
            text, new_offset = read_from(path, offset if source == path else 0)
            self.post_message(self.LogRead(idea_id, path, text, new_offset, whole=False))
            return
        # Not on this machine (an SSH host): the tail the engine keeps in the database.
        fresh = cq.get_job(self.console.store(), job.id)
        self.post_message(self.LogRead(idea_id, f"db:{job.id}", (fresh or job).log_tail or
                                       "(no output yet)\n", 0, whole=True))

    def on_idea_detail_screen_log_read(self, message: LogRead) -> None:
        from console.widgets.log_view import LogView

        if message.idea_id != self.idea_id:
            return

        log = self.query_one(LogView)
        log.switch_source(message.source)
        if message.whole:
            log.replace_all(message.text)
        else:
            log.read_offset = message.offset
            log.append(message.text)

    # ------------------------------------------------------------------ decisions
    def on_key(self, event: events.Key) -> None:
        """A key of this screen that cannot apply now says why, instead of doing nothing."""
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            name = binding.action.split("(", 1)[0]
            if name in DETAIL_WHY_NOT and not self.check_action(name, ()):
                event.stop()
                event.prevent_default()
                d = self.detail
                self.notify(why_not_in_detail(self.search, d.idea if d else None,
                                              bool(d and d.pending), name),
                            title=f"{event.key}: {binding.description}", severity="warning")
                return

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        d, s = self.detail, self.search
        writable = d is not None and s is not None and s.status != "imported"
        if action in ("approve", "reject", "edit"):
            allowed = {"approve": fmt.APPROVABLE, "reject": fmt.REJECTABLE,
                       "edit": fmt.EDITABLE}[action]
            return writable and d is not None and d.idea.status in allowed and not d.pending
        if action == "quarantine":
            return writable and d is not None and d.idea.quarantine == "pending"
        if action == "toggle_split":
            return self.pane == "diff"
        return True

    def action_back(self) -> None:
        self.dismiss()

    def action_lineage(self) -> None:
        idea_id = self.idea_id
        self.dismiss()
        self.console.show_lineage(idea_id)

    def action_toggle_split(self) -> None:
        from console.widgets.diff_view import DiffView

        self._split = not self._split
        view = self.query_one(DiffView)
        view.show(view.diff, self._split)

    def action_approve(self) -> None:
        self._decide("approve", None, "approved")

    @work(exclusive=True, group="dialog")
    async def action_reject(self) -> None:
        from console.screens.prompt import PromptScreen

        reason = await self.app.push_screen_wait(PromptScreen(
            f"Reject idea #{self.idea_id}?", self.detail.idea.title if self.detail else "",
            placeholder="why (optional) — the reason steers the next proposals"))
        if reason is not None:
            self._decide("reject", reason or None, "rejected")

    @work(exclusive=True, group="dialog")
    async def action_edit(self) -> None:
        if self.detail is None:
            return
        if self.search is not None and self.search.model == "catalog":
            self.notify("the catalog ideator cannot implement edited text: edit it from the "
                        f"board (e), with a diff, or `ideaforge edit {self.idea_id} --diff "
                        "FILE`", severity="warning")
            return
        text = self.console.edit_text(self.detail.idea.text, f"idea-{self.idea_id}")
        if text is None or text.strip() == self.detail.idea.text.strip():
            if text is not None:
                self.notify("the text is unchanged; nothing was saved")
            return
        self._decide("edit", text, "edit saved as a new version")

    @work(exclusive=True, group="dialog")
    async def action_quarantine(self, verdict: str) -> None:
        if verdict == "discard":
            from console.screens.confirm import ConfirmScreen

            if not await self.app.push_screen_wait(ConfirmScreen(
                    f"Discard the result of #{self.idea_id}?",
                    "It stays in the search, but never becomes a parent.", yes="Discard")):
                return
        self._decide(verdict, None, f"quarantine: {verdict}")

    def _decide(self, action: str, text: str | None, note: str) -> None:
        if self.detail is None or self.search is None:
            return
        if not engine_alive(self.search):
            note += " — no engine is attached: it applies when the search resumes"
        self._send(self.search.id, self.idea_id, action, text, note)

    @work(thread=True, group="decide", exit_on_error=False, name="send the decision")
    def _send(self, search_id: int, idea_id: int, action: str, text: str | None, note: str
              ) -> None:
        ops.add_decision(self.console.store(), search_id, action, idea_id=idea_id,
                         text=text, source="console")
        self.post_message(self.Sent(idea_id, note))

    def on_idea_detail_screen_sent(self, message: Sent) -> None:
        self.notify(f"#{message.idea_id}: {message.note}", title="sent")
        if message.idea_id == self.idea_id:
            self._marker = None
            self._tick()


def _runs(d: IdeaDetail) -> list[Text]:
    """The idea's runs (issue 13), one line per job: its first run, repeats with fresh seeds,
    and retries of a run (same run, same seed, a new attempt)."""
    i = d.idea
    head = Text("Runs", style="bold")
    if i.runs:
        error = f" {fmt.se(i.score_se)}" if i.score_se is not None and i.runs > 1 else ""
        head.append(f" — mean {fmt.score(i.score)}{error} over {i.runs} scored "
                    f"run{'s' if i.runs != 1 else ''}", style="")
        if i.confirmation:
            head.append(f" · {fmt.mark(i.confirmation)} {i.confirmation}",
                        style=fmt.CONFIRMATION_STYLE.get(i.confirmation, ""))
    lines = [head]
    for j in sorted(d.jobs, key=lambda j: (j.run, j.attempt, j.id)):
        t = Text(f"  run {j.run:<3}", style="bold")
        t.append(f" job {j.id:<6}")
        t.append(f" seed {j.seed if j.seed is not None else '-':<11}", style="dim")
        t.append(f" {fmt.score(j.score):>10} ")
        t.append(f"{j.state:<11}", style=fmt.JOB_STATE_STYLE.get(j.state, ""))
        t.append(f" {j.host}", style="dim")
        if j.attempt > 1:
            t.append(f"  (attempt {j.attempt}: a retry of the run)", style="dim")
        if j.reason and j.state not in ("finished", "succeeded"):
            t.append(f"  {fmt.first_line(j.reason, 80)}", style="red")
        lines.append(t)
    return lines


def _last_diff(d: IdeaDetail) -> str | None:
    for attempt in reversed(d.attempts):
        if attempt.diff:
            return attempt.diff
    return None
