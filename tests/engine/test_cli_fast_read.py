"""`show`, `lineage` and `export` read without the ORM (issue 18): on a real search they print,
byte for byte, what the ORM path prints, without importing SQLAlchemy; where the fast reader
cannot answer (an unknown id, a database of another schema) the ORM path answers as before."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.store import Store, ops
from tests.conftest import REPO, base_env
from tests.conftest import cli as run_cli

#: Runs the CLI with every stdlib reader answering None: the ORM path, in its own process.
ORM_PATH = ("import sys\n"
            "from console import cli_read, cli_read_more\n"
            "for name in ('show', 'lineage', 'export'):\n"
            "    setattr(cli_read_more, name, lambda args: None)\n"
            "cli_read.status = cli_read.ideas = lambda args: None\n"
            "from console.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")

HEAVY = {"sqlalchemy", "sqlmodel", "litellm", "torch"}


def _run(workspace: Path, args: list[str], *, orm: bool) -> tuple[int, bytes, bytes, set[str]]:
    """(exit code, stdout bytes, stderr without import lines, top-level modules imported)."""
    head = ["-c", ORM_PATH] if orm else ["-m", "console.cli"]
    proc = subprocess.run([sys.executable, "-X", "importtime", *head, "--workspace",
                           str(workspace), *args], cwd=REPO, env=base_env(),
                          capture_output=True, timeout=120, check=False)
    err = proc.stderr.decode().splitlines()
    imported = {line.split("|")[-1].strip() for line in err if line.startswith("import time:")}
    said = "\n".join(line for line in err if not line.startswith("import time:"))
    return proc.returncode, proc.stdout, said.encode(), imported


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished search (baseline, catalog ideas, one failed, exploit children confirmed by
    repeats, metric lines), a note, and a grandchild with no job that nearly repeats idea 2."""
    import shutil

    from tests.conftest import TOY

    root = tmp_path_factory.mktemp("fast-read")
    toy = root / "toyenv"
    shutil.copytree(TOY, toy)
    workspace = root / "ws"
    proc = run_cli("run", str(toy), "--name", "t", "--epochs", "3", "--ideas-per-epoch", "4",
                   "--auto", "--confirm-share", "1", workspace=workspace)
    assert proc.returncode == 0, proc.stderr
    run_cli("note", "3", "warm-up matters here", workspace=workspace, check=True)
    store = Store(workspace)
    s = ops.find_search(store, "t")
    children = sorted({c for p in (3, 4) for c in ops.children_of(store, p)})
    assert len(children) >= 2, children
    ops.add_idea(store, s.id, s.epoch, ops.NewIdea(
        text="[Experiment] Combine both children.", origin="exploit", title="Combine both",
        parents=tuple(children[:2]), twin_of=2))
    return workspace


COMMANDS = [
    ["show", "1"], ["show", "3"], ["show", "5"], ["show", "6"], ["show", "8"],
    ["show", "3", "--json"], ["show", "6", "--json"], ["show", "8", "--json"],
    ["lineage", "8"], ["lineage", "6"], ["lineage", "1"], ["lineage", "3", "--json"],
    ["lineage", "8", "--json"],
    ["export", "t"], ["export", "t", "--metrics"], ["export", "1", "--format", "json"],
    ["export", "t", "--format", "csv"], ["export", "t", "--format", "csv", "--metrics"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_fast_read_prints_what_the_orm_path_prints_without_sqlalchemy(
        search: Path, args: list[str]) -> None:
    code, out, err, imported = _run(search, args, orm=False)
    assert (code, err) == (0, b""), err
    assert not HEAVY & imported, HEAVY & imported
    orm_code, orm_out, orm_err, orm_imported = _run(search, args, orm=True)
    assert "sqlalchemy" in orm_imported  # the comparison is with the ORM path indeed
    assert (orm_code, orm_err) == (0, b"")
    assert out == orm_out


def test_what_the_fast_commands_say(search: Path) -> None:
    """What a researcher reads: the note, parents and children, the tree, the CSV's rows."""
    show3 = _run(search, ["show", "3"], orm=False)[1].decode()
    assert "note: warm-up matters here" in show3 and "\nchildren: 6, 7\n" in show3
    assert "\njob " in show3 and "GPU hours:" in show3
    show8 = _run(search, ["show", "8"], orm=False)[1].decode()
    assert "near duplicate of idea 2" in show8 and "parents: 6, 7" in show8
    tree = _run(search, ["lineage", "8"], orm=False)[1].decode().splitlines()
    assert tree[0].startswith("#8 ") and tree[1].startswith("  └─ #6 ")
    assert tree[2].startswith("    └─ #3 ") and tree[3].startswith("    └─ #4 ")
    assert _run(search, ["lineage", "3"], orm=False)[1].decode().endswith(
        "descendants: 6, 7, 8\n")
    table = _run(search, ["export", "t", "--format", "csv"], orm=False)[1].decode()
    rows = list(csv.DictReader(io.StringIO(table, newline="")))
    assert [int(r["id"]) for r in rows] == list(range(1, 9))
    assert rows[7]["parents"] == "6 7" and rows[2]["jobs"] != "0"
    metric_rows = _run(search, ["export", "t", "--format", "csv", "--metrics"], orm=False)[1]
    assert metric_rows.startswith(b"idea_id,job_id,run,name,step,value,time_s\r\n")
    assert len(metric_rows.splitlines()) > 10


@pytest.mark.parametrize("args,said", [
    (["show", "99"], "no idea 99"), (["lineage", "99"], "no idea 99"),
    (["export", "nope"], "no search 'nope'")])
def test_an_unknown_id_falls_back_to_the_orm_path_and_its_message(
        search: Path, args: list[str], said: str) -> None:
    code, out, err, imported = _run(search, args, orm=False)
    assert code == 2 and out == b"" and said in err.decode()
    assert "sqlalchemy" in imported


def test_no_database_falls_back_to_the_orm_path_and_its_message(tmp_path: Path) -> None:
    for args in (["show", "1"], ["lineage", "1", "--json"], ["export", "t"]):
        code, out, err, _ = _run(tmp_path / "nowhere", args, orm=False)
        assert code == 2 and out == b"" and b"no ideaforge workspace at" in err, err
    assert not (tmp_path / "nowhere").exists()  # a read makes no workspace


def test_a_database_of_another_schema_is_read_by_the_orm_path(
        search: Path, tmp_path: Path) -> None:
    """A database that says it is schema 11: the fast reader stands aside and the ORM path
    (which upgrades it) prints what it printed before."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(search, old)
    for args in (["show", "6"], ["lineage", "8"], ["export", "t", "--format", "csv"]):
        out = _run(search, args, orm=False)[1]
        with sqlite3.connect(old / "ideaforge.db") as conn:
            conn.execute("UPDATE meta SET value = '11' WHERE key = 'schema_version'")
        code, got, err, imported = _run(old, args, orm=False)
        assert (code, got) == (0, out), err
        assert "sqlalchemy" in imported
