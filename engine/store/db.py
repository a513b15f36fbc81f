"""Opening a workspace database: SQLite in WAL mode, busy timeout, foreign keys, schema version.

A database written by an older ideaforge is upgraded in place by `engine.store.migrations`
(each step in one transaction); one from a newer release is refused with a clear error, and is
never touched.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError
from sqlmodel import Session, SQLModel, create_engine, select

from engine.store import migrations
from engine.store.models import Meta

log = logging.getLogger(__name__)

DB_NAME = "ideaforge.db"


class StoreError(RuntimeError):
    """The workspace database cannot be used; the message names the problem and the fix."""


class NeedsUpgrade(StoreError):
    """Opened read-only, the database is from an older ideaforge: it needs one writable open."""


def _on_connect(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _read_only(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=1")  # a read session can never write by mistake
    cur.close()


def _on_begin(conn) -> None:
    # BEGIN IMMEDIATE takes the write lock up front, so a compare-and-set never fails late
    # with "database is locked" after reading stale state.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    """One workspace database. Sessions live inside one call (see `engine.store.ops`)."""

    def __init__(self, workspace: str | Path, *, create: bool = True,
                 read_only: bool = False) -> None:
        """`read_only`: open the file with SQLite's `mode=ro` — nothing is written, created
        or upgraded, so an archived (read-only) copy of a workspace can be browsed."""
        self.workspace = Path(workspace).expanduser().resolve()
        self.path = self.workspace / DB_NAME
        self.read_only = read_only
        self._workspace_id: str | None = None
        self._job_key: str | None = None
        if self.workspace.exists() and not self.workspace.is_dir():
            raise StoreError(f"--workspace {self.workspace} is a file, not a folder; pass the "
                             "folder that holds (or will hold) ideaforge.db")
        if not self.path.exists() and (not create or read_only):
            raise StoreError(
                f"no ideaforge workspace at {self.workspace} (missing {DB_NAME}); "
                "start a search there first, or pass --workspace DIR"
            )
        if not create and not read_only and not (
                os.access(self.workspace, os.W_OK) and os.access(self.path, os.W_OK)):
            read_only = self.read_only = True  # e.g. an archived copy: browse it, write nothing
        try:
            self._open(create, read_only)
        except DatabaseError as exc:
            self.close()
            raise StoreError(
                f"{self.path} cannot be used as an ideaforge database ({exc.orig}); move it "
                "away or restore it from a backup — it was not changed") from None

    def _open(self, create: bool, read_only: bool) -> None:
        if read_only:
            self._open_read_only()
            return
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(
            f"sqlite:///{self.path}", connect_args={"timeout": 30, "check_same_thread": False}
        )
        event.listen(self.engine, "connect", _on_connect)
        # Let SQLAlchemy not emit its own BEGIN; we emit BEGIN IMMEDIATE ourselves.
        event.listen(self.engine, "connect", lambda c, r: setattr(c, "isolation_level", None))
        event.listen(self.engine, "begin", _on_begin)
        # Reads use a second pool with plain (deferred) BEGIN: in WAL mode they then never wait
        # for, nor hold up, the engine's writes.
        self.read_engine: Engine = create_engine(
            f"sqlite:///{self.path}", connect_args={"timeout": 30, "check_same_thread": False}
        )
        event.listen(self.read_engine, "connect", _on_connect)
        event.listen(self.read_engine, "connect",
                     lambda c, r: setattr(c, "isolation_level", None))
        event.listen(self.read_engine, "connect", _read_only)
        event.listen(self.read_engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        self._prepare_schema()

    def _open_read_only(self) -> None:
        # A WAL database needs its -shm file: when the folder is read-only and no writer left
        # a -wal behind, SQLite cannot make one, so the file is opened as immutable (it holds
        # the whole database, and nobody can be writing it without that folder).
        wal = self.path.with_name(DB_NAME + "-wal")
        frozen = not os.access(self.workspace, os.W_OK) and (
            not wal.exists() or wal.stat().st_size == 0)
        url = (f"sqlite:///file:{quote(str(self.path))}?"
               f"{'immutable=1' if frozen else 'mode=ro'}&uri=true")
        self.engine = create_engine(url, connect_args={"timeout": 30,
                                                       "check_same_thread": False})
        for listener in (lambda c, r: c.execute("PRAGMA busy_timeout=30000"),
                         lambda c, r: setattr(c, "isolation_level", None), _read_only):
            event.listen(self.engine, "connect", listener)
        event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        self.read_engine = self.engine
        found = self.schema_version()
        if found > migrations.CURRENT:
            raise StoreError(
                f"{self.path} was written by a newer ideaforge (schema {found}, this one knows "
                f"up to {migrations.CURRENT}); upgrade ideaforge (pip install -U ideaforge)")
        if found < migrations.CURRENT:
            raise NeedsUpgrade(
                f"{self.path} is from an older ideaforge (schema {found}, now "
                f"{migrations.CURRENT}) and cannot be upgraded read-only: open it once where it "
                "is writable (any command, e.g. `ideaforge status`), or browse it with the "
                "ideaforge that wrote it — the database was not changed")

    def _prepare_schema(self) -> None:
        # One write transaction (BEGIN IMMEDIATE): two processes opening a new workspace at
        # once must not both create it.
        with self.engine.begin() as conn:
            if not inspect(conn).get_table_names():
                SQLModel.metadata.create_all(conn)
                migrations.create_indexes(conn)
                conn.execute(text("INSERT OR IGNORE INTO meta (key, value) "
                                  "VALUES ('schema_version', :v)"), {"v": str(migrations.CURRENT)})
                return
        found = self.schema_version()
        if found > migrations.CURRENT:
            raise StoreError(
                f"{self.path} was written by a newer ideaforge (schema {found}, this one knows "
                f"up to {migrations.CURRENT}); upgrade ideaforge (pip install -U ideaforge) — "
                "the database was not changed"
            )
        if found < migrations.CURRENT:
            migrations.upgrade(self.engine, found)
            # New tables of this release that an old database lacks are created empty.
            SQLModel.metadata.create_all(self.engine)
            with self.engine.begin() as conn:
                migrations.create_indexes(conn)  # on tables create_all has just made

    def schema_version(self) -> int:
        with self.session(write=False) as s:
            row = s.exec(select(Meta).where(Meta.key == "schema_version")).first()
            return int(row.value) if row else 1

    def _meta_value(self, key: str, make: Callable[[], str]) -> str:
        with self.session() as s:
            s.exec(text("INSERT OR IGNORE INTO meta (key, value) VALUES (:k, :v)"
                        ).bindparams(k=key, v=make()))  # type: ignore[call-overload]
            return s.exec(select(Meta).where(Meta.key == key)).one().value

    def job_secret(self, job_id: int, queued_at: float) -> str:
        """The key that signs a job's `exit` record: derived from a random key kept in this
        workspace, so a job forging its own record cannot sign it. Never logged."""
        if self._job_key is None:
            self._job_key = self._meta_value("job_key", lambda: secrets.token_hex(32))
        return hmac.new(self._job_key.encode(), f"{job_id}:{queued_at!r}".encode(),
                        hashlib.sha256).hexdigest()

    def eval_seed(self, search_id: int) -> int:
        """The evaluation stage's seed for one search (IDEAFORGE_EVAL_SEED): the same for
        every job of the search, so its results are judged on the same held-out draw, and
        unknown to the training stage (the runner takes it out of spec.json first)."""
        if self._job_key is None:
            self._job_key = self._meta_value("job_key", lambda: secrets.token_hex(32))
        digest = hmac.new(self._job_key.encode(), f"eval-seed:{search_id}".encode(),
                          hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "little") >> 1

    def workspace_id(self) -> str:
        """This workspace's own identity: random, made once, kept in the database.

        It names the workspace's job directories on shared hosts. A path would not do: a
        workspace deleted and made again at the same path starts its job ids at 1 again, and
        must never take the old one's directories (and results) for its own.
        """
        if self._workspace_id is None:
            self._workspace_id = self._meta_value("workspace_id", lambda: secrets.token_hex(8))
        return self._workspace_id

    @contextmanager
    def session(self, write: bool = True) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception.

        `write=False` for reads: a consistent snapshot that takes no write lock.
        """
        bind = self.engine if write else self.read_engine
        with Session(bind, expire_on_commit=False) as s, s.begin():
            yield s

    def close(self) -> None:
        for engine in (getattr(self, "engine", None), getattr(self, "read_engine", None)):
            if engine is not None:
                engine.dispose()
