"""The lines above the ideas board: where the search stands, and what it waits for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from console import fmt

if TYPE_CHECKING:
    from engine.store.console_queries import SearchSummary
    from engine.store.views import SearchView

#: An engine that has not written its heartbeat for this long is taken for gone.
ENGINE_STALE_S = 30.0


def engine_alive(search: SearchView) -> bool:
    return bool(search.engine_pid and search.engine_heartbeat
                and fmt.clock() - search.engine_heartbeat < ENGINE_STALE_S)


def at_gate(search: SearchView) -> bool:
    return search.status not in ("imported", "finished") and search.phase in (
        "review_ideas", "review_diffs")


def epoch_label(search: SearchView) -> str:
    """Epochs count from 0, as on the board and in `ideaforge ideas --epoch N`."""
    return f"epoch {search.epoch} (of 0–{search.epochs - 1})"


class SearchHeader(Static):
    DEFAULT_CSS = """
    SearchHeader { height: auto; padding: 0 1; background: $boost; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.summary: SearchSummary | None = None
        self.view_line = ""
        self.empty_note = "opening the workspace…"

    def show(self, summary: SearchSummary | None, view_line: str | None = None) -> None:
        self.summary = summary
        if view_line is not None:
            self.view_line = view_line
        self.update(self.render_text())

    def set_view_line(self, line: str) -> None:
        if line != self.view_line:
            self.view_line = line
            self.update(self.render_text())

    def render_text(self) -> Text:
        if self.summary is None:
            return Text(self.empty_note, style="dim")
        s = self.summary.search
        t = Text()
        t.append(s.name, style="bold")
        t.append("  ")
        t.append(f"● {s.status}", style=fmt.SEARCH_STATUS_STYLE.get(s.status, ""))
        if s.status != "imported":
            t.append(f" · {epoch_label(s)} · {s.phase}")
        t.append(f" · {s.env_name}/{s.profile} · model {s.model}", style="dim")
        t.append("\n")
        for text, style in fmt.best_parts(self.summary):
            t.append(text, style=style)
        t.append(f" · {fmt.money(self.summary.cost_usd)} · {self.summary.gpu_hours:.2f} GPU h")
        counts = self.summary.ideas
        if counts:
            t.append(" · " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                     style="dim")
        notice = self._notice(s)
        if notice is not None:
            t.append("\n")
            t.append_text(notice)
        if self.view_line:
            t.append("\n")
            t.append(self.view_line, style="italic")
        return t

    def _notice(self, s: SearchView) -> Text | None:
        if s.status == "imported":
            return Text("imported read-only: browse it; it cannot run or take decisions",
                        style="magenta")
        alive = engine_alive(s)
        waiting = self.summary.ideas.get("proposed" if s.phase == "review_ideas"
                                         else "diff_review", 0) if self.summary else 0
        if at_gate(s) and waiting:
            what = "ideas" if s.phase == "review_ideas" else "diffs"
            line = Text(f"⏸ gate: {waiting} {what} wait for a decision — a approve · "
                        "r reject · e edit · g go", style="bold yellow")
            if not alive:
                line.append("  (no engine attached: R resumes)", style="yellow")
            return line
        if s.status in ("running", "created") and not alive:
            return Text("no engine is attached to this search: R resumes it", style="yellow")
        if self.summary and self.summary.pending_decisions:
            return Text(f"{self.summary.pending_decisions} decision(s) on their way to the "
                        "engine", style="cyan")
        if at_gate(s) and alive:  # all decided; the engine waits for go (issue 15)
            what = "idea" if s.phase == "review_ideas" else "diff"
            return Text(f"⏸ gate: every {what} is decided — g go releases it",
                        style="bold yellow")
        if s.message:
            return Text(s.message, style="dim")
        return None
