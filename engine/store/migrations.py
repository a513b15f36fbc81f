"""Versioned schema upgrades.

`CURRENT` is the schema this code writes. Each step `_to_N(conn)` upgrades a database from
N-1 to N inside one transaction, then records the new version. Steps only add (tables, columns
with defaults); they never drop data.

History:
1. the first release's tables.
2. `search.review_diffs`, `idea.quarantine`, `job.log_offset` and the `gpu_lease` table
   (GPU scheduling and the diff gate).
3. index `ix_idea_search_epoch_id` (the console pages one epoch of 100k ideas).
4. the `gpu_lease_log` table (leases given back, with their times; created by create_all).
5. `job.evaluator`, `job.flags`, `search.evaluator` (scores from the evaluation stage: which
   evaluator produced them, and what was ignored on the way).
6. `search.max_gpu_hours` (the GPU-hour budget: no job starts once it is spent).
7. repeats and confirmation: `job.run`, `job.seed`, `job.score`; `idea.runs`,
   `idea.score_se`, `idea.confirmation`, `idea.twin_of`; `search.confirm`,
   `search.baseline_runs`. Scored jobs of older searches get their idea's score and run 1.
8. pre-flight and crash repair: `job.kind` (run | preflight), `patch_attempt.kind`
   (implement | repair) and `patch_attempt.job_id`, `search.fix_attempts`.
9. `idea.note`: the researcher's note on an idea (`ideaforge note`).
10. `decision.diff`: a researcher's own diff on an idea they add or edit.
11. `job.external_id`, `job.external_state`, `job.external_reason`, `job.node`: a scheduler's
    word on the job (Slurm: its job id, state, pending reason and node) for the jobs screen.
12. indexes `ix_idea_search_epoch_status`, `ix_idea_search_status` and
    `ix_job_state_executor_queued`: the engine's tick counts and lists what is due from them
    instead of reading a whole epoch or queue (cost follows what changed, not what exists).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

CURRENT = 12


def _add_column(conn: Connection, table: str, column: str, ddl: str) -> None:
    if table not in inspect(conn).get_table_names():
        return  # made whole by create_all() after the upgrade
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    if column not in present:
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")


def _to_2(conn: Connection) -> None:
    _add_column(conn, "search", "review_diffs", "BOOLEAN NOT NULL DEFAULT 0")
    _add_column(conn, "idea", "quarantine", "VARCHAR")
    _add_column(conn, "job", "log_offset", "INTEGER NOT NULL DEFAULT 0")
    # gpu_lease is created by create_all() after the upgrade.


def _to_3(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_idea_search_epoch_id "
                         "ON idea (search_id, epoch, id)")


def _to_4(conn: Connection) -> None:
    """Nothing to change in place: the new `gpu_lease_log` table is made by create_all()."""


def _to_5(conn: Connection) -> None:
    _add_column(conn, "job", "evaluator", "VARCHAR")
    _add_column(conn, "job", "flags", "VARCHAR NOT NULL DEFAULT ''")
    _add_column(conn, "search", "evaluator", "VARCHAR")


def _to_6(conn: Connection) -> None:
    _add_column(conn, "search", "max_gpu_hours", "FLOAT")


def _to_7(conn: Connection) -> None:
    _add_column(conn, "job", "run", "INTEGER NOT NULL DEFAULT 1")
    _add_column(conn, "job", "seed", "INTEGER")
    _add_column(conn, "job", "score", "FLOAT")
    _add_column(conn, "idea", "runs", "INTEGER NOT NULL DEFAULT 0")
    _add_column(conn, "idea", "score_se", "FLOAT")
    _add_column(conn, "idea", "confirmation", "VARCHAR")
    _add_column(conn, "idea", "twin_of", "INTEGER")
    _add_column(conn, "search", "confirm", "VARCHAR NOT NULL DEFAULT 'off'")
    _add_column(conn, "search", "baseline_runs", "INTEGER NOT NULL DEFAULT 1")
    # Before repeats an idea had one scoring job: its score is that job's.
    conn.exec_driver_sql("UPDATE job SET score = (SELECT idea.score FROM idea WHERE "
                         "idea.id = job.idea_id) WHERE job.state = 'finished'")
    conn.exec_driver_sql("UPDATE idea SET runs = 1 WHERE status = 'scored' AND score IS NOT "
                         "NULL")


def _to_8(conn: Connection) -> None:
    _add_column(conn, "job", "kind", "VARCHAR NOT NULL DEFAULT 'run'")
    _add_column(conn, "patch_attempt", "kind", "VARCHAR NOT NULL DEFAULT 'implement'")
    _add_column(conn, "patch_attempt", "job_id", "INTEGER")
    _add_column(conn, "search", "fix_attempts", "INTEGER NOT NULL DEFAULT 0")


def _to_9(conn: Connection) -> None:
    _add_column(conn, "idea", "note", "VARCHAR")


def _to_10(conn: Connection) -> None:
    _add_column(conn, "decision", "diff", "VARCHAR")


def _to_11(conn: Connection) -> None:
    for column in ("external_id", "external_state", "external_reason", "node"):
        _add_column(conn, "job", column, "VARCHAR")


#: (name, table, columns) of the indexes schema 12 adds (a new database gets them too).
INDEXES_12 = (
    ("ix_idea_search_epoch_status", "idea", "search_id, epoch, status"),
    ("ix_idea_search_status", "idea", "search_id, status, epoch"),
    ("ix_job_state_executor_queued", "job", "state, executor, queued_at, id"),
)


def create_indexes(conn: Connection) -> None:
    """The indexes that `models` does not declare (made by a new database too)."""
    for name, table, columns in INDEXES_12:
        if table in inspect(conn).get_table_names():
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")


def _to_12(conn: Connection) -> None:
    create_indexes(conn)


STEPS: dict[int, Callable[[Connection], None]] = {2: _to_2, 3: _to_3, 4: _to_4, 5: _to_5,
                                                  6: _to_6, 7: _to_7, 8: _to_8, 9: _to_9,
                                                  10: _to_10, 11: _to_11,
                                                  12: _to_12}


def upgrade(engine: Engine, found: int) -> None:
    for version in range(found + 1, CURRENT + 1):
        step = STEPS[version]
        with engine.begin() as conn:
            step(conn)
            conn.execute(
                text("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', :v)"),
                {"v": str(version)},
            )
        log.info("upgraded workspace schema to version %d", version)
