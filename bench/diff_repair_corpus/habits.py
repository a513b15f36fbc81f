"""Fault classes for two habits of models that copy context lines out of the prompt.

The implementation prompt lists every context file with line numbers ("  12 | code"). Models
paste those numbers into a diff's context and removed lines, in the prompt's form or in one of
their own ("12: code", "12| code", "12 code", "12<tab>code"), sometimes on the added lines too,
sometimes only on the first few lines of a hunk. They also tag context lines with comments
("x = 1  # unchanged", "# ... existing code ..."). The repairable classes expect the intended
edit; the refusal classes are the cases where undoing the habit would be a guess.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

from diff_repair_corpus.generate import Case, Edit, Source, make_edit, unified

_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_IDENT = re.compile(r"\b([A-Za-z_]\w*)\b")

#: number formats seen in model answers; the first is the prompt's own ("{n:>width} | ")
NUMBER_FORMATS: tuple[Callable[[int, int], str], ...] = (
    lambda n, w: f"{n:>{w}} | ",
    lambda n, w: f"{n}: ",
    lambda n, w: f"{n}| ",
    lambda n, w: f"{n} ",
    lambda n, w: f"{n}\t",
    lambda n, w: f"{n:>{w}}: ",
    lambda n, w: f"{n} | ",
)
ANNOTATIONS = ("  # unchanged", "  # (unchanged)", "  # ... existing code", "  // unchanged",
               "  # keep", "  # same as before", " # unchanged", "\t# unchanged")
REMOVED_NOTES = ("  # removed", "  # old", "  # replaced below", "  # (delete)")
ELISIONS = ("# ... existing code ...", "# ... rest of the function unchanged ...",
            "// ... unchanged ...", "# ...")


def _map_lines(diff: str, fn: Callable[[int, str, str, int, int], str]) -> str:
    """Rewrite hunk body lines with fn(hunk_index, tag, text, old_no, new_no)."""
    out = []
    old_no = new_no = 0
    hunk = -1
    for line in diff.split("\n"):
        match = _HEADER.match(line)
        if match:
            hunk += 1
            old_no, new_no = int(match.group(1)), int(match.group(2))
            out.append(line)
            continue
        if hunk >= 0 and line[:1] in (" ", "-", "+") and not line.startswith(("--- ", "+++ ")):
            out.append(fn(hunk, line[0], line[1:], old_no, new_no))
            old_no += line[0] != "+"
            new_no += line[0] != "-"
            continue
        out.append(line)
    return "\n".join(out)


def _repair(cls: str, src: Source, edit: Edit, answer: str) -> Case:
    return Case(cls, "repair", src, answer, src.protected, src.protected_lines,
                {edit.rel: edit.after})


def _reject(cls: str, src: Source, answer: str, *keywords: str) -> Case:
    return Case(cls, "reject", src, answer, src.protected, src.protected_lines, {}, keywords)


def _fence(diff: str, rng: random.Random) -> str:
    return rng.choice([diff, f"Here is the diff:\n\n```diff\n{diff}```\n"])


# -- repairable ---------------------------------------------------------------------------------
def numbered_context_lines(src: Source, rng: random.Random) -> Case:
    """Listing numbers on ' ' and '-' lines in one of the forms models use; on the '+' lines
    too (the number of the line they follow, or their new number), or only on a hunk's first
    lines."""
    edit = make_edit(src, rng)
    fmt = rng.choice(NUMBER_FORMATS)
    width = len(str(len(src.text.splitlines())))
    added = rng.choice(["none", "none", "old", "new"])
    partial = added == "none" and rng.random() < 0.3
    strip_blank = rng.random() < 0.5  # "  12 |" without the trailing space on blank lines
    seen: dict[int, int] = {}
    cut: dict[int, int] = {}

    def number(hunk: int, tag: str, text: str, old_no: int, new_no: int) -> str:
        k = seen[hunk] = seen.get(hunk, 0) + 1
        if partial and k > cut.setdefault(hunk, rng.randint(1, 4)):
            return tag + text
        if tag == "+":
            if added == "none":
                return tag + text
            n = old_no if added == "old" else new_no
        else:
            n = old_no
        line = fmt(n, width) + text
        return tag + (line.rstrip() if strip_blank and not text.strip() else line)
    return _repair("numbered_context_lines", src, edit,
                   _fence(_map_lines(edit.diff, number), rng))


def annotated_context_lines(src: Source, rng: random.Random) -> Case:
    """Comments added to some ' ' and '-' lines (also after a comment the line really has),
    or an elision line ("# ... existing code ...") as a hunk's first or last context line."""
    edit = make_edit(src, rng)
    lines = edit.diff.split("\n")
    body = [i for i, line in enumerate(lines) if line[:1] in (" ", "-")
            and not line.startswith("--- ") and line[1:].strip()]
    commented = [i for i in body if "#" in lines[i]]
    picks = set(rng.sample(body, k=min(len(body), rng.randint(1, 3))))
    if commented and rng.random() < 0.5:
        picks.add(rng.choice(commented))
    for i in picks:
        notes = REMOVED_NOTES if lines[i].startswith("-") else ANNOTATIONS
        lines[i] += rng.choice(notes)
    if rng.random() < 0.3:
        heads = [i for i, line in enumerate(lines) if line.startswith("@@")]
        h = rng.choice(heads)
        if rng.random() < 0.5:
            lines.insert(h + 1, " " + _indent_of(lines[h + 1]) + rng.choice(ELISIONS))
        else:
            end = next((i for i in range(h + 1, len(lines)) if lines[i][:1] not in (" ", "+", "-")
                        or lines[i].startswith("--- ")), len(lines))
            lines.insert(end, " " + _indent_of(lines[end - 1]) + rng.choice(ELISIONS))
    return _repair("annotated_context_lines", src, edit, _fence("\n".join(lines), rng))


def _indent_of(line: str) -> str:
    text = line[1:]
    return text[:len(text) - len(text.lstrip())]


def code_that_starts_with_numbers(src: Source, rng: random.Random) -> Case:
    """A file whose lines really start with numbers ("12: 'x',", "3 | FLAG", "100 * k"), some
    equal to their own line number: a clean diff must keep every number."""
    table = _numbers_table(src)
    edit = _table_edit(table, rng)
    return _repair("code_that_starts_with_numbers", table, edit, _fence(edit.diff, rng))


# -- refusals -----------------------------------------------------------------------------------
def numbers_naming_other_lines(src: Source, rng: random.Random) -> Case:
    """Numbers on every ' ' and '-' line that name other lines, in no order: neither the lines
    they name nor their sequence vouch for them, so nothing is stripped."""
    edit = make_edit(src, rng)
    size = len(src.text.splitlines())
    fmt = rng.choice(NUMBER_FORMATS)

    def number(hunk: int, tag: str, text: str, old_no: int, new_no: int) -> str:
        if tag == "+":
            return tag + text
        wrong = old_no + rng.choice([-1, 1]) * rng.randint(20, 200)
        return tag + fmt(max(1, min(size + 300, wrong)), 3) + text
    return _reject("numbers_naming_other_lines", src, _map_lines(edit.diff, number),
                   "does not match")


def added_numbers_ambiguous(src: Source, rng: random.Random) -> Case:
    """Listing numbers on the context of a file whose lines start with numbers, and '+' lines
    that start with numbers too: which of those are line numbers cannot be told."""
    table = _numbers_table(src)
    edit = _table_edit(table, rng)
    width = len(str(len(table.text.splitlines())))
    numbered_added = rng.random() < 0.5

    def number(hunk: int, tag: str, text: str, old_no: int, new_no: int) -> str:
        if tag == "+" and not numbered_added:
            return tag + text
        return tag + f"{old_no:>{width}}: " + text
    return _reject("added_numbers_ambiguous", table, _map_lines(edit.diff, number),
                   "line number")


def annotation_hides_a_change(src: Source, rng: random.Random) -> Case:
    """An annotated line whose code differs from the file too: dropping the comment does not
    make it match, so the hunk is refused rather than guessed."""
    for _ in range(20):  # a hunk at the end of a file may have no line that qualifies
        edit = make_edit(src, rng)
        lines = edit.diff.split("\n")
        old: list[list[int]] = []
        for i, line in enumerate(lines):
            if line.startswith("@@"):
                old.append([])
            elif old and line[:1] in (" ", "-") and not line.startswith("--- "):
                old[-1].append(i)
        # a removed line, or a context line fuzz cannot drop (two or more from either end)
        pool = [i for side in old for k, i in enumerate(side) if _IDENT.search(lines[i])
                and (lines[i].startswith("-") or 2 <= k < len(side) - 2)]
        if pool:
            break
    i = rng.choice(pool)
    lines[i] = _IDENT.sub(lambda m: m.group(1) + "_v2", lines[i], count=1) \
        + rng.choice(ANNOTATIONS)
    return _reject("annotation_hides_a_change", src, "\n".join(lines), "does not match")


# -- a file whose lines start with numbers ------------------------------------------------------
def _numbers_table(src: Source) -> Source:
    rel = "numbers_table.py"
    path = Path(src.env_dir) / rel
    if not path.exists():
        lines = ['"""Lookup tables whose lines start with numbers (diff-repair corpus)."""', "",
                 "TABLE = ["]
        for k in range(4, 90):
            n = k if k % 3 == 0 else k * 7  # some lines hold their own line number
            lines.append([f'{n}: "v{n}",', f"{n} | FLAG_{n},", f"{n} * SCALE,",
                          f"{n}\t+ OFFSET,"][k % 4])
        lines += ["]", ""]
        path.write_text("\n".join(lines))
    return Source(src.env_dir, src.env_name, rel, path.read_text(), src.protected, {})


def _table_edit(table: Source, rng: random.Random) -> Edit:
    lines = table.text.splitlines(keepends=True)
    rows = [i for i, line in enumerate(lines) if line[:1].isdigit()]
    i = rng.choice(rows[2:-2])
    k = rng.randint(2, 400)
    new = rng.choice([[f'{k}: "w{k}",\n'], [f"{k} | FLAG_{k},\n", f"{k + 1} * SCALE,\n"],
                      [f"{i + 1}: \"here\",\n"]])
    after = "".join(lines[:i] + new + lines[i + rng.choice([0, 1]):])
    return Edit(table.rel, table.text, after, unified(table.rel, table.text, after))


REPAIRABLE_HABITS = (numbered_context_lines, annotated_context_lines,
                     code_that_starts_with_numbers)
REFUSAL_HABITS = (numbers_naming_other_lines, added_numbers_ambiguous,
                  annotation_hides_a_change)
