"""The offline ideator (`--model catalog`): ideas with ready diffs from an environment's catalog.

Seed and explore batches draw catalog ideas not yet used in the search; exploit batches cross
two winning parents by applying both of their diffs (a conflict is an implement failure).
It needs no model and no API key, which is what lets the demo run anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine.environments import Environment
from engine.patching import PatchError, combine_diffs
from engine.store.ops import NewIdea
from engine.store.views import IdeaView

LABEL = "offline catalog (no LLM)"


@dataclass(frozen=True)
class CatalogIdea:
    stem: str
    text: str
    diff: str


def load_catalog(env: Environment) -> list[CatalogIdea]:
    folder = env.root / "catalog"
    out = []
    for txt in sorted(folder.glob("*.txt")):
        diff = txt.with_suffix(".diff")
        if diff.exists():
            out.append(CatalogIdea(txt.stem, txt.read_text(encoding="utf-8").strip(),
                                   diff.read_text(encoding="utf-8")))
    return out


def propose(env: Environment, kind: str, n: int, rng: random.Random, used: set[str],
            winners: Sequence[IdeaView]) -> list[NewIdea]:
    catalog = load_catalog(env)
    if not catalog:
        raise ValueError(f"environment {env.name!r} has no catalog/ ideas; "
                         "the offline ideator needs catalog/<stem>.txt + .diff pairs")
    ideas: list[NewIdea] = []
    if kind == "exploit":
        usable = [w for w in winners if w.diff]
        pairs = [(a, b) for i, a in enumerate(usable) for b in usable[i + 1:]]
        rng.shuffle(pairs)
        for a, b in pairs:
            if len(ideas) >= n:
                break
            try:
                # Only cross parents whose changes merge: a known conflict wastes a slot.
                combine_diffs(env.root, [a.diff or "", b.diff or ""])
            except PatchError:
                continue
            text = (f"[Experiment] Combine two winning ideas: #{a.id} ({_short(a)}) and "
                    f"#{b.id} ({_short(b)}).\n[Code Changes] Apply both ideas' changes together.")
            ideas.append(NewIdea(text=text, origin="exploit", parents=(a.id, b.id),
                                 parent_kind="exploit", title=f"combine #{a.id} + #{b.id}"))
    fresh = [c for c in catalog if c.stem not in used]
    rng.shuffle(fresh)
    while len(ideas) < n and fresh:
        c = fresh.pop()
        used.add(c.stem)
        ideas.append(NewIdea(text=c.text, origin="catalog", catalog_stem=c.stem))
    return ideas


def _short(idea: IdeaView) -> str:
    return idea.title if idea.origin != "exploit" else idea.title.replace("combine ", "")


def diff_for(env: Environment, stem: str) -> str:
    return (env.root / "catalog" / f"{stem}.diff").read_text(encoding="utf-8")
