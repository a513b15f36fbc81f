"""Builds the diff-repair corpus: real edits of environment files, then the faults models make.

Every case starts from a clean edit of a real file (a changed constant, inserted or deleted
lines, a replaced block; one to three sites per diff). A repairable case damages the diff the
way model answers are damaged and keeps the expected patched text; a rejection case breaks a
rule and names the words the error must contain.
"""

from __future__ import annotations

import difflib
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.environments import EnvironmentError_, load

log = logging.getLogger(__name__)

FIXTURE = Path(__file__).resolve().parent / "fixture"
_COPY_IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".venv", "data", "*.pyc", "catalog",
                                      "*.pt", "*.bin")
_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d+)(?![\w.])")


@dataclass(frozen=True)
class Source:
    env_dir: Path  # a scratch copy of the environment (with a symlink planted for the tests)
    env_name: str
    rel: str
    text: str
    protected: tuple[str, ...]
    protected_lines: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Case:
    cls: str
    kind: str  # "repair" | "reject"
    source: Source
    answer: str
    protected: tuple[str, ...]
    protected_lines: dict[str, tuple[str, ...]]
    expected: dict[str, str | None] = field(default_factory=dict)  # rel -> text, None: deleted
    keywords: tuple[str, ...] = ()  # a correct rejection's error contains one of these


@dataclass(frozen=True)
class Edit:
    rel: str
    before: str
    after: str
    diff: str


# -- sources -------------------------------------------------------------------------------------
def _env_rules(env_dir: Path) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    if not (env_dir / "environment.toml").is_file():
        return (), {}
    try:
        env = load(env_dir)
    except EnvironmentError_ as exc:  # another engineer may be mid-edit: bench the code anyway
        log.warning("%s: %s; using no protection rules", env_dir.name, exc)
        return (), {}
    return env.protected, {k: tuple(v) for k, v in env.protected_lines.items()}


def discover(repo: Path, work: Path) -> list[Source]:
    """Every unprotected Python file of the shipped environments (the fixture if none)."""
    from engine.patching.paths import is_protected

    dirs = sorted(p for p in (repo / "environments").iterdir()
                  if p.is_dir() and any(p.glob("*.py")))
    if not dirs:
        log.info("no environment with Python files yet: using the fixture")
        dirs = [FIXTURE]
    sources: list[Source] = []
    for env in dirs:
        copy = work / env.name
        shutil.copytree(env, copy, ignore=_COPY_IGNORE)
        protected, lines = _env_rules(copy)
        if not (copy / "environment.toml").exists():  # the protected-file cases edit it
            (copy / "environment.toml").write_text(f'name = "{env.name}"\n')
        files = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*.py"))
        files = [f for f in files if not is_protected(f, protected)]
        if not files:
            continue
        # planted for the symlink cases: a link to a real file, and a folder leading outside
        os.symlink(files[0], copy / "linked.py")
        (work / "outside").mkdir(exist_ok=True)
        os.symlink(work / "outside", copy / "outside_link")
        for rel in files:
            sources.append(Source(copy, env.name, rel, (copy / rel).read_text(), protected,
                                  lines))
    return sources


# -- clean edits ---------------------------------------------------------------------------------
def unified(rel: str, before: str, after: str) -> str:
    out = []
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    for line in difflib.unified_diff(a, b, f"a/{rel}", f"b/{rel}", n=3):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _editable(lines: list[str], banned: set[str]) -> list[int]:
    out = []
    in_doc = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.count('"""') == 1 or stripped.count("'''") == 1:
            in_doc = not in_doc
            continue
        if in_doc or not stripped or stripped.startswith(("#", '"""', "'''", "@")):
            continue
        if stripped in banned:
            continue
        out.append(i)
    return out


def _edit_site(lines: list[str], i: int, rng: random.Random, tag: int) -> tuple[int, list[str]]:
    """(lines replaced from i, their replacement) for one realistic change at line i."""
    line = lines[i]
    body = line.rstrip("\n")
    indent = _indent(body) + ("    " if body.rstrip().endswith(":") else "")
    kind = rng.choice(["tweak", "tweak", "insert", "insert", "delete", "replace"])
    if body.rstrip().endswith(":") and kind in ("delete", "replace"):
        kind = "insert"  # removing a block header breaks the code around it
    new_line = f"{indent}ideaforge_probe_{tag} = {rng.randint(2, 97)} * 0.5\n"
    if kind == "tweak":
        match = _NUMBER.search(body)
        if match:
            value = match.group(1)
            bumped = str(int(value) * 2 + 1) if value.isdigit() else f"{float(value) * 1.5:g}"
            return 1, [body[:match.start()] + bumped + body[match.end():] + "\n"]
        return 1, [body + f"  # tuned {tag}\n"]
    if kind == "insert":
        extra = [new_line.replace(f"_{tag} ", f"_{tag}_{k} ") for k in range(rng.randint(1, 3))]
        return 1, [line, *extra]
    if kind == "delete":
        return 1, []
    return 1, [new_line, f"{_indent(body)}ideaforge_scale_{tag} = {rng.randint(1, 9)}\n", line]


def make_edit(source: Source, rng: random.Random, sites: int | None = None,
              must_touch: str | None = None) -> Edit:
    """A clean edit of `source` at 1-3 sites at least 12 lines apart.

    `must_touch` (a stripped line) forces one site onto that line (protected-line cases).
    """
    lines = source.text.splitlines(keepends=True)
    banned = set(source.protected_lines.get(source.rel, ()))
    pool = _editable(lines, set() if must_touch else banned)
    chosen: list[int] = []
    if must_touch:
        chosen = [i for i, line in enumerate(lines) if line.strip() == must_touch][:1]
    want = sites or rng.choice([1, 1, 2, 2, 3])
    rng.shuffle(pool)
    for i in pool:
        if len(chosen) >= want:
            break
        if all(abs(i - j) >= 12 for j in chosen):
            chosen.append(i)
    out: list[str] = []
    pos = 0
    for n, i in enumerate(sorted(chosen)):
        out.extend(lines[pos:i])
        if must_touch and lines[i].strip() == must_touch:
            # the two ways to break a protected line: change it, or remove it
            used, new = 1, rng.choice([[], [lines[i].rstrip("\n") + " * 0.5\n"]])
        else:
            used, new = _edit_site(lines, i, rng, n + rng.randint(0, 999) * 10)
        out.extend(new)
        pos = i + used
    out.extend(lines[pos:])
    after = "".join(out)
    if after == source.text:  # a tweak that changed nothing (rare): add a line instead
        return make_edit(source, rng, 1, must_touch)
    return Edit(source.rel, source.text, after, unified(source.rel, source.text, after))


# -- diff surgery -------------------------------------------------------------------------------
def map_headers(diff: str, fn: Callable[[list[int]], list[int | None]]) -> str:
    out = []
    for line in diff.split("\n"):
        match = _HEADER.match(line)
        if match:
            nums = [int(match.group(i) or 1) for i in (1, 2, 3, 4)]
            a, b, c, d = fn(nums)
            def part(start: int | None, count: int | None) -> str:
                return f"{start}" if count is None else f"{start},{count}"
            line = f"@@ -{part(a, b)} +{part(c, d)} @@{match.group(5)}"
        out.append(line)
    return "\n".join(out)


def map_body(diff: str, fn: Callable[[str, str, int], str]) -> str:
    """Rewrite hunk body lines with fn(tag, text, old_line_number)."""
    out = []
    old_no = 0
    in_hunk = False
    for line in diff.split("\n"):
        match = _HEADER.match(line)
        if match:
            old_no = int(match.group(1))
            in_hunk = True
            out.append(line)
            continue
        if in_hunk and line[:1] in (" ", "-", "+") and not line.startswith(("--- ", "+++ ")):
            out.append(fn(line[0], line[1:], old_no))
            old_no += line[0] != "+"
            continue
        out.append(line)
    return "\n".join(out)


def map_paths(diff: str, old: str, new: str) -> str:
    lines = diff.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("--- a/"):
            lines[i] = f"--- {old}"
        elif line.startswith("+++ b/"):
            lines[i] = f"+++ {new}"
    return "\n".join(lines)


def hunks_of(diff: str) -> list[tuple[list[str], list[str]]]:
    """(old side, new side) of every hunk, for SEARCH/REPLACE blocks."""
    out: list[tuple[list[str], list[str]]] = []
    for line in diff.split("\n"):
        if _HEADER.match(line):
            out.append(([], []))
        elif out and line[:1] in (" ", "-", "+") and not line.startswith(("--- ", "+++ ")):
            if line[0] != "+":
                out[-1][0].append(line[1:])
            if line[0] != "-":
                out[-1][1].append(line[1:])
    return out
