"""Metric curves: one textual-plotext plot per metric a job reported."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Static
from textual_plotext import PlotextPlot


class MetricChart(PlotextPlot):
    DEFAULT_CSS = """
    MetricChart { height: 16; min-height: 10; }
    """

    def plot(self, name: str, points: list[tuple[float, float]], baseline: float | None
             ) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(name)
        if points:
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            plt.plot(xs, ys, marker="braille")
            if len(points) == 1:
                plt.scatter(xs, ys)
        if baseline is not None:
            plt.hline(baseline, "red")
        plt.xlabel("step")
        self.refresh()


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
