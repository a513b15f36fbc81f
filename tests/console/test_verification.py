"""Which evaluator judged an idea, shown to the researcher: the board's marks, the detail
screen, `ideaforge show` and the `--json` listings, on the toy workspace (tests/console/builders:
a verified, b verified but flagged, the crash judged by nothing, the cross unverified)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Static

from console.app import IdeaforgeApp
from console.screens.help import HelpScreen
from console.screens.idea_detail import IdeaDetailScreen
from engine.store import console_queries, job_ops, ops, verification
from tests.conftest import cli
from tests.console.builders import EVALUATOR, TRAINING_SCORE_FLAG, Built
from tests.console.helpers import board, cursor_to, until

MakeApp = Callable[..., IdeaforgeApp]

OTHER = "0123456789abcdef" * 4  # an evaluator whose files changed since the search began
NOT_RANKED = (f"not ranked: scored by evaluator {OTHER[:12]}, but this search ranks by "
              f"{EVALUATOR[:12]} (the evaluator's files changed since the search began)")


def text_of(static: Static) -> str:
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(static.content)
    return console.export_text()


def board_line(pilot: Pilot[Any], idea_id: int) -> str:
    """The board's line for an idea, as drawn on screen."""
    b = board(pilot)
    index = next(i for i, r in b._rows.items() if r.id == idea_id)
    return b.render_line(index - int(b.scroll_y) + 1).text


def finish_with_other_evaluator(built: Built) -> int:
    """The running idea's job ends scored by another evaluator: the engine does not rank it."""
    job_ops.finish_job(built.store, built.jobs["running"], state="finished", exit_code=0,
                       reason=NOT_RANKED, log_tail="", idea_status="failed", score=None,
                       quarantine=None, idea_reason=NOT_RANKED, message="not ranked",
                       evaluator=OTHER, flags=(NOT_RANKED,))
    return built.ideas["running"]


async def test_board_marks_unverified_scores_and_flagged_ideas(make_app: MakeApp,
                                                               built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        assert "0.2000?" in board_line(pilot, built.ideas["cross"])  # unverified
        assert "4.0000?" not in board_line(pilot, built.ideas["a"])  # verified
        assert "⚑ Raise bonus B" in board_line(pilot, built.ideas["b"])
        assert "⚑" not in board_line(pilot, built.ideas["a"])
        await pilot.press("question_mark")
        help_ = await until(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen,
                            what="help")
        legend = text_of(help_.query_one("#keys", Static))
        assert "unverified score" in legend and "⚑" in legend


async def open_detail(pilot: Pilot[Any], idea_id: int) -> str:
    """Open an idea from the board; the detail's header as plain text."""
    await until(pilot, lambda: board(pilot).total == 11, what="the board")
    await cursor_to(pilot, idea_id)
    await pilot.press("enter")
    screen = await until(pilot, lambda: isinstance(pilot.app.screen, IdeaDetailScreen)
                         and pilot.app.screen.detail is not None
                         and pilot.app.screen.detail.idea.id == idea_id and pilot.app.screen,
                         what="the detail")
    header = text_of(screen.query_one("#header", Static))
    await pilot.press("escape")
    return header


async def test_detail_says_who_scored_the_idea_and_lists_its_flags(make_app: MakeApp,
                                                                   built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        flagged = await open_detail(pilot, built.ideas["b"])
        assert f"verified by evaluator {EVALUATOR[:12]}" in flagged
        assert f"flagged: {TRAINING_SCORE_FLAG}" in flagged
        old = await open_detail(pilot, built.ideas["cross"])
        assert "unverified: scored by the training process itself (no evaluation stage)" in old
        assert "flagged" not in old
        crashed = await open_detail(pilot, built.ideas["crash"])
        assert "verified" not in crashed and "flagged" not in crashed


async def test_detail_of_a_result_from_another_evaluator(make_app: MakeApp,
                                                         built: Built) -> None:
    idea_id = finish_with_other_evaluator(built)
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        header = await open_detail(pilot, idea_id)
        assert (f"not ranked: scored by another evaluator ({OTHER[:12]}; the search ranks by "
                f"{EVALUATOR[:12]})") in header
        assert f"flagged: {NOT_RANKED}" in header


def test_show_and_json_say_who_scored_each_idea(built: Built) -> None:
    ws = built.store.workspace
    other = finish_with_other_evaluator(built)
    b, cross = built.ideas["b"], built.ideas["cross"]

    shown = cli("show", str(b), workspace=ws, check=True).stdout.splitlines()
    assert f"verified by evaluator {EVALUATOR[:12]}" in shown
    assert f"flagged: {TRAINING_SCORE_FLAG}" in shown
    shown = cli("show", str(cross), workspace=ws, check=True).stdout.splitlines()
    assert "unverified: scored by the training process itself (no evaluation stage)" in shown
    assert not any(line.startswith("flagged:") for line in shown)
    shown = cli("show", str(other), workspace=ws, check=True).stdout.splitlines()
    assert (f"not ranked: scored by another evaluator ({OTHER[:12]}; the search ranks by "
            f"{EVALUATOR[:12]})") in shown

    one = json.loads(cli("show", str(b), "--json", workspace=ws, check=True).stdout)
    assert (one["verified"], one["evaluator"], one["flags"]) == (
        "verified", EVALUATOR, [TRAINING_SCORE_FLAG])
    assert one["jobs"] and one["score"] == 4.5  # the keys it had before stay

    rows = {r["id"]: r for r in json.loads(
        cli("ideas", "toy-1", "--json", workspace=ws, check=True).stdout)}
    assert (rows[cross]["verified"], rows[cross]["evaluator"], rows[cross]["flags"]) == (
        "unverified", None, [])
    assert rows[b]["flags"] == [TRAINING_SCORE_FLAG]
    assert (rows[other]["verified"], rows[other]["evaluator"]) == ("other evaluator", OTHER)
    assert rows[built.ideas["a"]]["verified"] == "verified"
    # Judged by nothing: a crash before any evaluation, an idea never run.
    for key in ("crash", "p1"):
        assert (rows[built.ideas[key]]["verified"], rows[built.ideas[key]]["flags"]) == (
            None, [])


def test_the_latest_ended_job_decides_and_flags_add_up(built: Built) -> None:
    """A retry: the first run (from before the evaluation stage) crashed with a flag; the second
    is judged by the evaluator and flagged again with the same line and one more."""
    store = built.store
    idea = ops.add_idea(store, built.search_id, 1, ops.NewIdea(text="[Experiment] Retry me.",
                                                               origin="explore"))
    ops.transition_idea(store, idea, "proposed", "implemented", diff="")
    flags = iter([(TRAINING_SCORE_FLAG,), (TRAINING_SCORE_FLAG, "exit record not signed")])
    for state, status, evaluator, from_states in (
            ("failed", "failed", None, ("implemented",)),
            ("finished", "scored", EVALUATOR, ("failed",))):
        job = job_ops.enqueue_job(store, idea, profile="smoke", gpus_wanted=0,
                                  from_states=from_states)
        assert job is not None
        job_ops.update_job(store, job, state="running")
        assert job_ops.finish_job(store, job, state=state, exit_code=0, reason=None,
                                  log_tail="", idea_status=status, score=3.0, quarantine=None,
                                  idea_reason=None, message="done", evaluator=evaluator,
                                  flags=next(flags))
    got = console_queries.verifications(store, [idea])[idea]
    assert got == verification.Verification(
        "verified", EVALUATOR, EVALUATOR, (TRAINING_SCORE_FLAG, "exit record not signed"))
    assert console_queries.verifications(store, search_id=built.search_id)[idea] == got
    assert console_queries.idea_detail(store, idea).verification == got
