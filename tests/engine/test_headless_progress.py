"""Headless `ideaforge run` shows how far its jobs have got while they run (without a
terminal: plain log lines, never a rewriting line) and ends with the leaderboard."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import REPO, base_env, wait_for

#: A toy job that reports a training loss every 0.1 s until the test lets it finish (or 50 s
#: pass), then writes its score: the catalog's diffs (the knobs above `main`) still apply.
TRAIN_MAIN = '''
def main() -> None:
    metrics_path = os.environ.get("IDEAFORGE_METRICS", "metrics.jsonl")
    gate = os.environ.get("PROGRESS_GATE")
    score = 5.0 - BONUS_A - BONUS_B - BONUS_C
    started, step = time.time(), 0
    while True:
        step += 10
        with open(metrics_path, "a") as fh:
            fh.write(json.dumps({"name": "train_loss", "value": 3.0 - step / 1000,
                                 "step": step, "time_s": time.time() - started}) + "\\n")
        if not gate or os.path.exists(gate) or time.time() - started > 50:
            break
        time.sleep(0.1)
    with open(metrics_path, "a") as fh:
        fh.write(json.dumps({"name": "score", "value": score, "step": step}) + "\\n")
    sys.exit(EXIT_CODE)


if __name__ == "__main__":
    main()
'''


def progress_env(toy_env: Path) -> Path:
    """The toy environment whose training waits for `$PROGRESS_GATE`, reporting as it goes."""
    train = toy_env / "train.py"
    text = train.read_text()
    train.write_text(text[:text.index("def main")] + TRAIN_MAIN.lstrip("\n"))
    return toy_env


def test_headless_run_shows_progress_lines_then_the_leaderboard(
        toy_env: Path, workspace: Path, tmp_path: Path) -> None:
    env = progress_env(toy_env)
    gate = tmp_path / "gate"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "--workspace", str(workspace), "run", str(env),
         "--name", "t", "--model", "catalog", "--auto", "--epochs", "1",
         "--ideas-per-epoch", "1", "--baseline-runs", "1", "--confirm", "off",
         "--fix-attempts", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=base_env(IDEAFORGE_PROGRESS_S="0.3", PROGRESS_GATE=str(gate)))
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        # The jobs run until the gate opens: their progress must be told meanwhile.
        line = wait_for(lambda: next((x for x in err if "running —" in x and "step" in x), None),
                        60, "a progress line while the jobs run")
        assert re.search(r"\d jobs? running — #\d+ step \d+ · train_loss [\d.]+ · \d+s left",
                         str(line)), line
        gate.touch()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    stderr = "".join(err)
    assert proc.returncode == 0, stderr
    # Not a terminal: whole lines only, no cursor tricks, and no line per tick (the job
    # reports every 0.1 s; a line comes at most every 0.3 s and only when a job moved).
    assert "\r" not in stderr and "\x1b" not in stderr
    progress_lines = [x for x in err if "running —" in x]
    assert 1 <= len(progress_lines) <= (time.monotonic() - started) / 0.3 + 1, progress_lines
    # The end: the leaderboard, as `demo` prints it, with the baseline and the catalog idea.
    assert "Leaderboard — t (score, minimize" in out, out
    ranked = [x for x in out.splitlines() if re.match(r"\s+\d+\. #\d+", x)]
    assert len(ranked) == 2, out
    assert any("baseline" in x for x in ranked), out


def test_on_a_terminal_progress_is_one_line_rewritten_under_the_log(
        toy_env: Path, workspace: Path, tmp_path: Path) -> None:
    """stderr on a terminal (a real pseudo-terminal): the progress line rewrites itself in
    place, log lines print whole above it, and it is gone when the run ends."""
    import os
    import pty

    env = progress_env(toy_env)
    gate = tmp_path / "gate"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "--workspace", str(workspace), "run", str(env),
         "--name", "t", "--model", "catalog", "--auto", "--epochs", "1",
         "--ideas-per-epoch", "1", "--baseline-runs", "1", "--confirm", "off",
         "--fix-attempts", "0"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, text=True,
        env=base_env(PROGRESS_GATE=str(gate), COLUMNS="200"))
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the other side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: re.search(r"\r\x1b\[K\d jobs? running — #\d+ step \d+ · train_loss",
                                   b"".join(chunks).decode(errors="replace")), 60,
                 "the progress line on the terminal")
        gate.touch()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    os.close(master)
    assert proc.returncode == 0
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    # What the terminal shows of each line: the text after its last carriage return.
    shown = [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in text.split("\n")]
    done = [line for line in shown if re.search(r"job \d+ done", line)]
    assert done and all("running —" not in line for line in done), shown
    assert not any("running —" in line for line in shown), shown  # erased, never left behind
    assert "Leaderboard — t" in out
