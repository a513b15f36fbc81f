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
    assert len([i for i in ideas if i["origin"] != "baseline"]) >= 12
    scored = [i for i in ideas if i["score"] is not None]
    assert len(scored) >= 10  # most catalog ideas train and report a validation loss
    # the leaderboard's first line is the best score of the search
    best = min(i["score"] for i in scored if i["origin"] != "baseline")
    assert f"{best:.4f}" in proc.stdout.split("Leaderboard", 1)[1].splitlines()[1]
