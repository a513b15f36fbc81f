"""GPU hosts: which job holds each GPU, how many jobs run and wait, the newest heartbeat."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from console import fmt
from engine.store.console_queries import HostRow


class HostsPanel(DataTable[Text | str]):
    DEFAULT_CSS = """
    HostsPanel { height: auto; max-height: 10; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", show_cursor=False)
        self.shown: set[str] = set()

    def on_mount(self) -> None:
        for key, label in (("host", "host"), ("gpus", "GPUs held (gpu → job)"),
                           ("running", "running"), ("queued", "queued"),
                           ("beat", "newest heartbeat")):
            self.add_column(label, key=key)

    def show(self, hosts: list[HostRow]) -> None:
        fresh = {h.host: h for h in hosts}
        for gone in self.shown - set(fresh):
            self.remove_row(gone)
        for name, h in fresh.items():
            gpus = (Text("  ".join(f"{g}→#{j}" for g, j in sorted(h.leases.items())))
                    if h.leases else Text("none leased", style="dim"))
            beat = fmt.age(h.last_heartbeat)
            stale = h.last_heartbeat is not None and fmt.clock() - h.last_heartbeat > 120
            cells = [Text(name, style="bold"), gpus, str(h.running), str(h.queued),
                     Text(beat, style="red" if stale else "")]
            if name in self.shown:
                for key, value in zip(("host", "gpus", "running", "queued", "beat"), cells,
                                      strict=True):
                    self.update_cell(name, key, value)
            else:
                self.add_row(*cells, key=name)
        self.shown = set(fresh)
