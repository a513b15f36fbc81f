"""The console against a real engine process: a search driven by a model on the local OpenAI
server waits at its gates while the researcher approves, rejects, edits and adds ideas with
keys; then we assert what the engine did with each decision."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest

from console.app import IdeaforgeApp
from console.screens.add_idea import AddIdeaScreen
from console.screens.confirm import ConfirmScreen
from console.screens.prompt import PromptScreen
from tests.conftest import base_env, cli, start_cli, wait_for
from tests.console.helpers import board, cursor_to, header_text, loaded_rows, until
from tests.console.model import KnobModel
from tests.support.openai_server import OpenAIServer

EDITED = ("[Experiment] Set BONUS_B to 0.25 instead: a gentler change, as edited by the "
          "researcher.\n[Code Changes] In train.py set BONUS_B = 0.25.")
HUMAN = ("[Experiment] Set BONUS_A to 2.0: my own idea.\n"
         "[Code Changes] In train.py set BONUS_A = 2.0.")
REASON = "negative bonuses never help"


def keys(text: str) -> list[str]:
    return ["space" if c == " " else c for c in text]


def ideas(ws: Path) -> dict[int, dict]:
    rows = json.loads(cli("ideas", "t", "--json", workspace=ws, check=True).stdout)
    return {r["id"]: r for r in rows}


@pytest.mark.slow
async def test_decisions_made_in_the_console_steer_a_live_engine(
        toy_env: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = tmp_path / "editor.py"
    editor.write_text(f"import sys\nopen(sys.argv[1], 'w').write({EDITED!r})\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    monkeypatch.delenv("VISUAL", raising=False)
    model = KnobModel((toy_env / "train.py").read_text())
    with OpenAIServer(responder=model) as srv:
        engine = start_cli("run", str(toy_env), "--name", "t", "--model", "openai/test",
                           "--api-base", srv.url, "--epochs", "2", "--ideas-per-epoch", "3",
                           "--llm-backoff", "0.01", workspace=workspace,
                           env=base_env(OPENAI_API_KEY="sk-test"))
        try:
            wait_for(lambda: (workspace / "ideaforge.db").exists(), 60, "the workspace")
            app = IdeaforgeApp(workspace, "t", poll_s=0.2, keys={})
            async with app.run_test(size=(160, 40)) as pilot:
                def proposed(epoch: int) -> list:
                    rows = [r for r in loaded_rows(pilot)
                            if r.epoch == epoch and r.status == "proposed" and not r.pending]
                    return rows if len(rows) == 3 else []

                first = await until(pilot, lambda: proposed(0), 90, "epoch 0 proposals")
                knob = {re.search(r"BONUS_(\w)", r.title).group(1): r  # type: ignore[union-attr]
                        for r in first}
                assert model.implemented == []  # nothing is implemented before a decision

                await cursor_to(pilot, knob["A"].id)
                await pilot.press("a")

                await cursor_to(pilot, knob["C"].id)
                await pilot.press("r")
                await until(pilot, lambda: isinstance(app.screen, PromptScreen), 5, "reason")
                await pilot.press(*keys(REASON), "enter")

                await cursor_to(pilot, knob["B"].id)
                await pilot.press("e")  # $EDITOR rewrites the text (suspended in a terminal)

                await pilot.press("n")
                await until(pilot, lambda: isinstance(app.screen, AddIdeaScreen), 5, "add")
                from textual.widgets import TextArea

                app.screen.query_one(TextArea).load_text(HUMAN)
                await pilot.press("ctrl+s")

                # Every idea is decided: the gate stays shut until g (issue 15), then
                # epoch 1 proposes.
                await until(pilot, lambda: "every idea is decided" in header_text(pilot), 60,
                            "the held gate", state=lambda: header_text(pilot))
                await pilot.press("g")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "confirm")
                await pilot.press("y")
                await until(pilot, lambda: proposed(1), 120, "epoch 1 proposals")
                await pilot.press("home", "space", "space", "a")  # a batch of two
                await pilot.press("g")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, "confirm")
                await pilot.press("y")
                await until(pilot, lambda: engine.poll() is not None, 120, "the engine to end")
                # the board shows what the engine made of it, live
                await until(pilot, lambda: all(r.status in ("scored", "rejected", "superseded",
                                                            "skipped", "failed")
                                               for r in loaded_rows(pilot)), 10, "final board")
                assert board(pilot).total == 9  # baseline, 3 + edit + human, 3 in epoch 1
            out = engine.stdout.read() if engine.stdout else ""
            assert engine.returncode == 0, out
        finally:
            engine.kill()

    rows = ideas(workspace)
    a, b, c = rows[knob["A"].id], rows[knob["B"].id], rows[knob["C"].id]
    assert a["status"] == "scored" and a["score"] == 4.0
    assert c["status"] == "rejected" and c["reason"] == REASON and c["attempts"] == 0
    assert b["status"] == "superseded"
    (edit,) = [r for r in rows.values() if r["edited_from"] == b["id"]]
    assert edit["text"] == EDITED and edit["parents"] == [b["id"]]
    assert edit["score"] == 4.75  # the engine implemented the edited text, not the original
    (human,) = [r for r in rows.values() if r["origin"] == "human"]
    assert human["text"] == HUMAN and human["score"] == 3.0
    # the reject reason steered the next epoch's proposals
    assert REASON in model.ideator_prompts[-1]
    second = sorted((r for r in rows.values() if r["epoch"] == 1), key=lambda r: r["id"])
    assert [r["status"] for r in second] == ["scored", "scored", "skipped"]
    assert "said go" in second[2]["reason"]
    with sqlite3.connect(workspace / "ideaforge.db") as db:
        sources = {s for (s,) in db.execute("SELECT source FROM decision")}
        outcomes = [o for (o,) in db.execute("SELECT outcome FROM decision ORDER BY id")]
    assert sources == {"console"}
    assert all(o and o != "ignored" for o in outcomes), outcomes
