"""The ideaforge console: a Textual app over a workspace database.

Modes (the number keys): 0 searches, 1 the ideas board, 2 jobs and hosts, 3 lineage, 4 execution
statistics; details are pushed screens, confirmations are modal. Every read happens in a thread
worker through `engine.store.console_queries`; every decision is a row written with
`ops.add_decision` that the engine applies. Closing the console never stops a search.

Entry points: `run_console()` (what `ideaforge` and `ideaforge console` call) and
`python -m console --workspace DIR [SEARCH]`.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events
from textual.app import App, SuspendNotSupported
from textual.binding import BindingType
from textual.reactive import var
from textual.screen import Screen
from textual.worker import Worker

from console import commands, config
from engine.store.first_frame import DB_NAME

if TYPE_CHECKING:
    from console.screens.idea_detail import IdeaDetailScreen
    from engine.store import Store
    from engine.store.views import SearchView


def _searches() -> Screen[Any]:
    from console.screens.searches import SearchesScreen

    return SearchesScreen()


def _ideas() -> Screen[Any]:
    from console.screens.ideas import IdeasScreen

    return IdeasScreen()


def _jobs() -> Screen[Any]:
    from console.screens.jobs import JobsScreen

    return JobsScreen()


def _lineage() -> Screen[Any]:
    from console.screens.lineage import LineageScreen

    return LineageScreen()


def _stats() -> Screen[Any]:
    from console.screens.stats import StatsScreen

    return StatsScreen()


class IdeaforgeApp(App[int]):
    TITLE = "ideaforge"
    CSS_PATH = "app.tcss"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "searches": _searches,
        "ideas": _ideas,
        "jobs": _jobs,
        "lineage": _lineage,
        "stats": _stats,
    }
    BINDINGS: ClassVar[list[BindingType]] = commands.bindings("app")
    COMMANDS = App.COMMANDS | {commands.RegistryCommands, commands.IdeaJump}

    #: How long an open waits for an idea's detail that was not fetched ahead.
    OPEN_WAIT_S: ClassVar[float] = 0.1

    #: What the researcher opened: a search id or name (None: none yet).
    search_ref: var[int | str | None] = var(None)
    #: The open search's id once resolved.
    search_id: var[int | None] = var(None)

    def __init__(self, workspace: str | Path, search: str | int | None = None,
                 attach_engine: Callable[[], object] | None = None, *,
                 poll_s: float = 1.0, keys: dict[str, str] | None = None,
                 config_problems: tuple[str, ...] = (), open_latest: bool = False) -> None:
        super().__init__()
        self.workspace = Path(workspace).expanduser().resolve()
        home = str(Path.home())
        shown = str(self.workspace)
        self.workspace_label = "~" + shown[len(home):] if shown.startswith(home + "/") \
            else shown
        self.poll_s = poll_s
        self.attach_engine = attach_engine
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._initial_search = search
        #: With no search named, open the most recent one's board (the searches list when
        #: the workspace has none); otherwise the searches list.
        self._open_latest = open_latest
        self._keys = keys
        self._config_problems = config_problems
        self._last_error: tuple[str, float] = ("", 0.0)
        self.worker_errors: list[BaseException] = []  # every failure reported (tests read it)
        self.engines: list[subprocess.Popen[bytes]] = []
        self.engine_searches: dict[int, str] = {}  # engine pid → its search's name
        self.lineage_request: int | None = None
        self.details: dict[int, tuple[object, Any, Any]] = {}  # idea id → detail fetched
        self._detail_screen: IdeaDetailScreen | None = None  # installed on the first open
        self._opening: tuple[int, Screen[Any]] | None = None  # (idea, asked from) in flight

    # ------------------------------------------------------------------ the store
    def store(self) -> Store:
        """The workspace database, opened on first use (called from worker threads)."""
        with self._store_lock:
            if self._store is None:
                # Imported here, not at the top: SQLAlchemy comes after the first frame.
                from engine.store import Store

                self._store = Store(self.workspace, create=False)
            return self._store

    # ------------------------------------------------------------------ life cycle
    def on_mount(self) -> None:
        if self._keys is None:
            loaded = config.load()
            self._keys, self._config_problems = loaded.keys, loaded.problems
        if self._keys:
            self.set_keymap(self._keys)
        for problem in self._config_problems:
            self.notify(problem, severity="warning", title="config", timeout=10)
        if self._initial_search is not None:
            self.search_ref = self._initial_search
            self.switch_mode("ideas")
        elif self._open_latest and (self.workspace / DB_NAME).is_file():
            self.run_worker(self._find_latest, thread=True, exit_on_error=False,
                            name="find the latest search")
        else:
            self.switch_mode("searches")
        if self.attach_engine is not None:
            self.run_worker(self._attach, thread=True, exit_on_error=False,
                            name="start the engine")
        # Warm the detail screen's imports while the researcher reads the board (not before:
        # an import holds the interpreter, and the first frame comes first).
        self.set_timer(1.5, lambda: self.run_worker(_warm_imports, thread=True,
                                                    exit_on_error=False, name="warm up"))

    def _find_latest(self) -> None:
        from engine.store import ops

        latest = None
        try:
            latest = ops.latest_search(self.store())
        finally:  # whatever happened, the researcher gets a screen
            self.call_from_thread(self._show_latest, latest.id if latest else None)

    def _show_latest(self, search_id: int | None) -> None:
        if self.current_mode != self.DEFAULT_MODE:
            return  # the researcher has already picked a mode (a number key)
        if search_id is None:
            self.switch_mode("searches")
        else:
            self.open_search(search_id)

    def _attach(self) -> None:
        assert self.attach_engine is not None
        started = self.attach_engine()
        if isinstance(started, subprocess.Popen):
            search = None if self._initial_search is None else str(self._initial_search)
            self.call_from_thread(self.follow_engine, started, "the engine", search=search)

    def follow_engine(self, proc: subprocess.Popen[bytes], what: str,
                      log: Path | None = None, search: str | None = None) -> None:
        """Say how an engine this console started ends (a thread waits for it). `search`:
        its search's name, for what `run_console` says when the console closes first."""
        from console.launch import describe_exit, log_tail

        self.engines.append(proc)
        if search is not None:
            self.engine_searches[proc.pid] = search

        def wait() -> None:
            code = proc.wait()
            tail = log_tail(log) if code not in (0, 5) else ""
            try:
                self.call_from_thread(
                    self.notify, f"{what} (pid {proc.pid}) {describe_exit(code)}"
                    + (f"\n{tail}" if tail else ""), markup=False,
                    severity="information" if code in (0, 5) else "error", timeout=12)
            except RuntimeError:
                pass  # the console has closed meanwhile

        # A daemon thread, not a thread worker: a worker runs in the event loop's executor,
        # which the interpreter joins at exit, so quitting the console would hang until the
        # engine ends (it outlives the console on purpose).
        threading.Thread(target=wait, name=f"follow engine {proc.pid}", daemon=True).start()

    def on_unmount(self) -> None:
        if self._store is not None:
            from engine.store.console_queries import close_reader

            close_reader(self._store)
            self._store.close()

    # ------------------------------------------------------------------ errors
    def report_worker_error(self, worker: Worker[Any]) -> None:
        """The one place a failed background task becomes a notification."""
        error = worker.error
        if error is not None:
            self.worker_errors.append(error)
        # StoreError by name: importing it would import SQLAlchemy before the first frame
        store_error = any(c.__name__ == "StoreError" and c.__module__.startswith("engine.store")
                          for c in type(error).__mro__)
        text = str(error) if store_error else \
            f"{worker.name or 'a background task'} failed: {type(error).__name__}: {error}"
        last, at = self._last_error
        if text == last and time.monotonic() - at < 30:
            return  # a poll failing every second says it once
        self._last_error = (text, time.monotonic())
        self.notify(text, severity="error", title="error", timeout=8)

    # ------------------------------------------------------------------ navigation
    def action_mode(self, mode: str) -> None:
        if mode != self.current_mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        from console.screens.help import HelpScreen

        self.push_screen(HelpScreen(commands.scope_of(self.screen)))

    def open_search(self, search_id: int) -> None:
        self.search_ref = search_id
        self.search_id = search_id
        self.action_mode("ideas")

    def open_idea(self, idea_id: int) -> None:
        """Push the detail of an idea. One detail screen stays installed and is pointed at
        each idea in turn (composing a screen per open cost most of the key press); a detail
        opened from a detail already on a stack (a relative, another mode) is a new screen."""
        known = self.details.get(idea_id)
        if known is None:
            # Fetch it first (a few milliseconds in a worker) so that the screen opens whole,
            # in one frame; if the database is slow, it opens after OPEN_WAIT_S and loads.
            self._opening = (idea_id, self.screen)
            self.run_worker(partial(self._fetch_to_open, idea_id), thread=True,
                            exit_on_error=False, group="open-idea", name="fetch the idea")
            self.set_timer(self.OPEN_WAIT_S, partial(self._open_fetched, idea_id))
            return
        self._push_detail(idea_id, known)

    def _fetch_to_open(self, idea_id: int) -> None:
        from engine.store import console_queries as cq

        store = self.store()
        marker = cq.change_marker(store)
        detail = cq.idea_detail(store, idea_id)
        if detail is not None:
            search = cq.get_search(store, detail.idea.search_id)
            self.call_from_thread(self.remember_detail, idea_id, marker, detail, search)
        self.call_from_thread(self._open_fetched, idea_id)

    def _open_fetched(self, idea_id: int) -> None:
        """Push the detail asked for, once: when it is fetched or when waiting ends, unless
        the researcher has left the screen it was asked from meanwhile."""
        if self._opening is None or self._opening[0] != idea_id:
            return
        asked_from, self._opening = self._opening[1], None
        if self.screen is asked_from:
            self._push_detail(idea_id, self.details.get(idea_id))

    def _push_detail(self, idea_id: int, known: tuple[object, Any, Any] | None) -> None:
        from console.screens.idea_detail import IdeaDetailScreen

        screen = self._detail_screen
        if screen is None:
            screen = self._detail_screen = IdeaDetailScreen(idea_id, known=known)
            self.install_screen(screen, "idea-detail")
        elif self._on_a_stack(screen):
            screen = IdeaDetailScreen(idea_id, known=known)
        else:
            screen.show_idea(idea_id, known)
        self.push_screen(screen)

    def _on_a_stack(self, screen: Screen[Any]) -> bool:
        for mode in (*self.MODES, self.DEFAULT_MODE):
            try:
                if screen in self.get_screen_stack(mode):
                    return True
            except KeyError:  # a mode not shown yet
                continue
        return False

    def remember_detail(self, idea_id: int, marker: object, detail: Any, search: Any) -> None:
        """Keep an idea's detail for an instant open (the newest few dozen)."""
        self.details.pop(idea_id, None)
        self.details[idea_id] = (marker, detail, search)
        while len(self.details) > 64:
            self.details.pop(next(iter(self.details)))

    def show_lineage(self, idea_id: int) -> None:
        """The lineage mode, on the ancestry of an idea (its screen takes the request when it
        is next shown: it may not exist yet)."""
        self.lineage_request = idea_id
        if self.current_mode == "lineage":
            self.screen.post_message(events.ScreenResume())
        else:
            self.switch_mode("lineage")

    # ------------------------------------------------------------------ engine control
    async def stop_search(self, search: SearchView) -> None:
        from console.screens.confirm import ConfirmScreen

        if not await self.push_screen_wait(ConfirmScreen(
                f"Stop search {search.name}?",
                "The engine stops at its next step; running jobs keep running and report "
                "when it resumes.", yes="Stop")):
            return
        self.run_worker(lambda: self._write_stop(search), thread=True, exit_on_error=False,
                        name="stop the search")

    def _write_stop(self, search: SearchView) -> None:
        from engine.store import ops

        ops.add_decision(self.store(), search.id, "stop", source="console")
        self.call_from_thread(self.notify, f"stop sent to {search.name}")

    def resume_search(self, search: SearchView) -> None:
        from console.launch import resume

        def start() -> None:
            proc, log = resume(self.workspace, search.name)
            self.call_from_thread(self.notify, f"engine started for {search.name} (pid "
                                  f"{proc.pid}); its log: {log}", timeout=8, markup=False)
            self.call_from_thread(self.follow_engine, proc, f"the engine of {search.name}",
                                  log, search.name)

        self.run_worker(start, thread=True, exit_on_error=False, name="resume the search")

    # ------------------------------------------------------------------ $EDITOR
    def edit_text(self, text: str, name: str = "idea") -> str | None:
        """Edit `text` in $VISUAL/$EDITOR with the app suspended; None if the editor failed.

        Runs on the UI thread on purpose: the editor owns the terminal until it exits.
        """
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix=f"{name}-",
                                         delete=False, encoding="utf-8") as fh:
            fh.write(text)
            path = Path(fh.name)
        try:
            command = [*shlex.split(editor), str(path)]
            try:
                with self.suspend():
                    code = subprocess.call(command)
            except SuspendNotSupported:  # headless (tests): the editor needs no terminal
                code = subprocess.call(command, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if code != 0:
                self.notify(f"{editor} exited with {code}; nothing was saved",
                            severity="warning")
                return None
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            self.notify(f"could not run {editor!r}: {exc}", severity="error")
            return None
        finally:
            path.unlink(missing_ok=True)


def _warm_imports() -> None:
    import console.screens.idea_detail  # noqa: F401


def console_app(workspace: Path, search: str | None = None,
                attach_engine: Callable[[], object] | None = None) -> IdeaforgeApp:
    """The app `ideaforge console [SEARCH]` runs: on SEARCH's board, or with none named on
    the most recent search's board (the searches list in a workspace with none)."""
    return IdeaforgeApp(workspace, search, attach_engine, open_latest=search is None)


def run_console(workspace: Path, search: str | None = None,
                attach_engine: Callable[[], object] | None = None) -> int:
    """Open the console on a workspace (and a search). Returns the exit code (0).

    `attach_engine` is called once the console is up (in a worker thread); when it returns a
    `subprocess.Popen` (see `console.launch.start_engine`), the console says when it ends.
    Returns 2 without opening anything when there is no terminal to draw on.
    """
    if Path(workspace).expanduser().exists() and not Path(workspace).expanduser().is_dir():
        sys.stderr.write(f"{workspace} is a file, not a workspace folder; give a folder "
                         "with --workspace\n")
        return 2
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # Textual without a terminal neither draws nor reads keys: it would spin for ever.
        sys.stderr.write("the console needs a terminal; use `ideaforge status/ideas/show` "
                         "or run it in a terminal\n")
        return 2
    app = console_app(workspace, search, attach_engine)
    with _logs_off_the_terminal(Path(workspace)):
        result = app.run()
    _say_engines_go_on(app, Path(workspace))
    return int(result or 0)


def _say_engines_go_on(app: IdeaforgeApp, workspace: Path) -> None:
    """After the console has given the terminal back: the engines it started that still run
    (a demo's, a resumed search's), how to come back to them and how to stop them."""
    running = [p for p in app.engines if p.poll() is None]
    if not running:
        return
    default = Path(os.environ.get("IDEAFORGE_WORKSPACE") or ".ideaforge").expanduser()
    where = "" if default.resolve() == app.workspace else \
        f" --workspace {shlex.quote(str(app.workspace))}"
    for proc in running:
        name = app.engine_searches.get(proc.pid)
        if name is None:
            sys.stdout.write(f"an engine started from the console goes on in the background "
                             f"(pid {proc.pid}); see `ideaforge{where} status`\n")
            continue
        ref = shlex.quote(name)
        sys.stdout.write(
            f"search {name} goes on in the background (engine pid {proc.pid}).\n"
            f"  come back to it:  ideaforge{where} console {ref}\n"
            f"  stop it:          ideaforge{where} stop {ref}\n")
    sys.stdout.flush()


@contextmanager
def _logs_off_the_terminal(workspace: Path) -> Iterator[None]:
    """Log records written to the terminal would tear through the console's screen: while it
    runs, handlers writing to stderr/stdout are swapped for WORKSPACE/logs/console.log."""
    root = logging.getLogger()
    streams = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
               and not isinstance(h, logging.FileHandler)
               and getattr(h, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__,
                                                  sys.__stdout__)]
    replacement: logging.Handler = logging.NullHandler()
    if workspace.is_dir():
        (workspace / "logs").mkdir(exist_ok=True)
        replacement = logging.FileHandler(workspace / "logs" / "console.log")
        replacement.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for handler in streams:
        root.removeHandler(handler)
    root.addHandler(replacement)
    try:
        yield
    finally:
        root.removeHandler(replacement)
        replacement.close()
        for handler in streams:
            root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m console", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--workspace", help="workspace folder (default ./.ideaforge or "
                        "$IDEAFORGE_WORKSPACE)")
    parser.add_argument("search", nargs="?", help="open this search's ideas board")
    args = parser.parse_args(argv)
    workspace = args.workspace or os.environ.get("IDEAFORGE_WORKSPACE") or ".ideaforge"
    return run_console(Path(workspace), args.search)
