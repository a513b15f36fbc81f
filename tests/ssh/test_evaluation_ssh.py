"""The evaluation stage on a GPU host over SSH (real sshd on 127.0.0.1): the score comes from
the runner's signed record of the evaluation, training never sees the held-out data, and
what a job leaves behind is gone before its evaluation starts."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from engine.environments import load
from tests.conftest import base_env, cli, start_cli
from tests.ssh.conftest import Lab, finish, jobs, remote_dir

GRADED = Path(__file__).resolve().parent.parent / "fixtures" / "gradedenv"
KEEP = ("bonus_a", "leaves_process", "fake_exit", "tamper_evaluator")


def test_a_host_scores_only_through_its_evaluation_stage(lab: Lab, tmp_path: Path) -> None:
    env_dir = tmp_path / "gradedenv"
    shutil.copytree(GRADED, env_dir)
    for path in (env_dir / "catalog").iterdir():
        if path.stem not in KEEP:
            path.unlink()
    host = lab.host("a", 1)
    data = host.workdir / "data" / "graded" / "toy"  # the host's default data dir
    data.mkdir(parents=True)
    (data / "train.txt").write_text("train\n")
    (data / "answers.txt").write_text("held out\n")
    # A per-host wrapper for the training command (here one that leaves a mark and execs).
    wrap = "sh -c 'echo \"$0\" > \"$IDEAFORGE_JOB_DIR/wrapped\"; exec \"$@\"' wrapped-by-prefix"
    hosts = lab.hosts_toml(sleep=0.1, job_prefix=wrap)
    ws = tmp_path / "ws"
    engine = lab.track(start_cli("run", str(env_dir), "--name", "g", "--hosts", str(hosts),
                                 "--auto", "--confirm", "off", "--epochs", "1", "--ideas-per-epoch", str(len(KEEP)),
                                 workspace=ws, env=base_env()))
    finish(engine, timeout=180)
    ideas = {}
    for row in json.loads(cli("ideas", "g", "--json", workspace=ws, check=True).stdout):
        ideas[row.get("catalog_stem") or row["origin"]] = row
    assert ideas["baseline"]["score"] == 5.0 and ideas["bonus_a"]["score"] == 4.0
    assert ideas["leaves_process"]["score"] == 5.0 and ideas["tamper_evaluator"]["score"] == 5.0
    assert ideas["fake_exit"]["status"] == "failed"
    assert "not written by its runner" in ideas["fake_exit"]["reason"]
    evaluator = load(env_dir).evaluator_id()
    rows = {r["idea_id"]: r for r in jobs(ws)}
    base = rows[ideas["baseline"]["id"]]
    shown = json.loads(cli("show", str(ideas["bonus_a"]["id"]), "--json", workspace=ws,
                           check=True).stdout)
    assert shown["jobs"][-1]["evaluator"] == evaluator
    record = json.loads((remote_dir(lab, base) / "exit").read_text())
    assert record["evaluation"]["points"][0]["held_out_seen"] is True
    view = remote_dir(lab, base) / "train-data" / "toy"
    assert (view / "train.txt").exists() and not (view / "answers.txt").exists()
    assert "secret" not in (remote_dir(lab, base) / "spec.json").read_text()
    assert (remote_dir(lab, base) / "wrapped").read_text() == "wrapped-by-prefix\n"
    time.sleep(2)  # the helper the cheat left would have written by now
    left = remote_dir(lab, rows[ideas["leaves_process"]["id"]])
    assert [json.loads(x)["value"] for x in
            (left / "evaluation" / "score.jsonl").read_text().splitlines()] == [5.0]


def test_a_job_prefix_that_is_not_a_word_list_is_refused_by_name(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[hosts]]\nname = "a"\naddress = "127.0.0.1"\n'
                     'job_prefix = "sudo -u \'jobs"\n')
    proc = cli("hosts", "check", "--hosts", str(hosts), workspace=tmp_path / "ws")
    assert proc.returncode == 2
    assert "job_prefix" in proc.stderr and "quote it" in proc.stderr
