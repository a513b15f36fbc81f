"""`ideaforge export`: each job's run time in the normal export, and with `--metrics` every
metric line the jobs of a real search reported (JSON under each job, CSV as one long table),
checked against the database read with sqlite3 alone."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOY, cli

#: The ideas CSV's columns before run times were added: they keep their order.
OLD_CSV_COLUMNS = ["id", "epoch", "origin", "status", "score", "score_se", "runs",
                   "confirmation", "delta", "quarantine", "parents", "twin_of", "attempts",
                   "title", "reason", "text"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding a finished search of the toy environment: the baseline and two
    catalog ideas, run as real subprocess jobs."""
    root = tmp_path_factory.mktemp("export")
    env = root / "toyenv"
    shutil.copytree(TOY, env)
    for f in (env / "catalog").iterdir():
        if f.stem not in ("bonus_a", "bonus_b"):
            f.unlink()
    workspace = root / "ws"
    cli("run", str(env), "--name", "t", "--epochs", "1", "--ideas-per-epoch", "2", "--auto",
        workspace=workspace, check=True)
    return workspace


def db_rows(workspace: Path) -> tuple[dict[int, Any], list[tuple[Any, ...]]]:
    """(jobs by id: (idea, run, started, finished)), metric lines in arrival order."""
    db = sqlite3.connect(workspace / "ideaforge.db")
    try:
        jobs = {r[0]: r[1:] for r in db.execute(
            "SELECT id, idea_id, run, started_at, finished_at FROM job ORDER BY id")}
        lines = db.execute("SELECT job_id, name, step, value, time_s FROM metric ORDER BY id"
                           ).fetchall()
    finally:
        db.close()
    return jobs, lines


def test_json_export_gives_each_job_its_run_time_and_with_metrics_its_lines(
        searched: Path) -> None:
    jobs, lines = db_rows(searched)
    assert len(jobs) >= 3 and lines  # the baseline and two ideas ran
    plain = json.loads(cli("export", "t", workspace=searched, check=True).stdout)
    # compatible: the fields an idea had are still there, with the stored values
    db = sqlite3.connect(searched / "ideaforge.db")
    stored = {r[0]: r[1:] for r in db.execute(
        "SELECT id, epoch, origin, status, score, title, text FROM idea")}
    db.close()
    assert {r["id"] for r in plain["ideas"]} == set(stored)
    for row in plain["ideas"]:
        assert (row["epoch"], row["origin"], row["status"], row["score"], row["title"],
                row["text"]) == stored[row["id"]]
        assert set(OLD_CSV_COLUMNS) <= set(row)
    seen = set()
    for idea in plain["ideas"]:
        for job in idea["jobs"]:
            idea_id, run, started, finished = jobs[job["job_id"]]
            assert (idea_id, job["run"]) == (idea["id"], run)
            assert job["started_at"] == started and job["finished_at"] == finished
            assert job["seconds"] == pytest.approx(finished - started) and job["seconds"] > 0
            assert "metrics" not in job  # only with --metrics
            seen.add(job["job_id"])
    assert seen == set(jobs)

    full = json.loads(cli("export", "t", "--metrics", workspace=searched, check=True).stdout)
    exported = [(job["job_id"], m["name"], m["step"], m["value"], m["time_s"])
                for idea in full["ideas"] for job in idea["jobs"] for m in job["metrics"]]
    assert sorted(exported, key=lambda r: r[0]) == sorted(lines, key=lambda r: r[0])
    # each job's lines in the order it reported them: the toy writes train_loss, then score
    for idea in full["ideas"]:
        for job in idea["jobs"]:
            names = [m["name"] for m in job["metrics"]]
            assert names[:2] == ["train_loss", "score"], names
            loss, score = job["metrics"][0], job["metrics"][1]
            assert loss["step"] == 1 and score["step"] == 2 and score["time_s"] is not None
            assert loss["value"] == pytest.approx(score["value"] + 1.0)


def test_csv_export_keeps_its_columns_adds_run_times_and_metrics_is_a_long_table(
        searched: Path) -> None:
    jobs, lines = db_rows(searched)
    table = list(csv.DictReader(io.StringIO(cli("export", "t", "--format", "csv",
                                                workspace=searched, check=True).stdout)))
    header = list(table[0])
    assert header[:len(OLD_CSV_COLUMNS)] == OLD_CSV_COLUMNS
    assert header[len(OLD_CSV_COLUMNS):] == ["jobs", "run_seconds", "started_at",
                                             "finished_at"]
    for row in table:
        mine = [j for j in jobs.values() if j[0] == int(row["id"])]
        assert int(row["jobs"]) == len(mine)
        if mine:
            assert float(row["run_seconds"]) == pytest.approx(
                sum(f - s for _, _, s, f in mine), abs=1e-3)
            assert float(row["started_at"]) == min(s for _, _, s, _ in mine)
        else:
            assert row["run_seconds"] == "" and row["started_at"] == ""

    out = cli("export", "t", "--format", "csv", "--metrics", workspace=searched,
              check=True).stdout
    long = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0] == "idea_id,job_id,run,name,step,value,time_s"
    assert len(long) == len(lines)
    got = sorted((int(r["job_id"]), r["name"], int(r["step"]), float(r["value"]),
                  float(r["time_s"]) if r["time_s"] else None) for r in long)
    assert got == sorted(lines)
    for r in long:
        idea_id, run, _, _ = jobs[int(r["job_id"])]
        assert (int(r["idea_id"]), int(r["run"])) == (idea_id, run)
