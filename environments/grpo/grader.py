"""The r1-zero reward: format check plus answer equivalence by math-verify, bounded in time.

This file is protected (environment.toml): evaluation grades with it. Ideas that shape the
*training* reward do so in train_grpo.py (`training_rewards`), never here.

math-verify bounds its own time with signal.alarm, which only works on a process's main
thread. We turn those timeouts off and run it in worker subprocesses instead: each sample gets
a deadline, and a worker that misses it is killed and replaced (the sample counts as wrong).
That works from any thread of the caller and survives inputs that make sympy spin for ever.

The workers start isolated (`_BOOTSTRAP`): neither this file's folder, nor the working
directory, nor PYTHONPATH is on their import path, so a `math_verify.py` (or any other module)
dropped next to the code or in the current folder cannot stand in for the installed package.
math-verify must therefore be installed in the interpreter's site-packages (setup.sh does).
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass

STOP = "</answer>"
# "... reasoning </think> <answer> final answer </answer>" (the response starts inside <think>).
_R1_ZERO = re.compile(r"^(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*$", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def extract_r1_zero_answer(response: str) -> str | None:
    """The answer of a well-formed response, or None when the format is broken."""
    match = _R1_ZERO.match(response)
    if match is None:
        return None
    think, answer = match.group("think"), match.group("answer")
    if any(tag in think for tag in _TAGS) or any(tag in answer for tag in _TAGS):
        return None
    answer = answer.strip()
    return answer or None


def _normalise(text: str) -> str:
    text = text.strip().strip("$").strip()
    boxed = re.fullmatch(r"\\boxed\{(.*)\}", text, re.DOTALL)
    if boxed:
        text = boxed.group(1)
    return re.sub(r"\s+", "", text)


def equivalent(gold: str, answer: str) -> bool:
    """math-verify equivalence, gold first. Unbounded in time: call it through `Grader`."""
    from math_verify import parse, verify

    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
    if not gold_parsed:
        return _normalise(gold) == _normalise(answer)
    inner = answer.strip()
    if "\\boxed" not in inner:
        inner = "\\boxed{" + inner.strip("$").strip() + "}"
    answer_parsed = parse(inner, parsing_timeout=None) or parse(answer, parsing_timeout=None)
    if not answer_parsed:
        return False
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def _worker_main() -> None:
    """One request per line on stdin ({"gold", "answer"}), one {"ok": bool} per line on stdout."""
    import logging

    logging.disable(logging.WARNING)  # math-verify warns on every call that timeouts are off
    import math_verify  # noqa: F401  (import before announcing readiness)

    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            ok = equivalent(request["gold"], request["answer"])
        except Exception:  # noqa: BLE001  (any parser error on model output = wrong answer)
            ok = False
        out.write(json.dumps({"ok": ok}) + "\n")
        out.flush()


# A worker's start: -E ignores PYTHONPATH (and every PYTHON* variable); `-c` puts the working
# directory first on sys.path, which goes before anything is imported; this file is loaded by
# its path, so its folder is never on sys.path. (`python -I` would do the same but also drop
# the user's site-packages, where `pip install` on a host without root puts math-verify.)
_BOOTSTRAP = (
    "import sys\n"
    "if sys.path[:1] == ['']: del sys.path[0]\n"
    "import importlib.util\n"
    "spec = importlib.util.spec_from_file_location('grader_worker', sys.argv[1])\n"
    "module = sys.modules['grader_worker'] = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module._worker_main()\n"
)


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-E", "-c", _BOOTSTRAP, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.ready = False
        self.started = time.monotonic()
        self.job: tuple[int, float] | None = None  # (index, deadline)

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def send(self, index: int, gold: str, answer: str, timeout_s: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"gold": gold, "answer": answer}) + "\n")
        self.proc.stdin.flush()
        self.job = (index, time.monotonic() + timeout_s)

    def read(self) -> dict | None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # one outstanding request: no lines hide in buffers
        return json.loads(line) if line else None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Grader:
    """A small pool of math-verify worker processes with a deadline for every sample."""

    def __init__(self, workers: int = 4, timeout_s: float = 5.0, start_timeout_s: float = 120.0):
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.restarts = 0
        self._workers = [_Worker() for _ in range(max(1, workers))]

    def equivalent_many(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """For each (gold, answer): equivalent within the time bound. Wrong when it times out."""
        results: list[bool | None] = [None] * len(pairs)
        pending: deque[int] = deque()
        for i, (gold, answer) in enumerate(pairs):
            if _normalise(gold) == _normalise(answer):
                results[i] = True  # identical strings need no parser
            else:
                pending.append(i)
        while pending or any(w.job for w in self._workers):
            for w in self._workers:
                if w.ready and w.job is None and pending:
                    i = pending.popleft()
                    w.send(i, pairs[i][0], pairs[i][1], self.timeout_s)
            now = time.monotonic()
            deadlines = [w.job[1] for w in self._workers if w.job]
            deadlines += [w.started + self.start_timeout_s for w in self._workers if not w.ready]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else 0.0
            readable, _, _ = select.select(self._workers, [], [], wait_s)
            for w in readable:
                message = w.read()
                if message is None and not w.ready:
                    raise RuntimeError("math-verify worker exited at start (is it installed?)")
                if message is None:  # the worker died: its sample is wrong, start another
                    self._replace(w, results)
                elif "ready" in message:
                    w.ready = True
                elif w.job is not None:
                    results[w.job[0]] = bool(message["ok"])
                    w.job = None
            now = time.monotonic()
            for w in list(self._workers):
                if w.job is not None and now >= w.job[1]:
                    self._replace(w, results)
                elif not w.ready and now >= w.started + self.start_timeout_s:
                    raise RuntimeError("math-verify worker did not start (is math-verify installed?)")
        return [bool(r) for r in results]

    def _replace(self, worker: _Worker, results: list[bool | None]) -> None:
        if worker.job is not None:
            results[worker.job[0]] = False
        worker.kill()
        self.restarts += 1
        self._workers[self._workers.index(worker)] = _Worker()

    def close(self) -> None:
        for w in self._workers:
            if w.proc.poll() is None:
                assert w.proc.stdin is not None
                w.proc.stdin.close()
                try:
                    w.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    w.kill()
        self._workers = []

    def __enter__(self) -> Grader:  # (no Self annotation: Python 3.10 has none)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Score:
    reward: float  # 1.0 only for a well-formed response with an equivalent answer
    format_ok: bool
    correct: bool


def grade_r1_zero(responses: list[str], golds: list[str], grader: Grader) -> list[Score]:
    answers = [extract_r1_zero_answer(r) for r in responses]
    to_check = [i for i, a in enumerate(answers) if a is not None]
    verdicts = grader.equivalent_many([(golds[i], answers[i]) for i in to_check])  # type: ignore[misc]
    correct = [False] * len(responses)
    for i, ok in zip(to_check, verdicts):
        correct[i] = ok
    return [
        Score(reward=1.0 if ok else 0.0, format_ok=a is not None, correct=ok)
        for a, ok in zip(answers, correct)
    ]
