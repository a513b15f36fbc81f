"""The house rule between the two packages: the engine never loads the UI."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_engine_and_its_console_queries_load_without_textual() -> None:
    code = ("import sys, engine.search, engine.store.console_queries, console.legacy, "
            "console.launch; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
