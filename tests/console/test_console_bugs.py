"""Console bugs of issue 15, each pinned by a test that failed before its fix."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from console.app import IdeaforgeApp
from tests.conftest import REPO
from tests.console.builders import Built, build
from tests.console.test_tmux import Tmux


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "IDEAFORGE_CONFIG": "/nonexistent/ideaforge/config.toml"}
    return subprocess.run([sys.executable, "-m", "console.cli", *args], check=False, cwd=REPO,
                          env=env, capture_output=True, text=True,
                          **kwargs)  # type: ignore[call-overload]


# ---------------------------------------------------------------- bug 4: no terminal
def test_console_without_a_terminal_says_so_and_exits_2(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    build(ws).store.close()
    done = _cli("console", "--workspace", str(ws), stdin=subprocess.DEVNULL, timeout=20)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "the console needs a terminal" in done.stderr
    assert "ideaforge status" in done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------- bug 1: q at the demo's gate
def test_quitting_the_demo_console_returns_and_says_the_search_goes_on(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    tmux = Tmux(tmp_path)
    try:
        tmux.start(f"{shlex.quote(sys.executable)} -m console.cli --workspace "
                   f"{shlex.quote(str(ws))} demo")
        tmux.wait_for("wait for a decision", 60)  # the gate, the catalog's ideas on the board
        tmux.keys("q")
        deadline = time.monotonic() + 8
        while not (tmp_path / "exit").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shown = tmux.screen()
        assert (tmp_path / "exit").exists(), f"the demo never returned; the screen:\n{shown}"
        assert (tmp_path / "exit").read_text().strip() == "exit=0"
        assert "goes on in the background (engine pid" in shown, shown
        pid = int(shown.split("engine pid ")[1].split(")")[0])
        os.kill(pid, 0)  # the engine still runs: quitting the console does not stop a search
        name = shown.split("stop it:")[1].split()[-1]
        assert f"ideaforge --workspace {ws} console {name}" in shown
        assert _cli("--workspace", str(ws), "stop", "--cancel-jobs", name,
                    timeout=30).returncode == 0
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid), "the engine did not stop"
    finally:
        tmux.kill()
        for pid in _engine_pids(ws):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # the engine this test started, should stop fail


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running: it waits for nobody (its parent, the demo, has exited)
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


def _engine_pids(ws: Path) -> list[int]:
    import sqlite3

    db = ws / "ideaforge.db"
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [r[0] for r in conn.execute("select engine_pid from search") if r[0]]


# ---------------------------------------------------------------- bug 3: a workspace that is a file
def test_console_refuses_a_workspace_that_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("not a workspace\n")
    done = _cli("console", "--workspace", str(afile), stdin=subprocess.DEVNULL, timeout=20)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip() == f"{afile} is a file, not a workspace folder; give a folder " \
        "with --workspace"


async def test_new_search_form_says_why_it_could_not_start(tmp_path: Path) -> None:
    from textual.widgets import Select

    from console.app import IdeaforgeApp
    from console.screens.new_search import NewSearchScreen
    from tests.console.helpers import until

    afile = tmp_path / "notes.txt"
    afile.write_text("not a workspace\n")
    app = IdeaforgeApp(afile, None, keys={}, poll_s=0.1)
    async with app.run_test(size=(150, 48)) as pilot:
        await pilot.press("0", "n")
        form = await until(pilot, lambda: isinstance(app.screen, NewSearchScreen)
                           and app.screen, 10, "the form")
        # no search in this workspace: the first environment listed, the demo's
        assert form.query_one("#env", Select).value == "nanogpt"
        await pilot.press("ctrl+s")
        problem = str(form.query_one("#problem").content)
        assert problem.startswith("could not start the engine:") and "notes.txt" in problem
        assert app.screen is form and not app.engines


async def test_new_search_form_defaults_to_the_latest_search_environment(
        tmp_path: Path) -> None:
    from textual.widgets import Input, Select

    from console.app import IdeaforgeApp
    from console.screens.new_search import NewSearchScreen
    from engine.store import Store, ops
    from tests.console.helpers import until

    mine = tmp_path / "myenv"
    mine.mkdir()
    (mine / "environment.toml").write_text("")
    store = Store(tmp_path / "ws")
    for name, env, path in (("old", "grpo", "/elsewhere/grpo"), ("new", "myenv", str(mine))):
        ops.create_search(store, name=name, env_name=env, env_path=path, env_version="v",
                          profile="smoke", model="catalog", epochs=1, ideas_per_epoch=1,
                          metric_name="score", goal="minimize", status="finished")
    store.close()
    app = IdeaforgeApp(tmp_path / "ws", None, keys={}, poll_s=0.1)
    async with app.run_test(size=(150, 48)) as pilot:
        await pilot.press("0")
        await until(pilot, lambda: len(getattr(app.screen, "summaries", ())) == 2, 10,
                    "the searches")
        await pilot.press("n")
        form = await until(pilot, lambda: isinstance(app.screen, NewSearchScreen)
                           and app.screen, 10, "the form")
        assert form.query_one("#env-path", Input).value == str(mine)
        assert form.query_one("#env", Select).value is Select.NULL
        await pilot.press("escape")


# ---------------------------------------------------------------- bug 13: cells that grow
async def test_searches_list_widens_a_column_when_a_cell_grows(
        make_app: Callable[..., IdeaforgeApp], built: Built) -> None:
    from textual.widgets import DataTable

    from console.screens.searches import SearchesScreen
    from engine.store import ops
    from tests.console.helpers import until

    app = make_app(None)
    async with app.run_test(size=(200, 40)) as pilot:
        await pilot.press("0")
        screen = await until(pilot, lambda: isinstance(app.screen, SearchesScreen)
                             and len(app.screen.summaries) == 2 and app.screen, 10, "searches")
        table = screen.query_one(DataTable)
        phase = "waiting for the last jobs of the epoch"
        assert table.columns["phase"].content_width < len(phase)
        ops.update_search(built.store, built.search_id, phase=phase, event="phase changed")
        await until(pilot, lambda: screen.summaries[built.search_id].search.phase == phase,
                    10, "the new phase")
        await pilot.pause()
        # the column is as wide as its new cell: the phase is shown whole, not cut short
        assert table.columns["phase"].content_width >= len(phase)


# ---------------------------------------------------------------- bug 10: catalog parents
async def test_lineage_pane_labels_catalog_parents_by_their_origin(
        tmp_path: Path, pinned: None) -> None:
    from textual.widgets import OptionList

    from console.screens.idea_detail import IdeaDetailScreen
    from engine.store import Store, ops
    from tests.console.helpers import until

    store = Store(tmp_path / "ws")
    sid = ops.create_search(store, name="cat", env_name="nanogpt", env_path="/envs/nanogpt",
                            env_version="v", profile="smoke", model="catalog", epochs=2,
                            ideas_per_epoch=2, metric_name="val_loss", goal="minimize",
                            status="running").id
    a, b = (ops.add_idea(store, sid, 0, ops.NewIdea(text=f"[Experiment] {t}.", origin="catalog",
                                                    catalog_stem=t.lower())) for t in ("RoPE",
                                                                                       "SwiGLU"))
    # as engine/catalog.py combines two catalog ideas
    child = ops.add_idea(store, sid, 1, ops.NewIdea(
        text="[Experiment] RoPE + SwiGLU.", origin="exploit", parents=(a, b),
        parent_kind="exploit", title=f"combine #{a} + #{b}"))
    store.close()
    app = IdeaforgeApp(tmp_path / "ws", "cat", keys={}, poll_s=0.1)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.search_id is not None, 10, "the board")
        app.open_idea(child)
        screen = await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen)
                             and app.screen, 10, "the detail")
        await pilot.press("]")  # the next pane: lineage
        pane = await until(pilot, lambda: screen.query("#pane-lineage").first(OptionList),
                           10, "the lineage pane")
        await until(pilot, lambda: pane.option_count == 2, 10, "the parents")
        lines = [str(pane.get_option_at_index(i).prompt) for i in range(2)]
        assert all(line.startswith("parent") and line.endswith("(catalog)") for line in lines), \
            lines


# ---------------------------------------------------------------- bug 14: esc from a detail
async def test_back_from_a_detail_draws_the_board_before_it_polls(
        make_app: Callable[..., IdeaforgeApp], built: Built) -> None:
    """`esc` took ~165 ms (a key ~60): the board polled the database at once on its return,
    and that worker competed with the repaint. The board's frame comes first now, its check
    for anything newer follows."""
    from console.screens.idea_detail import IdeaDetailScreen
    from console.screens.ideas import IdeasScreen
    from tests.console.helpers import board, until

    app = make_app(poll_s=30.0)  # no timer tick during the test: only the return polls
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: board(pilot)._rows, 10, "the board")
        ideas = app.screen
        assert isinstance(ideas, IdeasScreen)
        polls: list[float] = []
        real_poll = ideas.poll
        ideas.poll = lambda: polls.append(time.monotonic()) or real_poll()  # type: ignore
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen), 10, "the detail")
        await pilot.pause(0.2)
        polls.clear()
        ideas.RECHECK_S = 1.0  # however slow this machine's frame, the poll comes after it
        await pilot.press("escape")  # returns once the app is idle: the frame is drawn
        assert app.screen is ideas
        assert not polls, "the board polled before its frame was drawn"
        await until(pilot, lambda: polls, 3, "the board's re-check after the frame")
