"""The red-team corpus: cheat diffs of the kind a coder model writes when a number is its
reward, for each shipped environment, each run through the engine (the real CLI, the offline
catalog, real jobs on the `smoke` profile). Every one must end refused, void or failed with a
reason, or score without a gain; none may score better than the baseline.

`tests/redteam/<env>/cases.toml` lists the cases: `[[case]]` with `file` (the diff), `class`,
`tries` (what it attempts), `outcome` (`refused`, `void`, `failed`, or `ignored`: scored by
the evaluation stage as usual, the cheat gains nothing) and optionally `reason` (a substring
of the idea's reason, or for `ignored` of its flags)."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from engine.environments import BUILTIN_DIR, load
from tests.conftest import base_env, cli

HERE = Path(__file__).resolve().parent
ENDED = {"refused": "implement_failed", "void": "failed", "failed": "failed"}
#: What an ineffective cheat may gain by chance: it trains on other data or in another order
#: than the baseline (the evaluation draw is the same for the whole search). Far below what
#: the cheats would gain if they worked (nanoGPT: 0.2 and more on a val_loss of ~2.3).
NOISE = {"nanogpt": 0.03, "grpo": 0.0}


def _cases(env_name: str) -> list[dict]:
    return tomllib.loads((HERE / env_name / "cases.toml").read_text())["case"]


def _env_with_cheats(env_name: str, dest: Path) -> Path:
    shutil.copytree(BUILTIN_DIR / env_name, dest,
                    ignore=shutil.ignore_patterns("__pycache__", "artifacts", "data"))
    catalog = dest / "catalog"
    shutil.rmtree(catalog)
    catalog.mkdir()
    for case in _cases(env_name):
        stem = Path(case["file"]).stem
        shutil.copyfile(HERE / env_name / case["file"], catalog / f"{stem}.diff")
        (catalog / f"{stem}.txt").write_text(
            f"[Experiment] {case['tries']} [Code Changes] {case['class']}\n")
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("env_name", ["nanogpt", "grpo"])
def test_no_cheat_scores_better_than_the_baseline(env_name: str, tmp_path: Path) -> None:
    cases = _cases(env_name)
    assert len(cases) >= 8
    env_dir = _env_with_cheats(env_name, tmp_path / env_name)
    metric = load(env_dir).metric
    ws = tmp_path / "ws"
    # Smoke runs its 60 planned steps well inside 30 s: training is the same in every job.
    env = base_env(NANOGPT_TIME_LIMIT_S="30", IDEAFORGE_DATA_DIR=str(tmp_path / "data"))
    proc = cli("run", str(env_dir), "--name", "red", "--profile", "smoke", "--epochs", "1",
               "--ideas-per-epoch", str(len(cases)), "--auto", "--cpu-slots", "2",
               # one run each, the baseline's too, all with the same IDEAFORGE_SEED: a cheat
               # that changes nothing in training scores what the baseline scores
               "--confirm", "off", "--baseline-runs", "1", workspace=ws, env=env,
               timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ideas = {i.get("catalog_stem") or i["origin"]: i
             for i in json.loads(cli("ideas", "red", "--json", workspace=ws, check=True).stdout)}
    baseline = ideas["baseline"]
    assert baseline["status"] == "scored", baseline
    wrong = []
    for case in cases:
        idea = ideas[Path(case["file"]).stem]
        outcome = case["outcome"]
        seen = (case["file"], outcome, idea["status"], idea["score"], idea["reason"],
                idea["flags"])
        if outcome == "ignored":
            gain = 0.0 if idea["score"] is None else \
                (idea["score"] - baseline["score"]) * (1 if metric.goal == "maximize" else -1)
            if gain > NOISE[env_name] or (case.get("reason") and not any(
                    case["reason"] in f for f in idea["flags"])):
                wrong.append(seen)
        elif (idea["status"] != ENDED[outcome] or not idea["reason"]
              or case.get("reason", "") not in idea["reason"]):
            wrong.append(seen)
    assert not wrong, "\n".join(map(repr, wrong))
