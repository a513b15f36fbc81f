"""How often the GRPO environment's grader agrees with the reference's grading rules.

    .venv/bin/python bench/grpo_grader_agreement.py --gold MATH500.jsonl [--show 3] [--json OUT]

For every gold answer of a MATH500-style JSON-lines file (an `answer` field: the environment's
`<data dir>/grpo/math500.jsonl`, or the reference repository's env/grpo/MATH/test.jsonl), it
builds responses the way models write them (right answers in other forms, wrong-but-close
answers, format slips: a right answer behind tags other than the literal "</think> <answer>"),
grades each with

- ours: environments/grpo/grader.py (`grade_r1_zero`: the r1-zero format, math-verify made
  stricter), as the evaluation runs it;
- the reference's rules: bench/grpo_reference_rules.py, a re-implementation from reading the
  reference's drgrpo_grader.py (not its code; see that file for what is approximated),

and prints the agreement (same reward), per category, with what each grader accepts. Every
response also carries the intent it was built with (right / wrong / unclear), so the table
says which grader is wrong where they differ ("unclear": an unreduced fraction or a rounded
decimal, which MATH's convention counts wrong and a value comparison right).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from grpo_reference_rules import reference_grade

REASONING = ("Let me work through this step by step. First I set up the problem, then I simplify "
             "and check the result.")
INT = re.compile(r"-?\d+")
FRAC = re.compile(r"\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")


def respond(answer: str, mark: str = " </think> <answer> ") -> str:
    return f"{REASONING}{mark}{answer} </answer>"


def variants(gold: str, rng: random.Random) -> list[tuple[str, str, str]]:
    """(category, intent, response) for one gold answer; only the forms that apply to it."""
    out: list[tuple[str, str, str]] = []

    def add(category: str, intent: str, answer: str, mark: str = " </think> <answer> ") -> None:
        out.append((category, intent, respond(answer, mark)))

    add("exact", "right", gold)
    add("boxed", "right", f"\\boxed{{{gold}}}")
    add("sentence with box", "right", f"The final answer is $\\boxed{{{gold}}}$.")
    add("dollars", "right", f"${gold}$")
    add("trailing period", "right", f"{gold}.")
    add("no spaces", "right", gold.replace(" ", ""))
    add("format: no space between tags", "format slip", gold, mark=" </think><answer>")
    add("format: newline between tags", "format slip", gold, mark=" </think>\n<answer>")
    out.append(("format: tag in reasoning", "right",
                f"I will write <answer> at the end. </think> <answer> {gold} </answer>"))
    add("empty answer", "wrong", "")
    if "=" not in gold:
        add("x = answer", "right", f"x = {gold}")
    if "\\frac" in gold:
        add("\\dfrac", "right", gold.replace("\\frac", "\\dfrac"))
    if "\\text{" in gold:
        add("text unwrapped", "right", re.sub(r"\\text\{([^{}]*)\}", r"\1", gold))
    if gold.startswith(("(", "[")):
        add("\\left( \\right)", "right", "\\left" + gold[0] + " " + gold[1:-1] + " \\right" + gold[-1])
    frac = FRAC.fullmatch(gold)
    if frac:
        a, b = int(frac.group(1)), int(frac.group(2))
        add("a/b", "right", f"{a}/{b}")
        value = a / b
        decimal = f"{value:.10f}".rstrip("0")
        if len(decimal.split(".")[1]) <= 4:
            add("decimal (exact)", "right", decimal)
        else:
            add("decimal (rounded)", "unclear", f"{value:.4f}")
        if a != b and a != 0:
            add("fraction flipped", "wrong", f"\\frac{{{b}}}{{{a}}}")
        add("fraction unreduced", "unclear", f"\\frac{{{2 * a}}}{{{2 * b}}}")
    if INT.fullmatch(gold):
        n = int(gold)
        add("integer as n.0", "right", f"{n}.0")
        add("with a unit", "right", f"{n} \\text{{ cm}}")
        add("with a plain unit word", "right", f"{n} inches")
        if abs(n) >= 1000:
            add("thousands separator", "right", f"{n:,}")
        add("off by one", "wrong", str(n + rng.choice((-1, 1))))
        add("wrong = right", "wrong", f"{n + 1} = {n}")
        add("right \\approx wrong", "wrong", f"{n} \\approx {n - 1}")
        add("two answers", "wrong", f"{n}, {n + 2}")
        if n != 0:
            add("sign flipped", "wrong", str(-n))
        add("percent", "right", f"{n}\\%")
        add("degrees", "right", f"{n}^\\circ")
    base = re.fullmatch(r"(\w+)_\{?(\d+)\}?", gold)
    if base:
        other = int(base.group(2)) + 1
        add("another base", "wrong", f"{base.group(1)}_{{{other}}}")
        add("base left out", "wrong", base.group(1))
    if re.search(r"\^\{?2\}?", gold) and "\\text" in gold:
        add("another unit power", "wrong", re.sub(r"\^\{?2\}?", "^3", gold, count=1))
    return out


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm


def reference_verdict(response: str, gold: str, timeout_s: int) -> tuple[bool, bool, bool]:
    """(format_ok, correct, timed_out) by the re-implemented reference rules, bounded in time."""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(timeout_s)
    try:
        format_ok, correct = reference_grade(response, gold)
        return format_ok, correct, False
    except _Alarm:
        return True, False, True
    finally:
        signal.alarm(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gold", required=True, help="JSON lines with an `answer` field (MATH500)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2, help="math-verify worker processes")
    parser.add_argument("--show", type=int, default=2, help="disagreements shown per category")
    parser.add_argument("--json", help="write every response and both verdicts here")
    parser.add_argument("--grader-dir", default=str(HERE.parent / "environments" / "grpo"),
                        help="the folder whose grader.py is 'ours' (e.g. an older version's copy)")
    args = parser.parse_args()
    sys.path.insert(0, args.grader_dir)
    from grader import Grader, grade_r1_zero  # the environment's own grader
    path = Path(args.gold)
    if not path.is_file():
        print(f"error: no gold file {path}: pass MATH500 JSON lines with an `answer` field "
              "(environments/grpo/prepare.py writes <data dir>/grpo/math500.jsonl)", file=sys.stderr)
        return 2
    golds = [str(json.loads(line)["answer"]) for line in path.read_text().splitlines() if line.strip()]
    rng = random.Random(args.seed)
    rows = [(gold, *v) for gold in golds for v in variants(gold, rng)]
    print(f"{len(golds)} gold answers -> {len(rows)} responses", flush=True)

    started = time.monotonic()
    with Grader(workers=args.workers, timeout_s=5.0) as grader:
        ours = grade_r1_zero([r[3] for r in rows], [r[0] for r in rows], grader)
    ours_s = time.monotonic() - started
    started = time.monotonic()
    theirs = [reference_verdict(r[3], r[0], timeout_s=5) for r in rows]
    theirs_s = time.monotonic() - started

    table: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    examples: dict[str, list[str]] = defaultdict(list)
    for (gold, category, intent, response), our, (_, ref_ok, timed_out) in zip(rows, ours, theirs):
        cell = table[category]
        cell["intent:" + intent] += 1
        cell["n"] += 1
        our_ok = our.reward == 1.0
        cell["ours"] += our_ok
        cell["ref"] += ref_ok
        cell["agree"] += our_ok == ref_ok
        cell["ref_timeouts"] += timed_out
        if our_ok != ref_ok and len(examples[category]) < args.show:
            answer = response.split("<answer>")[-1].replace("</answer>", "").strip()
            examples[category].append(f"gold {gold!r}, answer {answer!r}: ours {our_ok}, reference {ref_ok}")
    agree = sum(c["agree"] for c in table.values())
    print(f"\nagreement: {agree}/{len(rows)} = {100 * agree / len(rows):.1f} % "
          f"(ours {ours_s:.0f} s with {args.workers} workers, reference rules {theirs_s:.0f} s; "
          f"reference timeouts {sum(c['ref_timeouts'] for c in table.values())})\n")
    print("| category | intent | n | ours accepts | reference accepts | agree |")
    print("|---|---|---:|---:|---:|---:|")
    for category, c in sorted(table.items(), key=lambda kv: kv[1]["agree"] / kv[1]["n"]):
        intent = next(k.split(":")[1] for k in c if k.startswith("intent:"))
        n = c["n"]
        print(f"| {category} | {intent} | {n} | {100 * c['ours'] / n:.1f} % | {100 * c['ref'] / n:.1f} % "
              f"| {100 * c['agree'] / n:.1f} % |")
    for intent in ("right", "wrong"):
        picked = [(o, t) for r, o, t in zip(rows, ours, theirs) if r[2] == intent]
        want = intent == "right"
        ours_hit = sum((o.reward == 1.0) == want for o, _ in picked)
        ref_hit = sum(t[1] == want for _, t in picked)
        print(f"\nintended {intent} ({len(picked)}): ours {100 * ours_hit / len(picked):.1f} %, "
              f"reference rules {100 * ref_hit / len(picked):.1f} % graded as intended")
    if args.show:
        print("\ndisagreements (first of each category):")
        for category, lines in examples.items():
            for line in lines:
                print(f"- {category}: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps([
            {"gold": r[0], "category": r[1], "intent": r[2], "response": r[3],
             "ours": o.reward == 1.0, "reference": t[1]} for r, o, t in zip(rows, ours, theirs)], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
