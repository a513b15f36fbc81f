"""`c` on the board: the marked ideas' curves and the baseline's, overlaid on one chart.

One metric at a time (`m` cycles them, the search's own metric first), the same axes for every
series, and a legend that names each series' idea, colour, run, final and best value. Curves of
running jobs grow as their points arrive (the screen polls like the others).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker

from console import commands, fmt
from console.screens.base import ConsoleScreen
from console.widgets.key_bar import KeyBar
from console.widgets.metric_chart import BASELINE_COLOR, PALETTE, MetricChart, Series, rich_style

if TYPE_CHECKING:
    from engine.store.metric_queries import IdeaCurves
    from engine.store.views import SearchView

#: Words in a metric's name that say lower is better, for metrics other than the search's own
#: (whose goal the environment declares).
LOWER_IS_BETTER = ("loss", "error", "perplexity", "ppl", "time", "regret")

#: The most ideas drawn at once (plus the baseline): one colour each, since more curves than
#: colours cannot be told apart, and `*` can mark hundreds.
MAX_IDEAS = len(PALETTE)


def lower_is_better(name: str, search: SearchView) -> bool:
    if name == search.metric_name:
        return search.goal == "minimize"
    return any(word in name.lower() for word in LOWER_IS_BETTER)


class CompareScreen(ConsoleScreen):
    SCOPE = "compare"
    CSS_PATH = "compare.tcss"
    BINDINGS = commands.bindings("compare")

    class Loaded(Message):
        def __init__(self, curves: list[IdeaCurves], baseline_id: int | None,
                     marker: object) -> None:
            super().__init__()
            self.curves = curves
            self.baseline_id = baseline_id
            self.marker = marker

    def __init__(self, search: SearchView, idea_ids: list[int]) -> None:
        super().__init__()
        self.search = search
        unique = list(dict.fromkeys(idea_ids))
        self.idea_ids = unique[:MAX_IDEAS]
        self.left_out = len(unique) - len(self.idea_ids)
        self.curves: list[IdeaCurves] = []
        self.baseline_id: int | None = None
        self.metric = search.metric_name
        self._marker: object = None

    def compose(self) -> ComposeResult:
        yield Static(Text("comparing…", style="dim"), id="compare-header")
        yield MetricChart(id="compare-chart")
        yield Static("", id="compare-legend")
        yield KeyBar()

    @property
    def chart(self) -> MetricChart:
        return self.query_one(MetricChart)

    def on_mount(self) -> None:
        self._poll_worker = self.poll()  # at once: the screen is pushed to show these curves
        self.start_polling()

    # ------------------------------------------------------------------ loading
    def poll(self) -> Worker[None] | None:
        return self._load(self.search.id, tuple(self.idea_ids), self._marker)

    @work(thread=True, group="poll", exit_on_error=False, name="load the curves")
    def _load(self, search_id: int, idea_ids: tuple[int, ...], marker: object) -> None:
        from engine.store import console_queries as cq
        from engine.store import metric_queries as mq

        store = self.console.store()
        now = cq.change_marker(store, search_id)
        if now == marker:
            return
        baseline_id = mq.baseline_idea(store, search_id)
        ids = [i for i in idea_ids if i != baseline_id]
        if baseline_id is not None:
            ids.append(baseline_id)
        self.post_message(self.Loaded(mq.idea_curves(store, ids), baseline_id, now))

    def on_compare_screen_loaded(self, message: Loaded) -> None:
        self._marker = message.marker
        self.curves, self.baseline_id = message.curves, message.baseline_id
        names = self.metrics()
        if self.metric not in names and names:
            self.metric = names[0]
        self.redraw()

    # ------------------------------------------------------------------ drawing
    def metrics(self) -> list[str]:
        """Every metric any series reported: the search's own first, the rest by name."""
        names = {n for c in self.curves for n in c.names()}
        return sorted(names, key=lambda n: (n != self.search.metric_name, n))

    def series(self) -> list[tuple[IdeaCurves, Series, int]]:
        """(idea, its series of the chosen metric, runs that reported it), baseline last."""
        out: list[tuple[IdeaCurves, Series, int]] = []
        colours = iter(PALETTE * (len(self.curves) // len(PALETTE) + 1))
        for c in self.curves:
            base = c.idea_id == self.baseline_id
            colour = BASELINE_COLOR if base else next(colours)
            found = c.series(self.metric)
            points = tuple(found[1]) if found else ()
            label = "baseline" if base else f"#{c.idea_id}"
            out.append((c, Series(label, points, colour), c.runs_with(self.metric)))
        return out

    def redraw(self) -> None:
        shown = self.series()
        has_baseline_curve = any(c.idea_id == self.baseline_id and s.points
                                 for c, s, _ in shown)
        # The environment's declared baseline, as a line, when no baseline run says more.
        reference = (self.search.baseline if self.metric == self.search.metric_name
                     and not has_baseline_curve else None)
        self.chart.draw(self.metric, [s for _, s, _ in shown], reference)
        self.query_one("#compare-header", Static).update(self._header(reference))
        self.query_one("#compare-legend", Static).update(self._legend(shown, reference))

    def _header(self, reference: float | None) -> Text:
        names = self.metrics()
        t = Text(f"Compare · {self.search.name} · ", style="bold")
        if not names:
            t.append("no metrics reported yet by these ideas", style="dim")
            return t
        t.append(self.metric, style="bold cyan")
        t.append(f" ({names.index(self.metric) + 1} of {len(names)}; m: next metric)",
                 style="dim")
        if self.chart.y_range is not None:
            lo, hi = self.chart.y_range
            t.append(f" · y {lo:.4g} – {hi:.4g}", style="dim")
        if self.left_out:
            t.append(f" · the first {MAX_IDEAS} marked ideas shown ({self.left_out} left out)",
                     style="yellow")
        return t

    def _legend(self, shown: list[tuple[IdeaCurves, Series, int]],
                reference: float | None) -> Table:
        low = lower_is_better(self.metric, self.search)
        table = Table(box=None, expand=True, padding=(0, 1), show_edge=False)
        table.add_column("", width=3)
        table.add_column("idea", width=9)
        table.add_column("final", justify="right", width=10)
        table.add_column("best " + ("(lowest)" if low else "(highest)"), justify="right",
                         width=15)
        table.add_column("points", justify="right", width=6)
        table.add_column("run", width=10)
        table.add_column("title", ratio=1, no_wrap=True, overflow="ellipsis")
        for c, s, runs in shown:
            values = [v for _, v in s.points]
            job = c.series(self.metric)
            run = (f"{job[0].run} of {runs}" if job and runs > 1 else
                   str(job[0].run) if job else "-")
            if values:
                best = min(values) if low else max(values)
                final, best_text = fmt.score(values[-1]), fmt.score(best)
            else:
                final, best_text = "-", "no points"
            table.add_row(Text("━━", style=rich_style(s.color)), Text(s.label, style="bold"),
                          final, best_text, str(len(values)), run, fmt.clip(c.title, 80))
        if reference is not None:
            table.add_row(Text("──", style=rich_style(BASELINE_COLOR)),
                          Text("declared", style="bold"), fmt.score(reference), "", "", "",
                          "the environment's baseline value (no baseline run reported it)")
        return table

    # ------------------------------------------------------------------ actions
    def action_metric(self, step: int) -> None:
        names = self.metrics()
        if not names:
            self.notify("no metrics reported yet by these ideas", severity="warning")
            return
        index = names.index(self.metric) if self.metric in names else -step
        self.metric = names[(index + step) % len(names)]
        self.redraw()

    def action_close(self) -> None:
        self.dismiss()
