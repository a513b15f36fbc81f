"""`ideaforge demo --auto`: the main job, end to end on this machine (the slowest test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli


@pytest.mark.slow
def test_demo_runs_three_epochs_and_prints_a_leaderboard(workspace: Path) -> None:
    proc = cli("demo", "--auto", workspace=workspace, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Leaderboard" in proc.stdout and "offline catalog (no LLM)" in proc.stderr
    (status,) = json.loads(cli("status", "--json", workspace=workspace, check=True).stdout)
    assert status["status"] == "finished" and status["epoch"] == 2
    assert status["baseline"] is not None  # the unmodified smoke run was measured
    ideas = json.loads(cli("ideas", status["name"], "--json", workspace=workspace,
                           check=True).stdout)
    # the 11 catalog ideas, then the catalog is used up (its combinations need two parents
    # confirmed by repeats)
    assert len([i for i in ideas if i["origin"] != "baseline"]) >= 11
    scored = [i for i in ideas if i["score"] is not None]
    assert len(scored) >= 10  # most catalog ideas train and report a validation loss
    (base,) = [i for i in ideas if i["origin"] == "baseline"]
    assert base["runs"] >= 3 and base["score_se"] > 0  # measured 3 times: its noise is known
    # the idea a first run favoured most had repeats, and one idea at least was confirmed
    confirmed = [i for i in ideas if i["confirmation"] == "confirmed"]
    assert confirmed and all(i["runs"] >= 2 for i in confirmed)
    # the leaderboard's first line is the best confirmed idea, marked as such
    best = min(confirmed, key=lambda i: i["score"])
    first = proc.stdout.split("Leaderboard", 1)[1].splitlines()[1]
    assert f"{best['score']:.4f}" in first and "confirmed" in first
