"""Line handling shared by the patching modules, and the one writer of normalised diffs."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

NO_NEWLINE_MARKER = "\\ No newline at end of file"

#: A line copied from the prompt's numbered listing ("  12 | code"): the prompt shows every
#: context file this way, and models sometimes paste the numbers into their diff.
LISTING_PREFIX = re.compile(r"^\s*\d+ \|(?: |$)")


def split_keepends(text: str) -> list[str]:
    """Lines with their terminators, split on "\\n" only.

    `str.splitlines` also splits on form feeds, \\x1c-\\x1e and \\u2028, which do occur in
    source files; a diff is line-based on "\\n" alone, so those must stay inside their line.
    """
    if not text:
        return []
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def content(line: str) -> str:
    """A line without its terminator ("\\n" or "\\r\\n")."""
    line = line.removesuffix("\n")
    line = line.removesuffix("\r")
    return line


def newline_of(lines: list[str]) -> str:
    """The terminator most lines of a file use, so added lines match their neighbours."""
    crlf = sum(1 for line in lines if line.endswith("\r\n"))
    return "\r\n" if crlf * 2 > len(lines) else "\n"


def strip_listing_numbers(lines: list[str]) -> tuple[list[str], bool]:
    """Remove "NN | " prefixes when every non-empty line carries one (copied from the prompt)."""
    filled = [line for line in lines if line.strip()]
    if not filled or not all(LISTING_PREFIX.match(line) for line in filled):
        return lines, False
    return [LISTING_PREFIX.sub("", line, count=1) for line in lines], True


def read_text(path: Path) -> str:
    """File text exactly as stored (no newline translation), so CRLF files survive a patch."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def _hunk_lines(old: str, new: str, fromfile: str, tofile: str) -> Iterable[str]:
    for line in difflib.unified_diff(split_keepends(old), split_keepends(new), fromfile, tofile,
                                     n=3):
        if line.endswith("\n"):
            yield line
        else:
            # only a file's last line can lack its terminator; git and unidiff expect the marker
            yield line + "\n" + NO_NEWLINE_MARKER + "\n"


def file_diff(rel: str, old: str | None, new: str | None, mode: str = "100644") -> str:
    """The normalised diff of one file: `old` None creates it, `new` None deletes it."""
    if old is None:
        header = f"diff --git a/{rel} b/{rel}\nnew file mode {mode}\n"
        body = "".join(_hunk_lines("", new or "", "/dev/null", f"b/{rel}"))
        return header + body
    if new is None:
        header = f"diff --git a/{rel} b/{rel}\ndeleted file mode {mode}\n"
        return header + "".join(_hunk_lines(old, "", f"a/{rel}", "/dev/null"))
    return "".join(_hunk_lines(old, new, f"a/{rel}", f"b/{rel}"))


def make_diff(before: Mapping[str, str], after: Mapping[str, str],
              modes: Mapping[str, str] | None = None) -> str:
    """One normalised diff (sorted by path) that turns `before` into `after`."""
    modes = modes or {}
    parts = []
    for rel in sorted(set(before) | set(after)):
        old, new = before.get(rel), after.get(rel)
        if old == new:
            continue
        parts.append(file_diff(rel, old, new, modes.get(rel, "100644")))
    return "".join(parts)


def file_mode(path: Path) -> str:
    """The git mode of a regular file, which a deletion header must repeat."""
    return "100755" if path.stat().st_mode & 0o111 else "100644"
