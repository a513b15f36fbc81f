"""Mode 2: jobs and hosts — GPUs per host and who holds them, the queue, heartbeats, cancel."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker

from console import commands
from console.screens.base import ConsoleScreen
from console.widgets.hosts_panel import HostsPanel
from console.widgets.jobs_table import JobsTable
from console.widgets.key_bar import KeyBar
from engine.store import StoreError
from engine.store import console_queries as cq
from engine.store.console_queries import HostRow, JobRow
from engine.store.progress import JobProgress, running


class JobsScreen(ConsoleScreen):
    SCOPE = "jobs"
    CSS_PATH = "jobs.tcss"
    BINDINGS = commands.bindings("jobs")

    class Loaded(Message):
        def __init__(self, hosts: list[HostRow], jobs: list[JobRow], marker: object,
                     progress: dict[int, JobProgress] | None = None) -> None:
            super().__init__()
            self.progress = progress or {}
            self.hosts = hosts
            self.jobs = jobs
            self.marker = marker

    def __init__(self) -> None:
        super().__init__()
        self.all_searches = False
        self._marker: object = None

    def compose(self) -> ComposeResult:
        yield Static("Hosts", classes="section")
        yield HostsPanel(id="hosts")
        yield Static("", id="jobs-title", classes="section")
        yield JobsTable(id="jobs")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(JobsTable).focus()
        self.watch(self.app, "search_id", self._scope_changed, init=False)
        self._title()
        self._tick()
        self.start_polling()

    def _scope_changed(self) -> None:
        self._marker = None
        self._title()
        self._tick()

    def _title(self) -> None:
        scope = ("every search" if self.all_searches or self.console.search_id is None
                 else "this search")
        self.query_one("#jobs-title", Static).update(
            f"Jobs of {scope}: queued and running first, then the latest 100 finished "
            "(t: this/all)")

    def poll(self) -> Worker[None] | None:
        sid = None if self.all_searches else self.console.search_id
        return self._load(sid, self._marker)

    @work(thread=True, group="poll", exit_on_error=False, name="list jobs and hosts")
    def _load(self, search_id: int | None, marker: object) -> None:
        try:
            store = self.console.store()
        except StoreError as exc:  # no workspace yet: say so once, quietly
            note = str(exc)
            self.app.call_from_thread(
                lambda: self.query_one("#jobs-title", Static).update(note))
            return
        now = cq.change_marker(store)
        # heartbeats, run times and times left move without events: refresh at least every 5 s
        from console import fmt

        stamp = (now, search_id, int(fmt.clock() // 5))
        if stamp == marker:
            return
        self.post_message(self.Loaded(cq.hosts_overview(store), cq.jobs_overview(store,
                                                                                search_id),
                                      stamp, running(store, search_id)))

    def on_jobs_screen_loaded(self, message: Loaded) -> None:
        self._marker = message.marker
        self.query_one(HostsPanel).show(message.hosts)
        self.query_one(JobsTable).show(message.jobs, message.progress)
        self.refresh_bindings()

    def on_data_table_row_highlighted(self, event: JobsTable.RowHighlighted) -> None:
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_job":
            row = self.query_one(JobsTable).current
            return row is not None and row.job.state in ("queued", "launching", "running")
        return True

    def action_toggle_scope(self) -> None:
        self.all_searches = not self.all_searches
        self._scope_changed()

    def action_open(self) -> None:
        row = self.query_one(JobsTable).current
        if row is not None:
            self.console.open_idea(row.job.idea_id)

    def on_data_table_row_selected(self, event: JobsTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_back(self) -> None:
        self.console.action_mode("ideas")

    @work(exclusive=True, group="dialog")
    async def action_cancel_job(self) -> None:
        row = self.query_one(JobsTable).current
        if row is None:
            return
        from console.screens.confirm import ConfirmScreen

        j = row.job
        if not await self.app.push_screen_wait(ConfirmScreen(
                f"Cancel job {j.id} (idea #{j.idea_id})?",
                "Its process group gets TERM, then KILL; the idea ends as failed "
                "(cancelled).", yes="Cancel job")):
            return
        self._cancel(row)

    @work(thread=True, exit_on_error=False, name="cancel the job")
    def _cancel(self, row: JobRow) -> None:
        j = row.job
        if j.state == "queued" or not j.job_dir:
            self.app.call_from_thread(self.notify, f"job {j.id} has not started yet: nothing "
                                      "runs to cancel", severity="warning")
            return
        if j.executor == "local":
            # The attempt directory's protocol: a `cancel` file asks the runner to stop the
            # job (TERM, then KILL, to its whole process group).
            Path(j.job_dir, "cancel").touch()
            reply = "requested"
        else:  # on an SSH host: the same request through its host agent (`stop --cancel-jobs`)
            from console.cli_hosts import HostsUsageError, cancel_job

            try:
                reply = cancel_job(self.console.store(), j)
            except HostsUsageError as exc:
                self.app.call_from_thread(self.notify, f"job {j.id} on {j.host}: {exc}",
                                          severity="error", markup=False)
                return
        self.app.call_from_thread(self.notify, f"cancel of job {j.id} on {j.host}: {reply}")
