"""Undoes two habits of models that copy context lines out of the prompt, checked on the file.

- **Line numbers.** The prompt lists each context file as "  12 | code" and models paste the
  numbers into the diff, in that form or their own: "12: code", "12| code", "12 code",
  "12<tab>code". A number is stripped from a ' ' or '-' line only when the file vouches for it:
  the line without it is the file's line at (or within two lines of) that number while the line
  as written is not; or every old line of the hunk carries one, numbered consecutively, and the
  stripped block is in the file while the written one is not. '+' lines are never judged alone:
  their numbers go only when the hunk's old lines lost theirs, every '+' line carries one in the
  same form, the numbers fall in the hunk's range, and no line of the file itself starts that
  way (then a '+' line starting with a number may be code, and the hunk is sent back).
- **Annotations.** Models tag context lines ("x = 1  # unchanged", "# ... existing code ...").
  A trailing comment is dropped from a ' ' or '-' line only when the line without it is in the
  file and the line with it is not (whitespace aside, which placement tolerates anyway); a line
  that is only an elision comment goes when it is the hunk's first or last context line and not
  in the file. '+' lines are never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from engine.patching.locate import FileIndex
from engine.patching.loose import LooseHunk

#: "  12 | ", "12: ", "12| ", "12 ", "12\t", or a bare number ending the line (a blank line)
_NUMBER = re.compile(r"^ {0,8}(?P<n>\d{1,6})(?:(?P<pipe> ?\|)|(?P<colon> ?:)|(?P<tab>\t)|(?P<space> )"
                     r"|(?P<end>$))")
_FAMILIES = ("pipe", "colon", "tab", "space")
_NEAR = 2  # how far from its number a line may sit (the listing is exact; allow a little slack)
_COMMENT = re.compile(r"\s(#|//)")
_ELISION = re.compile(r"^\s*(#|//)\s*(\.\.\.|…|\(?\s*(unchanged|existing|rest of|same as|"
                      r"omitted|other code|no changes?)\b).*$", re.IGNORECASE)


def _key(text: str) -> str:
    return "".join(text.split())


@dataclass(frozen=True)
class _Numbered:
    n: int
    family: str  # one of _FAMILIES, or "" for a bare number ending the line (a blank line)
    rest: tuple[str, str]  # the text after the prefix: as written / less one leading space

    def text(self, gap: int) -> str:
        return self.rest[gap]


def _numbered(text: str) -> _Numbered | None:
    match = _NUMBER.match(text)
    if match is None:
        return None
    family = next((f for f in _FAMILIES if match.group(f) is not None), "")
    after = text[match.end():]
    # "12 | code": the listing's space after the separator belongs to the prefix, but in
    # "12|    code" the space is the code's indentation; _gap decides per hunk
    return _Numbered(int(match.group("n")), family, (after, after[1:] if after[:1] == " "
                                                    else after))


@dataclass
class Undone:
    """A hunk with the habits undone, what was done (for repair notes), or why it was refused."""

    hunk: LooseHunk
    numbers: bool = False
    annotations: int = 0
    elisions: int = 0
    problem: str | None = None
    notes: list[str] = field(default_factory=list)


def undo_habits(hunk: LooseHunk, index: FileIndex, which: str) -> Undone:
    """`hunk` with pasted line numbers and added comments removed where `index` vouches for it.

    `which` names the hunk in a refusal ("hunk 2 of train.py").
    """
    ops = list(hunk.ops)
    done = Undone(hunk)
    shift = (hunk.new_start - hunk.old_start
             if hunk.new_start is not None and hunk.old_start is not None else 0)
    numbers = _strip_numbers(ops, index, shift)
    if isinstance(numbers, str):
        done.problem = f"{which} {numbers}"
        return done
    done.numbers = numbers
    done.annotations = _drop_annotations(ops, index)
    done.elisions = _drop_edge_elisions(ops, index)
    if done.numbers or done.annotations or done.elisions:
        done.hunk = replace(hunk, ops=ops, listing_numbers=done.numbers or hunk.listing_numbers)
    if done.numbers:
        done.notes.append(f"removed line numbers copied from the listing ({which})")
    if done.annotations:
        done.notes.append(f"dropped comments the model added to {done.annotations} context "
                          f"line(s) ({which})")
    if done.elisions:
        done.notes.append(f"dropped an elision line ('# ... existing code') at the edge of "
                          f"{which}")
    return done


# -- line numbers --------------------------------------------------------------------------------
def _near(index: FileIndex, n: int, text: str, level: int = 2, heads: bool = False) -> bool:
    """`text` is the file's line at or near line `n` (with `heads`: once an added trailing
    comment is cut off, so a numbered and annotated line is recognised too)."""
    texts = [text] + (_heads(text) if heads else [])
    keys = index.keys[level]
    lo, hi = max(0, n - 1 - _NEAR), min(len(keys), n + _NEAR)
    wanted = {_key(t) if level == 2 else t.rstrip() for t in texts}
    return any(keys[k] in wanted for k in range(lo, hi))


def _heads(text: str) -> list[str]:
    """`text` cut before each trailing comment, the last comment first."""
    cuts = [m.start() for m in _COMMENT.finditer(text)]
    return [head for cut in reversed(cuts) if (head := text[:cut].rstrip()).strip()]


def _strip_numbers(ops: list[tuple[str, str]], index: FileIndex, shift: int) -> bool | str:
    """Strip vouched-for numbers in place; True if any went, or a refusal's reason.

    `shift` is the header's new start less its old start: '+' lines may carry new numbers.
    """
    old = [i for i, (tag, _) in enumerate(ops) if tag != "+"]
    found = {i: _numbered(ops[i][1]) for i in old}
    found = {i: m for i, m in found.items() if m is not None and (m.family or not
                                                                    m.rest[0].strip())}
    if not found:
        return False
    gap = _gap(found, index)
    vouched = {i for i, m in found.items()
               if _near(index, m.n, m.text(gap), heads=True)
               and not _near(index, m.n, ops[i][1])}
    if len(vouched) < len(found) and _consecutive(old, ops, found):
        block = [found[i].text(gap) if i in found else ops[i][1] for i in old]
        written = [ops[i][1] for i in old]
        if _in_file(index, block) and not _in_file(index, written):
            vouched = set(found)
    if not vouched:
        return False
    families = {found[i].family for i in vouched} - {""}
    for i in vouched:
        ops[i] = (ops[i][0], found[i].text(gap))
    problem = _strip_added(ops, index, families, [found[i].n for i in vouched], gap, shift)
    return problem if problem else True


def _gap(found: dict[int, _Numbered], index: FileIndex) -> int:
    """Whether the space after '|' or ':' is the prefix's (1) or the code's (0): the reading
    that matches more lines of the file exactly decides, the listing's own form on a tie."""
    def exact(gap: int) -> int:
        return sum(1 for m in found.values() if m.rest[0].strip() and
                   _near(index, m.n, m.text(gap), level=1, heads=True))
    zero, one = exact(0), exact(1)
    if zero != one:
        return 0 if zero > one else 1
    listing = sum(1 for m in found.values() if m.family in ("pipe", "colon"))
    return 1 if 2 * listing >= len(found) else 0


def _consecutive(old: list[int], ops: list[tuple[str, str]],
                 found: dict[int, _Numbered]) -> bool:
    """Every filled old line numbered in one form, the numbers counting up one per line."""
    filled = [i for i in old if ops[i][1].strip()]
    if not filled or any(i not in found for i in filled):
        return False
    if len({found[i].family for i in found} - {""}) != 1:
        return False
    numbered = [(k, found[i].n) for k, i in enumerate(old) if i in found]
    first_k, first_n = numbered[0]
    return all(n - first_n == k - first_k for k, n in numbered)


def _in_file(index: FileIndex, block: list[str]) -> bool:
    return any(index.candidates(block, level) for level in range(4))


def _strip_added(ops: list[tuple[str, str]], index: FileIndex, families: set[str],
                 numbers: list[int], gap: int, shift: int) -> str | None:
    added = [i for i, (tag, text) in enumerate(ops) if tag == "+" and text.strip()]
    looks = {i: _numbered(ops[i][1]) for i in added}
    looks = {i: m for i, m in looks.items() if m is not None}
    if not looks:
        return None
    refuse = ("has line numbers on its ' ' and '-' lines, and '+' lines that start with a "
              "number: it cannot be told which numbers are code. Send the diff again without "
              "the listing's line numbers")
    if len(families) != 1 or len(looks) < len(added):
        return refuse
    family = families.pop()
    lo, hi = min(numbers) - 1, max(numbers) + len(added) + 1
    if any(m.family not in (family, "") or not (lo <= m.n <= hi or lo <= m.n - shift <= hi)
           for m in looks.values()):
        return refuse
    if any((m := _numbered(line)) is not None and m.family == family and m.rest[0].strip()
           for line in index.lines):
        return refuse  # the file's own lines start this way: a '+' line may well too
    for i, m in looks.items():
        ops[i] = ("+", m.text(gap))
    return None


# -- annotations ---------------------------------------------------------------------------------
def _drop_annotations(ops: list[tuple[str, str]], index: FileIndex) -> int:
    known = index.where[2]
    dropped = 0
    for i, (tag, text) in enumerate(ops):
        if tag == "+" or not text.strip() or _key(text) in known:
            continue
        # the last comment first: the line may have a real one before it
        head = next((h for h in _heads(text) if _key(h) in known), None)
        if head is not None:
            ops[i] = (tag, head)
            dropped += 1
    return dropped


def _drop_edge_elisions(ops: list[tuple[str, str]], index: FileIndex) -> int:
    dropped = 0
    for edge in (0, -1):
        old = [i for i, (tag, _) in enumerate(ops) if tag != "+"]
        if len(old) < 2:
            break
        i = old[edge]
        tag, text = ops[i]
        if tag == " " and _ELISION.match(text) and _key(text) not in index.where[2]:
            del ops[i]
            dropped += 1
    return dropped
