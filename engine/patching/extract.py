"""Finds the diff (or the SEARCH/REPLACE blocks) inside a model's answer.

Answers mix prose, code fences and the change itself. This module only cuts the change out and
normalises line endings; reading hunks is `loose.py`'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.patching.outcome import Rejected
from engine.patching.search_replace import has_search_replace

#: CommonMark allows up to three spaces before a fence; the info string names the language.
_FENCE_OPEN = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_DIFF_START = re.compile(r"^(diff --git |--- |\+\+\+ |@@|GIT binary patch|Binary files? )",
                         re.MULTILINE)

FORMAT_HELP = (
    "Reply with the change as a unified diff in a ```diff block "
    "('--- a/train.py', '+++ b/train.py', then '@@ -l,n +l,n @@' hunks whose ' ' and '-' lines "
    "are copied exactly from the file), or as SEARCH/REPLACE blocks."
)
NO_DIFF_HELP = "your answer holds no diff. " + FORMAT_HELP


@dataclass
class Extracted:
    form: str  # "unified" | "search_replace"
    text: str
    repairs: list[str] = field(default_factory=list)
    #: the answer ended inside a code fence: it may have been cut off (max tokens)
    unterminated: bool = False


@dataclass
class _Fence:
    body: list[str]
    info: str
    start: int
    end: int  # index of the closing fence line, or len(lines) when it never closed


def _fences(lines: list[str]) -> list[_Fence]:
    found: list[_Fence] = []
    i = 0
    while i < len(lines):
        match = _FENCE_OPEN.match(lines[i])
        if not match:
            i += 1
            continue
        fence = match.group("fence")
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            j += 1
        found.append(_Fence(lines[i + 1:j], match.group("info").strip(), i, j))
        i = j + 1
    return found


def _looks_like_diff(body: list[str]) -> bool:
    return bool(_DIFF_START.search("\n".join(body)))


def extract(answer: str) -> Extracted:
    """The change in `answer`, with the repairs that were needed to get at it.

    Raises Rejected when there is nothing that could be a diff.
    """
    repairs: list[str] = []
    text = answer
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        repairs.append("converted CRLF line endings to LF")
    if has_search_replace(text):
        return Extracted("search_replace", text, repairs)
    if not text.strip():
        raise Rejected(NO_DIFF_HELP)
    lines = text.split("\n")
    fenced = [f for f in _fences(lines) if _looks_like_diff(f.body)]
    if fenced:
        body: list[str] = []
        for fence in fenced:
            body.extend(fence.body)
        repairs.append("stripped code fence" if len(fenced) == 1
                       else f"joined the diffs of {len(fenced)} code fences")
        inside = {i for f in fenced for i in range(f.start, min(f.end + 1, len(lines)))}
        if any(line.strip() for i, line in enumerate(lines) if i not in inside):
            repairs.append("ignored prose around the diff")
        unterminated = fenced[-1].end >= len(lines)
        if unterminated:
            repairs.append("closed an unterminated code fence")
        return Extracted("unified", "\n".join(body).rstrip("\n") + "\n", repairs, unterminated)
    match = _DIFF_START.search(text)
    if match is None:
        raise Rejected(NO_DIFF_HELP)
    if text[:match.start()].strip():
        repairs.append("ignored prose before the diff")
    diff = text[match.start():]
    if not diff.endswith("\n"):
        diff += "\n"
        repairs.append("added missing final newline")
    return Extracted("unified", diff, repairs)
