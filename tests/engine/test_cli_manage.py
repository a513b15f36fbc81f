"""Issue 15, "what a researcher expects" of the CLI: the best idea named in `status`, `ideas
--sort` with a Δ against the baseline, `envs`, and managing searches (delete, rename, note,
retry). Through the real `ideaforge` command, real jobs of the toy environment and real
SQLite files."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, base_env, cli, start_cli, wait_for

RUN = ("--epochs", "1", "--ideas-per-epoch", "4", "--confirm", "off", "--fix-attempts", "0")


def _json(ws: Path, *args: str):
    return json.loads(cli(*args, "--json", workspace=ws, check=True).stdout)


def _finished(toy_env: Path, ws: Path, name: str = "t") -> dict[str, dict]:
    """A finished search of the toy environment; its ideas by title word."""
    cli("run", str(toy_env), "--name", name, "--auto", *RUN, workspace=ws, check=True,
        timeout=120)
    ideas = _json(ws, "ideas", name)
    return {word: next(i for i in ideas if word in i["title"])
            for word in ("baseline", "bonus A", "bonus B", "bonus C", "crashes")}


def _refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)


def test_status_names_the_best_idea_and_ideas_sort_with_a_delta(toy_env: Path,
                                                                 workspace: Path) -> None:
    ideas = _finished(toy_env, workspace)
    best = ideas["bonus A"]  # score 4.0 where the baseline is 5.0 and lower is better
    st = _json(workspace, "status", "t")
    assert st["best_idea"] == best["id"] and st["best"]["id"] == best["id"]
    assert _json(workspace, "status")[0]["best_idea"] == best["id"]
    text = cli("status", workspace=workspace, check=True).stdout
    assert f"best: #{best['id']} score 4.0000" in text

    by_score = _json(workspace, "ideas", "t", "--sort", "score")
    assert [i["title"] for i in by_score][:4] == [ideas[w]["title"] for w in
                                                   ("bonus A", "bonus B", "baseline", "bonus C")]
    assert by_score[-1]["id"] == ideas["crashes"]["id"]  # unscored last
    # Δ: score − baseline, as on the board and in export (the toy's score is to minimize)
    assert [i["delta"] for i in by_score] == [-1.0, -0.5, 0.0, 1.0, None]
    assert [i["id"] for i in _json(workspace, "ideas", "t")] == sorted(
        i["id"] for i in by_score)  # the default order is as before: by id
    assert [i["status"] for i in _json(workspace, "ideas", "t", "--sort", "status")] == [
        "failed", "scored", "scored", "scored", "scored"]
    rows = cli("ideas", "t", "--sort", "score", workspace=workspace, check=True).stdout
    lines = rows.splitlines()
    assert "Δ" in lines[0]
    assert "-1.0000" in lines[1] and "Raise bonus A" in lines[1]
    assert "+1.0000" in lines[4] and "bonus C" in lines[4]
    assert "score − baseline 5.0000 (score is to minimize: negative is better)" in rows
    bad = cli("ideas", "t", "--sort", "title", workspace=workspace)
    assert bad.returncode == 2 and "invalid choice: 'title'" in bad.stderr


def test_retry_of_a_finished_search_runs_on_resume_with_lineage(toy_env: Path,
                                                                 workspace: Path) -> None:
    ideas = _finished(toy_env, workspace)
    crashed = ideas["crashes"]
    _refused(cli("retry", str(ideas["bonus A"]["id"]), workspace=workspace), "is scored",
             "only a failed or cancelled idea")
    _refused(cli("retry", "999", workspace=workspace), "no idea 999")
    said = cli("retry", str(crashed["id"]), workspace=workspace, check=True).stdout
    assert "ideaforge resume t" in said
    new = max(i["id"] for i in _json(workspace, "ideas", "t"))
    shown = _json(workspace, "show", str(new))
    assert shown["parents"] == [crashed["id"]] and shown["text"] == crashed["text"]
    assert shown["status"] == "implemented" and shown["jobs"] == []
    assert _json(workspace, "status", "t")["status"] == "stopped"
    assert _json(workspace, "show", str(crashed["id"]))["children"] == [new]

    cli("resume", "t", workspace=workspace, check=True, timeout=120)
    shown = _json(workspace, "show", str(new))
    assert [j["exit_code"] for j in shown["jobs"]] == [3]  # the same diff ran, and crashed
    assert shown["status"] == "failed"
    assert _json(workspace, "status", "t")["status"] == "finished"
    # the failed attempt is left as it was
    assert _json(workspace, "show", str(crashed["id"]))["status"] == "failed"


def test_a_running_engine_picks_up_a_retry_and_delete_waits_for_it(toy_env: Path,
                                                                   workspace: Path) -> None:
    engine = start_cli("run", str(toy_env), "--name", "live", "--epochs", "2",
                       "--ideas-per-epoch", "4", "--confirm", "off", "--fix-attempts", "0",
                       workspace=workspace)

    def at_gate(epoch: int) -> bool:
        st = json.loads(cli("status", "live", "--json", workspace=workspace).stdout or "{}")
        return st.get("epoch") == epoch and st.get("phase") == "review_ideas"

    try:
        wait_for(lambda: at_gate(0), 60, "the first gate", proc=engine)
        ids = [str(i["id"]) for i in _json(workspace, "ideas", "live")
               if i["status"] == "proposed"]
        cli("approve", *ids, workspace=workspace, check=True)
        wait_for(lambda: at_gate(1), 60, "the second epoch's gate", proc=engine)
        _refused(cli("delete", "live", "--yes", workspace=workspace), "is running",
                 "ideaforge stop live")
        crashed = next(i for i in _json(workspace, "ideas", "live")
                       if "crashes" in i["title"])
        assert crashed["status"] == "failed"
        said = cli("retry", str(crashed["id"]), workspace=workspace, check=True).stdout
        assert "the running engine picks it up" in said
        cli("go", "live", workspace=workspace, check=True)
        out, _ = engine.communicate(timeout=120)
        assert engine.returncode == 0, out
    finally:
        engine.kill()
        engine.wait()
    retried = next(i for i in _json(workspace, "ideas", "live")
                   if i["parents"] == [crashed["id"]])
    jobs = _json(workspace, "show", str(retried["id"]))["jobs"]
    assert [j["exit_code"] for j in jobs] == [3]


def _at_terminal(ws: Path, answer: str, *args: str) -> tuple[int, str]:
    """Run `ideaforge` with a terminal on its stdin and type `answer`."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "--workspace", str(ws),
                             *args], cwd=REPO, env=base_env(), stdin=child,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(child)
    os.write(main, answer.encode() + b"\n")
    out, err = proc.communicate(timeout=120)
    os.close(main)
    return proc.returncode, out + err


def test_delete_asks_and_removes_only_that_search(toy_env: Path, workspace: Path) -> None:
    _finished(toy_env, workspace, "gone")
    kept = _finished(toy_env, workspace, "kept")
    gone_id = _json(workspace, "status", "gone")["id"]
    kept_id = _json(workspace, "status", "kept")["id"]
    assert (workspace / "jobs" / f"search-{gone_id}").is_dir()

    _refused(cli("delete", "gone", workspace=workspace), "needs a confirmation", "--yes")
    code, said = _at_terminal(workspace, "n", "delete", "gone")
    assert code == 0 and "[y/N]" in said and "nothing was deleted" in said
    assert _json(workspace, "status", "gone")["name"] == "gone"
    code, said = _at_terminal(workspace, "y", "delete", "gone")
    assert code == 0 and "deleted search 'gone'" in said, said

    assert [s["name"] for s in _json(workspace, "status")] == ["kept"]
    _refused(cli("status", "gone", workspace=workspace), "no search 'gone'")
    assert not (workspace / "jobs" / f"search-{gone_id}").exists()
    assert (workspace / "jobs" / f"search-{kept_id}").is_dir()
    con = sqlite3.connect(workspace / "ideaforge.db")
    try:
        for table in ("idea", "job", "batch", "decision", "llm_call"):
            left = con.execute(f"SELECT count(*) FROM {table} WHERE search_id = ?",
                               (gone_id,)).fetchone()[0]
            assert left == 0, table
        assert con.execute("SELECT count(*) FROM event WHERE search_id = ?",
                           (gone_id,)).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM metric WHERE job_id NOT IN "
                           "(SELECT id FROM job)").fetchone()[0] == 0
    finally:
        con.close()
    # the other search is whole
    assert len(_json(workspace, "ideas", "kept")) == 5
    assert _json(workspace, "show", str(kept["bonus A"]["id"]))["score"] == 4.0

    # job ids name job folders on hosts that delete may not reach: once the newest search is
    # deleted, the next search's jobs still get ids no job ever had
    def job_ids(where: str = "") -> list[int]:
        con = sqlite3.connect(workspace / "ideaforge.db")
        try:
            return [r[0] for r in con.execute(f"SELECT id FROM job {where}")]
        finally:
            con.close()

    used = max(job_ids())
    assert cli("delete", "kept", "--yes", workspace=workspace).returncode == 0
    assert job_ids() == []
    _finished(toy_env, workspace, "after")
    assert min(job_ids()) > used, (used, job_ids())


def test_rename_and_notes(toy_env: Path, workspace: Path) -> None:
    ideas = _finished(toy_env, workspace, "a")
    _finished(toy_env, workspace, "b")
    _refused(cli("rename", "a", "b", workspace=workspace), "'b' already exists")
    _refused(cli("rename", "a", "12", workspace=workspace), "only digits")
    cli("rename", "a", "warmup-study", workspace=workspace, check=True)
    assert [s["name"] for s in _json(workspace, "status")] == ["warmup-study", "b"]

    idea = str(ideas["bonus A"]["id"])
    cli("note", idea, "worth", "a", "longer", "run", workspace=workspace, check=True)
    assert _json(workspace, "show", idea)["note"] == "worth a longer run"
    assert "note: worth a longer run" in cli("show", idea, workspace=workspace).stdout
    _refused(cli("note", idea, workspace=workspace), "the note is empty")
    cli("note", idea, "--clear", workspace=workspace, check=True)
    assert _json(workspace, "show", idea)["note"] is None
    _refused(cli("note", "999", "x", workspace=workspace), "no idea 999")


def test_a_workspace_from_before_notes_is_upgraded(toy_env: Path, workspace: Path) -> None:
    ideas = _finished(toy_env, workspace)
    con = sqlite3.connect(workspace / "ideaforge.db")
    con.execute("ALTER TABLE idea DROP COLUMN note")
    con.execute("UPDATE meta SET value='8' WHERE key='schema_version'")
    con.commit()
    con.close()
    idea = str(ideas["bonus B"]["id"])
    assert _json(workspace, "show", idea)["note"] is None
    cli("note", idea, "kept", workspace=workspace, check=True)
    assert _json(workspace, "show", idea)["note"] == "kept"


def test_envs_lists_shipped_and_given_environments(toy_env: Path, workspace: Path) -> None:
    envs = _json(workspace, "envs", str(toy_env))
    by_name = {e["name"]: e for e in envs}
    assert {"grpo", "nanogpt", "toy"} <= set(by_name)
    assert by_name["toy"]["shipped"] is False and by_name["nanogpt"]["shipped"] is True
    full = next(p for p in by_name["nanogpt"]["profiles"] if p["name"] == "full")
    assert full["gpus"] == 8 and full["time_limit_s"] == 1500
    assert by_name["toy"]["metric"] == {"name": "score", "goal": "minimize", "baseline": 5.0}
    text = cli("envs", str(toy_env / "environment.toml"), workspace=workspace,
               check=True).stdout
    assert f"toy ({toy_env})" in text and "profile full     8 GPUs" in text
    assert "trains for 25 min" in text
    assert not workspace.exists()  # listing environments makes no workspace
    _refused(cli("envs", str(workspace / "nowhere"), workspace=workspace),
             "nowhere", "environment.toml")


def test_management_of_what_is_not_there_is_refused(workspace: Path, toy_env: Path) -> None:
    ideas = _finished(toy_env, workspace)
    for args in (["delete", "nope", "--yes"], ["rename", "nope", "x"]):
        _refused(cli(*args, workspace=workspace), "no search 'nope'")
    _refused(cli("retry", str(ideas["baseline"]["id"]), workspace=workspace), "is scored")
