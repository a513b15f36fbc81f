"""Conventions shared by every node that runs workers.

Workers report failure through `Worker.StateChanged`, which does not bubble; each screen and
widget with workers mixes in `ReportsWorkerErrors`, which hands the failure to the one handler
on the app (`IdeaforgeApp.report_worker_error`) that turns it into a notification.
"""

from __future__ import annotations

from textual.worker import Worker, WorkerState


def busy(worker: Worker[object] | None) -> bool:
    """True while a worker is queued or running: a poll skips its turn rather than overlap."""
    return worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)


class ReportsWorkerErrors:
    """Mixin for screens and widgets: failed workers become one notification on the app."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            report = getattr(self.app, "report_worker_error", None)  # type: ignore[attr-defined]
            if report is not None:
                report(event.worker)
