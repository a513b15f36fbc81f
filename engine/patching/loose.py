"""A forgiving reader of unified diffs as models write them.

unidiff (and git) trust the line counts in `@@` headers; models often get them wrong or drop the
space in front of blank context lines. This reader takes the body of each hunk as it stands and
keeps the header only as a hint (line numbers pasted from the prompt are left for habits.py,
which checks them against the file). Its output is never stored: `prepare.py` regenerates a
clean diff from the patched text, which unidiff then parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEV_NULL = "/dev/null"

_HUNK = re.compile(r"^@@+\s*-(\d+)(?:,(\d+))?\s+\+(\d+)(?:,(\d+))?\s*@@+")
_BARE_HUNK = re.compile(r"^@@(?:\s|@|$)")
_GIT_HEADER = re.compile(r"^diff --git (\"?[^\"\s]+\"?) (\"?[^\"\s]+\"?)\s*$")
_BINARY = re.compile(r"^(GIT binary patch|Binary files? .* (differ|has changed))")
_GIT_META = ("index ", "similarity index", "dissimilarity index", "rename from", "rename to",
             "copy from", "copy to", "old mode", "new mode", "new file mode",
             "deleted file mode")


@dataclass
class LooseHunk:
    """One hunk: its operations in order, and the header's numbers as hints only."""

    header: str
    old_start: int | None
    old_count: int | None
    new_start: int | None = None
    new_count: int | None = None
    #: (tag, text) with tag ' ' (context), '-' (removed) or '+' (added); text has no newline
    ops: list[tuple[str, str]] = field(default_factory=list)
    no_newline_marker: bool = False
    #: context lines that were missing their leading space (read as context anyway)
    unprefixed: int = 0
    #: the lines carried line numbers copied from the prompt's listing (habits.py removed them)
    listing_numbers: bool = False

    @property
    def old_lines(self) -> list[str]:
        return [text for tag, text in self.ops if tag != "+"]

    @property
    def old_tags(self) -> list[str]:
        return [tag for tag, _ in self.ops if tag != "+"]

    @property
    def new_lines(self) -> list[str]:
        return [text for tag, text in self.ops if tag != "-"]

    @property
    def short(self) -> bool:
        """Fewer lines than the header announced (on either side)."""
        if self.old_count is None:
            return False
        return len(self.old_lines) < self.old_count or (
            self.new_count is not None and len(self.new_lines) < self.new_count)

    @property
    def counts_wrong(self) -> bool:
        if self.old_count is None:
            return False
        old = len(self.old_lines)
        new = len(self.new_lines)
        return old != self.old_count or (self.new_count is not None and new != self.new_count)


@dataclass
class LooseFile:
    """One file section. Paths are raw as written (a/ prefixes and all); DEV_NULL marks none."""

    old_path: str | None
    new_path: str | None
    hunks: list[LooseHunk] = field(default_factory=list)
    binary: bool = False
    modes: list[str] = field(default_factory=list)

    @property
    def creates(self) -> bool:
        return self.old_path == DEV_NULL or any(m.startswith("new file mode") for m in self.modes)

    @property
    def deletes(self) -> bool:
        return (self.new_path == DEV_NULL
                or any(m.startswith("deleted file mode") for m in self.modes))

    @property
    def symlink_mode(self) -> bool:
        return any(m.split()[-1] == "120000" for m in self.modes if m.split())


@dataclass
class LooseDiff:
    files: list[LooseFile]
    repairs: list[str]


def _path_of(raw: str) -> str:
    path = raw.split("\t", 1)[0].strip()
    if len(path) >= 2 and path[0] == path[-1] == '"':
        path = path[1:-1].replace('\\"', '"')
    return path


def _shown(path: str) -> str:
    return path[2:] if path.startswith(("a/", "b/")) else path


def _hunk_header(line: str) -> LooseHunk | None:
    match = _HUNK.match(line)
    if match:
        def num(i: int) -> int | None:
            return None if match.group(i) is None else int(match.group(i))
        old_count = num(2)
        new_count = num(4)
        return LooseHunk(line, int(match.group(1)), 1 if old_count is None else old_count,
                         num(3), 1 if new_count is None else new_count)
    if _BARE_HUNK.match(line):
        # "@@ line 40 @@" and similar: keep any number as a hint, trust nothing else
        numbers = re.findall(r"\d+", line)
        return LooseHunk(line, int(numbers[0]) if numbers else None, None)
    return None


def _is_file_header(lines: list[str], i: int) -> bool:
    line = lines[i]
    if line.startswith("diff --git "):
        return True
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    return line.startswith("--- ") and nxt.startswith("+++ ")


def _read_hunk(lines: list[str], i: int, hunk: LooseHunk) -> int:
    """Fill `hunk` from the lines after its header; returns the index of the first line after."""
    j = i + 1
    old_seen = 0
    while j < len(lines):
        line = lines[j]
        if _hunk_header(line) is not None or _is_file_header(lines, j):
            break
        if line == "":
            hunk.ops.append((" ", ""))
            old_seen += 1
        elif line[0] in " +-":
            hunk.ops.append((line[0], line[1:]))
            old_seen += line[0] != "+"
        elif line.startswith("\\"):  # "\ No newline at end of file"
            hunk.no_newline_marker = True
        elif hunk.old_count is not None and old_seen < hunk.old_count:
            # the header promises more old lines: this is a context line without its space
            hunk.ops.append((" ", line))
            hunk.unprefixed += 1
            old_seen += 1
        else:
            break
        j += 1
    # Blank lines after the last hunk are usually separators, not context: keep only as many
    # as the header's count asks for.
    while hunk.ops and hunk.ops[-1] == (" ", "") and (
            hunk.old_count is None or len(hunk.old_lines) > hunk.old_count):
        hunk.ops.pop()
    return j


def parse_loose(text: str) -> LooseDiff:
    """Every file section and hunk in `text`; lines that belong to neither are skipped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    files: list[LooseFile] = []
    repairs: list[str] = []
    current: LooseFile | None = None
    in_git_header = False
    skipped_after_hunks = False
    i = 0
    while i < len(lines):
        line = lines[i]
        git = _GIT_HEADER.match(line) if line.startswith("diff --git ") else None
        if line.startswith("diff --git "):
            old, new = (git.group(1), git.group(2)) if git else (None, None)
            current = LooseFile(_path_of(old) if old else None, _path_of(new) if new else None)
            files.append(current)
            in_git_header = True
            i += 1
            continue
        if in_git_header and current is not None and line.startswith(_GIT_META):
            current.modes.append(line.strip())
            i += 1
            continue
        if _BINARY.match(line):
            if current is None or current.hunks:
                named = re.match(r"^Binary files? (\S+)", line)
                name = _path_of(named.group(1)) if named else None
                current = LooseFile(name, name)
                files.append(current)
            current.binary = True
            i += 1
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.startswith("--- ") and (nxt.startswith("+++ ") or _hunk_header(nxt)):
            old = _path_of(line[4:])
            new = _path_of(nxt[4:]) if nxt.startswith("+++ ") else old
            if in_git_header and current is not None and not current.hunks:
                current.old_path, current.new_path = old, new
            else:
                current = LooseFile(old, new)
                files.append(current)
            if not nxt.startswith("+++ "):
                repairs.append(f"added the missing '+++' line for {_shown(old)}")
            in_git_header = False
            i += 2 if nxt.startswith("+++ ") else 1
            if i < len(lines) and lines[i][:1] in ("+", "-", " ") and not _is_file_header(
                    lines, i) and _hunk_header(lines[i]) is None:
                # body lines right under the file header: the '@@' line was left out
                hunk = LooseHunk("@@", None, None)
                i = _read_hunk(lines, i - 1, hunk)
                current.hunks.append(hunk)
                repairs.append(f"added the missing '@@' line for {_shown(new)}")
            continue
        if line.startswith("+++ ") and _hunk_header(nxt) and (current is None or current.hunks):
            new = _path_of(line[4:])
            current = LooseFile(new, new)
            files.append(current)
            repairs.append(f"added the missing '---' line for {_shown(new)}")
            i += 1
            continue
        hunk = _hunk_header(line)
        if hunk is not None:
            in_git_header = False
            if current is None:
                current = LooseFile(None, None)
                files.append(current)
            i = _read_hunk(lines, i, hunk)
            current.hunks.append(hunk)
            continue
        if current is not None and current.hunks and line.strip():
            skipped_after_hunks = True
        in_git_header = False
        i += 1
    if skipped_after_hunks:
        repairs.append("ignored prose after the diff")
    return LooseDiff(files, repairs)
