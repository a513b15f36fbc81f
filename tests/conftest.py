"""Shared test helpers: the toy environment, the `ideaforge` CLI as a real subprocess, and
waiting on a condition with a deadline (never sleeping as synchronisation)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOY = Path(__file__).resolve().parent / "fixtures" / "toyenv"


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", WANDB_MODE="disabled", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def cli(*args: str, workspace: Path, env: dict[str, str] | None = None,
        timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "console.cli", "--workspace", str(workspace),
                           *args], cwd=REPO, env=env or base_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"ideaforge {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def start_cli(*args: str, workspace: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "console.cli", "--workspace",
                             str(workspace), *args], cwd=REPO, env=env or base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(cond: Callable[[], object], timeout: float = 60, what: str = "condition",
             interval: float = 0.1, proc: subprocess.Popen[str] | None = None) -> object:
    """Poll `cond` until it is true; with `proc`, fail at once (with its output) if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the process exited {proc.returncode} while waiting for "
                                 f"{what}:\n{out}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def toy_env(tmp_path: Path) -> Path:
    dest = tmp_path / "toyenv"
    shutil.copytree(TOY, dest)
    return dest


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"
