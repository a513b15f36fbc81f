"""Near-duplicate ideas (engine/dedup.py): a repeated idea is caught with a link to its twin, a
close but different one is not, and the check is cheap against a whole search."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.dedup import DedupConfig, DedupIndex, find_twin, normalise, score_pair
from tests.support.openai_server import OpenAIServer, bag_of_words_vector

CATALOG = Path(__file__).resolve().parents[2] / "environments"


def catalog(env: str, name: str) -> str:
    return (CATALOG / env / "catalog" / f"{name}.txt").read_text()


def nanogpt_catalog() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(CATALOG.glob("nanogpt/catalog/*.txt"))}


def test_shorthand_paraphrase_is_flagged_with_its_twin() -> None:
    index = DedupIndex()
    index.add_many(list(nanogpt_catalog().items()))
    twin = index.find_twin("try swiglu instead of gelu")
    assert twin is not None and twin.key == "swiglu_mlp"
    twin = index.find_twin("[Experiment] Query-key normalization: apply an RMSNorm with a "
                           "learnable scale to each head's queries and keys before attention.\n"
                           "[Code Changes] CausalSelfAttention gets q_norm and k_norm "
                           "(nn.RMSNorm(head_dim)), applied to q and k before SDPA.")
    assert twin is not None and twin.key == "qk_norm"


def test_close_but_distinct_ideas_are_not_flagged() -> None:
    ideas = nanogpt_catalog()
    # Same component (the learning-rate schedule), different change.
    assert find_twin(ideas["wsd_schedule"], [ideas["cosine_decay"]]) is None
    # Same component (attention logits), different mechanism.
    assert find_twin("QK-clip (MuonClip): after each optimizer step rescale the query and key "
                     "weights of heads whose max attention logit exceeds 100",
                     [ideas["qk_norm"]]) is None
    # Against the whole catalog, a new activation is no twin of the existing ones.
    index = DedupIndex()
    index.add_many(list(ideas.items()))
    assert index.find_twin("try geglu instead of gelu") is None


def test_numbers_matter() -> None:
    assert find_twin("lr 3e-4", ["lr 1e-3"]) is None
    assert find_twin("lr 1e-3", ["lr 1e-3"]) is not None
    # The same value written another way is the same setting.
    assert find_twin("set the learning rate to 0.001", ["lr 1e-3"]) is not None
    beta2 = catalog("nanogpt", "adam_beta2_099")
    assert find_twin("beta2 0.95 -> 0.99", [beta2]) is not None
    assert find_twin("beta2 0.95 -> 0.999", [beta2]) is None
    # Citation years are not settings: a terse text without them still matches.
    assert normalise(catalog("nanogpt", "swiglu_mlp")).numbers.isdisjoint({2020.0})


def test_headers_case_and_filler_do_not_count() -> None:
    a = normalise("[Experiment] Use RoPE instead of the learned position embeddings.")
    b = normalise("rope, instead of learned positional embedding")
    assert a.words == b.words


def test_threshold_comes_from_the_config() -> None:
    pair = ("[Experiment] Raise AdamW's beta2 to 0.99 for smoother second-moment estimates.",
            catalog("nanogpt", "adam_beta2_099"))
    score = score_pair(*pair).score
    assert 0 < score < 1
    assert find_twin(pair[0], [pair[1]], DedupConfig(threshold=score)) is not None
    assert find_twin(pair[0], [pair[1]], DedupConfig(threshold=min(1.0, score + 0.01))) is None
    lenient = DedupConfig(numbers_must_agree=False)
    assert find_twin("lr 3e-4", ["lr 1e-3"], lenient) is not None
    with pytest.raises(ValueError, match="threshold"):
        DedupConfig(threshold=0)


def test_a_thousand_earlier_ideas_are_checked_fast() -> None:
    base = list(nanogpt_catalog().values()) + [
        catalog("grpo", p.stem) for p in sorted(CATALOG.glob("grpo/catalog/*.txt"))]
    # Distinct texts: each a catalog idea with its own numbers appended.
    index = DedupIndex()
    index.add_many([(i, f"{base[i % len(base)]} variant {i} lr {i}e-5") for i in range(1000)])
    start = time.perf_counter()
    twin = index.find_twin("try swiglu instead of gelu")
    elapsed = time.perf_counter() - start
    assert twin is not None  # the swiglu variants (no number in the query to contradict them)
    assert elapsed < 0.5, f"one check against 1,000 ideas took {elapsed:.3f} s"


def test_embedding_model_scores_by_cosine_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def words_only(text: str) -> list[float]:  # an embedding blind to numbers, as many are
        return bag_of_words_vector(" ".join(w for w in text.split() if w.isalpha()))

    with OpenAIServer(embedder=words_only) as srv:
        config = DedupConfig(embedding_model="openai/test-embed", api_base=srv.url,
                             embedding_threshold=0.9)
        index = DedupIndex(config)
        index.add_many([("swiglu", "swiglu mlp instead of gelu mlp"),
                        ("wsd", "wsd learning rate schedule with cooldown")])
        twin = index.find_twin("swiglu mlp instead of gelu mlp please")
        assert twin is not None and twin.key == "swiglu"
        assert index.find_twin("rotary position embeddings") is None
        # The number rule still holds under embeddings (these two embed identically).
        index.add("lr", "learning rate 1e-3")
        assert index.find_twin("learning rate 3e-4") is None
        assert index.find_twin("learning rate 0.001") == index.find_twin("learning rate 1e-3")
        assert index.find_twin("learning rate 1e-3") is not None
        embeds = [r for r in srv.requests if r.path.endswith("/embeddings")]
        assert embeds and all(r.json["model"] == "test-embed" for r in embeds)
        # Earlier ideas are embedded once, in one call per add_many, not once per check.
        assert len(embeds[0].json["input"]) == 2
