"""The score comes from an evaluation stage the patched code cannot reach: through the real
CLI, real runner processes and the offline catalog of a toy environment with `[evaluate]`
(tests/fixtures/gradedenv), whose catalog holds one honest idea and the cheats a coder model
rewarded for a number writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from engine.environments import load
from tests.conftest import base_env, cli

GRADED = Path(__file__).resolve().parent.parent / "fixtures" / "gradedenv"


@pytest.fixture
def graded(tmp_path: Path) -> Path:
    dest = tmp_path / "gradedenv"
    shutil.copytree(GRADED, dest)
    data = tmp_path / "data" / "toy"
    data.mkdir(parents=True)
    (data / "train.txt").write_text("what training may read\n")
    (data / "answers.txt").write_text("what only the evaluator may read\n")
    return dest


def _ideas(ws: Path) -> dict[str, dict]:
    rows = json.loads(cli("ideas", "g", "--json", workspace=ws, check=True).stdout)
    out = {}
    for r in rows:
        shown = json.loads(cli("show", str(r["id"]), "--json", workspace=ws, check=True).stdout)
        out[r.get("catalog_stem") or r["origin"]] = shown
    return out


def _job_processes_left(ws: Path) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if str(ws) in cmd or str(ws).encode() in environ:
            found.append(cmd)
    return found


def test_only_the_evaluation_stage_scores_and_every_cheat_ends_without_a_gain(
        graded: Path, workspace: Path, tmp_path: Path) -> None:
    env = base_env(IDEAFORGE_DATA_DIR=str(tmp_path / "data"))
    proc = cli("run", str(graded), "--name", "g", "--epochs", "1", "--ideas-per-epoch", "8",
               "--auto", "--cpu-slots", "2", workspace=workspace, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    ideas = _ideas(workspace)
    evaluator = load(graded).evaluator_id()

    def job(stem: str) -> dict:
        return ideas[stem]["jobs"][-1]

    # The unmodified code and the honest idea are scored by the evaluator, which saw the
    # held-out data the training stage could not.
    assert ideas["baseline"]["score"] == 5.0 and ideas["bonus_a"]["score"] == 4.0
    for stem in ("baseline", "bonus_a"):
        assert job(stem)["evaluator"] == evaluator and job(stem)["flags"] == ""
    base_dir = Path(job("baseline")["job_dir"])
    record = json.loads((base_dir / "exit").read_text())
    assert record["evaluation"]["points"][0]["held_out_seen"] is True
    # One evaluation seed for the whole search, never in the spec the training could read.
    seeds = {json.loads((Path(job(s)["job_dir"]) / "exit").read_text())["evaluation"]
             ["points"][0]["eval_seed"] for s in ("baseline", "bonus_a")}
    (seed,) = seeds
    assert seed and seed not in (base_dir / "spec.json").read_text()
    assert not (base_dir / "train-data" / "toy" / "answers.txt").exists()
    assert (base_dir / "train-data" / "toy" / "train.txt").read_text().startswith("what")
    # A hard link, not a symlink: resolving it does not lead to the folder of held-out files.
    assert not (base_dir / "train-data" / "toy" / "train.txt").is_symlink()

    # The training process writes the score itself: ignored, flagged; the evaluator's stands.
    assert ideas["writes_score"]["score"] == 5.0
    assert "wrote its own 'score'" in job("writes_score")["flags"]
    # Processes left behind (double fork + setsid; one with an empty environment) are killed
    # before the evaluation starts: nothing they would write counts, and none is left.
    assert ideas["leaves_process"]["score"] == 5.0
    assert ideas["escapes_clean"]["score"] == 5.0
    # A forged exit record (written by the job, not its runner) is not believed.
    assert ideas["fake_exit"]["status"] == "failed"
    assert "not written by its runner" in ideas["fake_exit"]["reason"]
    # Rewriting every evaluate.py (and spec.json) the job can reach changes nothing: the
    # runner evaluates with the bytes it read before training began.
    assert ideas["tamper_evaluator"]["score"] == 5.0
    assert job("tamper_evaluator")["evaluator"] == evaluator
    # The runner measures the training time: past the limit + slack it stops it: void.
    assert ideas["over_time"]["status"] == "failed"
    assert "past its time limit (4 s + 2 s slack" in ideas["over_time"]["reason"]
    over = json.loads((Path(job("over_time")["job_dir"]) / "exit").read_text())
    assert over["train"]["seconds"] < 15 and "evaluation" not in over
    # The held-out file is not in the training stage's data: reading it crashes the job.
    assert ideas["reads_held_out"]["status"] == "failed"
    assert "answers.txt" in job("reads_held_out")["log_tail"]
    for stem, shown in ideas.items():
        if stem not in ("baseline", "bonus_a"):
            assert shown["score"] is None or shown["score"] >= 5.0, stem
    time.sleep(4.5)  # longer than any leftover helper's first writes (0.2 s apart)
    assert _job_processes_left(workspace) == []
    for stem in ("leaves_process", "escapes_clean"):
        score_file = Path(job(stem)["job_dir"]) / "evaluation" / "score.jsonl"
        assert [json.loads(x)["value"] for x in score_file.read_text().splitlines()] == [5.0]


def test_a_result_from_another_evaluator_is_not_ranked(graded: Path, workspace: Path,
                                                       tmp_path: Path) -> None:
    env = base_env(IDEAFORGE_DATA_DIR=str(tmp_path / "data"))
    catalog = graded / "catalog"
    for path in catalog.iterdir():
        if not path.stem.startswith("bonus_a"):
            path.unlink()
    (catalog / "bonus_b.txt").write_text("[Experiment] Raise bonus B. [Code Changes] B = 1.\n")
    (catalog / "bonus_b.diff").write_text(
        "--- a/train.py\n+++ b/train.py\n@@ -16,7 +16,7 @@\n # Knob B: another good idea.\n"
        " #\n \n-BONUS_B = 0.0\n+BONUS_B = 1.0\n \n # Run settings.\n #\n")
    proc = cli("run", str(graded), "--name", "g", "--epochs", "1", "--ideas-per-epoch", "1",
               "--auto", "--cpu-slots", "1", workspace=workspace, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # The researcher edits the evaluator between runs; the search keeps ranking by the old one.
    ev = graded / "evaluate.py"
    ev.write_text(ev.read_text().replace("5.0 - bonus", "4.5 - bonus"))
    proc = cli("resume", "g", "--epochs", "2", workspace=workspace, env=env, timeout=120)
    assert "the evaluator's files changed since this search began" in proc.stderr
    ideas = json.loads(cli("ideas", "g", "--json", workspace=workspace, check=True).stdout)
    late = [i for i in ideas if i["epoch"] == 1]
    assert late, (proc.stdout, proc.stderr, ideas)
    for idea in late:
        assert idea["status"] == "failed" and "not ranked" in idea["reason"], idea


def test_a_runner_stops_training_at_the_limit_even_with_the_engine_gone(tmp_path: Path) -> None:
    """The runner alone (no engine): time limit, cleanup and a signed record."""
    from engine.executors import runner

    job = tmp_path / "job"
    (job / "code").mkdir(parents=True)
    (job / "code" / "ev.py").write_text("print('never run')\n")
    spec = {"command": "sleep 30", "cwd": str(job), "timeout": 60, "grace": 1,
            "secret": "k", "env": {"IDEAFORGE_JOB_DIR": str(job)},
            "evaluate": {"command": "python ev.py", "files": {}, "content": {},
                         "timeout": 10, "time_limit": 1, "time_slack": 0.5}}
    (job / "spec.json").write_text(json.dumps(spec))
    t0 = time.monotonic()
    subprocess.run(["python3", runner.__file__, str(job)], check=True, timeout=30)
    assert time.monotonic() - t0 < 10
    record = json.loads((job / "exit").read_text())
    assert record["train"]["over_time"] and "evaluation" not in record
    assert "secret" not in json.loads((job / "spec.json").read_text())
    assert runner.sign(record, "k") == record["mac"] != runner.sign(record, "other")


def test_show_says_which_evaluator_scored_an_idea_and_what_was_flagged(
        graded: Path, workspace: Path, tmp_path: Path) -> None:
    env = base_env(IDEAFORGE_DATA_DIR=str(tmp_path / "data"))
    for path in (graded / "catalog").iterdir():
        if path.stem not in ("bonus_a", "writes_score"):
            path.unlink()
    proc = cli("run", str(graded), "--name", "g", "--epochs", "1", "--ideas-per-epoch", "2",
               "--auto", "--cpu-slots", "2", workspace=workspace, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    evaluator = load(graded).evaluator_id()
    rows = json.loads(cli("ideas", "g", "--json", workspace=workspace, check=True).stdout)
    by_stem = {r.get("catalog_stem") or r["origin"]: r for r in rows}
    for stem in ("baseline", "bonus_a", "writes_score"):
        assert (by_stem[stem]["verified"], by_stem[stem]["evaluator"]) == ("verified",
                                                                           evaluator), stem
    assert by_stem["bonus_a"]["flags"] == []
    [flag] = by_stem["writes_score"]["flags"]
    assert "wrote its own 'score'" in flag
    cheat = by_stem["writes_score"]["id"]
    shown = cli("show", str(cheat), workspace=workspace, check=True).stdout.splitlines()
    assert f"verified by evaluator {evaluator[:12]}" in shown
    assert f"flagged: {flag}" in shown
    one = json.loads(cli("show", str(cheat), "--json", workspace=workspace, check=True).stdout)
    assert (one["verified"], one["flags"]) == ("verified", [flag])
