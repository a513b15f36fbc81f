"""Selection on repeated evidence, end to end (issue 13): a search on an environment whose
true effects are known and whose noise is real (seeded by IDEAFORGE_SEED) refutes the idea a
lucky first run favoured and confirms the real one, and only the confirmed idea is the best."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli

NOISY = Path(__file__).resolve().parents[1] / "fixtures" / "noisyenv"


def test_a_lucky_idea_is_refuted_and_a_real_one_confirmed(workspace: Path) -> None:
    cli("run", str(NOISY), "--name", "n", "--epochs", "1", "--ideas-per-epoch", "2", "--auto",
        "--confirm", "all", "--confirm-share", "1", "--cpu-slots", "2",
        workspace=workspace, check=True, timeout=300)
    ideas = {i["catalog_stem"] or "baseline": i for i in json.loads(
        cli("ideas", "n", "--json", workspace=workspace, check=True).stdout)}
    lucky, real, base = ideas["lucky"], ideas["real"], ideas["baseline"]
    jobs = {name: json.loads(cli("show", str(i["id"]), "--json", workspace=workspace,
                                 check=True).stdout)["jobs"] for name, i in ideas.items()}
    first = {name: next(j["score"] for j in js if j["run"] == 1) for name, js in jobs.items()}
    # The baseline was measured 3 times at the start, and more as repeats compared with it.
    assert base["runs"] >= 3 and base["score_se"] > 0
    # Both ideas beat the baseline on their first run: one measurement cannot tell them apart,
    # and the harmful one even looked better.
    assert first["lucky"] > first["real"] > base["score"]
    # Repeats are ordinary jobs: a run number and a seed of their own, each scored.
    runs = sorted(j["run"] for j in jobs["lucky"])
    assert runs == list(range(1, lucky["runs"] + 1)) and lucky["runs"] >= 3
    assert len({j["seed"] for j in jobs["lucky"]}) == lucky["runs"]
    assert lucky["confirmation"] == "refuted" and lucky["score"] < first["lucky"]
    assert real["confirmation"] == "confirmed" and real["runs"] >= 2
    assert real["score"] > base["score"] and real["score_se"] > 0
    # a standard error the run states of its own score is shown with each run's score
    shown = cli("show", str(real["id"]), workspace=workspace, check=True).stdout
    assert "± 0.0500 (stated by its run, unverified)" in shown
    assert all(j["evaluator_se"] == 0.05 for j in jobs["real"])
    # Only the confirmed idea is the best, in status and in the listing.
    status = json.loads(cli("status", "n", "--json", workspace=workspace, check=True).stdout)
    assert status["best"]["id"] == real["id"] and status["best_score"] == real["score"]
    listing = cli("ideas", "n", workspace=workspace, check=True).stdout
    row = next(line for line in listing.splitlines() if line.split()[:1] == [str(real["id"])])
    assert "✓" in row and f"×{real['runs']}" in row
