"""Repeats and confirmation as the researcher sees them (issue 13): the board's mean ± error
and run count with ✓ ○ ✗ marks, the best being the best *confirmed* idea (not a higher
unconfirmed one), the runs and the confirmation in the detail, the twin link, the lineage's
marks and the `c:` filter — on the toy workspace (tests/console/builders) given repeats as the
engine writes them: a (#2) confirmed over 3 runs, b refuted over 2, a lucky new idea that
leads on one run, the baseline measured 3 times, and p3 a near duplicate of a."""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import OptionList, Static

from console import filtering, fmt
from console.app import IdeaforgeApp
from console.screens import searches
from console.screens.idea_detail import IdeaDetailScreen
from console.screens.lineage import LineageScreen
from console.widgets import jobs_table
from console.widgets.lineage_tree import LineageTree
from engine.store import console_queries as cq
from engine.store import first_frame as ff
from engine.store import job_ops, ops
from tests.console.builders import Built, _run_job
from tests.console.helpers import board, cursor_to, header_text, until

MakeApp = Callable[..., IdeaforgeApp]

A_RUNS = [4.0, 4.02, 3.99]
B_RUNS = [4.5, 4.9]
BASE_RUNS = [5.0, 5.01, 4.99]


def _repeat(built: Built, idea_id: int, scores: list[float]) -> None:
    """Runs 2… of an idea, as the engine queues and finishes repeats; then its mean and error."""
    store = built.store
    for run, score in enumerate(scores[1:], start=2):
        job = job_ops.enqueue_run(store, idea_id, run, seed=1000 + run, profile="smoke",
                                  gpus_wanted=0, why="a repeat: is its lead real?")
        assert job is not None
        job_ops.update_job(store, job, state="running", host="local")
        job_ops.finish_job(store, job, state="finished", exit_code=0, reason=None,
                           log_tail="", idea_status="scored", score=score, quarantine=None,
                           idea_reason=None, message=f"job {job} done")
    ops.set_idea_fields(store, idea_id, score=statistics.fmean(scores), runs=len(scores),
                        score_se=statistics.stdev(scores) / len(scores) ** 0.5)


@pytest.fixture
def repeats(built: Built) -> Built:
    store, sid = built.store, built.search_id
    ops.update_search(store, sid, confirm="top-4", baseline_runs=3)
    _repeat(built, built.ideas["baseline"], BASE_RUNS)
    _repeat(built, built.ideas["a"], A_RUNS)
    ops.set_idea_fields(store, built.ideas["a"], confirmation="confirmed")
    _repeat(built, built.ideas["b"], B_RUNS)
    ops.set_idea_fields(store, built.ideas["b"], confirmation="refuted")
    lucky = ops.add_idea(store, sid, 1, ops.NewIdea(
        text="[Experiment] A lucky draw.\n[Code Changes] Nothing real.", origin="explore",
        status="implemented"))
    built.ideas["lucky"] = lucky
    _run_job(store, built, "lucky", lucky, score=3.5, curve=[6.0, 3.5])
    ops.set_idea_fields(store, lucky, runs=1, confirmation="unconfirmed")
    ops.set_idea_fields(store, built.ideas["p3"], twin_of=built.ideas["a"])
    return built


def line_of(pilot: Pilot[Any], idea_id: int) -> str:
    b = board(pilot)
    index = next(i for i, r in b._rows.items() if r.id == idea_id)
    return b.render_line(index - int(b.scroll_y) + 1).text


def text_of(renderable: Any) -> str:
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


async def test_board_header_and_lineage_show_means_marks_and_the_confirmed_best(
        make_app: MakeApp, repeats: Built) -> None:
    ideas = repeats.ideas
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 12 and "leading" in header_text(pilot),
                    what="the board", state=lambda: header_text(pilot))
        a = line_of(pilot, ideas["a"])
        assert "4.0033 ✓" in a and "±0.0088 ×3" in a, a
        b = line_of(pilot, ideas["b"])
        assert "4.7000 ✗" in b and "±0.20 ×2" in b, b
        lucky = line_of(pilot, ideas["lucky"])
        assert "3.5000 ○" in lucky and "×" not in lucky, lucky  # one run: no ± and no ×n
        assert "≈#2 Combine #2 with the warm-up" in line_of(pilot, ideas["p3"])
        # The best is the confirmed idea, not the lucky one that scores better once.
        header = header_text(pilot)
        assert f"best score 4.0033 ±0.0088 ×3 ✓ #{ideas['a']}" in header, header
        assert f"leading #{ideas['lucky']} 3.5000 ○ (unconfirmed, 1 run)" in header, header

        await pilot.press("slash")
        await pilot.press(*"c:conf", "enter")
        await until(pilot, lambda: board(pilot).total == 1, what="the c:confirmed filter")
        assert board(pilot).current is not None and board(pilot).current.id == ideas["a"]

        await pilot.press("3")
        tree = await until(pilot, lambda: isinstance(app.screen, LineageScreen)
                           and len(app.screen.query_one(LineageTree).root.children) == 2
                           and app.screen.query_one(LineageTree), what="founders")
        labels = [str(n.label) for n in tree.root.children]
        assert any(f"#{ideas['a']} [4.0033 ±0.0088 ×3 ✓]" in x for x in labels), labels
        assert any(f"#{ideas['b']} [4.7000 ±0.20 ×2 ✗]" in x for x in labels), labels

        await pilot.press("question_mark")
        legend = await until(pilot, lambda: app.screen.query("#keys") and text_of(
            app.screen.query_one("#keys", Static).content), what="help")
        for meaning in fmt.CONFIRMATION_MEANING.values():
            assert meaning.split(":")[0] in legend
        assert "✓" in legend and "○" in legend and "✗" in legend and "≈#N" in legend


async def open_detail(pilot: Pilot[Any], idea_id: int) -> IdeaDetailScreen:
    await until(pilot, lambda: board(pilot).total == 12, what="the board")
    await cursor_to(pilot, idea_id)
    await pilot.press("enter")
    return await until(pilot, lambda: isinstance(pilot.app.screen, IdeaDetailScreen)
                       and pilot.app.screen.detail is not None
                       and pilot.app.screen.detail.idea.id == idea_id and pilot.app.screen,
                       what=f"the detail of #{idea_id}")


async def test_detail_lists_runs_says_the_confirmation_and_links_the_twin(
        make_app: MakeApp, repeats: Built) -> None:
    ideas = repeats.ideas
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        screen = await open_detail(pilot, ideas["a"])
        header = text_of(screen.query_one("#header", Static).content)
        assert "score 4.0033 ±0.0088 ×3 ✓" in header, header
        assert ("✓ confirmed: repeats with fresh seeds upheld its lead over the baseline — "
                "mean 4.0033 ±0.0088 over 3 runs · baseline 5.0000 ±0.0058 over 3 runs"
                ) in header, header
        body = text_of(screen.query_one("#idea-text", Static).content)
        assert "Runs — mean 4.0033 ±0.0088 over 3 scored runs · ✓ confirmed" in body, body
        runs = [line.split() for line in body.splitlines() if line.strip().startswith("run ")]
        assert [(r[1], r[6], r[7]) for r in runs] == [
            ("1", "4.0000", "finished"), ("2", "4.0200", "finished"),
            ("3", "3.9900", "finished")], runs
        assert [r[5] for r in runs] == ["-", "1002", "1003"]  # the seeds
        await pilot.press("escape")

        screen = await open_detail(pilot, ideas["p3"])
        header = text_of(screen.query_one("#header", Static).content)
        assert f"≈ a near duplicate of #{ideas['a']} “Raise bonus A to 1.0" in header, header
        await pilot.press("right_square_bracket")  # the Lineage pane: parents, children, twin
        options = await until(pilot, lambda: screen.query("#pane-lineage") and screen.query_one(
            "#pane-lineage", OptionList).option_count and screen.query_one(
            "#pane-lineage", OptionList), what="the lineage pane")
        twin = next(i for i in range(options.option_count)
                    if options.get_option_at_index(i).id == f"{ideas['a']}.twin"
                    and "twin of" in str(options.get_option_at_index(i).prompt))
        options.highlighted = twin
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen)
                    and app.screen.detail is not None
                    and app.screen.detail.idea.id == ideas["a"], what="the twin opened")


def test_the_best_is_confirmed_and_none_confirmed_says_who_leads(repeats: Built) -> None:
    store, ideas = repeats.store, repeats.ideas
    (summary,) = cq.search_summaries(store, repeats.search_id)
    assert summary.best_idea is not None and summary.best_idea.id == ideas["a"]
    assert summary.leading is not None and summary.leading.id == ideas["lucky"]

    ops.set_idea_fields(store, ideas["a"], confirmation="unconfirmed")
    (summary,) = cq.search_summaries(store, repeats.search_id)
    assert summary.best is None and summary.best_idea is None
    said = "".join(text for text, _ in fmt.best_parts(summary))
    assert said.startswith(f"best score: none confirmed yet — leading #{ideas['lucky']} "
                           "3.5000 ○ (unconfirmed, 1 run)"), said
    cells = searches._cells(summary)
    assert "(3.5000 ○)" in str(cells[5])

    ops.update_search(store, repeats.search_id, confirm="off")  # the best is the best mean
    (summary,) = cq.search_summaries(store, repeats.search_id)
    assert summary.best_idea is not None and summary.best_idea.id == ideas["lucky"]
    assert summary.leading is None and "none confirmed" not in str(Text().join(
        Text(t) for t, _ in fmt.best_parts(summary)))


def test_the_confirmation_filter_reads_alike_in_both_readers(repeats: Built) -> None:
    f = filtering.parse("c:un,ref confirm:confirmed c:maybe")
    assert f.confirmations == ("unconfirmed", "refuted", "confirmed")
    assert f.problems and "unknown confirmation 'maybe'" in f.problems[0]
    query = cq.BoardQuery(search_id=repeats.search_id, confirmations=("refuted", "confirmed"))
    want = cq.board_page(repeats.store, query, 0, 50)
    with ff.reader(repeats.store.workspace) as conn:
        assert ff.board_page(conn, query, 0, 50) == want
    assert {r.id for r in want.rows} == {repeats.ideas["a"], repeats.ideas["b"]}
    assert [(r.runs, r.confirmation) for r in want.rows if r.id == repeats.ideas["a"]] == [
        (3, "confirmed")]


def test_the_jobs_table_says_which_run_a_repeat_is(repeats: Built) -> None:
    rows = cq.jobs_overview(repeats.store, repeats.search_id)
    ideas = {jobs_table._cells(r)[1] for r in rows if r.job.idea_id == repeats.ideas["a"]}
    assert ideas == {f"#{repeats.ideas['a']}", f"#{repeats.ideas['a']} run 2",
                     f"#{repeats.ideas['a']} run 3"}
