"""Quarantine, --advance-at, researcher-added ideas, export, and a model that answers garbage."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

from tests.conftest import base_env, cli, start_cli, wait_for
from tests.engine.test_search import ideas, phase
from tests.support.openai_server import OpenAIServer


def _add_catalog_idea(env_dir: Path, stem: str, old: str, new: str, text: str) -> None:
    import difflib

    train = (env_dir / "train.py").read_text()
    patched = train.replace(old, new)
    assert patched != train
    diff = "".join(difflib.unified_diff(train.splitlines(True), patched.splitlines(True),
                                        "a/train.py", "b/train.py"))
    (env_dir / "catalog" / f"{stem}.diff").write_text(diff)
    (env_dir / "catalog" / f"{stem}.txt").write_text(text)


def _only_catalog(env_dir: Path, keep: set[str]) -> None:
    for f in (env_dir / "catalog").iterdir():
        if f.stem not in keep:
            f.unlink()


def test_suspicious_result_is_quarantined_until_accepted(toy_env: Path, workspace: Path) -> None:
    _add_catalog_idea(toy_env, "too_good", "BONUS_A = 0.0", "BONUS_A = 4.9",
                      "[Experiment] Too good to be true.\n[Code Changes] BONUS_A = 4.9.\n")
    _only_catalog(toy_env, {"too_good", "bonus_b"})
    cli("run", str(toy_env), "--name", "t", "--epochs", "1", "--ideas-per-epoch", "2",
        "--auto", workspace=workspace, check=True)
    rows = {r["catalog_stem"]: r for r in ideas(workspace) if r["catalog_stem"]}
    sus = rows["too_good"]
    assert sus["score"] is not None and abs(sus["score"] - 0.1) < 1e-9
    assert sus["quarantine"] == "pending"  # kept and shown, not dropped
    st = json.loads(cli("status", "t", "--json", workspace=workspace).stdout)
    assert st["best_score"] == 4.5  # the quarantined result does not lead
    listing = cli("ideas", "t", workspace=workspace).stdout
    assert "[quarantine]" in listing
    cli("quarantine", str(sus["id"]), "--accept", workspace=workspace, check=True)
    # the decision is applied by the engine, also after the search finished
    ok = cli("resume", "t", workspace=workspace)
    assert ok.returncode == 0


def test_advance_at_starts_the_next_epoch_while_slow_jobs_run(toy_env: Path,
                                                                workspace: Path) -> None:
    _add_catalog_idea(toy_env, "slow", "SLEEP_S = float(", "SLEEP_S = 6.0 + 0 * float(",
                      "[Experiment] A slow run.\n[Code Changes] Sleep longer.\n")
    _only_catalog(toy_env, {"slow", "bonus_a", "bonus_b", "penalty_c"})
    proc = cli("run", str(toy_env), "--name", "t", "--epochs", "2", "--ideas-per-epoch", "4",
               "--auto", "--advance-at", "0.5", "--cpu-slots", "4", workspace=workspace)
    assert proc.returncode == 0, proc.stderr
    db = sqlite3.connect(workspace / "ideaforge.db")
    (slow_done,) = db.execute("SELECT finished_at FROM job WHERE idea_id = "
                              "(SELECT id FROM idea WHERE catalog_stem='slow')").fetchone()
    (epoch1,) = db.execute("SELECT min(created_at) FROM event WHERE message = 'epoch 1 begins'"
                           ).fetchone()
    assert epoch1 is not None and slow_done is not None and epoch1 < slow_done
    rows = ideas(workspace)
    slow = [r for r in rows if r["catalog_stem"] == "slow"][0]
    assert slow["status"] == "scored"  # the late result joined the population


def test_researcher_idea_and_export(toy_env: Path, workspace: Path, tmp_path: Path) -> None:
    engine = start_cli("run", str(toy_env), "--name", "t", "--epochs", "1",
                       "--ideas-per-epoch", "1", workspace=workspace)
    try:
        wait_for(lambda: phase(workspace) == "review_ideas", 60, "the gate")
        text = tmp_path / "mine.txt"
        text.write_text("[Experiment] My own idea.\n[Code Changes] BONUS_B = 2.0.\n")
        # the offline catalog cannot implement free text: refused up front without a diff
        refused = cli("add", "t", "--text-file", str(text), workspace=workspace)
        assert refused.returncode == 2 and "--diff FILE" in refused.stderr
        diff = tmp_path / "mine.diff"
        diff.write_text("--- a/train.py\n+++ b/train.py\n@@ -19,1 +19,1 @@\n"
                        "-BONUS_B = 0.0\n+BONUS_B = 2.0\n")
        cli("add", "t", "--text-file", str(text), "--diff", str(diff), workspace=workspace,
            check=True)
        wait_for(lambda: any(r["origin"] == "human" for r in ideas(workspace)), 30, "the add")
        cli("go", "t", workspace=workspace, check=True)
        out, _ = engine.communicate(timeout=120)
    finally:
        engine.kill()
    rows = ideas(workspace)
    human = [r for r in rows if r["origin"] == "human"][0]
    assert human["status"] == "scored" and human["score"] == 3.0  # the researcher's diff ran
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(skipped) == 1  # the undecided catalog idea, when the researcher said go
    exported = json.loads(cli("export", "t", "--format", "json", workspace=workspace).stdout)
    assert {r["id"] for r in exported["ideas"]} == {r["id"] for r in rows}
    table = list(csv.DictReader(io.StringIO(cli("export", "t", "--format", "csv",
                                                workspace=workspace).stdout)))
    assert {int(r["id"]) for r in table} == {r["id"] for r in rows}
    patched = tmp_path / "patched"
    cli("export", "t", "--patched", str(patched), workspace=workspace, check=True)
    assert [p.name for p in patched.glob("idea-*")] == [f"idea-{human['id']}"]


def test_patched_export_writes_runnable_copies(toy_env: Path, workspace: Path,
                                               tmp_path: Path) -> None:
    cli("run", str(toy_env), "--name", "t", "--epochs", "1", "--ideas-per-epoch", "2", "--auto",
        workspace=workspace, check=True)
    patched = tmp_path / "patched"
    cli("export", "t", "--patched", str(patched), workspace=workspace, check=True)
    implemented = [r for r in ideas(workspace) if r["diff"]]
    copies = sorted(p.name for p in patched.glob("idea-*"))
    assert copies == sorted(f"idea-{r['id']}" for r in implemented)
    for r in implemented:
        stem = r["catalog_stem"]
        text = (patched / f"idea-{r['id']}" / "train.py").read_text()
        assert text != (toy_env / "train.py").read_text(), stem


def test_garbage_answers_stop_with_a_clear_error_and_keep_the_search(toy_env: Path,
                                                                      workspace: Path) -> None:
    with OpenAIServer(responder=lambda req: "I am sorry, I cannot help with that.") as srv:
        proc = cli("run", str(toy_env), "--name", "t", "--model", "openai/test", "--api-base",
                   srv.url, "--auto", "--epochs", "1", "--ideas-per-epoch", "2",
                   workspace=workspace, env=base_env(OPENAI_API_KEY="sk-test"))
    assert proc.returncode == 1
    assert "produced no ideas" in proc.stderr and "I am sorry" in proc.stderr
    st = json.loads(cli("status", "t", "--json", workspace=workspace).stdout)
    assert st["status"] == "stopped" and st["llm_calls"] == 3


def test_bad_hosts_file_fails_before_anything_is_stored(toy_env: Path, workspace: Path,
                                                        tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "gpu1"\nadress = "10.0.0.1"\n')
    proc = cli("run", str(toy_env), "--name", "t", "--hosts", str(hosts), "--auto",
               workspace=workspace)
    assert proc.returncode == 2
    assert str(hosts) in proc.stderr and proc.stderr.count("\n") == 1
    listing = cli("status", "--json", workspace=workspace)
    assert listing.returncode != 0 or json.loads(listing.stdout) == []
