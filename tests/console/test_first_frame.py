"""The board's first frame, read with sqlite3 alone, equals what the SQLAlchemy store reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from console.cli import main as ideaforge
from engine.store import console_queries as cq
from engine.store import first_frame as ff
from engine.store import ops
from tests.console.builders import Built, add_many_ideas

QUERIES = [
    {},
    {"reverse": True},
    {"epoch": 1},
    {"epoch": 0, "sort": "id", "reverse": True},
    {"statuses": ("proposed", "scored")},
    {"origins": ("seed", "exploit"), "sort": "origin"},
    {"words": ("lr",)},
    {"words": ("THE", "a")},
    {"ids": (1, 2, 3, 5, 8), "sort": "status", "reverse": True},
    {"sort": "score"},
    {"sort": "score", "goal": "maximize"},
    {"sort": "score", "reverse": True},
    {"sort": "epoch"},
    {"sort": "epoch", "reverse": True},
    {"statuses": ("nothing-has-this",)},
]


@pytest.mark.parametrize("where", QUERIES)
@pytest.mark.parametrize(("offset", "limit"), [(0, 60), (3, 4), (10_000, 5)])
def test_first_page_equals_board_page(built: Built, where: dict[str, object], offset: int,
                                      limit: int) -> None:
    store = built.store
    ops.add_decision(store, built.search_id, "approve", idea_id=min(built.ideas.values()),
                     source="console")
    add_many_ideas(store, built.search_id, 30, epoch=1)
    query = cq.BoardQuery(search_id=built.search_id, **where)  # type: ignore[arg-type]
    want = cq.board_page(store, query, offset, limit)
    with ff.reader(store.workspace) as conn:
        got = ff.board_page(conn, query, offset, limit)
    assert got == want
    assert type(got.rows[0] if got.rows else got) in (cq.BoardRow, cq.BoardPage)


def test_find_search_equals_the_store(built: Built) -> None:
    store = built.store
    with ff.reader(store.workspace) as conn:
        for ref in (built.search_id, built.imported_id, str(built.search_id), "toy-1"):
            want = (cq.get_search(store, ref) if isinstance(ref, int)
                    else cq.search_by_name(store, ref) or cq.get_search(store, int(ref)))
            assert ff.find_search(conn, ref) == want
        assert ff.find_search(conn, "no-such-search") is None


def test_no_database_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ff.Unavailable), ff.reader(tmp_path):
        pass


def test_the_console_starts_without_sqlalchemy() -> None:
    """What the board's first frame needs imports neither SQLAlchemy nor SQLModel."""
    code = ("import sys; import console.cli, console.app, console.screens.ideas; "
            "from engine.store import first_frame; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'sqlmodel') or m in ('engine.store.db', 'engine.search')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_store_errors_still_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ideaforge(["--workspace", str(tmp_path / "none"), "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ideaforge: no ideaforge workspace at") and err.count("\n") == 1
