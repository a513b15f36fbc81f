"""Near-duplicate ideas: find the earlier idea of a search that a new idea repeats.

A model asked for new ideas (or a user typing them) often proposes one that the search has
already run under other words: "try swiglu instead of gelu" against a long "[Experiment]
Replace the GELU feed-forward layer with a SwiGLU layer ..." text. Running it again costs a GPU
job and teaches nothing, so the engine checks each new idea against the earlier ones before
implementation (issue 13, item 4).

The lexical check compares normalised word sets with rapidfuzz's token-set ratio, which scores
a short text whose words all occur in a long one as high as a full match (the shorthand case).
Numbers are kept out of the word comparison and decide on their own: when one text names a
number the other does not ("lr 3e-4" against "lr 1e-3"), the two are different experiments,
however alike their words. With an embedding model named in the config, the word score is
replaced by the cosine of the two texts' embeddings (via litellm); the number rule still holds.

Use `DedupIndex` in a loop (it normalises and embeds each earlier idea once); `find_twin` is the
one-shot form.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rapidfuzz import fuzz

__all__ = [
    "DedupConfig", "DedupIndex", "Embedder", "NormalisedIdea", "PairScore", "Probe", "Twin",
    "dedup_config", "find_twin", "litellm_embedder", "normalise", "score_pair",
]

log = logging.getLogger(__name__)

Embedder = Callable[[list[str]], list[list[float]]]


@dataclass(frozen=True)
class DedupConfig:
    """When a new idea counts as a near duplicate of an earlier one.

    The defaults were tuned on bench/dedup_corpus (see bench/README.md, "Near-duplicate ideas").
    """

    # Lexical score (0..1, rapidfuzz token-set ratio of the normalised words) at or above which
    # two ideas are twins.
    threshold: float = 0.68
    # A number named by one text and missing from the other makes them different experiments.
    numbers_must_agree: bool = True
    # Two texts naming sibling code names (BONUS_A / BONUS_C, attn_dropout / resid_dropout:
    # one part in common) are different experiments: ideas written from one template often
    # differ only in the knob they touch.
    names_must_agree: bool = True
    # Optional: a litellm embedding model ("openai/text-embedding-3-small", ...). When set, the
    # score is the cosine of the two embeddings and `embedding_threshold` applies instead.
    embedding_model: str | None = None
    embedding_threshold: float = 0.90
    api_base: str | None = None

    def __post_init__(self) -> None:
        for name in ("threshold", "embedding_threshold"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"dedup {name} must be in (0, 1], got {value!r}")


@dataclass(frozen=True)
class Twin:
    """The earlier idea a new one repeats: its key (as given to the index), the score and its
    text."""

    key: Hashable
    score: float
    text: str = ""


@dataclass(frozen=True)
class PairScore:
    """How alike two ideas are: the similarity (0..1) and whether their numbers agree."""

    score: float
    numbers_agree: bool
    names_agree: bool = True


# -- normalisation -----------------------------------------------------------------------------

_HEADERS = re.compile(r"\[\s*(experiment|code changes?)\s*\]", re.IGNORECASE)
# A citation year ("Shazeer 2020", "So et al., 2021", "(Hu et al. 2024)") is not a setting.
_CITATION_YEAR = re.compile(r"(?:\b[A-Z][\w-]*\.?,?|et al\.?,?)\s+(?:19[5-9]\d|20[0-3]\d)\b")
# A number standing on its own: 3e-4, .99, 0.1x, 10%, 262K. Not the digit of a name (beta2,
# gpt-2, fp16, 2i) -- those stay words.
_NUMBER = re.compile(
    r"(?<![\w.])(?<![a-z]-)(\d+(?:\.\d*)?|\.\d+)(?:e([-+]?\d+))?(%|x|k|m|b)?(?![\w])",
    re.IGNORECASE,
)
# A code name: letters/digits joined by underscores (BONUS_A, warmup_iters, grpo_clip).
_NAME = re.compile(r"(?<![\w])[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?![\w])", re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z0-9_]*|[0-9]+[a-z][a-z0-9_]*")
# Spellings of one thing, mapped to one token before words are compared.
_PHRASES = [
    (re.compile(p), r) for p, r in [
        (r"learning[\s-]+rates?", "lr"),
        (r"weight[\s-]+decay", "wd"),
        (r"warm[\s-]*ups?\b", "warmup"),
        (r"cool[\s-]*downs?\b", "cooldown"),
        (r"feed[\s-]*forward|\bffn\b", "mlp"),
        (r"\battn\b", "attention"),
        (r"query|queries", "q"),
        (r"\bkeys?\b", "k"),
        (r"\bqk\b", "q k"),
        (r"positional|positions?", "position"),
        (r"\bresponses?\b|\bcompletions?\b|\bgenerations?\b", "response"),
        (r"\bgroup[\s_-]*size\b|\bg\s*=", "group_size"),
    ]
]
_SUFFIXES = [  # British and American spellings, and word forms, to one stem
    ("isation", "ize"), ("ization", "ize"), ("ising", "ize"), ("izing", "ize"),
    ("ised", "ize"), ("ized", "ize"), ("ise", "ize"),
]
_STEMS = {
    "normalize": "norm", "normalizer": "norm", "normaliser": "norm", "normalization": "norm",
    "rmsnorm": "rmsnorm", "initialize": "init", "initialization": "init", "initial": "init",
    "optimiser": "optimizer", "embedding": "embed", "embeddings": "embed", "emb": "embed",
    "activation": "act", "activations": "act", "scheduler": "schedule", "annealing": "decay",
    "anneal": "decay", "epochs": "epoch", "passes": "epoch", "pass": "epoch",
    "squared": "square", "sq": "square", "zeros": "zero", "zeroes": "zero",
    "max": "peak", "maximum": "peak", "top": "peak",
    "increase": "raise", "higher": "raise", "larger": "raise", "bigger": "raise",
    "longer": "raise", "decrease": "lower", "reduce": "lower", "smaller": "lower",
    "shorter": "lower",
}
# Words that carry no experiment: English function words and the verbs every idea uses.
_FILLER_WORDS = """
a an the and or of to in on at by for from with without into onto as is are be been being
was were it its this that these those so such than then there their them they we our us you
your i me my he she his her which who whom whose what when where while how why all any both
each every few more most other some no nor not only own same too very can will just should
now also after before during above below up down out over under again further once here
rather instead instead_of via per e g eg ie etc vs versus about around like
try trying use used using uses replace replaced replacing replacement switch switching swap
swapping change changes changed changing add adding added make makes making set setting
keep keeping apply applying applied let lets get gets go do does done doing would could
might may must new current currently standard default baseline idea experiment code
instead simply just maybe also still keep kept see both one two half twice
"""
_FILLER = frozenset(_FILLER_WORDS.split())


@dataclass(frozen=True)
class NormalisedIdea:
    """An idea text reduced to what the comparison looks at."""

    words: str  # distinct content words, sorted, space-separated
    word_count: int
    numbers: frozenset[float]
    names: frozenset[str] = frozenset()  # code names (with an underscore), lower case


def normalise(text: str) -> NormalisedIdea:
    """Reduce an idea text to its content words and its numbers.

    Case, punctuation, the "[Experiment]"/"[Code Changes]" headers and filler words go;
    numbers are taken out of the words into a set of values (3e-4 == 0.0003, 10% == 0.1).
    """
    body = _HEADERS.sub(" ", text)
    names = frozenset(n.lower() for n in _NAME.findall(body))
    body = _CITATION_YEAR.sub(" ", body).lower()
    numbers: set[float] = set()

    def take(match: re.Match[str]) -> str:
        numbers.add(_value(match))
        return " "

    body = _NUMBER.sub(take, body)
    for pattern, repl in _PHRASES:
        body = pattern.sub(repl, body)
    words = {_stem(w) for w in _WORD.findall(body)}
    words -= _FILLER
    words.discard("")
    return NormalisedIdea(" ".join(sorted(words)), len(words), frozenset(numbers), names)


def _value(match: re.Match[str]) -> float:
    mantissa, exponent, suffix = match.group(1), match.group(2), (match.group(3) or "").lower()
    value = float(mantissa) * (10.0 ** int(exponent) if exponent else 1.0)
    value *= {"%": 0.01, "k": 1e3, "m": 1e6, "b": 1e9}.get(suffix, 1.0)
    return float(f"{value:.6g}")  # 0.1 from 10% and from "0.1" compare equal


def _stem(word: str) -> str:
    if word in _STEMS:
        return _STEMS[word]
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            word = word[: -len(suffix)] + repl
            break
    if word in _STEMS:
        return _STEMS[word]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    return _STEMS.get(word, word)


def numbers_agree(a: frozenset[float], b: frozenset[float]) -> bool:
    """True when the text with fewer numbers names none the other lacks.

    A terse paraphrase names fewer settings than a long one ("beta2 0.99" against a text with
    0.95, 0.99 and 1.0); naming a different one ("0.999") is a different experiment.
    """
    few, many = (a, b) if len(a) <= len(b) else (b, a)
    return few <= many


def names_agree(a: frozenset[str], b: frozenset[str]) -> bool:
    """False when each text names a sibling the other lacks: BONUS_A against BONUS_C,
    attn_dropout against resid_dropout (one part in common) -- one template, another knob.

    Long texts name incidental code (n_embd, is_causal) that a paraphrase need not repeat, so
    names that are merely missing, or unrelated, do not count (unlike numbers).
    """
    def stems(names: frozenset[str]) -> set[str]:  # BONUS_[A], [attn]_dropout
        return {n.rsplit("_", 1)[0] + "_" for n in names} | {"_" + n.split("_", 1)[1]
                                                             for n in names}

    return not (stems(a - b) & stems(b - a))


def _settings_agree(a: NormalisedIdea, b: NormalisedIdea, config: DedupConfig) -> bool:
    return ((not config.numbers_must_agree or numbers_agree(a.numbers, b.numbers))
            and (not config.names_must_agree or names_agree(a.names, b.names)))


# -- scoring -----------------------------------------------------------------------------------

def _lexical(a: NormalisedIdea, b: NormalisedIdea, config: DedupConfig) -> float:
    if not a.words or not b.words:
        return 0.0
    # The words are already distinct and sorted, so token_set_ratio sees exactly these sets.
    return fuzz.token_set_ratio(a.words, b.words) / 100.0


def score_pair(a: str, b: str, config: DedupConfig | None = None) -> PairScore:
    """The lexical score of two idea texts and whether their numbers agree."""
    config = config or DedupConfig()
    na, nb = normalise(a), normalise(b)
    return PairScore(_lexical(na, nb, config), numbers_agree(na.numbers, nb.numbers),
                     names_agree(na.names, nb.names))


# -- embeddings (optional) ---------------------------------------------------------------------

def litellm_embedder(model: str, api_base: str | None = None) -> Embedder:
    """A blocking `Embedder` for one-off use (the bench, scripts): one `LlmClient.embed` call
    per list of texts. The engine calls `LlmClient.embed` itself and passes the vectors in, so
    its calls share the search's client: retries, concurrency, budget and `llm_call` rows."""

    def embed(texts: list[str]) -> list[list[float]]:
        import asyncio

        from engine.llm import LlmClient, LlmConfig

        client = LlmClient(LlmConfig(model=model, api_base=api_base))
        return asyncio.run(client.embed(model, texts, "dedup"))

    return embed


def _unit(vector: Sequence[float]) -> tuple[float, ...]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return tuple(x / norm for x in vector)


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(map(operator.mul, a, b))


def dedup_config(options: Mapping[str, object] | None) -> DedupConfig | None:
    """The search's dedup settings (`Search.config["dedup"]`), or None when it is off.

    Keys: `off` (bool), `threshold`, `embedding_model`, `embedding_threshold`, `api_base`;
    absent ones take `DedupConfig`'s defaults. A bad value raises ValueError naming it.
    """
    options = dict(options or {})
    if options.pop("off", False):
        return None
    known = {"threshold", "embedding_model", "embedding_threshold", "api_base",
             "numbers_must_agree", "names_must_agree"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown dedup setting(s) {', '.join(unknown)}; "
                         f"known: off, {', '.join(sorted(known))}")
    for name in ("threshold", "embedding_threshold"):
        if name in options:
            options[name] = float(options[name])  # type: ignore[arg-type]
    return DedupConfig(**options)  # type: ignore[arg-type]


# -- the index ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """An idea text made ready for comparison once: normalised, and embedded when needed."""

    text: str
    idea: NormalisedIdea
    vector: tuple[float, ...] | None = None


@dataclass
class DedupIndex:
    """The earlier ideas of one search, normalised (and embedded) once, checked per new idea.

    Entries are only ever appended (or discarded by key), so `len(index)` taken before a check
    lets a later check look only at what was added since (`find_twin(..., since=n)`).

    With embeddings, give the vectors (`probe(text, vector)`, `add_many(items, vectors)`) to
    keep the model call with the caller; without them the index calls its `embedder`.
    """

    config: DedupConfig = field(default_factory=DedupConfig)
    embedder: Embedder | None = None
    _keys: list[Hashable] = field(default_factory=list, init=False)
    _probes: list[Probe] = field(default_factory=list, init=False)

    @property
    def embeds(self) -> bool:
        return self.embedder is not None or bool(self.config.embedding_model)

    def __len__(self) -> int:
        return len(self._keys)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        if self.embedder is None:
            assert self.config.embedding_model
            self.embedder = litellm_embedder(self.config.embedding_model, self.config.api_base)
        return self.embedder(texts)

    def probe(self, text: str, vector: Sequence[float] | None = None) -> Probe:
        """`text` ready for comparison (embedded here when the index embeds and no vector is
        given)."""
        if self.embeds and vector is None:
            vector = self._embed([text])[0]
        return Probe(text, normalise(text), _unit(vector) if vector is not None else None)

    def add(self, key: Hashable, text: str | Probe) -> None:
        if isinstance(text, Probe):
            self._keys.append(key)
            self._probes.append(text)
        else:
            self.add_many([(key, text)])

    def add_many(self, items: Sequence[tuple[Hashable, str]],
                 vectors: Sequence[Sequence[float]] | None = None) -> None:
        """Add earlier ideas; with embeddings, all of them in one embedding call."""
        if not items:
            return
        if self.embeds and vectors is None:
            vectors = self._embed([t for _, t in items])
        for i, (key, text) in enumerate(items):
            self._keys.append(key)
            self._probes.append(Probe(text, normalise(text),
                                      _unit(vectors[i]) if vectors is not None else None))

    def discard(self, keys: Iterable[Hashable]) -> None:
        """Forget the entries with these keys (e.g. ideas that were never stored)."""
        gone = set(keys)
        kept = [(k, p) for k, p in zip(self._keys, self._probes, strict=True) if k not in gone]
        self._keys = [k for k, _ in kept]
        self._probes = [p for _, p in kept]

    def find_twin(self, text: str | Probe, since: int = 0) -> Twin | None:
        """The earlier idea `text` repeats (the most similar one over the threshold), or None;
        with `since`, only among the entries added after the first `since`."""
        if len(self._keys) <= since:
            return None
        new = text if isinstance(text, Probe) else self.probe(text)
        earlier = self._probes[since:]
        if new.vector is not None:
            scores = [_dot(new.vector, old.vector) if old.vector is not None else 0.0
                      for old in earlier]
            threshold = self.config.embedding_threshold
        else:
            scores = [_lexical(new.idea, old.idea, self.config) for old in earlier]
            threshold = self.config.threshold
        best: Twin | None = None
        for i, score in enumerate(scores):
            if score < threshold or (best is not None and score <= best.score):
                continue
            if not _settings_agree(new.idea, earlier[i].idea, self.config):
                continue
            best = Twin(self._keys[since + i], score, earlier[i].text)
        if best is not None:
            log.debug("idea is a near duplicate of %r (score %.2f)", best.key, best.score)
        return best


def find_twin(text: str, earlier: Sequence[str],
              config: DedupConfig | None = None) -> Twin | None:
    """One-shot check: the twin among `earlier` (its key is the position there), or None."""
    index = DedupIndex(config or DedupConfig())
    index.add_many(list(enumerate(earlier)))
    return index.find_twin(text)
