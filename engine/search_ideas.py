"""Asking the ideator for a batch of ideas (the model side of `SearchEngine._propose_batch`),
and keeping near duplicates of earlier ideas from costing GPU time (issue 13, item 4).

`IdeasMixin` is mixed into `engine.search.SearchEngine`, which provides `store`, `search_id`,
`search`, `llm` and `progress`.

Each answer's ideas are screened against every earlier idea of the search (any epoch, any
status) and against each other, with `engine.dedup` and the search's `config["dedup"]`
settings. A near duplicate under `--auto` is replaced by asking the model again (at most
`DEDUP_EXTRA_ASKS` more asks per batch, each saying which ideas repeated which), and dropped if
the replacements still repeat; without `--auto` it is kept with `twin_of` set, so the
researcher sees it at the gate with a link to its twin. A repeat of another idea of the same
answer has no stored twin to link to and is always dropped. Whatever happened is said in the
problems, which the batch's notes keep.

The index of earlier ideas lives on the engine: built from the store on the first batch (a
restarted engine rebuilds it), then fed only the ideas stored since, read epoch by epoch from
the last one it saw, so a batch's cost does not grow with the population.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from engine import ideation
from engine.dedup import DedupConfig, DedupIndex, Twin, dedup_config
from engine.human_diff import RESEARCHER, catalog_add_refusal, for_researcher
from engine.patching import prepare_patch
from engine.protection import DiffRules
from engine.store import ops
from engine.store.views import IdeaView

log = logging.getLogger(__name__)

#: At most this many more asks per batch to replace near duplicates (under `--auto`).
DEDUP_EXTRA_ASKS = 2
#: Texts per embedding request when the index is (re)built from the store.
EMBED_CHUNK = 256

_tokens = count(1)


@dataclass
class _DedupState:
    """The engine's index of its search's ideas, and how far it has read the store."""

    config: DedupConfig
    index: DedupIndex
    known_id: int = 0  # every stored idea up to this id is in the index
    epoch: int = 0  # no idea of an earlier epoch can still be stored
    # vectors of texts this engine screened and is about to store (no second embedding call)
    vectors: dict[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass
class _Screened:
    kept: list[ops.NewIdea] = field(default_factory=list)
    repeats: list[tuple[str, Twin]] = field(default_factory=list)  # (new text, its twin)


class IdeasMixin:
    llm: Any
    env: Any
    store: Any
    search_id: int
    search: Any
    _dedup_state: _DedupState | None = None

    async def _ask_ideas(self, kind: str, epoch: int, size: int, messages: list[dict[str, str]],
                         parents: tuple[int, ...]) -> tuple[list[ops.NewIdea], list[str]]:
        """Up to `size` new ideas from the model (asked up to 3 times until an answer parses),
        screened for near duplicates, and the problems met on the way."""
        purpose = f"propose:{kind}:epoch{epoch}"
        texts, problems, answer = await self._ask_parsed(purpose, messages)
        if not texts:
            return [], problems
        texts = texts[:size]
        s = self.search
        try:
            config = dedup_config(s.config.get("dedup"))
        except ValueError as exc:
            problems.append(f"near-duplicate check off: {exc}")
            config = None
        if config is None:
            return [ops.NewIdea(text=t, origin=kind, parents=parents) for t in texts], problems

        from engine.llm import LlmError

        batch = next(_tokens)
        pending: list[Hashable] = []
        try:
            done = await self._screen(config, texts, kind, parents, batch, s.auto, purpose,
                                      pending)
            problems += [f"{_title(i.text)!r} nearly repeats idea {i.twin_of}: flagged for "
                         "review" for i in done.kept if i.twin_of is not None]
            if not s.auto:
                problems += [f"{_title(t)!r} repeats another idea of the same answer: dropped"
                             for t, _ in done.repeats]
                return done.kept, problems
            first, missing, last, asks = done.repeats, len(done.repeats), done.repeats, 0
            while missing and asks < DEDUP_EXTRA_ASKS:
                asks += 1
                messages = [*messages, {"role": "assistant", "content": str(answer)},
                            {"role": "user", "content": _ask_again(last, missing)}]
                try:
                    more, _, answer = await self._ask_parsed(f"{purpose}:again{asks}",
                                                             messages, tries=1)
                except LlmError as exc:
                    problems.append(f"asking again for near duplicates failed: {exc}")
                    break
                again = await self._screen(config, more[:missing], kind, parents, batch, True,
                                           f"{purpose}:again{asks}", pending)
                done.kept += again.kept
                missing -= len(again.kept)
                last = again.repeats or last
            if first and missing < len(first):
                problems.append(f"{len(first) - missing} near duplicate(s) replaced by asking "
                                "again")
            if missing:
                problems.append(f"{missing} near duplicate(s) dropped after {asks} more "
                                "ask(s): " + "; ".join(f"{_title(t)!r} ≈ {_twin_name(tw)}"
                                                       for t, tw in first))
            return done.kept, problems
        except LlmError as exc:
            # The embedding model failed: the ideas go on unscreened rather than being lost.
            problems.append(f"near-duplicate check skipped: {exc}")
            return [ops.NewIdea(text=t, origin=kind, parents=parents) for t in texts], problems
        finally:
            if self._dedup_state is not None and pending:
                # Once returned, the batch's ideas are stored (finish_batch runs before any
                # other task does) and the next sync reads them with their ids.
                self._dedup_state.index.discard(pending)

    async def _ask_parsed(self, purpose: str, messages: list[dict[str, str]], tries: int = 3
                          ) -> tuple[list[str], list[str], str]:
        problems: list[str] = []
        text = ""
        for _ in range(tries):
            text = await self.llm.complete("ideator", purpose, messages)
            # an answer cut at the output limit keeps its whole blocks; the cut one is dropped
            texts, problems = ideation.parse_ideas(text,
                                                   cut_off=getattr(text, "cut_off", False))
            if texts:
                return texts, problems, text
        return [], problems, text

    def _implement_attached(self, idea: IdeaView, done_ok: str) -> bool:
        """Implement a researcher's idea from the diff they attached, through the same checks
        as a model's diff, with no model call. Under the catalog ideator a researcher's idea
        without one fails at once, saying why. False: implement it the usual way."""
        if idea.diff:
            env = self.env
            outcome = prepare_patch(idea.diff, env.root, env.protected, env.protected_lines,
                                    rules=DiffRules.of(env))
            reason = None if outcome.ok else (
                f"the diff the researcher attached does not apply: "
                f"{for_researcher(outcome.error or 'no change')}")
            ops.add_attempt(self.store, idea.id, model=RESEARCHER, answer=idea.diff,
                            diff=outcome.diff, outcome="ok" if outcome.ok else "failed",
                            error=outcome.error, repairs=outcome.repairs,
                            move=("implementing", done_ok if outcome.ok else "implement_failed"),
                            reason=reason)
            return True
        if self.search.model == "catalog" and idea.origin == "human" and not idea.catalog_stem:
            # (An idea added before attached diffs existed, or sent around the CLI's check.)
            error = catalog_add_refusal()
            ops.add_attempt(self.store, idea.id, model="catalog", answer="", diff=None,
                            outcome="failed", error=error,
                            move=("implementing", "implement_failed"), reason=error)
            return True
        return False

    # ------------------------------------------------------------------ near duplicates
    async def _dedup_sync(self, config: DedupConfig) -> _DedupState:
        """The index, holding every idea stored so far (built on first use). Nothing awaits
        between its last read of the store and its return."""
        state = self._dedup_state
        if state is None or state.config != config:
            state = self._dedup_state = _DedupState(config, DedupIndex(config), epoch=-1)
        for _ in range(3):
            s = self.search
            if state.epoch < 0:
                ideas = ops.list_ideas(self.store, self.search_id)
            else:
                ideas = [i for e in range(state.epoch, s.epoch + 1)
                         for i in ops.list_ideas(self.store, self.search_id, epoch=e)]
            fresh = [i for i in ideas if i.id > state.known_id and i.origin != "baseline"]
            need = list(dict.fromkeys(i.text for i in fresh if i.text not in state.vectors))
            if not config.embedding_model or not need:
                break
            # Ideas not screened here (a researcher's, a restarted engine's): embed them, then
            # read again, since other batches may store ideas while this call is out.
            for start in range(0, len(need), EMBED_CHUNK):
                chunk = need[start:start + EMBED_CHUNK]
                vectors = await self.llm.embed(config.embedding_model, chunk, "dedup:earlier",
                                               config.api_base)
                state.vectors.update(zip(chunk, map(tuple, vectors), strict=True))
        fresh = [i for i in fresh if not config.embedding_model or i.text in state.vectors]
        if fresh:
            vectors = ([state.vectors[i.text] for i in fresh] if config.embedding_model
                       else None)
            state.index.add_many([(i.id, i.text) for i in fresh], vectors)
            for i in fresh:
                state.vectors.pop(i.text, None)
            state.known_id = max(i.id for i in fresh)
        state.epoch = s.epoch
        return state

    async def _screen(self, config: DedupConfig, texts: list[str], kind: str,
                      parents: tuple[int, ...], batch: int, auto: bool, purpose: str,
                      pending: list[Hashable]) -> _Screened:
        """Sort `texts` into ideas to keep and repeats; kept ones join the index at once (under
        a pending key) so later texts of this answer and other batches see them."""
        vectors: list[list[float]] | None = None
        if config.embedding_model and texts:
            vectors = await self.llm.embed(config.embedding_model, texts, f"dedup:{purpose}",
                                           config.api_base)
        state = await self._dedup_sync(config)
        # From here on nothing awaits: the index cannot change under the checks.
        out = _Screened()
        offset = len(state.index)
        for j, text in enumerate(texts):
            probe = state.index.probe(text, vectors[j] if vectors is not None else None)
            twin = state.index.find_twin(probe)
            if twin is not None and (auto or not isinstance(twin.key, int)):
                out.repeats.append((text, twin))
                log.info("idea %r nearly repeats %s (%.2f)", _title(text), _twin_name(twin),
                         twin.score)
                continue
            twin_of = twin.key if twin is not None else None
            out.kept.append(ops.NewIdea(text=text, origin=kind, parents=parents,
                                        twin_of=twin_of))  # type: ignore[arg-type]
            key = ("pending", batch, offset + j)
            state.index.add(key, probe)
            pending.append(key)
            if probe.vector is not None:
                state.vectors[text] = probe.vector
        return out


def _title(text: str) -> str:
    body = text.replace("[Experiment]", "").strip()
    return body.split("\n", 1)[0].split(". ", 1)[0].strip()[:80]


def _twin_name(twin: Twin) -> str:
    if isinstance(twin.key, int):
        return f"idea {twin.key}"
    return "another idea proposed just now"


def _ask_again(repeats: list[tuple[str, Twin]], wanted: int) -> str:
    lines = [f"- your idea {_title(text)!r} repeats {_twin_name(twin)}: "
             f"{_title(twin.text)!r}" for text, twin in repeats]
    return ("Some of these ideas repeat ideas this search already has, so they will not be "
            "run:\n" + "\n".join(lines) + f"\n\nPropose {max(wanted, 1)} new idea(s) instead, "
            "each a different experiment from these and from every idea listed before, in the "
            "same format ([Experiment] ... [Code Changes] ... [End]).")
