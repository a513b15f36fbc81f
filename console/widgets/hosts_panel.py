"""GPU hosts, idle ones included: which job holds each GPU and which are free or busy with
foreign processes, whether the host answers, how many jobs run and wait, the newest heartbeat."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby

from rich.text import Text
from textual.widgets import DataTable

from console import fmt
from engine.store.console_queries import HostRow

COLUMNS = (("host", "host"), ("gpus", "GPUs (gpu → job, free, foreign)"), ("state", "state"),
           ("running", "running"), ("queued", "queued"), ("beat", "newest heartbeat"))
STALE_S = 120.0  # an inventory older than this: the engine is not polling the host now
ERROR_WIDTH = 48


def _ranges(gpus: Iterable[int]) -> str:
    """`0-3,6`: runs of consecutive GPU indices."""
    out = []
    for _, pairs in groupby(enumerate(sorted(gpus)), key=lambda pair: pair[1] - pair[0]):
        run = [g for _, g in pairs]
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def _short(message: str, host: str) -> str:
    """The first line, without the `host NAME: ` the fleet's errors start with (the row says)."""
    first = message.strip().splitlines()[0] if message.strip() else message
    first = first.removeprefix(f"host {host}: ")
    return first if len(first) <= ERROR_WIDTH else first[:ERROR_WIDTH - 1] + "…"


def gpus_cell(h: HostRow) -> Text:
    """`0→#12 1→#12  free 2-5  foreign 6,7`; leases alone where the GPUs were never polled."""
    if h.gpus is None and not h.leases:
        return Text("none leased", style="dim")
    if h.gpus is not None and not h.gpus and not h.leases:
        return Text("no GPUs", style="dim")
    parts = [Text(f"{g}→#{job}", style="bold blue") for g, job in sorted(h.leases.items())]
    if h.free and h.reachable is False:  # what it had when it last answered: unknown now
        parts.append(Text(f"last known {_ranges(h.free)}", style="dim"))
    elif h.free:
        parts.append(Text.assemble(("free ", "green"), (_ranges(h.free), "bold green")))
    busy = [g for g in h.foreign if g not in h.leases]
    if busy:
        parts.append(Text.assemble(("foreign ", "yellow"), (_ranges(busy), "bold yellow")))
    cell = Text(" ").join(parts[:len(h.leases)])
    rest = Text("  ").join(parts[len(h.leases):])
    return Text("  ").join(p for p in (cell, rest) if p)


def state_cell(h: HostRow) -> Text:
    """ok / unreachable: why / quarantined (for how long): why; `-` for a host never polled."""
    now = fmt.clock()
    if h.quarantined_until is not None and h.quarantined_until > now:
        why = f": {_short(h.quarantine_error, h.host)}" if h.quarantine_error else ""
        left = fmt.age(now, now=h.quarantined_until)  # the time still to go
        return Text(f"quarantined ({left} left){why}", style="bold red")
    if h.reachable is None:
        return Text("-", style="dim")
    if not h.reachable:
        return Text(f"unreachable: {_short(h.error or 'not connected yet', h.host)}", style="red")
    cell = Text("ok", style="green")
    if h.error:  # it answers, but its GPUs could not be read
        cell.append(f"; GPUs: {_short(h.error, h.host)}", style="yellow")
    if h.seen_at is not None and now - h.seen_at > STALE_S:
        cell.append(f" (seen {fmt.age(h.seen_at)} ago)", style="dim")
    return cell


class HostsPanel(DataTable[Text | str]):
    DEFAULT_CSS = """
    HostsPanel { height: auto; max-height: 10; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", show_cursor=False)
        self.shown: set[str] = set()

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show(self, hosts: list[HostRow]) -> None:
        fresh = {h.host: h for h in hosts}
        for gone in self.shown - set(fresh):
            self.remove_row(gone)
        for name, h in fresh.items():
            beat = fmt.age(h.last_heartbeat)
            stale = h.last_heartbeat is not None and fmt.clock() - h.last_heartbeat > 120
            cells = [Text(name, style="bold"), gpus_cell(h), state_cell(h), str(h.running),
                     str(h.queued), Text(beat, style="red" if stale else "")]
            if name in self.shown:
                for (key, _), value in zip(COLUMNS, cells, strict=True):
                    self.update_cell(name, key, value, update_width=True)
            else:
                self.add_row(*cells, key=name)
        self.shown = set(fresh)
