"""The search loop end to end on the toy environment, through the real CLI and real jobs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import base_env, cli, start_cli, wait_for


def ideas(ws: Path, search: str = "t") -> list[dict]:
    return json.loads(cli("ideas", search, "--json", workspace=ws, check=True).stdout)


def status(ws: Path, search: str = "t") -> dict:
    return json.loads(cli("status", search, "--json", workspace=ws, check=True).stdout)


def phase(ws: Path, search: str = "t") -> str | None:
    """The search's phase, or None while the engine has not created it yet."""
    proc = cli("status", search, "--json", workspace=ws)
    return json.loads(proc.stdout)["phase"] if proc.returncode == 0 else None


def by_stem(rows: list[dict]) -> dict[str, dict]:
    return {r["catalog_stem"]: r for r in rows if r["catalog_stem"]}


def test_two_epoch_catalog_search_ranks_and_combines_winners(toy_env: Path, workspace: Path
                                                             ) -> None:
    # repeats may take what they need: both winners are confirmed before epoch 1's exploit
    # batch (which waits for them), however the machine's load spreads the job times
    proc = cli("run", str(toy_env), "--name", "t", "--epochs", "2", "--ideas-per-epoch", "4",
               "--auto", "--confirm-share", "1", workspace=workspace)
    assert proc.returncode == 0, proc.stderr
    rows = ideas(workspace)
    base = [r for r in rows if r["origin"] == "baseline"]
    assert len(base) == 1 and base[0]["score"] == 5.0
    seeds = by_stem([r for r in rows if r["epoch"] == 0])
    assert set(seeds) == {"bonus_a", "bonus_b", "penalty_c", "crash"}
    assert seeds["bonus_a"]["score"] == 4.0 and seeds["bonus_b"]["score"] == 4.5
    assert seeds["penalty_c"]["score"] == 6.0
    assert seeds["crash"]["status"] == "failed" and "exit code 3" in seeds["crash"]["reason"]
    # epoch 1 exploits: the only two winners are crossed, and the cross is better than both
    (child,) = [r for r in rows if r["epoch"] == 1 and r["origin"] == "exploit"]
    assert sorted(child["parents"]) == sorted([seeds["bonus_a"]["id"], seeds["bonus_b"]["id"]])
    assert child["score"] == 3.5
    st = status(workspace)
    assert st["status"] == "finished" and st["baseline"] == 5.0
    # the parents were confirmed by repeats before they were crossed, and the cross by its own
    assert seeds["bonus_a"]["confirmation"] == seeds["bonus_b"]["confirmation"] == "confirmed"
    assert child["confirmation"] == "confirmed" and child["runs"] >= 2
    assert st["best"]["id"] == child["id"] and st["best_score"] == 3.5
    lineage = json.loads(cli("lineage", str(child["id"]), "--json", workspace=workspace,
                             check=True).stdout)
    assert {p["id"] for p in lineage["ancestry"]["parents"]} == set(child["parents"])


def test_gate_waits_for_decisions_and_applies_them(toy_env: Path, workspace: Path,
                                                    tmp_path: Path) -> None:
    engine = start_cli("run", str(toy_env), "--name", "t", "--epochs", "1",
                       "--ideas-per-epoch", "4", "--confirm", "off", "--baseline-runs", "1",
                       workspace=workspace)
    try:
        wait_for(lambda: phase(workspace) == "review_ideas", 60, "the idea gate",
                 proc=engine)
        proposed = by_stem(ideas(workspace))
        assert {r["status"] for r in proposed.values()} == {"proposed"}
        # nothing is implemented before approval
        assert all(r["attempts"] == 0 for r in proposed.values())
        edited = tmp_path / "edit.txt"
        edited.write_text("[Experiment] Bonus B, as edited by the researcher.\n"
                          "[Code Changes] Set BONUS_B = 1.5.\n")
        # the catalog ideator runs only diffs: the researcher's edit brings its own
        diff = tmp_path / "edit.diff"
        diff.write_text((toy_env / "catalog" / "bonus_b.diff").read_text()
                        .replace("+BONUS_B = 0.5", "+BONUS_B = 1.5"))
        cli("approve", str(proposed["bonus_a"]["id"]), workspace=workspace, check=True)
        cli("reject", str(proposed["penalty_c"]["id"]), str(proposed["crash"]["id"]),
            "--reason", "negative bonuses never help", workspace=workspace, check=True)
        cli("edit", str(proposed["bonus_b"]["id"]), "--text-file", str(edited),
            "--diff", str(diff), workspace=workspace, check=True)
        out, _ = engine.communicate(timeout=120)
        assert engine.returncode == 0, out
    finally:
        engine.kill()
    rows = {r["id"]: r for r in ideas(workspace)}
    a, b = proposed["bonus_a"]["id"], proposed["bonus_b"]["id"]
    assert rows[a]["status"] == "scored" and rows[a]["score"] == 4.0
    for stem in ("penalty_c", "crash"):
        r = rows[proposed[stem]["id"]]
        assert r["status"] == "rejected" and r["reason"] == "negative bonuses never help"
        assert r["attempts"] == 0
    assert rows[b]["status"] == "superseded"
    (new,) = [r for r in rows.values() if r["edited_from"] == b]
    assert "as edited by the researcher" in new["text"] and new["parents"] == [b]
    assert new["score"] == 3.5  # the edit's own diff ran (5.0 - 1.5)


def test_a_second_engine_on_the_same_search_is_refused(toy_env: Path, workspace: Path) -> None:
    engine = start_cli("run", str(toy_env), "--name", "t", "--epochs", "1",
                       "--ideas-per-epoch", "2", workspace=workspace)
    try:
        wait_for(lambda: phase(workspace) == "review_ideas", 60, "the idea gate",
                 proc=engine)
        second = cli("resume", "t", workspace=workspace)
        assert second.returncode == 4
        assert f"engine pid {engine.pid}" in second.stderr
    finally:
        engine.kill()
        engine.wait()
    assert len(ideas(workspace)) == 3  # baseline + 2: the refused engine added nothing


def test_engine_killed_at_many_points_loses_and_duplicates_nothing(toy_env: Path,
                                                                     workspace: Path) -> None:
    env = base_env(TOY_SLEEP_S="0.6")
    kills = 0
    engine = start_cli("run", str(toy_env), "--name", "t", "--epochs", "2",
                       "--ideas-per-epoch", "4", "--auto", workspace=workspace, env=env)
    # kill points: after each new event count threshold, then resume
    thresholds = iter([3, 8, 12, 16, 20, 26, 32])
    while True:
        target = next(thresholds, None)
        if target is None:
            break
        try:
            wait_for(lambda: engine.poll() is not None or _event_count(workspace) >= target,
                     60, f"{target} events")
        except AssertionError:
            break
        if engine.poll() is not None:
            break
        os.kill(engine.pid, signal.SIGKILL)
        engine.wait()
        kills += 1
        engine = start_cli("resume", "t", workspace=workspace, env=env)
    out, _ = engine.communicate(timeout=180)
    assert engine.returncode == 0, out
    assert kills >= 3
    rows = ideas(workspace)
    stems = [r["catalog_stem"] for r in rows if r["epoch"] == 0 and r["catalog_stem"]]
    assert sorted(stems) == ["bonus_a", "bonus_b", "crash", "penalty_c"]  # none lost or doubled
    assert all(r["attempts"] == 1 for r in rows if r["catalog_stem"] or r["origin"] == "exploit")
    jobs = [j for r in rows for j in json.loads(cli("show", str(r["id"]), "--json",
                                                    workspace=workspace, check=True).stdout)["jobs"]]
    # one job row per run of an idea (first runs and repeats alike), none lost or doubled
    runs = [(j["idea_id"], j["run"]) for j in jobs if j["state"] == "finished"]
    assert len(runs) == len(set(runs)) > len([r for r in rows if r["status"] == "scored"])
    logs = list((workspace / "jobs").glob("search-*/job-*/output.log"))
    assert len(logs) == len([j for j in jobs if j["started_at"] is not None])
    for log in logs:  # and each job ran exactly once
        assert log.read_text().count("toy run done") == 1
    st = status(workspace)  # (whether the cross ran depends on where the kills fell)
    assert min(b["score"] for b in (st["best"], st["leading"]) if b) <= 4.0


def _event_count(ws: Path) -> int:
    import sqlite3

    db = ws / "ideaforge.db"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        n = con.execute("SELECT count(*) FROM event").fetchone()[0]
        con.close()
        return int(n)
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("args, needle", [
    (["run", "no-such-env"], "unknown environment 'no-such-env'"),
    (["run", "{toy}", "--profile", "huge"], "has no profile 'huge'"),
    (["status", "nope"], "no search 'nope'"),
    (["show", "42"], "no idea 42"),
])
def test_bad_input_gets_one_clear_line(args: list[str], needle: str, toy_env: Path,
                                       workspace: Path) -> None:
    cli("run", str(toy_env), "--name", "t", "--epochs", "1", "--ideas-per-epoch", "1", "--auto",
        workspace=workspace, check=True)
    proc = cli(*[a.replace("{toy}", str(toy_env)) for a in args], workspace=workspace)
    assert proc.returncode == 2
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
    assert status(workspace)["status"] == "finished"  # nothing stored was lost


def test_invalid_environment_toml_names_file_and_field(toy_env: Path, workspace: Path) -> None:
    toml = toy_env / "environment.toml"
    toml.write_text(toml.read_text().replace('goal = "minimize"', 'goal = "lowest"'))
    proc = cli("run", str(toy_env), workspace=workspace)
    assert proc.returncode == 2
    assert str(toml) in proc.stderr and "metric.goal" in proc.stderr
