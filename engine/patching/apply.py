"""Strict application of stored (normalised) diffs: in memory, onto a copy, or several at once.

These functions take diffs that `prepare_patch` produced or that a catalog ships, so they
repair nothing. They do tolerate a hunk that moved (as `git apply` does): the same lines are
searched nearest to where the header puts them, which is what lets a second diff apply on top
of a first that shifted the file.
"""

from __future__ import annotations

import difflib
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchedFile

from engine.environments import IGNORED_NAMES, IGNORED_SUFFIXES, held_back_files
from engine.patching.outcome import PatchError
from engine.patching.paths import EnvTree, PathProblem, check_parts
from engine.patching.text import file_mode, make_diff, read_text, split_keepends, write_text

log = logging.getLogger(__name__)
DEV_NULL = "/dev/null"


def _rel(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1]
    if name.startswith(("a/", "b/")):
        name = name[2:]
    try:
        return "/".join(check_parts(name))
    except PathProblem as exc:
        raise PatchError(str(exc)) from None


def _parse(diff: str) -> PatchSet:
    try:
        patch = PatchSet(diff)
    except UnidiffParseError as exc:
        raise PatchError(f"the diff does not parse: {exc}") from None
    if not len(patch):
        raise PatchError("the diff holds no file changes")
    return patch


def _target(patched: PatchedFile) -> tuple[str, bool, bool]:
    """(relative path, creates, deletes) of one file section."""
    if patched.is_binary_file:
        raise PatchError(f"binary patch for {patched.path}: only text changes can be applied")
    if patched.is_symlink:
        raise PatchError(f"{patched.path}: patches may not create or change symlinks")
    creates = patched.source_file == DEV_NULL
    deletes = patched.target_file == DEV_NULL
    if creates and deletes:
        raise PatchError("a file section names /dev/null on both sides")
    rel = _rel(patched.target_file if creates else patched.source_file)
    if not creates and not deletes and _rel(patched.target_file) != rel:
        raise PatchError(f"renaming {rel} to {_rel(patched.target_file)} is not supported")
    return rel, creates, deletes


def touched_paths(diff: str) -> list[str]:
    """The relative paths a diff changes, in order."""
    return [_target(patched)[0] for patched in _parse(diff)]


def _hunk_sides(hunk: object) -> tuple[list[str], list[str]]:
    old: list[str] = []
    new: list[str] = []
    last: list[list[str]] = []
    for line in hunk:  # type: ignore[attr-defined]
        if line.line_type == "\\":
            # the previous line is a file's last one and has no terminator
            for side in last:
                side[-1] = side[-1].rstrip("\n")
            continue
        last = []
        if line.line_type in (" ", "-"):
            old.append(line.value)
            last.append(old)
        if line.line_type in (" ", "+"):
            new.append(line.value)
            last.append(new)
    return old, new


def _apply_file(rel: str, text: str, patched: PatchedFile) -> str:
    lines = split_keepends(text)
    offset = 0
    floor = 0  # a hunk may not reach back into the previous one
    for n, hunk in enumerate(patched, 1):
        old, new = _hunk_sides(hunk)
        expected = hunk.source_start if not old else hunk.source_start - 1
        expected = min(max(expected + offset, floor), len(lines))
        at = None
        if lines[expected:expected + len(old)] == old:
            at = expected
        elif old:
            span = range(floor, len(lines) - len(old) + 1)
            hits = [s for s in span if lines[s:s + len(old)] == old]
            if hits:
                at = min(hits, key=lambda s: (abs(s - expected), s < expected))
        if at is None:
            first = next((line.strip() for line in old if line.strip()), "")
            raise PatchError(f"hunk {n} of {rel} (line {hunk.source_start}) does not apply: "
                             f"the lines it changes, starting {first[:70]!r}, are not in the "
                             "file as written")
        lines[at:at + len(old)] = new
        offset = at - (hunk.source_start - 1 if old else hunk.source_start)
        floor = at + len(new)
    return "".join(lines)


def apply_diff(files: Mapping[str, str], diff: str) -> dict[str, str]:
    """`files` (relative path -> text) after `diff`; raises PatchError on any conflict."""
    out = dict(files)
    for patched in _parse(diff):
        rel, creates, deletes = _target(patched)
        if creates:
            if rel in out:
                raise PatchError(f"the diff creates {rel}, which already exists")
            out[rel] = _apply_file(rel, "", patched)
        elif rel not in out:
            raise PatchError(f"the diff changes {rel}, which does not exist")
        elif deletes:
            del out[rel]
        else:
            out[rel] = _apply_file(rel, out[rel], patched)
    return out


def _read_targets(env_dir: Path, rels: Sequence[str]) -> dict[str, str]:
    tree = EnvTree(env_dir)
    files: dict[str, str] = {}
    for rel in dict.fromkeys(rels):
        try:
            tree.check_target(rel)
        except PathProblem as exc:
            raise PatchError(str(exc)) from None
        path = env_dir / rel
        if path.is_file():
            try:
                files[rel] = read_text(path)
            except UnicodeDecodeError:
                raise PatchError(f"{rel} is not a UTF-8 text file") from None
    return files


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in IGNORED_NAMES or n.endswith(IGNORED_SUFFIXES)}


def apply_to_copy(env_dir: Path, diff: str | None, dest: Path) -> None:
    """Copy the environment to `dest` (without caches, data and .git) and apply `diff` there.

    The diff is applied in memory first, so a conflict raises PatchError before anything is
    written. Symlinks are copied as links; a diff whose targets are symlinks is refused.
    """
    env_dir, dest = Path(env_dir), Path(dest)
    patched: dict[str, str] = {}
    rels: list[str] = []
    if diff:
        rels = touched_paths(diff)
        patched = apply_diff(_read_targets(env_dir, rels), diff)
    # Credential-like files stay out of job copies as out of hosts' (one rule: environments.py;
    # a folder that held only such files is left empty).
    held = set(held_back_files(env_dir))

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory).relative_to(env_dir)
        return _ignore(directory, names) | {n for n in names if (here / n).as_posix() in held}

    shutil.copytree(env_dir, dest, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    for rel in dict.fromkeys(rels):
        target = dest / rel
        if rel in patched:
            write_text(target, patched[rel])
        elif target.exists():
            target.unlink()
    if rels:
        log.debug("patched copy at %s: %s", dest, ", ".join(rels))


def _changes(base: list[str], other: list[str]) -> list[tuple[int, int, list[str]]]:
    matcher = difflib.SequenceMatcher(a=base, b=other, autojunk=False)
    return [(i1, i2, other[j1:j2]) for tag, i1, i2, j1, j2 in matcher.get_opcodes()
            if tag != "equal"]


def merge3(base: str, ours: str, theirs: str) -> str | None:
    """Both sides' changes to `base` in one text, or None where they touch the same lines.

    Like git's merge, changes must be separated by at least one unchanged line; two diffs
    whose hunks only share context lines then combine although neither applies on top of the
    other as written.
    """
    lines = split_keepends(base)
    mine = _changes(lines, split_keepends(ours))
    yours = _changes(lines, split_keepends(theirs))
    for a1, a2, _ in mine:
        for b1, b2, _ in yours:
            if max(a1, b1) <= min(a2, b2):  # overlapping or adjacent (insertions included)
                return None
    out: list[str] = []
    pos = 0
    for i1, i2, new in sorted(mine + yours, key=lambda c: (c[0], c[1])):
        out.extend(lines[pos:i1])
        out.extend(new)
        pos = i2
    out.extend(lines[pos:])
    return "".join(out)


def combine_diffs(env_dir: Path, diffs: Sequence[str]) -> str:
    """Apply `diffs` in order onto the environment; one normalised diff of the result.

    A diff that no longer applies on top of the earlier ones is merged three-way against the
    pristine files instead (its changes must not touch lines the earlier ones changed).
    Raises PatchError naming the diff that conflicts.
    """
    env_dir = Path(env_dir)
    rels = [rel for diff in diffs for rel in touched_paths(diff)]
    original = _read_targets(env_dir, rels)
    current = dict(original)
    for n, diff in enumerate(diffs, 1):
        try:
            current = apply_diff(current, diff)
            continue
        except PatchError as exc:
            where = "the environment" if n == 1 else f"the environment after diffs 1-{n - 1}"
            failure = PatchError(f"diff {n} of {len(diffs)} does not apply to {where}: {exc}")
        if n == 1:
            raise failure
        try:
            alone = apply_diff(original, diff)
        except PatchError:
            raise failure from None
        merged: dict[str, str] = {}
        for rel in set(original) | set(current) | set(alone):
            base, ours, theirs = original.get(rel), current.get(rel), alone.get(rel)
            if theirs == base:
                result = ours  # this diff leaves the file alone
            elif ours == base:
                result = theirs  # only this diff changes (creates, deletes) it
            elif base is None or ours is None or theirs is None:
                raise failure  # created or deleted on one side, changed on the other
            else:
                result = merge3(base, ours, theirs)
                if result is None:
                    raise PatchError(f"diff {n} of {len(diffs)} changes the same lines of {rel} "
                                     "as an earlier diff")
            if result is not None:
                merged[rel] = result
        current = merged
        log.debug("combine_diffs: diff %d merged three-way", n)
    modes = {rel: file_mode(env_dir / rel) for rel in original}
    return make_diff(original, current, modes)
