"""Jobs: the queue and what runs, then what finished lately; rows update in place by id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import DataTable

from console import fmt
from engine.store.console_queries import JobRow

if TYPE_CHECKING:  # loaded by the screen's worker, with the rows
    from engine.store.progress import JobProgress
    from engine.store.views import JobView

COLUMNS = (("job", "job"), ("idea", "idea"), ("state", "state"), ("host", "host"),
           ("gpus", "GPUs"), ("beat", "heartbeat"), ("time", "run time"),
           ("progress", "progress"),  # step · train metric · time left
           ("exit", "exit / reason"), ("search", "search"), ("title", "idea title"))


class JobsTable(DataTable[Text | str]):
    DEFAULT_CSS = """
    JobsTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.rows_by_id: dict[int, JobRow] = {}
        self.progress: dict[int, JobProgress] = {}  # job id → how far it got (running jobs)

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    @property
    def current(self) -> JobRow | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.rows_by_id.get(int(key)) if key is not None else None

    def show(self, rows: list[JobRow], progress: dict[int, JobProgress] | None = None) -> None:
        self.progress = progress or {}
        fresh = {r.job.id: r for r in rows}
        order_changed = list(fresh) != list(self.rows_by_id)
        if order_changed:
            current = self.current
            self.clear()
            for job_id, row in fresh.items():
                self.add_row(*_cells(row, self.progress.get(job_id)), key=str(job_id))
            if current is not None and current.job.id in fresh:
                self.move_cursor(row=self.get_row_index(str(current.job.id)))
        else:
            for job_id, row in fresh.items():
                if row != self.rows_by_id.get(job_id) or row.job.state == "running":
                    cells = _cells(row, self.progress.get(job_id))
                    for (key, _), value in zip(COLUMNS, cells, strict=True):
                        self.update_cell(str(job_id), key, value, update_width=True)
        self.rows_by_id = fresh


def _cells(row: JobRow, progress: JobProgress | None = None) -> list[Text | str]:
    j = row.job
    now = fmt.clock()
    end = j.finished_at if j.finished_at is not None else now
    waits = j.finished_at is None and j.external_state in _WAITING  # in Slurm's queue
    runtime = fmt.duration(end - j.started_at) if j.started_at and not waits else "-"
    beat = fmt.age(j.heartbeat_at) if j.state in ("running", "unreachable") else ""
    exit_ = "" if j.exit_code is None else f"exit {j.exit_code}"
    if j.reason:
        exit_ = f"{exit_} {j.reason}".strip()
    gpus = j.gpus or ("cpu" if j.gpus_wanted == 0 else f"wants {j.gpus_wanted}")
    # A repeat (issue 13) says which run of its idea it is; a retry keeps its run's number.
    idea = f"#{j.idea_id}" + (f" run {j.run}" if j.run > 1 else "")
    state = Text(j.state, style=fmt.JOB_STATE_STYLE.get(j.state, ""))
    return [str(j.id), idea, state.append(_scheduler_state(j), style="dim"),
            _host(j), gpus, beat, runtime,
            progress.label(now) if progress is not None and j.state == "running" else "",
            exit_, row.search_name, fmt.clip(row.idea_title, 60)]


#: A scheduler's states that say the job still waits or runs: stale once it has ended.
_WAITING = ("PENDING", "CONFIGURING", "REQUEUED", "SUSPENDED")
_LIVE = ("RUNNING", "COMPLETING", *_WAITING)


def _scheduler_state(j: JobView) -> str:
    """Slurm's word after ours: " · PENDING (Resources)", " · RUNNING", " · OUT_OF_MEMORY"."""
    if not j.external_state or (j.finished_at is not None and j.external_state in _LIVE):
        return ""
    return f" · {j.external_state}" + (f" ({j.external_reason})" if j.external_reason
                                        and j.external_state == "PENDING" else "")


def _host(j: JobView) -> str:
    """The host; for a Slurm job its Slurm job id and, once placed, its node."""
    if not j.external_id:
        return j.host
    return f"{j.host} {j.external_id}" + (f" on {j.node}" if j.node else "")
