"""Issue 15, bug 9: a researcher's own diff attached to an idea they add or edit, and what the
catalog ideator can and cannot do. Through the real `ideaforge` command, a real engine running
the toy environment's jobs, and real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, base_env, cli, start_cli, wait_for

RUN = ("--model", "catalog", "--epochs", "1", "--ideas-per-epoch", "1", "--baseline-runs", "1",
       "--confirm", "off", "--fix-attempts", "0")


def _knob(name: str, value: str) -> str:
    """A diff of the toy environment's train.py setting one knob (its score is 5 - knobs)."""
    line = {"BONUS_A": 14, "BONUS_B": 19, "BONUS_C": 24}[name]
    return (f"--- a/train.py\n+++ b/train.py\n@@ -{line},1 +{line},1 @@\n"
            f"-{name} = 0.0\n+{name} = {value}\n")


def _json(ws: Path, *args: str):
    return json.loads(cli(*args, "--json", workspace=ws, check=True).stdout)


def _refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)


def _proposed(ws: Path) -> list[dict]:
    listed = cli("ideas", "h", "--json", workspace=ws)  # the search may not be stored yet
    return [i for i in json.loads(listed.stdout) if i["status"] == "proposed"] \
        if listed.returncode == 0 else []


def _decisions(ws: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(ws / "ideaforge.db") as con:
        return con.execute("SELECT action, diff FROM decision WHERE action IN ('add', 'edit')"
                           ).fetchall()


def test_catalog_search_runs_a_researchers_diffs_and_refuses_what_it_cannot_run(
        toy_env: Path, workspace: Path, tmp_path: Path) -> None:
    # two ideas: the one not decided keeps the gate shut until `go` (an engine that is quick
    # would otherwise run the whole search before the decisions below reach it)
    engine = start_cli("run", str(toy_env), "--name", "h", *RUN, "--ideas-per-epoch", "2",
                       workspace=workspace)
    try:
        proposed = wait_for(lambda: len(_proposed(workspace)) == 2 and _proposed(workspace),
                            what="two proposed ideas", proc=engine)
        catalog_idea = proposed[0]
        text = tmp_path / "idea.txt"
        text.write_text("[Experiment] Bonus B at 2.\n[Code Changes] BONUS_B = 2.0 in train.py.")

        # Under the catalog ideator a researcher's idea without a diff is refused up front.
        _refused(cli("add", "h", "--text-file", str(text), workspace=workspace),
                 "catalog ideator", "cannot implement", "--diff FILE", "--model")
        _refused(cli("edit", str(catalog_idea["id"]), "--text-file", str(text),
                     workspace=workspace), "catalog ideator", "--diff FILE", "score as before")
        # A diff that does not apply is refused naming the file and the failing hunk.
        bad = tmp_path / "bad.diff"
        bad.write_text(_knob("BONUS_B", "2.0").replace("-BONUS_B = 0.0", "-BONUS_B = 9.0"))
        _refused(cli("add", "h", "--text-file", str(text), "--diff", str(bad),
                     workspace=workspace), str(bad), "hunk 1 of train.py", "BONUS_B = 9.0")
        protected = tmp_path / "protected.diff"
        protected.write_text("--- a/evaluate.py\n+++ b/evaluate.py\n@@ -1,1 +1,1 @@\n-x\n+y\n")
        _refused(cli("add", "h", "--text-file", str(text), "--diff", str(protected),
                     workspace=workspace), "evaluate.py is protected")
        _refused(cli("add", "h", "--text-file", str(text), "--diff", str(tmp_path / "no.diff"),
                     workspace=workspace), "no diff file")
        assert _decisions(workspace) == []  # nothing refused was stored

        good = tmp_path / "b.diff"
        good.write_text(_knob("BONUS_B", "2.0"))
        said = cli("add", "h", "--text-file", str(text), "--diff", str(good),
                   workspace=workspace, check=True).stdout
        assert "runs with your diff" in said
        # An edit with a new diff (from standard input) keeps the text and runs the new diff.
        proc = subprocess.run(
            [sys.executable, "-m", "console.cli", "--workspace", str(workspace), "edit",
             str(catalog_idea["id"]), "--diff", "-"], input=_knob("BONUS_C", "-0.5"),
            capture_output=True, text=True, timeout=120, env=base_env(), cwd=REPO, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "with your diff" in proc.stdout
        # A diff-less idea that got past the checks (a console from before them) fails at
        # once, saying what the catalog cannot do, in words for a researcher.
        from engine.store import Store, ops

        store = Store(workspace)
        ops.add_decision(store, catalog_idea["search_id"], "add", text="[Experiment] Old way.")
        store.close()
        cli("go", "h", workspace=workspace, check=True)
        engine.wait(timeout=120)
        assert engine.returncode == 0, engine.stdout.read() if engine.stdout else ""
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()

    ideas = {i["id"]: i for i in _json(workspace, "ideas", "h")}
    human = next(i for i in ideas.values() if i["origin"] == "human" and i["score"])
    edit = next(i for i in ideas.values() if catalog_idea["id"] in (i.get("parents") or [])
                or i.get("edited_from") == catalog_idea["id"])
    assert human["score"] == 3.0  # 5 - BONUS_B, as the attached diff set it
    assert edit["score"] == 5.5  # 5 - (-0.5): the new diff ran, not the catalog's
    assert edit["text"] == catalog_idea["text"]
    old_way = next(i for i in ideas.values() if i["text"] == "[Experiment] Old way.")
    assert old_way["status"] == "implement_failed"
    assert "cannot implement text a researcher wrote" in old_way["reason"]
    assert "your answer" not in old_way["reason"]
    shown = _json(workspace, "show", str(human["id"]))
    assert [a["model"] for a in shown["attempts"]] == ["researcher"]
    assert "+BONUS_B = 2.0" in shown["diff"]



def test_with_a_model_an_attached_diff_runs_instead_of_the_implementers(
        toy_env: Path, workspace: Path, tmp_path: Path) -> None:
    from tests.console.model import KnobModel
    from tests.support.openai_server import OpenAIServer

    model = KnobModel((toy_env / "train.py").read_text())
    with OpenAIServer(responder=model) as srv:
        engine = start_cli("run", str(toy_env), "--name", "h", "--model", "openai/test",
                           "--api-base", srv.url, "--llm-backoff", "0.01", *RUN[2:],
                           workspace=workspace, env=base_env(OPENAI_API_KEY="sk-test"))
        try:
            proposed = wait_for(lambda: _proposed(workspace), what="the model's proposal",
                                proc=engine)[0]
            assert "BONUS_A to 1.0" in proposed["text"]
            text = tmp_path / "idea.txt"
            # the text says 2.0, the diff 1.5: the score tells which of them ran
            text.write_text("[Experiment] Set BONUS_B to 2.0.\n[Code Changes] BONUS_B = 2.0.")
            mine = tmp_path / "b.diff"
            mine.write_text(_knob("BONUS_B", "1.5"))
            cli("add", "h", "--text-file", str(text), "--diff", str(mine), workspace=workspace,
                check=True)
            edit = tmp_path / "a.diff"
            edit.write_text(_knob("BONUS_A", "0.25"))
            said = cli("edit", str(proposed["id"]), "--diff", str(edit), workspace=workspace,
                       check=True).stdout
            assert "with your diff" in said
            cli("go", "h", workspace=workspace, check=True)
            engine.wait(timeout=120)
            assert engine.returncode == 0, engine.stdout.read() if engine.stdout else ""
        finally:
            if engine.poll() is None:
                engine.kill()
                engine.wait()
    ideas = _json(workspace, "ideas", "h")
    human = next(i for i in ideas if i["origin"] == "human")
    edited = next(i for i in ideas if i["id"] != proposed["id"] and i["origin"] not in
                  ("human", "baseline"))
    assert human["score"] == 3.5 and edited["score"] == 4.75
    assert model.implemented == []  # neither idea went to the implementer model
