"""Starting engines from the console: `ideaforge resume NAME` or `ideaforge run …` as detached
processes.

Detached means a new session (no SIGHUP when the console's terminal closes) and no pipes to
the console: the engine writes to `WORKSPACE/logs/engine-NAME.log`, and the console learns what
it does through the database like any other observer. Closing the console never stops a search.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

#: The folder that holds the `console` and `engine` packages (for PYTHONPATH).
SOURCE_ROOT = Path(__file__).resolve().parent.parent

EXIT_MEANINGS = {
    0: "finished",
    1: "failed (see its log)",
    2: "refused its input (see its log)",
    3: "stopped: the model budget is spent",
    4: "did not start: another engine already drives this search",
    5: "stopped by the researcher",
    130: "was interrupted",
}


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is running"
    if code < 0:
        return f"was killed by signal {-code}"
    return EXIT_MEANINGS.get(code, f"exited with code {code}")


def cli_command(workspace: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "console.cli", "--workspace", str(workspace), *args]


def spawn(workspace: Path, args: Sequence[str], log_name: str
          ) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `ideaforge ARGS` detached; returns the process and its log file."""
    workspace = Path(workspace).resolve()
    logs = workspace / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / log_name
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT),
                                                      env.get("PYTHONPATH", "")]))
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cli_command(workspace, *args), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, close_fds=True)
    return proc, log_path


def resume(workspace: Path, search: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`ideaforge resume SEARCH` in the background."""
    return spawn(workspace, ["resume", search], f"engine-{_safe(search)}.log")


def start_engine(workspace: Path, search: str) -> subprocess.Popen[bytes]:
    """For `ideaforge demo` without --auto: `run_console(ws, name, attach_engine=lambda:
    start_engine(ws, name))` starts the engine once the console is up."""
    return resume(workspace, search)[0]


def run_search(workspace: Path, env: str, options: Sequence[str], name: str | None
               ) -> tuple[subprocess.Popen[bytes], Path]:
    """`ideaforge run ENV OPTIONS [--name NAME]` in the background."""
    named = ["--name", name] if name else []
    log = f"engine-{_safe(name)}.log" if name else f"engine-new-{int(time.time())}.log"
    return spawn(workspace, ["run", env, *named, *options], log)


def log_tail(path: Path | None, lines: int = 3) -> str:
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 4000))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "search"
