"""SEARCH/REPLACE blocks (the aider edit format), read into hunks without line numbers.

    train.py
    ```python
    <<<<<<< SEARCH
    lr = 3e-4
    =======
    lr = 6e-4
    >>>>>>> REPLACE
    ```
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from engine.patching.loose import LooseHunk
from engine.patching.text import strip_listing_numbers

_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\b.*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\b.*$")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_PATH_LIKE = re.compile(r"^[\w.\-/]+$")
_LABELS = re.compile(r"^(file(name)?|path)\s*:\s*", re.IGNORECASE)


@dataclass
class SearchReplaceBlock:
    path: str | None  # as the model wrote it; None when no file name could be found
    search: list[str]
    replace: list[str]
    number: int  # 1-based, for messages
    listing_numbers: bool = False

    def hunk(self) -> LooseHunk:
        """The block as a hunk with no line numbers: equal lines become context."""
        ops: list[tuple[str, str]] = []
        matcher = difflib.SequenceMatcher(a=self.search, b=self.replace, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                ops.extend((" ", line) for line in self.search[i1:i2])
                continue
            ops.extend(("-", line) for line in self.search[i1:i2])
            ops.extend(("+", line) for line in self.replace[j1:j2])
        return LooseHunk(header=f"SEARCH/REPLACE block {self.number}", old_start=None,
                         old_count=None, ops=ops)


def has_search_replace(text: str) -> bool:
    lines = text.split("\n")
    return any(_SEARCH.match(line) for line in lines) and any(
        _REPLACE.match(line) for line in lines)


def _file_name(line: str) -> str | None:
    name = line.strip().strip("*`").strip()
    name = name.lstrip("#").strip()
    name = _LABELS.sub("", name).strip().strip("*`'\"").rstrip(":").strip()
    if name and _PATH_LIKE.match(name) and ("." in name or "/" in name):
        return name
    return None


def _name_before(lines: list[str], marker: int) -> str | None:
    i = marker - 1
    while i >= 0 and (not lines[i].strip() or _FENCE.match(lines[i])):
        i -= 1
    return _file_name(lines[i]) if i >= 0 else None


def parse_blocks(text: str) -> list[SearchReplaceBlock]:
    """All blocks in order. Raises ValueError (worded for the model) on a malformed block."""
    lines = text.split("\n")
    blocks: list[SearchReplaceBlock] = []
    last_path: str | None = None
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        number = len(blocks) + 1
        path = _name_before(lines, i) or last_path
        j = i + 1
        while j < len(lines) and not _DIVIDER.match(lines[j]):
            if _SEARCH.match(lines[j]) or _REPLACE.match(lines[j]):
                raise ValueError(f"SEARCH/REPLACE block {number} has no '=======' line between "
                                 "its SEARCH and REPLACE parts")
            j += 1
        k = j + 1
        while k < len(lines) and not _REPLACE.match(lines[k]):
            if _SEARCH.match(lines[k]):
                break
            k += 1
        if j >= len(lines) or k >= len(lines) or not _REPLACE.match(lines[k]):
            raise ValueError(f"SEARCH/REPLACE block {number} is not closed: it needs "
                             "'<<<<<<< SEARCH', the old lines, '=======', the new lines, "
                             "'>>>>>>> REPLACE'")
        search, numbered = strip_listing_numbers(lines[i + 1:j])
        replace = lines[j + 1:k]
        if numbered:  # the REPLACE part may carry numbers too; never strip them on their own
            replace = strip_listing_numbers(replace)[0]
        blocks.append(SearchReplaceBlock(path, search, replace, number,
                                         listing_numbers=numbered))
        last_path = path
        i = k + 1
    return blocks
