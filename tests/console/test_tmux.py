"""The console in a real terminal: tmux runs it, we type, read the screen, and quit."""

from __future__ import annotations

import inspect
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import console.cli
from tests.conftest import REPO
from tests.console.builders import build

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

CLI_WIRED = "run_console" in inspect.getsource(console.cli)


class Tmux:
    def __init__(self, tmp: Path) -> None:
        self.socket = f"ideaforge-test-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, check=True, timeout=20).stdout

    def start(self, command: str) -> None:
        # the shell records the exit code, then stays so that the screen can be read
        shell = f"{command}; echo \"exit=$?\" > {self.tmp}/exit; sleep 60"
        self.run("new-session", "-d", "-s", "t", "-x", "150", "-y", "40", "-c", str(REPO),
                 "-e", "TERM=xterm-256color", "-e", f"IDEAFORGE_CONFIG={self.tmp}/none.toml",
                 shell)
        self.run("resize-window", "-t", "t", "-x", "150", "-y", "40")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The screen once it shows `text`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path)
    yield t
    t.kill()


@pytest.mark.parametrize("program", [
    pytest.param(f"{shlex.quote(sys.executable)} -m console", id="python -m console"),
    pytest.param(f"{shlex.quote(sys.executable)} -m console.cli", id="ideaforge",
                 marks=pytest.mark.skipif(not CLI_WIRED, reason="console/cli.py does not "
                                          "open the console yet")),
])
def test_console_in_tmux_navigates_and_quits_cleanly(tmux: Tmux, tmp_path: Path,
                                                     program: str) -> None:
    ws = tmp_path / "ws"
    build(ws).store.close()
    tmux.start(f"{program} --workspace {shlex.quote(str(ws))}")
    tmux.wait_for("imported read-only")  # the board of the most recent search
    tmux.keys("0")
    tmux.wait_for("toy-1")  # the searches
    tmux.wait_for("legacy-grpo")
    tmux.keys("Home", "Enter")
    tmux.wait_for("Halve bonus B")  # the board of toy-1
    tmux.wait_for("3 ideas wait for a decision")
    tmux.keys("2")
    tmux.wait_for("GPUs (gpu → job")
    tmux.keys("3")
    tmux.wait_for("founder(s) with descendants")
    tmux.keys("1", "?")
    tmux.wait_for("ideaforge — keys")
    tmux.keys("Escape")  # alone: an escape followed at once by q reads as alt+q
    tmux.wait_for("Halve bonus B")
    deadline = time.monotonic() + 10
    while "ideaforge — keys" in tmux.screen() and time.monotonic() < deadline:
        time.sleep(0.1)
    tmux.keys("q")
    deadline = time.monotonic() + 20
    while not (tmp_path / "exit").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "exit").read_text().strip() == "exit=0"
    # the terminal is back to normal: no alternate screen, no stray mouse reporting
    assert tmux.run("display", "-p", "-t", "t", "#{alternate_on}").strip() == "0"
    assert tmux.run("display", "-p", "-t", "t", "#{mouse_any_flag}").strip() == "0"
    assert "Traceback" not in tmux.screen()
