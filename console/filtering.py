"""The board's filter language, typed after `/`.

    status:proposed        one or more statuses (comma separated; a prefix is enough)
    origin:exploit,human   origins
    epoch:3                one epoch (as shown, counting from 0)
    #12 or id:12           ideas by id
    confirm:confirmed      by confirmation (confirmed, unconfirmed, refuted; a prefix is
                           enough; `c:` too): c:un lists the leads that repeats still weigh
    any other word         must appear in the title or the text (case-insensitive)
"""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("proposed", "approved", "rejected", "implementing", "implement_failed",
            "implemented", "diff_review", "checking", "repairing", "queued", "running", "scored",
            "failed", "skipped", "superseded")
ORIGINS = ("baseline", "seed", "exploit", "explore", "human", "catalog")
CONFIRMATIONS = ("confirmed", "unconfirmed", "refuted")


@dataclass(frozen=True)
class Filter:
    statuses: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    words: tuple[str, ...] = ()
    epoch: int | None = None
    problems: tuple[str, ...] = ()
    confirmations: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.statuses or self.origins or self.ids or self.words
                    or self.epoch is not None or self.confirmations)


def _expand(values: str, known: tuple[str, ...], what: str, problems: list[str]) -> list[str]:
    out: list[str] = []
    for value in filter(None, (v.strip().lower() for v in values.split(","))):
        exact = [k for k in known if k == value]
        matches = exact or [k for k in known if k.startswith(value)]
        if matches:
            out.extend(matches)
        else:
            problems.append(f"unknown {what} {value!r} (one of {', '.join(known)})")
    return out


def parse(text: str) -> Filter:
    statuses: list[str] = []
    origins: list[str] = []
    ids: list[int] = []
    words: list[str] = []
    epoch: int | None = None
    problems: list[str] = []
    confirmations: list[str] = []
    for token in text.split():
        key, sep, value = token.partition(":")
        key = key.lower()
        if sep and key in ("status", "s"):
            statuses += _expand(value, STATUSES, "status", problems)
        elif sep and key in ("origin", "o"):
            origins += _expand(value, ORIGINS, "origin", problems)
        elif sep and key in ("confirm", "confirmation", "c"):
            confirmations += _expand(value, CONFIRMATIONS, "confirmation", problems)
        elif sep and key in ("epoch", "e"):
            if value.isdigit():
                epoch = int(value)
            else:
                problems.append(f"epoch:{value} is not a number")
        elif sep and key == "id" and value.isdigit():
            ids.append(int(value))
        elif token.startswith("#") and token[1:].isdigit():
            ids.append(int(token[1:]))
        else:
            words.append(token)
    return Filter(tuple(dict.fromkeys(statuses)), tuple(dict.fromkeys(origins)), tuple(ids),
                  tuple(words), epoch, tuple(problems), tuple(dict.fromkeys(confirmations)))
