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
# The reference's format check, literally: "... reasoning </think> <answer> final answer </answer>"
# (the response starts inside <think>; one space between the tags, no other whitespace).
FORMAT_MARK = "</think> <answer>"


def extract_r1_zero_answer(response: str) -> str | None:
    """The answer of a well-formed response ("" when the tags hold nothing: well formed, wrong),
    or None when the format is broken.

    As the reference: the response must hold the literal "</think> <answer>" and "</answer>";
    the answer is the text after the last "<answer>". Stricter, for responses the stop string
    never produces (sampling stops at the first "</answer>"): exactly one "</answer>", and
    nothing but whitespace after it."""
    if FORMAT_MARK not in response or response.count(STOP) != 1:
        return None
    answer, stop, after = response.rsplit("<answer>", 1)[1].partition(STOP)
    if not stop or after.strip():
        return None
    return answer.strip()


# Relations math-verify reads as "the last side is the answer": "41 = 42" would count as 42.
_RELATION = re.compile(r"=|\\approx|\\simeq|\\equiv|≈")
# A side that only names the unknown ("x", "y_1", "\\theta", "f(x)", "AB"), which a final
# "x = 5" may carry.
_NAME = re.compile(r"^(?:[A-Za-z]{1,3}|\\[A-Za-z]+)(?:_\{?[A-Za-z0-9]+\}?)?(?:\([A-Za-z]\))?$")
# A number written in a base: 1011_2, 1011_{2}, 10_{16} (not a name such as x_1)
_BASE = re.compile(r"(?<![A-Za-z\\])([0-9][0-9A-F]*)_\{?([0-9]+)\}?")
# A unit (\text{ cm}, \mbox{m}, \mathrm{km}) and the power it is raised to (none = 1)
_UNIT = re.compile(r"\\(?:text|mbox|mathrm)\{\s*([A-Za-z]+)\s*\}(?:\^\{?([0-9]+)\}?)?")


_THOUSANDS = re.compile(r"(\d),(?:\\!)?\s*(\d{3})(?!\d)")


def _top_level_split(text: str, pattern: re.Pattern) -> list[str]:
    """text split at matches of pattern that are outside (), [] and {}."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            match = pattern.match(text, i)
            if match:
                parts.append(text[start:i])
                start = i = match.end()
                continue
        i += 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def answer_sides(gold: str, answer: str) -> list[str]:
    """The sides of the answer that must each equal the gold: "x = 5" -> ["5"], "41 = 42" ->
    ["41", "42"], "42 \\approx 41" -> ["42", "41"]; sides that only name the unknown are
    dropped. The whole answer when the gold is itself a relation (an equation answer), or when
    the answer lists several things (a top-level comma: "x = 1, y = 2")."""
    listed = _THOUSANDS.sub(r"\1\2", answer)  # 10,\!080 and 58,500 are one number, not a list
    if _RELATION.search(gold) or _top_level_split(listed, re.compile(",")) != [listed.strip()]:
        return [answer]
    sides = _top_level_split(answer, _RELATION)
    if len(sides) == 1:
        return [answer]
    values = [side for side in sides if side and not _NAME.match(side.strip("$ "))]
    return values or [answer]


def _bases(text: str) -> list[int]:
    return [int(base) for _, base in _BASE.findall(text)]


def notation_differs(gold: str, answer: str) -> bool:
    """True when the answer's number base or its unit's power differs from the gold's, which
    math-verify ignores (it drops subscripts and units): 1011_2 vs 1011_3 or 1011 (a number
    without a base is base 10: 5 vs 5_{10} agree), 5 cm^2 vs 5 cm^3, 12 cm vs 12 cm^2. Units
    themselves may be left out (5 vs 5 cm^2 is not a difference)."""
    gold_bases, answer_bases = _bases(gold), _bases(answer)
    if (gold_bases or answer_bases) and (gold_bases or [10]) != (answer_bases or [10]):
        return True
    gold_units, answer_units = _UNIT.findall(gold), _UNIT.findall(answer)
    if gold_units and answer_units:
        def powers(units):
            return [int(power or 1) for _, power in units]
        return powers(gold_units) != powers(answer_units)
    return False


def _normalise(text: str) -> str:
    text = text.strip().strip("$").strip()
    boxed = re.fullmatch(r"\\boxed\{(.*)\}", text, re.DOTALL)
    if boxed:
        text = boxed.group(1)
    return re.sub(r"\s+", "", text)


def equivalent(gold: str, answer: str) -> bool:
    """math-verify equivalence, gold first, made stricter where math-verify accepts a wrong
    answer: every side of a relation must equal the gold (answer_sides), and bases and unit
    powers must agree (notation_differs). Unbounded in time: call it through `Grader`."""
    answer = answer.strip()
    if answer.endswith(".") and not answer.endswith("\\."):  # "9." closes a sentence
        answer = answer[:-1].rstrip()
    if notation_differs(gold, answer):
        return False
    sides = answer_sides(gold, answer)
    if sides != [answer]:
        return all(_verify(gold, side) for side in sides)
    if _verify(gold, answer):
        return True
    # "-50\%" for -50: math-verify reads a negative percentage as a fraction (a positive one it
    # compares both ways); a percent sign the gold does not have is the unit here.
    percent = re.fullmatch(r"(.*?)\s*\\?%", answer, re.DOTALL)
    return bool(percent) and "%" not in gold and _verify(gold, percent.group(1))


def _verify(gold: str, answer: str) -> bool:
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

    def __enter__(self) -> Grader:  # noqa: PYI034  (no Self annotation: Python 3.10 has none)
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
    to_check = [i for i, a in enumerate(answers) if a]  # an empty answer is wrong: no parser
    verdicts = grader.equivalent_many([(golds[i], answers[i]) for i in to_check])  # type: ignore[misc]
    correct = [False] * len(responses)
    for i, ok in zip(to_check, verdicts):
        correct[i] = ok
    return [
        Score(reward=1.0 if ok else 0.0, format_ok=a is not None, correct=ok)
        for a, ok in zip(answers, correct)
    ]
