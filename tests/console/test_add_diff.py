"""Issue 15, bug 9, in the console: the add dialog takes a diff file, checks it against the
search's environment before anything is sent, and refuses what the catalog ideator cannot
implement; an edit under the catalog asks for its diff the same way. A real engine runs the
toy environment's catalog search, and the scores say which diffs ran."""

from __future__ import annotations

import json
from pathlib import Path

from textual.widgets import Input, Static, TextArea

from console.app import IdeaforgeApp
from console.screens.add_idea import AddIdeaScreen
from console.screens.confirm import ConfirmScreen
from tests.conftest import cli, start_cli, wait_for
from tests.console.helpers import cursor_to, loaded_rows, until

HUMAN = "[Experiment] Bonus B at 2.\n[Code Changes] BONUS_B = 2.0 in train.py."


def _knob(name: str, value: str) -> str:
    line = {"BONUS_A": 14, "BONUS_B": 19, "BONUS_C": 24}[name]
    return (f"--- a/train.py\n+++ b/train.py\n@@ -{line},1 +{line},1 @@\n"
            f"-{name} = 0.0\n+{name} = {value}\n")


def _error(app: IdeaforgeApp) -> str:
    return str(app.screen.query_one("#error", Static).render())


async def test_the_add_dialog_runs_a_diff_file_and_refuses_what_the_catalog_cannot(
        toy_env: Path, workspace: Path, tmp_path: Path) -> None:
    good, bad, edit = tmp_path / "b.diff", tmp_path / "bad.diff", tmp_path / "c.diff"
    good.write_text(_knob("BONUS_B", "2.0"))
    bad.write_text(_knob("BONUS_B", "2.0").replace("-BONUS_B = 0.0", "-BONUS_B = 9.0"))
    edit.write_text(_knob("BONUS_C", "-0.5"))
    engine = start_cli("run", str(toy_env), "--name", "t", "--model", "catalog", "--epochs",
                       "1", "--ideas-per-epoch", "1", "--baseline-runs", "1", "--confirm",
                       "off", "--fix-attempts", "0", workspace=workspace)
    try:
        wait_for(lambda: (workspace / "ideaforge.db").exists(), 60, "the workspace",
                 proc=engine)
        app = IdeaforgeApp(workspace, "t", poll_s=0.2, keys={})
        async with app.run_test(size=(160, 40)) as pilot:
            def proposed() -> list:
                return [r for r in loaded_rows(pilot) if r.status == "proposed"
                        and not r.pending]

            rows = await until(pilot, proposed, 60, "the catalog's proposal")
            catalog_idea = rows[0]

            # the gate's keys apply once the screen knows the search waits there
            await until(pilot, lambda: app.screen.check_action("go", ()), 30, "the gate")
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, AddIdeaScreen), 5, "add")
            dialog = app.screen
            dialog.query_one(TextArea).load_text(HUMAN)
            await pilot.press("ctrl+s")  # no diff: the catalog cannot implement it
            await until(pilot, lambda: "cannot implement new text" in _error(app), 5,
                        "the refusal")
            dialog.query_one("#diff", Input).value = str(bad)
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "hunk 1 of train.py" in _error(app), 10, "bad diff",
                        state=lambda: _error(app))
            assert str(bad) in _error(app) and app.screen is dialog  # still open, unsent
            dialog.query_one("#diff", Input).value = str(good)
            await pilot.press("ctrl+s")
            await until(pilot, lambda: not isinstance(app.screen, AddIdeaScreen), 10,
                        "the dialog to close", state=lambda: _error(app))

            # An edit under the catalog opens the same dialog, with the idea's text.
            await cursor_to(pilot, catalog_idea.id)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, AddIdeaScreen), 5, "edit")
            assert app.screen.query_one(TextArea).text.strip() == catalog_idea_text(
                workspace, catalog_idea.id)
            app.screen.query_one("#diff", Input).value = str(edit)
            await pilot.press("ctrl+s")
            await until(pilot, lambda: not isinstance(app.screen, AddIdeaScreen), 10,
                        "the edit dialog to close", state=lambda: _error(app))
            await until(pilot, lambda: not proposed(), 30, "the edit applied")
            await pilot.press("g")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "confirm")
            await pilot.press("y")
            await until(pilot, lambda: engine.poll() is not None, 120, "the engine to end")
        assert engine.returncode == 0, engine.stdout.read() if engine.stdout else ""
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()

    ideas = json.loads(cli("ideas", "t", "--json", workspace=workspace, check=True).stdout)
    human = next(i for i in ideas if i["origin"] == "human")
    edited = next(i for i in ideas if i["id"] not in (catalog_idea.id, human["id"])
                  and i["origin"] != "baseline")
    assert human["text"] == HUMAN and human["score"] == 3.0  # the diff file's BONUS_B = 2
    assert edited["score"] == 5.5  # the edit's diff ran, not the catalog's


def catalog_idea_text(ws: Path, idea_id: int) -> str:
    shown = json.loads(cli("show", str(idea_id), "--json", workspace=ws, check=True).stdout)
    return shown["text"].strip()
