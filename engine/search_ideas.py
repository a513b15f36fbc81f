"""Asking the ideator for a batch of ideas (the model side of `SearchEngine._propose_batch`).

`IdeasMixin` is mixed into `engine.search.SearchEngine`, which provides `store`, `search_id`,
`llm` and `progress`.
"""

from __future__ import annotations

from typing import Any

from engine import ideation
from engine.store import ops


class IdeasMixin:
    llm: Any

    async def _ask_ideas(self, kind: str, epoch: int, size: int, messages: list[dict[str, str]],
                         parents: tuple[int, ...]) -> tuple[list[ops.NewIdea], list[str]]:
        """Up to `size` new ideas from the model (asked up to 3 times until an answer parses),
        and the problems met on the way."""
        problems: list[str] = []
        for _ in range(3):
            text = await self.llm.complete("ideator", f"propose:{kind}:epoch{epoch}", messages)
            # an answer cut at the output limit keeps its whole blocks; the cut one is dropped
            texts, problems = ideation.parse_ideas(text,
                                                   cut_off=getattr(text, "cut_off", False))
            if texts:
                return [ops.NewIdea(text=t, origin=kind, parents=parents)
                        for t in texts[:size]], problems
        return [], problems
