"""Console bugs of issue 15, each pinned by a test that failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.console.builders import build


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
