"""Finds where each hunk belongs in a file, and applies hunks by their placements.

A hunk's ' ' and '-' lines (its old block) are searched in the file, nearest to the line its
header names, at increasing tolerance: exact; ignoring trailing whitespace; ignoring all
whitespace; ignoring blank lines too; then dropping up to two context lines at either end (the
fuzz GNU patch applies). A placement maps every old line to a file line (or to nothing when it
was dropped), so the patched text always takes unchanged lines from the file itself, never the
model's approximation of them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.patching.loose import LooseHunk
from engine.patching.text import content, newline_of

LEVELS = ("exact", "ignoring trailing whitespace", "ignoring whitespace",
          "ignoring whitespace and blank lines")
_WORD = re.compile(r"\w")
_FUZZ = ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (2, 1), (1, 2), (2, 2))


@dataclass(frozen=True)
class Placement:
    start: int  # first file line (0-based) of the region the hunk replaces
    end: int  # one past its last line
    mapping: tuple[int | None, ...]  # old line i -> file line, None when dropped
    level: int  # index into LEVELS
    fuzz: int  # context lines dropped
    add_indent: str = ""  # prefix added lines need (the model's block was dedented)
    drop_indent: str = ""  # prefix added lines must lose (the model's block was indented)

    def overlaps(self, other: Placement) -> bool:
        if self.start == self.end:
            return other.start < self.start < other.end
        if other.start == other.end:
            return self.start < other.start < self.end
        return self.start < other.end and other.start < self.end


def _key(level: int, line: str) -> str:
    if level == 0:
        return line
    if level == 1:
        return line.rstrip()
    return "".join(line.split())


class FileIndex:
    """One file's lines, keyed at every tolerance level once, so searching stays cheap."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = [content(line) for line in lines]
        self.keys = [[_key(level, line) for line in self.lines] for level in range(3)]
        self.where: list[dict[str, list[int]]] = []
        for keys in self.keys:
            where: dict[str, list[int]] = {}
            for i, key in enumerate(keys):
                where.setdefault(key, []).append(i)
            self.where.append(where)
        self.filled = [i for i, line in enumerate(self.lines) if line.strip()]
        self.filled_keys = [self.keys[2][i] for i in self.filled]
        self.filled_where: dict[str, list[int]] = {}
        for p, key in enumerate(self.filled_keys):
            self.filled_where.setdefault(key, []).append(p)

    def candidates(self, old: Sequence[str], level: int) -> list[list[int | None]]:
        """Every mapping of `old` onto the file at `level`."""
        if level < 3:
            keys = [_key(level, line) for line in old]
            table = self.keys[level]
            n = len(keys)
            return [list(range(s, s + n)) for s in self.where[level].get(keys[0], [])
                    if table[s:s + n] == keys]
        filled = [j for j, line in enumerate(old) if line.strip()]
        if not filled:
            return []
        keys = [_key(2, old[j]) for j in filled]
        out = []
        for p in self.filled_where.get(keys[0], []):
            if self.filled_keys[p:p + len(keys)] != keys:
                continue
            mapping: list[int | None] = [None] * len(old)
            for t, j in enumerate(filled):
                mapping[j] = self.filled[p + t]
            self._map_blank_lines(old, mapping)
            out.append(mapping)
        return out

    def _map_blank_lines(self, old: Sequence[str], mapping: list[int | None]) -> None:
        """Give blank old lines the file's blank lines between the same neighbours.

        A run of k model blanks takes the *last* k file blanks of the gap: the model's added
        lines after a blank then land next to the code that follows, where a shortened run of
        blank lines (two between functions written as one) nearly always meant them.
        """
        j = 0
        while j < len(old):
            if mapping[j] is not None or old[j].strip():
                j += 1
                continue
            run_end = j
            while run_end < len(old) and mapping[run_end] is None and not old[run_end].strip():
                run_end += 1
            prev = next((m for m in reversed(mapping[:j]) if m is not None), None)
            nxt = next((m for m in mapping[run_end:] if m is not None), None)
            if prev is not None and nxt is not None:
                blanks = [f for f in range(prev + 1, nxt) if not self.lines[f].strip()]
                run = list(range(j, run_end))
                for model_j, file_f in zip(reversed(run), reversed(blanks), strict=False):
                    mapping[model_j] = file_f
            j = run_end


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _indent_shift(old: Sequence[str], tags: Sequence[str], mapping: Sequence[int | None],
                  index: FileIndex) -> tuple[str, str]:
    """A prefix that consistently separates the model's indentation from the file's.

    Removed lines decide when there are any: they carry the diff's '-' for sure, while context
    lines often lose their leading space, which shifts only them. For the same reason a
    one-space shift seen on context lines alone is read as that lost space, never applied to
    the added lines (models do not mis-indent code by one column).
    """
    def pairs_of(wanted: str) -> list[tuple[str, str]]:
        return [(_indent(old[j]), _indent(index.lines[f])) for j, f in enumerate(mapping)
                if f is not None and old[j].strip() and tags[j] == wanted]
    pairs = pairs_of("-") or pairs_of(" ")
    if not pairs:
        return "", ""
    only_context = not pairs_of("-")
    adds = {file[:len(file) - len(model)] if file.endswith(model) else None
            for model, file in pairs}
    if len(adds) == 1 and None not in adds:
        add = adds.pop() or ""
        return ("", "") if only_context and add == " " else (add, "")
    drops = {model[:len(model) - len(file)] if model.endswith(file) else None
             for model, file in pairs}
    if len(drops) == 1 and None not in drops:
        return "", drops.pop() or ""
    return "", ""


def _distinctive(old: Sequence[str], tags: Sequence[str]) -> bool:
    """Enough left after fuzz to pin the hunk: two lines with words in them, or one removed.

    Lines of only brackets and commas ("}", "),") occur everywhere and pin nothing.
    """
    weight = sum(2 if tag == "-" else 1 for line, tag in zip(old, tags, strict=True)
                 if _WORD.search(line))
    return weight >= 2


def _resembles(model: str, file: str) -> bool:
    """A context line fuzz may drop must still look like the file's line at that spot."""
    a, b = "".join(model.split()), "".join(file.split())
    return a == b or difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio() >= 0.5


def place(hunk: LooseHunk, index: FileIndex, hint: int | None,
          taken: Sequence[Placement]) -> Placement | None:
    """The best placement of `hunk` not overlapping `taken`, or None if it matches nowhere."""
    old, tags = hunk.old_lines, hunk.old_tags
    if not old:
        return None
    for lead, trail in _FUZZ:
        if lead + trail >= len(old):
            break
        if "-" in tags[:lead] or "-" in tags[len(old) - trail:]:
            continue  # fuzz only ever drops context, never a line the hunk removes
        sub = old[lead:len(old) - trail]
        if lead + trail and not _distinctive(sub, tags[lead:len(old) - trail]):
            continue
        def dropped_resemble(start: int, end: int, lead: int = lead, trail: int = trail) -> bool:
            if start - lead < 0 or end + trail > len(index.lines):
                return False
            return (all(_resembles(old[k], index.lines[start - lead + k]) for k in range(lead))
                    and all(_resembles(old[len(old) - trail + k], index.lines[end + k])
                            for k in range(trail)))
        for level in range(len(LEVELS)):
            best = _nearest(index, sub, level, lead, trail, hint, taken,
                            dropped_resemble if lead + trail else None)
            if best is not None:
                mapping, start, end = best
                add, drop = (_indent_shift(old, tags, mapping, index) if level >= 2
                             else ("", ""))
                return Placement(start, end, tuple(mapping), level, lead + trail, add, drop)
    return None


def _nearest(index: FileIndex, sub: Sequence[str], level: int, lead: int, trail: int,
             hint: int | None, taken: Sequence[Placement],
             accept: Callable[[int, int], bool] | None = None,
             ) -> tuple[list[int | None], int, int] | None:
    best: tuple[tuple[int, bool], list[int | None], int, int] | None = None
    for sub_mapping in index.candidates(sub, level):
        mapped = [m for m in sub_mapping if m is not None]
        start, end = min(mapped), max(mapped) + 1
        probe = Placement(start, end, (), level, 0)
        if any(probe.overlaps(other) for other in taken):
            continue
        if accept is not None and not accept(start, end):
            continue
        target = hint if hint is not None else (max((t.end for t in taken), default=0))
        distance = start - lead - target
        rank = (abs(distance), distance < 0)
        if best is None or rank < best[0]:
            mapping: list[int | None] = [None] * lead + sub_mapping + [None] * trail
            best = (rank, mapping, start, end)
    return None if best is None else best[1:]


def insertion(hunk: LooseHunk, size: int) -> Placement | None:
    """Where a hunk without old lines goes: only its header can say, and only `-l,0` does."""
    if hunk.old_start is None or hunk.old_count != 0:
        return None
    at = min(max(hunk.old_start, 0), size)
    return Placement(at, at, (), 0, 0)


def apply_placed(lines: list[str], placed: Sequence[tuple[LooseHunk, Placement]],
                 final_newline: bool) -> list[str]:
    """The file's lines (with terminators) after applying each hunk at its placement."""
    nl = newline_of(lines)
    out: list[str] = []
    pos = 0
    for hunk, where in sorted(placed, key=lambda item: (item[1].start, item[1].end)):
        out.extend(lines[pos:where.start])
        cursor = where.start
        old_i = 0
        for tag, text in hunk.ops:
            if tag == "+":
                if where.add_indent and text.strip():
                    text = where.add_indent + text
                elif where.drop_indent and text.startswith(where.drop_indent):
                    text = text[len(where.drop_indent):]
                out.append(text + nl)
                continue
            target = where.mapping[old_i] if old_i < len(where.mapping) else None
            old_i += 1
            if target is None:
                continue
            out.extend(lines[cursor:target])  # file lines the model's block skipped stay
            if tag == " ":
                out.append(lines[target])
            cursor = target + 1
        out.extend(lines[cursor:where.end])
        pos = max(pos, where.end)
    out.extend(lines[pos:])
    # Terminators: every line but the last needs one; the last keeps the file's own ending,
    # whatever '\ No newline' marker the model wrote.
    for k in range(len(out) - 1):
        if not out[k].endswith("\n"):
            out[k] += nl
    if out:
        last = content(out[-1])
        out[-1] = last + (nl if final_newline else "")
    return out
