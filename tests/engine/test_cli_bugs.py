"""Issue 15's bugs of the CLI and the store, each through the real `ideaforge` command on real
SQLite files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, base_env, cli


def _workspace_with_a_search(ws: Path) -> None:
    from engine.store import Store, ops
    from engine.store.ops import NewIdea

    store = Store(ws)
    s = ops.create_search(store, name="s", env_name="toy", env_path="/x", env_version="v",
                          profile="smoke", model="catalog", epochs=1, ideas_per_epoch=2,
                          metric_name="score", goal="minimize")
    first = ops.add_idea(store, s.id, 0, NewIdea(text="Use RoPE. It helps.", origin="model"))
    ops.add_idea(store, s.id, 0, NewIdea(text="Combine it", origin="model", parents=(first,)))
    store.close()


def _chmod_tree(root: Path, write: bool) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode | 0o200 if write else mode & ~0o222)


def _unprivileged() -> list[str]:
    """A prefix that runs a command without the power to write read-only files: as root, the
    capabilities that bypass file modes are dropped (no other user can run this venv)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a read-only file cannot be enforced")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


def _ro_cli(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_unprivileged(), sys.executable, "-m", "console.cli",
                           "--workspace", str(ws), *args], cwd=REPO, env=base_env(),
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def read_only_copy(tmp_path: Path):
    _workspace_with_a_search(tmp_path / "ws")
    ro = tmp_path / "archive"
    shutil.copytree(tmp_path / "ws", ro)
    _chmod_tree(ro, write=False)
    yield ro
    _chmod_tree(ro, write=True)


def test_bug2_a_read_only_copy_can_be_browsed_and_is_never_written(read_only_copy: Path
                                                                   ) -> None:
    db = read_only_copy / "ideaforge.db"
    before = (db.stat().st_mtime_ns, hashlib.sha256(db.read_bytes()).hexdigest())
    # the capability drop really takes write access away
    assert _ro_cli(read_only_copy, "approve", "1").returncode != 0
    for args in (["status"], ["show", "1"], ["export", "s"], ["lineage", "2"], ["stats"]):
        proc = _ro_cli(read_only_copy, *args)
        assert proc.returncode == 0, (args, proc.stderr)
    assert json.loads(_ro_cli(read_only_copy, "status", "--json").stdout)[0]["name"] == "s"
    assert "Use RoPE" in _ro_cli(read_only_copy, "ideas", "s").stdout
    assert sorted(p.name for p in read_only_copy.iterdir()) == ["ideaforge.db"]
    assert (db.stat().st_mtime_ns, hashlib.sha256(db.read_bytes()).hexdigest()) == before


def test_bug2_an_old_read_only_workspace_says_it_needs_one_writable_open(tmp_path: Path
                                                                        ) -> None:
    ws = tmp_path / "old"
    _workspace_with_a_search(ws)
    con = sqlite3.connect(ws / "ideaforge.db")
    con.execute("UPDATE meta SET value='7' WHERE key='schema_version'")
    con.commit()
    con.close()
    _chmod_tree(ws, write=False)
    try:
        proc = _ro_cli(ws, "status")
    finally:
        _chmod_tree(ws, write=True)
    assert proc.returncode == 2, proc.stderr
    assert "older ideaforge" in proc.stderr and "writable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # writable, the same command upgrades it as before
    assert cli("status", workspace=ws).returncode == 0


def _refused(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one line that names what is wrong."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_bug11_bad_input_is_refused_in_one_line_and_nothing_is_stored(
        tmp_path: Path, toy_env: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "environment.toml").write_bytes(bytes(range(128, 256)) * 4)
    ws = tmp_path / "ws"
    _refused(cli("run", str(junk), "--model", "catalog", workspace=ws),
             str(junk / "environment.toml"), "UTF-8")
    bad_hosts = tmp_path / "hosts.toml"
    bad_hosts.write_text("[[host]\nname = \n")
    _refused(cli("run", str(toy_env), "--model", "catalog", "--hosts", str(bad_hosts),
                 workspace=ws), "hosts.toml")
    assert not ws.exists()  # neither refusal made a workspace

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    _refused(cli("status", workspace=a_file), str(a_file), "is a file")

    ws.mkdir()
    db = ws / "ideaforge.db"
    db.write_bytes(b"this is not SQLite" * 100)
    for args in (["status"], ["approve", "1"]):
        _refused(cli(*args, workspace=ws), str(db), "backup")
    assert db.read_bytes() == b"this is not SQLite" * 100


def test_bug5_a_failed_start_stores_no_search(tmp_path: Path, toy_env: Path) -> None:
    ws = tmp_path / "ws"
    env = {k: v for k, v in base_env().items() if not k.endswith("_API_KEY")}
    unknown = cli("run", str(toy_env), "--model", "no-such-model-xyz", workspace=ws, env=env)
    assert unknown.returncode == 1 and "unknown model 'no-such-model-xyz'" in unknown.stderr
    no_key = cli("run", str(toy_env), "--model", "openai/gpt-4o-mini", workspace=ws, env=env)
    assert no_key.returncode == 1 and "export OPENAI_API_KEY=" in no_key.stderr, no_key.stderr
    assert not ws.exists()  # no search `created` left behind, so the next run is not `-2`


def test_bug6_go_on_a_finished_search_is_refused_and_leaves_no_decision(tmp_path: Path
                                                                       ) -> None:
    from engine.store import Store, ops

    ws = tmp_path / "ws"
    _workspace_with_a_search(ws)
    store = Store(ws)
    ops.update_search(store, ops.find_search(store, "s").id, status="finished")
    proc = cli("go", "s", workspace=ws)
    _refused(proc, "'s' is finished", "no gate")
    assert "released" not in proc.stdout
    assert ops.pending_decisions(store, ops.find_search(store, "s").id) == []


ROPE = ("[Experiment] Rotary position embeddings (RoPE, Su et al. 2021; GPT-NeoX, LLaMA) "
        "instead of learned absolute position embeddings: queries and keys are rotated.\n"
        "[Code Changes] ...")
RELU2 = ("[Experiment] Squared ReLU (So et al. 2021, \"Primer\"). Cheaper than GELU.\n"
         "[Code Changes] ...")


def test_bug7_titles_end_at_a_sentence_or_a_word_and_combined_ideas_quote_them(
        tmp_path: Path, toy_env: Path) -> None:
    import random

    from engine import catalog, environments
    from engine.store import Store, ops
    from engine.store.ops import NewIdea

    ws = tmp_path / "ws"
    _workspace_with_a_search(ws)
    store = Store(ws)
    sid = ops.find_search(store, "s").id
    diff = {stem: (toy_env / "catalog" / f"{stem}.diff").read_text()
            for stem in ("bonus_a", "bonus_b")}
    for text, stem in ((ROPE, "bonus_a"), (RELU2, "bonus_b")):
        ops.add_idea(store, sid, 0, NewIdea(text=text, origin="catalog", diff=diff[stem]))
    titles = {i["id"]: i["title"] for i in
              json.loads(cli("ideas", "s", "--json", workspace=ws, check=True).stdout)}
    assert titles[3] == ("Rotary position embeddings (RoPE, Su et al. 2021; GPT-NeoX, LLaMA) "
                         "instead of…")
    assert titles[4] == 'Squared ReLU (So et al. 2021, "Primer")'
    assert titles[1] == "Use RoPE"
    assert all(len(t) <= 81 for t in titles.values())

    winners = [i for i in ops.list_ideas(store, sid) if i.diff]
    (combined,) = catalog.propose(environments.load(toy_env), "exploit", 1, random.Random(0),
                                  set(), winners)[:1]
    assert titles[3] in combined.text and titles[4] in combined.text


def test_bug10_status_numbers_epochs_as_the_console_and_the_json_do(tmp_path: Path) -> None:
    from engine.store import Store, ops

    ws = tmp_path / "ws"
    _workspace_with_a_search(ws)
    store = Store(ws)
    ops.update_search(store, ops.find_search(store, "s").id, epochs=3, epoch=2)
    (row,) = json.loads(cli("status", "--json", workspace=ws, check=True).stdout)
    assert row["epoch"] == 2
    # console/widgets/search_header.py's epoch_label says the same words
    assert "· epoch 2 (of 0–2) ·" in cli("status", workspace=ws, check=True).stdout


def test_bug8_demo_says_what_it_will_run(tmp_path: Path) -> None:
    from engine import environments
    from engine.catalog import load_catalog

    n = len(load_catalog(environments.load("nanogpt")))
    plan = (f"3 epochs of up to 6 ideas on nanogpt's smoke profile: the catalog's {n} ideas "
            "and, once two are confirmed, their combinations")
    assert plan in " ".join(cli("demo", "--help", workspace=tmp_path).stdout.split())
    # the start message comes first: a workspace that is a file stops it right after
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    proc = cli("demo", "--auto", workspace=a_file)
    assert proc.returncode == 2 and f"demo: {plan}" in proc.stderr, proc.stderr


def test_a_listing_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`ideaforge ideas S | head`: the reader leaves early; no error is printed."""
    from engine.store import Store, ops
    from tests.console.builders import add_many_ideas

    ws = tmp_path / "ws"
    store = Store(ws)
    s = ops.create_search(store, name="big", env_name="toy", env_path=str(tmp_path),
                          env_version="v", profile="smoke", model="catalog", epochs=1,
                          ideas_per_epoch=2, metric_name="score", goal="minimize",
                          baseline=5.0, status="finished")
    add_many_ideas(store, s.id, 3000)  # far more than a pipe holds
    store.close()
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "--workspace", str(ws),
                             "ideas", "big"], cwd=REPO, env=base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert first.split()[:2] == [b"id", b"ep"] and err == ""
