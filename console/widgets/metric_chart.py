"""Metric curves drawn with textual-plotext: one chart per metric, one or more series in it.

The axes come from the data shown (every series and the reference line, with a little padding),
never plotext's defaults: a single value would otherwise sit as one dot on an axis of 30–90.
A metric with one point per run (a validation loss measured once at the end) is drawn as
labelled markers side by side, one column per series, so that its values can be read.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.containers import VerticalScroll
from textual.widgets import Static
from textual_plotext import PlotextPlot

from console import fmt

#: Plotext's colour names and the ANSI colour each is (the legend draws its swatch in the same).
ANSI = {"red": 1, "green": 2, "orange": 3, "blue": 4, "magenta": 5, "cyan": 6, "green+": 10,
        "orange+": 11, "blue+": 12, "magenta+": 13, "cyan+": 14}
#: Series colours, in the order series are given (red is the baseline's).
PALETTE = ("cyan", "magenta", "green", "orange", "blue+", "cyan+", "magenta+", "green+",
           "orange+")
#: The baseline's colour (its curve, or the environment's declared value as a line).
BASELINE_COLOR = "red"
#: Padding above and below the values shown, as a share of their span.
PAD = 0.08


@dataclass(frozen=True)
class Series:
    label: str  # what the legend and a one-point column say: "#12", "baseline"
    points: tuple[tuple[float, float], ...]  # (step, value)
    color: str


def rich_style(color: str) -> str:
    """The rich style of a plotext colour name, so that a legend matches its curve."""
    return f"color({ANSI[color]})"


def padded(lo: float, hi: float, share: float = PAD) -> tuple[float, float]:
    """[lo, hi] widened by `share` of its span on each side; a single value gets a span of
    a tenth of its size (or 1 around zero) so that it sits in the middle of a real axis."""
    span = hi - lo
    if span <= 0:
        span = abs(hi) * 0.1 or 1.0
        return lo - span / 2, hi + span / 2
    return lo - span * share, hi + span * share


def value_text(value: float) -> str:
    return fmt.score(value) if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"


class MetricChart(PlotextPlot):
    DEFAULT_CSS = """
    MetricChart { height: 16; min-height: 10; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.y_range: tuple[float, float] | None = None
        self.x_range: tuple[float, float] | None = None
        self.single = False  # one point per series: drawn as labelled columns
        self.shown: tuple[Series, ...] = ()

    def plot(self, name: str, points: list[tuple[float, float]], baseline: float | None
             ) -> None:
        """One job's curve, and the environment's baseline as a line (the idea's detail)."""
        self.draw(name, [Series("", tuple(points), PALETTE[0])], baseline)

    def draw(self, name: str, series: list[Series], reference: float | None = None) -> None:
        """Every series on the same axes; `reference`, when given, as a horizontal line."""
        plt = self.plt
        plt.clear_figure()
        plt.title(name)
        series = [s for s in series if s.points]
        self.shown = tuple(series)
        ys = [y for s in series for _, y in s.points]
        if reference is not None:
            ys.append(reference)
        if not ys:
            self.y_range = self.x_range = None
            self.single = False
            self.refresh()
            return
        self.y_range = padded(min(ys), max(ys))
        self.single = bool(series) and all(len(s.points) == 1 for s in series)
        if self.single:
            self._columns(series)
        else:
            self._curves(series)
        if reference is not None:
            plt.hline(reference, BASELINE_COLOR)
        plt.ylim(*self.y_range)
        assert self.x_range is not None
        plt.xlim(*self.x_range)
        self.refresh()

    def _columns(self, series: list[Series]) -> None:
        """One value per series: a labelled marker in a column of its own."""
        plt = self.plt
        for x, s in enumerate(series, start=1):
            value = s.points[0][1]
            plt.text(f"● {value_text(value)}", x, value, color=s.color, alignment="left")
        # room on the right for the last label
        self.x_range = (0.5, len(series) + 0.9)
        plt.xticks(list(range(1, len(series) + 1)),
                   [s.label or f"step {s.points[0][0]:g}" for s in series])

    def _curves(self, series: list[Series]) -> None:
        plt = self.plt
        xs = [x for s in series for x, _ in s.points]
        lo, hi = min(xs), max(xs)
        self.x_range = (lo, hi) if hi > lo else (lo - 1, hi + 1)
        for s in series:
            sx = [p[0] for p in s.points]
            sy = [p[1] for p in s.points]
            if len(s.points) == 1:  # a run that has reported once so far, among curves
                plt.text(f"● {value_text(sy[0])}", sx[0], sy[0], color=s.color,
                         alignment="left")
            else:
                plt.plot(sx, sy, marker="braille", color=s.color)
        plt.xlabel("step")


class MetricCharts(VerticalScroll):
    DEFAULT_CSS = """
    MetricCharts { height: 1fr; }
    MetricCharts > Static { color: $text-muted; padding: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.charts: dict[str, MetricChart] = {}

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("no metrics reported yet", id="no-metrics")

    def show(self, series: dict[str, list[tuple[float, float]]], metric: str,
             baseline: float | None) -> None:
        self.query_one("#no-metrics", Static).display = not series
        for name, chart in self.charts.items():  # a curve the idea shown before had
            chart.display = name in series
        # the search's metric first, the others after it by name
        for name in sorted(series, key=lambda n: (n != metric, n)):
            chart = self.charts.get(name)
            if chart is None:
                chart = self.charts[name] = MetricChart()
                self.mount(chart)
            chart.plot(name, series[name], baseline if name == metric else None)
