"""The workspace database: WAL, compare-and-set, schema versions and upgrades."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.store import Store, StoreError, job_ops, ops
from engine.store.migrations import CURRENT


def _search(store: Store, name: str = "s") -> int:
    return ops.create_search(store, name=name, env_name="toy", env_path="/x", env_version="v",
                             profile="smoke", model="catalog", epochs=1, ideas_per_epoch=2,
                             metric_name="score", goal="minimize").id


def test_wal_mode_and_foreign_keys(tmp_path: Path) -> None:
    store = Store(tmp_path)
    _search(store)
    con = sqlite3.connect(tmp_path / "ideaforge.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("INSERT INTO idea (search_id, epoch, origin, text, title, status, "
                    "created_at, updated_at) VALUES (999, 0, 'seed', 't', 't', 'proposed', 0, 0)")


def test_compare_and_set_lets_one_writer_win(tmp_path: Path) -> None:
    store = Store(tmp_path)
    sid = _search(store)
    (b,) = ops.ensure_batches(store, sid, 0, [("seed", 2)])
    (idea,) = ops.finish_batch(store, b.id, [ops.NewIdea(text="[Experiment] a", origin="seed")])
    other = Store(tmp_path)  # a second process's view of the same file
    assert ops.transition_idea(store, idea, "proposed", "approved")
    assert not ops.transition_idea(other, idea, "proposed", "rejected")
    assert ops.get_idea(other, idea).status == "approved"
    # a batch is stored once, whoever finishes it
    assert ops.finish_batch(other, b.id, [ops.NewIdea(text="x", origin="seed")]) == []
    assert len(ops.list_ideas(store, sid)) == 1


def test_gpu_leases_cannot_overlap(tmp_path: Path) -> None:
    store = Store(tmp_path)
    sid = _search(store)
    (b,) = ops.ensure_batches(store, sid, 0, [("seed", 2)])
    a, c = ops.finish_batch(store, b.id, [ops.NewIdea(text="a", origin="seed", status="implemented"),
                                          ops.NewIdea(text="c", origin="seed", status="implemented")])
    ja = job_ops.enqueue_job(store, a, profile="gpu", gpus_wanted=2)
    jc = job_ops.enqueue_job(store, c, profile="gpu", gpus_wanted=2)
    assert ja and jc
    assert job_ops.take_gpus(store, "h", [0, 1], ja)
    assert not job_ops.take_gpus(store, "h", [1, 2], jc)
    assert job_ops.leased_gpus(store, "h") == {0: ja, 1: ja}
    job_ops.release_gpus(store, ja)
    assert job_ops.take_gpus(store, "h", [1, 2], jc)


def _v1_database(path: Path) -> None:
    """A workspace as the first release wrote it (schema 1)."""
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE search (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL UNIQUE,
            env_name VARCHAR NOT NULL, env_path VARCHAR NOT NULL, env_version VARCHAR NOT NULL,
            profile VARCHAR NOT NULL, model VARCHAR NOT NULL, coder_model VARCHAR,
            api_base VARCHAR, epochs INTEGER NOT NULL, ideas_per_epoch INTEGER NOT NULL,
            auto BOOLEAN NOT NULL, advance_at FLOAT NOT NULL, max_cost_usd FLOAT,
            max_attempts INTEGER NOT NULL, metric_name VARCHAR NOT NULL, goal VARCHAR NOT NULL,
            baseline FLOAT, status VARCHAR NOT NULL, epoch INTEGER NOT NULL,
            phase VARCHAR NOT NULL, message VARCHAR, config_json VARCHAR NOT NULL,
            engine_pid INTEGER, engine_host VARCHAR, engine_heartbeat FLOAT,
            created_at FLOAT NOT NULL, updated_at FLOAT NOT NULL);
        CREATE TABLE idea (id INTEGER PRIMARY KEY, search_id INTEGER NOT NULL REFERENCES search(id),
            epoch INTEGER NOT NULL, origin VARCHAR NOT NULL, text VARCHAR NOT NULL,
            title VARCHAR NOT NULL, status VARCHAR NOT NULL, score FLOAT, reason VARCHAR,
            batch_id INTEGER, catalog_stem VARCHAR, edited_from INTEGER, diff VARCHAR,
            created_at FLOAT NOT NULL, updated_at FLOAT NOT NULL);
        CREATE TABLE job (id INTEGER PRIMARY KEY, search_id INTEGER NOT NULL, idea_id INTEGER NOT NULL,
            attempt INTEGER NOT NULL, executor VARCHAR NOT NULL, host VARCHAR NOT NULL,
            profile VARCHAR NOT NULL, gpus_wanted INTEGER NOT NULL, gpus VARCHAR NOT NULL,
            state VARCHAR NOT NULL, job_dir VARCHAR, pid INTEGER, exit_code INTEGER,
            reason VARCHAR, log_tail VARCHAR NOT NULL, metrics_offset INTEGER NOT NULL,
            queued_at FLOAT NOT NULL, started_at FLOAT, finished_at FLOAT, heartbeat_at FLOAT);
        INSERT INTO search VALUES (1, 'old', 'nanogpt', '/x', 'v', 'full', 'gpt', NULL, NULL,
            10, 80, 0, 1.0, NULL, 10, 'val_loss', 'minimize', 3.255, 'finished', 9, 'done',
            NULL, '{}', NULL, NULL, NULL, 0, 0);
        INSERT INTO idea VALUES (1, 1, 0, 'seed', '[Experiment] old idea', 'old idea',
            'scored', 3.1, NULL, NULL, NULL, NULL, NULL, 0, 0);
        INSERT INTO job VALUES (1, 1, 1, 1, 'local', 'local', 'full', 8, '', 'finished',
            '/x/job-1', NULL, 0, NULL, '', 120, 0, 1, 2, 1);
    """)
    con.commit()
    con.close()


def test_old_database_is_upgraded_without_loss(tmp_path: Path) -> None:
    _v1_database(tmp_path / "ideaforge.db")
    store = Store(tmp_path)
    assert store.schema_version() == CURRENT
    s = ops.find_search(store, "old")
    assert s.review_diffs is False and s.baseline == 3.255
    (idea,) = ops.list_ideas(store, s.id)
    assert idea.score == 3.1 and idea.quarantine is None
    # Scored before evaluation stages existed: no evaluator on the job or the search, so the
    # result is shown as unverified (and nothing else about it changes).
    (job,) = job_ops.list_jobs(store, idea_id=1)
    assert job.state == "finished" and job.evaluator is None and job.flags == ""
    assert s.evaluator is None
    assert job_ops.leased_gpus(store, "any") == {}  # the new table exists
    con = sqlite3.connect(tmp_path / "ideaforge.db")
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "ix_idea_search_epoch_id" in indexes


def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    first = Store(tmp_path)
    _search(first)
    first.close()
    db = tmp_path / "ideaforge.db"

    def dump() -> list[str]:
        con = sqlite3.connect(db)
        lines = list(con.iterdump())
        con.close()
        return lines

    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    before = dump()
    with pytest.raises(StoreError, match="newer ideaforge"):
        Store(tmp_path)
    assert dump() == before


def test_engine_does_not_import_the_ui() -> None:
    code = ("import sys, engine.search, engine.store, engine.executors.local, engine.llm; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'console')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
