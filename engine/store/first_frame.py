"""What the console's first frame reads, through the standard library's `sqlite3` alone.

Importing SQLAlchemy and SQLModel costs about a third of a second; the ideas board should be on
screen before that. This module reads the open search and the board's first page on a read-only
connection (`mode=ro`, `query_only`) and returns the same dataclasses as
`engine.store.console_queries` (which defines none of its own for the board: it takes them from
here). The SQL below must stay equal to `console_queries.board_page`'s; tests/console
compare the two on several queries.

It imports nothing of `engine.store` but `views` (plain dataclasses) and `verification` (whose
SQL both readers run), and the package loads
`Store` lazily, so the console can import this before SQLAlchemy is loaded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

from engine.store import verification
from engine.store.views import SearchView

DB_NAME = "ideaforge.db"  # the same as engine.store.db.DB_NAME


@dataclass(frozen=True)
class BoardQuery:
    """Which ideas the board shows and in what order."""

    search_id: int
    epoch: int | None = None  # None: every epoch
    statuses: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    words: tuple[str, ...] = ()  # each must appear in the title or text (case-insensitive)
    confirmations: tuple[str, ...] = ()  # confirmed | unconfirmed | refuted (issue 13)
    sort: str = "default"  # default | id | score | status | origin | epoch
    reverse: bool = False
    goal: str = "minimize"  # "score" sorts best first for this goal


SORT_KEYS = ("default", "id", "score", "status", "origin", "epoch")


@dataclass(frozen=True)
class BoardRow:
    id: int
    epoch: int
    origin: str
    status: str
    score: float | None
    title: str
    attempts: int
    host: str | None
    quarantine: str | None
    edited_from: int | None
    pending: str | None  # a decision written but not yet applied by the engine
    verified: str | None = None  # verification.VERIFIED | UNVERIFIED | OTHER_EVALUATOR | None
    flags: tuple[str, ...] = ()  # what its jobs' results ignored or found doubtful
    # Repeats and confirmation (schema 7): `score` is the mean of `runs` scored runs.
    runs: int = 0
    score_se: float | None = None  # its standard error (two runs or more)
    confirmation: str | None = None  # None | unconfirmed | confirmed | refuted
    twin_of: int | None = None  # an earlier idea whose text this one nearly repeats


@dataclass(frozen=True)
class BoardPage:
    total: int
    offset: int
    rows: tuple[BoardRow, ...]


class Unavailable(Exception):
    """This reader cannot answer (no database yet, or one it cannot open read-only): use the
    SQLAlchemy store, which says what is wrong or prepares the database."""


@contextmanager
def reader(workspace: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a workspace's database, closed on exit."""
    path = Path(workspace).expanduser().resolve() / DB_NAME
    if not path.is_file():
        raise Unavailable(f"no database at {path}")
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30,
                               check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise Unavailable(str(exc)) from exc
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA query_only=1")
        conn.execute("BEGIN")  # one snapshot for every read below
        yield conn
    except sqlite3.Error as exc:  # e.g. a schema older than this code: the store upgrades it
        raise Unavailable(str(exc)) from exc
    finally:
        conn.close()


_SEARCH_COLUMNS = tuple(f.name for f in fields(SearchView))
_BOOLS = ("auto", "review_diffs")


def find_search(conn: sqlite3.Connection, ref: int | str) -> SearchView | None:
    """A search by id (an int, or a name made of digits that names none) or by name."""
    def by(column: str, value: object) -> SearchView | None:
        row = conn.execute(f"SELECT {', '.join(_SEARCH_COLUMNS)} FROM search "
                           f"WHERE {column} = ?", (value,)).fetchone()
        if row is None:
            return None
        data = dict(zip(_SEARCH_COLUMNS, row, strict=True))
        for name in _BOOLS:
            data[name] = bool(data[name])
        return SearchView(**data)

    if isinstance(ref, int):
        return by("id", ref)
    found = by("name", ref)
    if found is None and ref.isdigit():
        found = by("id", int(ref))
    return found


def _in(values: tuple[object, ...] | list[object]) -> str:
    return "(" + ", ".join("?" * len(values)) + ")"


def _filter(q: BoardQuery) -> tuple[str, list[object]]:
    conds, params = ["search_id = ?"], [q.search_id]
    if q.epoch is not None:
        conds.append("epoch = ?")
        params.append(q.epoch)
    for column, values in (("status", q.statuses), ("origin", q.origins), ("id", q.ids),
                           ("confirmation", q.confirmations)):
        if values:
            conds.append(f"{column} IN {_in(values)}")
            params.extend(values)
    for word in q.words:  # SQLAlchemy's ilike on SQLite: lower(x) LIKE lower(pattern)
        conds.append("(lower(title) LIKE lower(?) OR lower(text) LIKE lower(?))")
        params += [f"%{word}%", f"%{word}%"]
    return " AND ".join(conds), params


def _order(q: BoardQuery) -> str:
    asc = not q.reverse

    def by(column: str, ascending: bool = True) -> str:
        return f"{column} {'ASC' if ascending == asc else 'DESC'}"

    if q.sort == "id":
        return by("id")
    if q.sort == "score":  # best first for the goal; unscored ideas always last
        return f"score IS NULL, {by('score', q.goal == 'minimize')}, id ASC"
    if q.sort in ("status", "origin", "epoch"):
        return f"{by(q.sort)}, id ASC"
    return f"{by('epoch', False)}, {by('id')}"  # default: the newest epoch first


def board_page(conn: sqlite3.Connection, q: BoardQuery, offset: int, limit: int) -> BoardPage:
    """`console_queries.board_page` on a `reader()` connection: the same rows."""
    where, params = _filter(q)
    total = conn.execute(f"SELECT count(*) FROM idea WHERE {where}", params
                         ).fetchone()[0]
    offset = max(0, min(offset, max(0, total - 1)))
    rows = conn.execute(
        "SELECT id, epoch, origin, status, score, title, quarantine, edited_from, runs, "
        f"score_se, confirmation, twin_of FROM idea WHERE {where} ORDER BY {_order(q)} "
        "LIMIT ? OFFSET ?",
        [*params, limit, offset]).fetchall()
    ids = [r[0] for r in rows]
    attempts: dict[int, int] = {}
    hosts: dict[int, str] = {}
    pending: dict[int, str] = {}
    checked: dict[int, verification.Verification] = {}
    if ids:
        marks = _in(ids)
        attempts = dict(conn.execute(
            f"SELECT idea_id, count(*) FROM patch_attempt WHERE idea_id IN {marks} "
            "GROUP BY idea_id", ids).fetchall())
        # SQLite returns the bare column from the row holding max(): the latest job's host
        for idea_id, host, _ in conn.execute(
                f"SELECT idea_id, host, max(id) FROM job WHERE idea_id IN {marks} "
                "GROUP BY idea_id", ids):
            hosts[idea_id] = host
        for idea_id, action in conn.execute(
                f"SELECT idea_id, action FROM decision WHERE idea_id IN {marks} "
                "AND consumed_at IS NULL ORDER BY id", ids):
            pending[idea_id] = action
        checked = verification.of_ideas(conn.execute, ids)
    unknown = verification.UNKNOWN
    return BoardPage(total=int(total), offset=offset, rows=tuple(
        BoardRow(id=r[0], epoch=r[1], origin=r[2], status=r[3], score=r[4], title=r[5],
                 quarantine=r[6], edited_from=r[7], attempts=int(attempts.get(r[0], 0)),
                 host=hosts.get(r[0]), pending=pending.get(r[0]),
                 verified=checked.get(r[0], unknown).label,
                 flags=checked.get(r[0], unknown).flags, runs=int(r[8] or 0), score_se=r[9],
                 confirmation=r[10], twin_of=r[11]) for r in rows))
