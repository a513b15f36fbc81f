"""Near-duplicate ideas: precision and recall of engine.dedup's flag, and its speed.

The corpus (bench/dedup_corpus/pairs.toml) holds hand-written pairs of idea texts labelled
"paraphrase" (the same experiment: the flag should fire) or "distinct" (a different experiment on
the same component: it should not). Three figures:

- pairs: each pair's second text checked against its first alone, at the default thresholds
  and over a sweep (with and without the number rule);
- pool: each paraphrase checked against every idea of the corpus at once (the shipped catalogs
  and the corpus's own texts), as in a search whose earlier ideas are all of them: is the twin
  found the right one;
- speed: one check against 1,000 earlier ideas (the index built once, as the engine keeps it).

    .venv/bin/python bench/dedup.py [--threshold 0.68]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.dedup import DedupConfig, DedupIndex, score_pair

CORPUS = ROOT / "bench" / "dedup_corpus" / "pairs.toml"


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    paraphrase: bool
    label: str  # a short name for listings


def catalog_text(ref: str) -> str:
    env, name = ref.removeprefix("@").split("/")
    return (ROOT / "environments" / env / "catalog" / f"{name}.txt").read_text()


def load_pairs() -> list[Pair]:
    pairs = []
    for row in tomllib.loads(CORPUS.read_text())["pair"]:
        a, b = (catalog_text(t) if t.startswith("@") else t for t in (row["a"], row["b"]))
        label = f"{row['a'][:28]!s} ~ {row['b'][:40]!s}".replace("\n", " ")
        pairs.append(Pair(a, b, row["kind"] == "paraphrase", label))
    return pairs


def precision_recall(flags: list[tuple[bool, bool]]) -> tuple[float, float, int, int]:
    """(precision, recall, false positives, false negatives) of (flagged, paraphrase) rows."""
    tp = sum(1 for f, y in flags if f and y)
    fp = sum(1 for f, y in flags if f and not y)
    fn = sum(1 for f, y in flags if not f and y)
    precision = tp / (tp + fp) if tp + fp else 1.0
    return precision, tp / (tp + fn) if tp + fn else 1.0, fp, fn


def pair_flags(pairs: list[Pair], config: DedupConfig) -> list[tuple[bool, bool]]:
    out = []
    for p in pairs:
        s = score_pair(p.a, p.b, config)
        flagged = (s.score >= config.threshold
                   and (s.numbers_agree or not config.numbers_must_agree)
                   and (s.names_agree or not config.names_must_agree))
        out.append((flagged, p.paraphrase))
    return out


def pool_check(pairs: list[Pair], config: DedupConfig) -> tuple[int, int, int, list[str]]:
    """Each paraphrase's second text against every corpus text: (right twin, wrong, none).

    A twin is right when it is the same idea: the pair's first text, or another text linked to
    it by a paraphrase pair (the corpus holds several paraphrases of some catalog ideas).
    """
    texts = sorted({t for p in pairs for t in (p.a, p.b)}
                   | {f.read_text() for f in ROOT.glob("environments/*/catalog/*.txt")})
    same = {t: t for t in texts}  # union-find over paraphrase links

    def root(t: str) -> str:
        while same[t] != t:
            t = same[t]
        return t

    for p in pairs:
        if p.paraphrase:
            same[root(p.a)] = root(p.b)
    right = wrong = missed = 0
    misses = []
    for p in pairs:
        if not p.paraphrase:
            continue
        index = DedupIndex(config)
        index.add_many([(t, t) for t in texts if t != p.b])
        twin = index.find_twin(p.b)
        if twin is None:
            missed += 1
            misses.append(f"missed: {p.label}")
        elif root(str(twin.key)) == root(p.b):
            right += 1
        else:
            wrong += 1
            misses.append(f"wrong twin: {p.label} -> {str(twin.key)[:50]!r}")
    return right, wrong, missed, misses


def synthetic_ideas(pairs: list[Pair], n: int, seed: int = 0) -> list[str]:
    """n idea-like texts: sentences of the corpus recombined, so words overlap as in a search."""
    sentences = [s.strip() for p in pairs for t in (p.a, p.b) for s in t.split(". ") if s.strip()]
    rng = random.Random(seed)
    return [". ".join(rng.sample(sentences, rng.randint(2, 6))) for _ in range(n)]


def speed(pairs: list[Pair], config: DedupConfig, n: int = 1000) -> tuple[float, float, float]:
    """(index build s, median check ms, worst check ms) against n earlier ideas."""
    earlier = synthetic_ideas(pairs, n)
    t0 = time.perf_counter()
    index = DedupIndex(config)
    index.add_many(list(enumerate(earlier)))
    build = time.perf_counter() - t0
    checks = []
    for p in pairs:
        t0 = time.perf_counter()
        index.find_twin(p.b)
        checks.append((time.perf_counter() - t0) * 1000)
    return build, statistics.median(checks), max(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", type=float, default=DedupConfig().threshold)
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()
    config = DedupConfig(threshold=args.threshold)
    pairs = load_pairs()
    n_para = sum(p.paraphrase for p in pairs)
    started = time.perf_counter()
    print(f"corpus: {len(pairs)} pairs ({n_para} paraphrase, {len(pairs) - n_para} distinct)\n")

    print("| threshold | number / name rules | precision | recall | false flags | missed |")
    print("|---:|---|---:|---:|---:|---:|")
    sweep = sorted({0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, config.threshold})
    rules = {"on / on": (True, True), "on / off": (True, False), "off / off": (False, False)}
    for t in sweep:
        for label, (numbers, names) in rules.items():
            if label != "on / on" and t != config.threshold:
                continue
            c = replace(config, threshold=t, numbers_must_agree=numbers, names_must_agree=names)
            p, r, fp, fn = precision_recall(pair_flags(pairs, c))
            mark = "**" if t == config.threshold and label == "on / on" else ""
            print(f"| {mark}{t:.2f}{mark} | {label} | {p:.3f} | {r:.3f} | {fp} | {fn} |")
    if args.show_misses:
        for p, (flagged, para) in zip(pairs, pair_flags(pairs, config), strict=True):
            if flagged != para:
                print(f"  {'missed' if para else 'false flag'}: {p.label}")

    right, wrong, missed, misses = pool_check(pairs, config)
    print(f"\npool (each paraphrase against all corpus and catalog texts at once): "
          f"right twin {right}/{n_para}, wrong twin {wrong}, none {missed}")
    if args.show_misses:
        print("\n".join(f"  {m}" for m in misses))

    build, median_ms, worst_ms = speed(pairs, config)
    print(f"\nspeed: index of 1,000 earlier ideas built in {build * 1000:.0f} ms; one check "
          f"median {median_ms:.1f} ms, worst {worst_ms:.1f} ms")
    print(f"bench wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
