"""Benchmark: how many faulty model diffs `prepare_patch` repairs without asking the model again.

    .venv/bin/python bench/diff_repair.py [--per-class 60] [--seed 7] [--show-failures 5]

Builds the corpus (bench/diff_repair_corpus/) from every unprotected Python file of the shipped
environments (the fixture when there are none), runs each case through `prepare_patch`, and
reports per fault class:
- repairable classes: the share applied correctly without another model call (the patched text
  equals the intended edit), the share applied *wrongly* (must stay 0), and for contrast the
  share plain `git apply --check` accepts as written;
- rejection classes: the share rejected with an error that names the problem.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from diff_repair_corpus.faults import REJECTION, REPAIRABLE, build
from diff_repair_corpus.generate import Case, discover

from engine.patching import PatchError, PatchOutcome, apply_diff, prepare_patch

log = logging.getLogger("bench.diff_repair")


def judge(case: Case) -> tuple[str, PatchOutcome, float]:
    """The verdict for one case, the outcome, and the seconds prepare_patch took."""
    start = time.perf_counter()
    outcome = prepare_patch(case.answer, case.source.env_dir, case.protected,
                            case.protected_lines)
    took = time.perf_counter() - start
    if case.kind == "reject":
        if outcome.ok:
            return "accepted", outcome, took
        right = any(word in (outcome.error or "") for word in case.keywords)
        return ("rejected" if right else "other_reason"), outcome, took
    if not outcome.ok:
        return "asked_again", outcome, took
    before = {rel: (case.source.env_dir / rel).read_text() for rel in case.expected
              if (case.source.env_dir / rel).is_file()}
    try:
        after = apply_diff(before, outcome.diff or "")
    except PatchError:
        return "wrong", outcome, took
    same = all(after.get(rel) == text for rel, text in case.expected.items())
    if same and set(outcome.changed_files) == set(case.expected):
        return "applied", outcome, took
    # Worth telling apart: the same code with a blank line on the other side of the added
    # lines (an ambiguity the damaged diff cannot settle) is not a wrong program.
    if all(_without_blank_lines(after.get(rel) or "") == _without_blank_lines(text or "")
           for rel, text in case.expected.items()):
        return "wrong_blank_lines", outcome, took
    return "wrong", outcome, took


def _without_blank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def git_accepts(case: Case) -> bool:
    run = subprocess.run(["git", "apply", "--check", "-"], input=case.answer, text=True,
                         cwd=case.source.env_dir, capture_output=True, check=False)
    return run.returncode == 0


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f} %" if d else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--show-failures", type=int, default=0,
                        help="log this many failing cases per class, answer and error")
    parser.add_argument("--no-git", action="store_true", help="skip the git apply baseline")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="diff-repair-") as tmp:
        sources = discover(REPO, Path(tmp))
        log.info("sources (%d files): %s", len(sources),
                 ", ".join(f"{s.env_name}/{s.rel}" for s in sources))
        cases = build(sources, args.per_class, args.seed)
        verdicts: dict[str, Counter[str]] = defaultdict(Counter)
        git_ok: Counter[str] = Counter()
        times: list[float] = []
        shown: Counter[str] = Counter()
        for case in cases:
            verdict, outcome, took = judge(case)
            times.append(took)
            verdicts[case.cls][verdict] += 1
            if case.kind == "repair" and not args.no_git and git_accepts(case):
                git_ok[case.cls] += 1
            if verdict not in ("applied", "rejected") and shown[case.cls] < args.show_failures:
                shown[case.cls] += 1
                log.info("---- %s (%s) %s:%s\n%s\n>> error: %s\n>> repairs: %s", case.cls,
                         verdict, case.source.env_name, case.source.rel, case.answer,
                         outcome.error, outcome.repairs)

    log.info("\n| repairable class | cases | applied without asking again | applied wrongly "
             "(blank lines only / code) | `git apply --check` as written |")
    log.info("|---|---:|---:|---:|---:|")
    total = Counter()
    for builder in REPAIRABLE:
        cls = builder.__name__
        v = verdicts[cls]
        n = sum(v.values())
        total.update(v)
        total["git"] += git_ok[cls]
        log.info("| %s | %d | %s | %d / %d | %s |", cls, n, _pct(v["applied"], n),
                 v["wrong_blank_lines"], v["wrong"], "-" if args.no_git else _pct(git_ok[cls], n))
    n = sum(total[k] for k in ("applied", "wrong", "wrong_blank_lines", "asked_again"))
    log.info("| **all repairable** | %d | **%s** | %d / %d | %s |", n,
             _pct(total["applied"], n), total["wrong_blank_lines"], total["wrong"],
             "-" if args.no_git else _pct(total["git"], n))

    log.info("\n| rejection class | cases | rejected, error names the problem | rejected, "
             "other reason | accepted (must be 0) |")
    log.info("|---|---:|---:|---:|---:|")
    rtotal = Counter()
    for builder in REJECTION:
        cls = builder.__name__
        v = verdicts[cls]
        n = sum(v.values())
        rtotal.update(v)
        log.info("| %s | %d | %s | %d | %d |", cls, n, _pct(v["rejected"], n),
                 v["other_reason"], v["accepted"])
    n = sum(rtotal.values())
    log.info("| **all rejection** | %d | **%s** | %d | %d |", n, _pct(rtotal["rejected"], n),
             rtotal["other_reason"], rtotal["accepted"])
    log.info("\nprepare_patch per case: median %.1f ms, max %.1f ms (%d cases)",
             1000 * statistics.median(times), 1000 * max(times), len(times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
