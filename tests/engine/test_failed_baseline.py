"""A baseline that fails stops the search: the unmodified code cannot score on the profile, so
every idea would fail the same way. Through the real CLI, real jobs, the offline catalog."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli

MISSING = "ideaforge_missing_pkg"


def _set_smoke(env: Path, command: str, baseline: float | None = None) -> None:
    """Rewrite the toy environment's smoke profile (its command, a known baseline)."""
    toml = env / "environment.toml"
    text = toml.read_text()
    start = text.index("[profiles.smoke]")
    end = text.index("[profiles.gpu]")
    lines = [f"command = {json.dumps(command)}", "gpus = 0", "timeout = 60"]
    if baseline is not None:
        lines.append(f"baseline = {baseline}")
    toml.write_text(text[:start] + "[profiles.smoke]\n" + "\n".join(lines) + "\n\n"
                    + text[end:])


def _jobs(ws: Path) -> list[dict]:
    rows = json.loads(cli("ideas", "t", "--json", workspace=ws, check=True).stdout)
    out = []
    for r in rows:
        shown = json.loads(cli("show", str(r["id"]), "--json", workspace=ws, check=True).stdout)
        out += [{**j, "origin": r["origin"]} for j in shown["jobs"]]
    return out


def test_a_failing_baseline_stops_the_search_before_any_idea_runs(toy_env: Path,
                                                                  workspace: Path) -> None:
    # The unmodified code cannot even start here: a package it needs is missing.
    _set_smoke(toy_env, f"python -c 'import {MISSING}' && python train.py")
    proc = cli("run", str(toy_env), "--name", "t", "--epochs", "2", "--ideas-per-epoch", "4",
               "--auto", "--cpu-slots", "1", workspace=workspace, timeout=120)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "the baseline" in err and "crashed (exit 1)" in err
    assert f"No module named '{MISSING}'" in err  # the baseline job's log tail
    assert "fix the environment or the host's python, then `ideaforge resume t`" in err
    assert "no unused ideas left" not in err  # it did not go on through the epochs
    status = json.loads(cli("status", "t", "--json", workspace=workspace, check=True).stdout)
    assert status["status"] == "failed" and status["epoch"] == 0
    assert "ideaforge resume t" in status["message"]
    jobs = _jobs(workspace)
    # its first run failed; its other two runs (the noise estimate) wait with the idea jobs
    assert [j["state"] for j in jobs if j["origin"] == "baseline"] == ["failed", "held", "held"]
    ran = [j for j in jobs if j["origin"] != "baseline" and j["started_at"] is not None]
    assert not ran, f"idea jobs launched after the baseline failed: {ran}"
    # A held job can be cancelled like a queued one: the idea that crashes anyway.
    ideas = json.loads(cli("ideas", "t", "--json", workspace=workspace, check=True).stdout)
    crash = next(i["id"] for i in ideas if i["title"].startswith("A change that crashes"))
    (held,) = [j for j in _jobs(workspace) if j["idea_id"] == crash]
    assert held["state"] == "held"
    proc = cli("cancel", str(held["id"]), workspace=workspace)
    assert proc.returncode == 0 and "cancelled before it started" in proc.stdout, proc.stderr

    # Fixed: a resume measures the baseline again before any idea job starts, then goes on.
    _set_smoke(toy_env, "python train.py")
    proc = cli("resume", "t", workspace=workspace, timeout=120)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(cli("status", "t", "--json", workspace=workspace, check=True).stdout)
    assert status["status"] == "finished" and status["baseline"] == 5.0
    jobs = _jobs(workspace)
    rerun = [j for j in jobs if j["origin"] == "baseline" and j["state"] == "finished"]
    assert sorted(j["run"] for j in rerun)[:3] == [1, 2, 3]
    ideas_started = [j["started_at"] for j in jobs if j["origin"] != "baseline"
                     and j["started_at"] is not None]
    assert ideas_started and min(ideas_started) >= min(j["finished_at"] for j in rerun)
    assert min(b["score"] for b in (status["best"], status["leading"]) if b) < 5.0
    assert [j["state"] for j in _jobs(workspace) if j["idea_id"] == crash] == ["cancelled"]


def test_proposal_batches_that_fail_alike_are_reported_once(toy_env: Path,
                                                           workspace: Path) -> None:
    # A known baseline (no baseline job without repeats), and every idea crashes: epoch 1 has no winner to
    # exploit and the catalog is used up, so both of its batches fail with the same words.
    _set_smoke(toy_env, f"python -c 'import {MISSING}' && python train.py", baseline=5.0)
    proc = cli("run", str(toy_env), "--name", "t", "--epochs", "2", "--ideas-per-epoch", "4",
               "--auto", "--confirm", "off", workspace=workspace, timeout=120)
    # The offline catalog is finite: used up, the search ends with what it has, said once.
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1: the catalog has no ideas left" in proc.stderr
    assert proc.stderr.count("no ideas left") == 1
