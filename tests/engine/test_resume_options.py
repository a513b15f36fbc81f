"""`ideaforge resume SEARCH --auto …`: how a search goes on is stored with it, checked as `run`
checks it, and only by an engine that holds the search. Through the real CLI and real jobs."""

from __future__ import annotations

import json
from pathlib import Path

from engine.store import Store, ops
from tests.conftest import cli, start_cli, wait_for


def status(ws: Path) -> dict:
    return json.loads(cli("status", "t", "--json", workspace=ws, check=True).stdout)


def phase(ws: Path) -> str | None:
    proc = cli("status", "t", "--json", workspace=ws)
    return json.loads(proc.stdout)["phase"] if proc.returncode == 0 else None


def options(st: dict) -> tuple:
    return st["auto"], st["review_diffs"], st["advance_at"], st["max_cost_usd"], st["epochs"]


def test_a_search_started_at_the_gates_resumes_headless(toy_env: Path, workspace: Path) -> None:
    engine = start_cli("run", str(toy_env), "--name", "t", "--epochs", "1",
                       "--ideas-per-epoch", "2", workspace=workspace)
    try:
        wait_for(lambda: phase(workspace) == "review_ideas", 60, "the idea gate", proc=engine)
        # Another engine drives it: refused (exit 4), and none of its options is stored.
        busy = cli("resume", "t", "--auto", workspace=workspace)
        assert busy.returncode == 4, busy.stderr
        assert options(status(workspace)) == (False, False, 1.0, None, 1)
        cli("stop", "t", workspace=workspace, check=True)
        out, _ = engine.communicate(timeout=60)
        assert engine.returncode == 5, out
    finally:
        engine.kill()
        engine.wait()
    assert status(workspace)["status"] == "stopped"

    done = cli("resume", "t", "--auto", "--max-cost", "5", "--advance-at", "0.5",
               "--epochs", "2", workspace=workspace, timeout=120)
    assert done.returncode == 0, done.stderr
    st = status(workspace)
    assert st["status"] == "finished" and st["epoch"] == 1  # both epochs ran, no gate held it
    assert options(st) == (True, False, 0.5, 5.0, 2)
    assert "--auto off → on" in done.stderr  # the engine says what changed
    store = Store(workspace)
    try:
        changed = [e.message for e in ops.events(store, st["id"], limit=1000)
                   if e.message.startswith("options changed")]
    finally:
        store.close()
    assert changed == [("options changed: --auto off → on, --advance-at 1.0 → 0.5, "
                        "--max-cost none → 5.0, --epochs 1 → 2")]


def test_bad_resume_options_are_refused_and_nothing_is_stored(toy_env: Path,
                                                              workspace: Path) -> None:
    cli("run", str(toy_env), "--name", "t", "--epochs", "2", "--ideas-per-epoch", "2",
        "--auto", workspace=workspace, check=True, timeout=120)
    before = status(workspace)
    assert before["status"] == "finished"
    for args, words in [(["--advance-at", "1.5"], "--advance-at 1.5: must be in (0, 1]"),
                        (["--max-cost", "-1"], "--max-cost -1.0: must be a positive"),
                        (["--epochs", "1", "--auto"],
                         "--epochs 1: search 't' is already in epoch 2; give 2 or more")]:
        proc = cli("resume", "t", *args, workspace=workspace)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert status(workspace) == before

    # A finished search goes on when it is given more epochs.
    more = cli("resume", "t", "--epochs", "3", workspace=workspace, timeout=120)
    assert more.returncode == 0, more.stderr
    st = status(workspace)
    assert st["status"] == "finished" and st["epochs"] == 3 and st["epoch"] == 2
