"""Prompts and parsing for the propose phase (seed / exploit / explore) and for implementation.

The schedule follows the reference research (see ARCHITECTURE.md): epoch 0 only seeds; from
epoch 1 on, an exploit share min(0.5 + 0.1*floor(N/2), 0.8) of the quota builds on winning ideas
and the rest explores. Every prompt carries the environment's code, rules and metric, the
researcher's reject reasons (steering memory) and what was already proposed, cut to a context
budget. Ideas come back as `[Experiment] ... [Code Changes] ... [End]` blocks, parsed leniently.

Everything here is pure (no model calls, no database): `engine.search` calls the model through
`engine.llm` and stores the results.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from engine.environments import Environment
from engine.protection import SHADOW_RULE

BatchKind = Literal["seed", "exploit", "explore"]

#: Default size, in characters, of the "already proposed" list in a prompt (~4k tokens).
DEFAULT_BUDGET_CHARS = 16_000
#: Longest rendering of one idea in the "already proposed" list: the gist is enough to avoid
#: repeats, and shorter entries let more of them fit.
_PREVIOUS_ENTRY_CHARS = 240
#: Longest rendering of one idea shown as a parent (exploit) or population member (explore).
_PARENT_CHARS = 2_000
_POPULATION_CHARS = 600
#: Longest rendering of one earlier implementation attempt fed back to the coder.
_ATTEMPT_CHARS = 6_000
_STEERING_MAX = 40

_FAILED_STATUSES = frozenset({"failed", "implement_failed", "crashed", "timed_out", "timeout",
                              "no_metric"})


@dataclass(frozen=True)
class ScoredIdea:
    """An idea of the population as prompts see it; `score` is None until it is measured."""

    id: int
    text: str
    score: float | None
    status: str

    @property
    def failed(self) -> bool:
        return self.score is None and (self.status in _FAILED_STATUSES or "fail" in self.status)


# -- schedule ------------------------------------------------------------------------------------


def exploit_share(epoch: int) -> float:
    """Share of an epoch's ideas that exploit winners: 0 at epoch 0, 0.5 rising to 0.8."""
    if epoch <= 0:
        return 0.0
    return min(0.5 + 0.1 * (epoch // 2), 0.8)


def plan_batches(epoch: int, ideas_per_epoch: int,
                 batch_size: int = 10) -> list[tuple[str, int]]:
    """The epoch's proposal batches as (kind, size), exploit batches first.

    The exploit count is the exploit share of the quota rounded down to a multiple of
    `batch_size` (as in the reference, which asked for ideas in batches of 10). An epoch smaller
    than one batch cannot be split that way, so there the count is the share rounded down to a
    whole idea, and at least 1 when the epoch has 2 or more ideas — otherwise small demo epochs
    would never exploit. The caller turns exploit batches into explore ones when no idea beats
    the baseline yet (`exploit_prompt` needs parents).
    """
    if ideas_per_epoch <= 0:
        return []
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    n = ideas_per_epoch
    if epoch <= 0:
        return _chunks("seed", n, batch_size)
    share = exploit_share(epoch)
    if n >= batch_size:
        # The small epsilon keeps 0.6 * 50 = 29.999... from rounding down a whole batch.
        exploit = math.floor(share * n / batch_size + 1e-9) * batch_size
    else:
        exploit = math.floor(share * n + 1e-9)
        if n >= 2:
            exploit = max(exploit, 1)
    return _chunks("exploit", exploit, batch_size) + _chunks("explore", n - exploit, batch_size)


def _chunks(kind: str, count: int, batch_size: int) -> list[tuple[str, int]]:
    full, rest = divmod(count, batch_size)
    return [(kind, batch_size)] * full + ([(kind, rest)] if rest else [])


# -- sampling ------------------------------------------------------------------------------------


def sample_parents(population: Sequence[ScoredIdea], goal: str, baseline: float | None,
                   top_k: int = 10, rng: random.Random | None = None) -> list[ScoredIdea]:
    """Up to `top_k` ideas that beat the baseline, drawn at random from all that do.

    Sampling (rather than taking the best k) is the reference's choice: it keeps the next epoch
    from collapsing onto one lineage. The result is ordered best first, for the prompt.
    """
    if goal not in ("maximize", "minimize"):
        raise ValueError(f"goal must be 'maximize' or 'minimize', not {goal!r}")
    rng = rng or random.Random()

    def beats(score: float | None) -> bool:
        if score is None or math.isnan(score):
            return False
        if baseline is None:
            return True
        return score > baseline if goal == "maximize" else score < baseline

    winners = [i for i in population if beats(i.score)]
    chosen = rng.sample(winners, min(top_k, len(winners)))
    return sorted(chosen, key=lambda i: i.score if goal == "minimize" else -(i.score or 0.0))


def sample_population(population: Sequence[ScoredIdea], sample_k: int = 100,
                      rng: random.Random | None = None) -> list[ScoredIdea]:
    """Up to `sample_k` ideas drawn at random from the whole population, in id order."""
    rng = rng or random.Random()
    chosen = rng.sample(list(population), min(sample_k, len(population)))
    return sorted(chosen, key=lambda i: i.id)


# -- prompts -------------------------------------------------------------------------------------

_IDEATOR_SYSTEM = (
    "You are an expert machine-learning researcher. You propose concrete, testable research "
    "ideas for a training codebase. Each idea is implemented as a code change, trained under the "
    "same budget as the unmodified code, and judged only by the metric given below. Prefer ideas "
    "that can change the metric within that budget and that a careful engineer can implement "
    "correctly in one change."
)

_CODER_SYSTEM = (
    "You are an expert machine-learning engineer. You implement a research idea as a minimal, "
    "correct change to the codebase you are shown, and you answer with that change only."
)


def _idea_format(n: int, metric_name: str) -> str:
    plural = "idea" if n == 1 else f"{n} ideas"
    return (
        f"Answer with exactly {plural}, each in this form and nothing else:\n\n"
        "[Experiment] What to try and why it should improve "
        f"{metric_name}, in a few sentences.\n"
        "[Code Changes] Which file and function to change, and precisely how (names, values, "
        "formulas), so that an engineer can implement it without guessing.\n"
        "[End]\n\n"
        "Each idea must stand alone: do not refer to other ideas of your answer."
    )


def seed_prompt(env: Environment, n: int, previous: Sequence[str], steering: Sequence[str],
                *, budget_chars: int = DEFAULT_BUDGET_CHARS) -> list[dict[str, str]]:
    """Ask for `n` fresh ideas (epoch 0)."""
    task = (
        f"# Task\nPropose {n} diverse research ideas that could improve {_metric_phrase(env)}. "
        "Cover different parts of the training recipe (architecture, optimisation, data "
        "handling, schedules, efficiency) rather than variations of one theme."
    )
    return _ideator_messages(env, task, n, previous, steering, budget_chars)


def exploit_prompt(env: Environment, n: int, parents: Sequence[ScoredIdea],
                   previous: Sequence[str], steering: Sequence[str], *,
                   budget_chars: int = DEFAULT_BUDGET_CHARS) -> list[dict[str, str]]:
    """Ask for `n` ideas that combine and refine `parents` (ideas that beat the baseline)."""
    if not parents:
        raise ValueError("exploit_prompt needs at least one parent; plan an explore batch "
                         "instead when no idea beats the baseline")
    shown = "\n\n".join(
        f"## Idea {p.id} — {env.metric.name} = {_fmt(p.score)}\n{_clip(p.text, _PARENT_CHARS)}"
        for p in parents
    )
    task = (
        f"# Ideas that beat the baseline\nThese were implemented and trained; each improved "
        f"{env.metric.name} over the unmodified code ({_fmt(env.metric.baseline)}).\n\n{shown}\n\n"
        f"# Task\nPropose {n} new ideas that build on these winners to improve "
        f"{_metric_phrase(env)} further: combine compatible winners, refine or strengthen what "
        "made them work, or tune what they introduced. Each new idea must describe the complete "
        "change, including the parts taken from the winners, because it is implemented on the "
        "unmodified code."
    )
    return _ideator_messages(env, task, n, previous, steering, budget_chars)


def explore_prompt(env: Environment, n: int, population: Sequence[ScoredIdea],
                   previous: Sequence[str], steering: Sequence[str], *,
                   budget_chars: int = DEFAULT_BUDGET_CHARS) -> list[dict[str, str]]:
    """Ask for `n` ideas in new directions, showing a sample of results with failures marked."""
    if population:
        shown = "\n\n".join(f"## Idea {i.id} — {_outcome(env, i)}\n"
                            f"{_clip(i.text, _POPULATION_CHARS)}" for i in population)
        results = (
            "# Results so far (a sample)\nIdeas tried in earlier epochs with their outcome. "
            "FAILED means the change could not be implemented or the run crashed, timed out or "
            f"reported no metric.\n\n{shown}\n\n"
        )
    else:
        results = ""
    task = (
        f"{results}# Task\nPropose {n} ideas in directions that differ from what was tried, to "
        f"improve {_metric_phrase(env)}. Learn from the results: avoid patterns that failed or "
        "did worse than the baseline, and do not resubmit an idea that was already tried."
    )
    return _ideator_messages(env, task, n, previous, steering, budget_chars)


def implement_prompt(env: Environment, idea_text: str,
                     previous_attempts: Sequence[tuple[str, str]] = (), *,
                     budget_chars: int = 3 * _ATTEMPT_CHARS,
                     crash: tuple[str, str] | None = None) -> list[dict[str, str]]:
    """Ask the coder for one diff that implements `idea_text` (with earlier failures to fix).
    `crash`: (the diff that ran, the end of its log) when that diff crashed: a repair."""
    first = env.context[0] if env.context else "train.py"
    parts = [
        f"# Codebase: {env.name}",
        _code_section(env),
        _rules_section(env),
        _protection_section(env),
        f"# Metric\n{_metric_line(env)}",
        f"# Idea to implement\n{idea_text.strip()}",
    ]
    if crash is not None:
        parts.append(_crash_section(*crash))
    if previous_attempts:
        parts.append(_attempts_section(previous_attempts, budget_chars))
    parts.append(
        "# Answer format\n"
        "Implement the idea completely and minimally; keep everything else unchanged. Answer "
        "with ONE unified diff in a ```diff fence, paths relative to the codebase directory, "
        "like:\n\n"
        "```diff\n"
        f"--- a/{first}\n"
        f"+++ b/{first}\n"
        "@@ -12,7 +12,7 @@\n"
        " unchanged line\n"
        "-old line\n"
        "+new line\n"
        " unchanged line\n"
        "```\n\n"
        "Copy context (' ') and removed ('-') lines exactly from the file, without the line "
        "numbers and '|' of the listing above. Instead of a diff you may give SEARCH/REPLACE "
        "blocks, each preceded by the file's path:\n\n"
        f"{first}\n"
        "<<<<<<< SEARCH\n"
        "exact lines copied from the file\n"
        "=======\n"
        "the lines that replace them\n"
        ">>>>>>> REPLACE\n\n"
        "Do not change protected files or lines, do not add files outside the codebase, and do "
        "not explain the change at length."
    )
    return [{"role": "system", "content": _CODER_SYSTEM},
            {"role": "user", "content": "\n\n".join(p for p in parts if p)}]


def _ideator_messages(env: Environment, task: str, n: int, previous: Sequence[str],
                      steering: Sequence[str], budget_chars: int) -> list[dict[str, str]]:
    parts = [
        f"# Environment: {env.name}" + (f"\n{env.description.strip()}" if env.description else ""),
        f"# Metric\n{_metric_line(env)}",
        _rules_section(env),
        _code_section(env),
        _previous_section(previous, budget_chars),
        _steering_section(steering),
        task,
        "# Answer format\n" + _idea_format(n, env.metric.name),
    ]
    return [{"role": "system", "content": _IDEATOR_SYSTEM},
            {"role": "user", "content": "\n\n".join(p for p in parts if p)}]


def _metric_phrase(env: Environment) -> str:
    direction = "raise" if env.metric.goal == "maximize" else "lower"
    return f"{env.metric.name} (goal: {direction} it)"


def _metric_line(env: Environment) -> str:
    m = env.metric
    better = "higher is better" if m.goal == "maximize" else "lower is better"
    base = (f"; the unmodified code scores {_fmt(m.baseline)}" if m.baseline is not None
            else "; the unmodified code's score is not known yet")
    return f"{m.name} ({m.goal}, {better}){base}."


def _rules_section(env: Environment) -> str:
    rules = env.rules.strip()
    return f"# Rules (every idea and change must respect them)\n{rules}" if rules else ""


def _protection_section(env: Environment) -> str:
    lines = []
    if env.protected:
        lines.append("Files that must not change: " + ", ".join(env.protected) + ".")
    for rel, kept in env.protected_lines.items():
        lines.append(f"Lines of {rel} that must stay exactly as they are:")
        lines.extend(f"    {line}" for line in kept)
    for rel, names in env.protected_regions.items():
        lines.append(f"Definitions of {rel} that must stay exactly as they are, at its top level "
                     "(new code may go around them; do not rebind, wrap, decorate or patch "
                     "them): " + ", ".join(names) + ".")
    lines.append(SHADOW_RULE)
    return "# Protected\n" + "\n".join(lines)


def _code_section(env: Environment) -> str:
    return ("# Code (each line is shown as 'number | text')\n" + env.context_listing())


def _previous_section(previous: Sequence[str], budget_chars: int) -> str:
    """The already-proposed list, most recent first to go in, cut to `budget_chars`."""
    if not previous:
        return ""
    entries: list[str] = []
    seen: set[str] = set()
    used = 0
    for text in reversed(previous):  # the newest are the likeliest to be repeated next
        entry = f"- {_gist(text)}"
        if entry in seen:  # an edited or re-proposed idea need not take room twice
            continue
        if used + len(entry) + 1 > budget_chars:
            break
        seen.add(entry)
        entries.append(entry)
        used += len(entry) + 1
    omitted = len({_gist(t) for t in previous}) - len(entries)
    entries.reverse()
    head = (f"# Already proposed ({len(seen) + omitted} ideas): do not propose these again or "
            "trivial variations of them")
    tail = (f"\n({omitted} earlier ideas omitted to save space)" if omitted else "")
    return head + "\n" + "\n".join(entries) + tail


def _steering_section(steering: Sequence[str]) -> str:
    reasons = [" ".join(s.split()) for s in steering if s and s.strip()]
    if not reasons:
        return ""
    omitted = max(0, len(reasons) - _STEERING_MAX)
    shown = reasons[-_STEERING_MAX:]
    body = "\n".join(f"- {_clip(r, 400)}" for r in shown)
    more = f"\n({omitted} earlier rejections omitted)" if omitted else ""
    return ("# The researcher's feedback\nThe researcher rejected these ideas (idea: reason):\n"
            f"{body}{more}\nAvoid ideas similar to these and respect the reasons given.")


#: How much of a crashed job's log a repair prompt quotes (its end: the traceback).
CRASH_LOG_CHARS = 6000


def _crash_section(diff: str, log_tail: str) -> str:
    """The change that crashed and how: what a repair prompt adds."""
    tail = log_tail.strip()[-CRASH_LOG_CHARS:] or "(the run printed nothing)"
    return ("# Your change crashed\nThis change implemented the idea, and the patched code "
            f"crashed when it ran:\n\n```diff\n{diff.strip()}\n```\n\nThe end of its output:"
            f"\n\n```\n{tail}\n```\n\nFind the cause and answer with the complete corrected "
            "change against the original code above (not a change on top of this one). Keep "
            "the idea; fix only what makes it crash.")


def _attempts_section(attempts: Sequence[tuple[str, str]], budget_chars: int) -> str:
    """Earlier failed attempts, newest last; the newest keeps its answer, older ones may not."""
    per = max(500, budget_chars // max(1, len(attempts)))
    blocks = []
    for number, (answer, error) in enumerate(attempts, 1):
        latest = number == len(attempts)
        body = _clip(answer.strip(), per if latest else per // 2) or "(empty answer)"
        blocks.append(f"## Earlier attempt {number}\nYour answer:\n{body}\n\nWhy it was rejected: "
                      f"{error.strip() or 'unknown error'}")
    return ("# Earlier attempts that failed\nFix the problems below; answer with a complete "
            "new change, not a change on top of an earlier attempt.\n\n" + "\n\n".join(blocks))


def _outcome(env: Environment, idea: ScoredIdea) -> str:
    if idea.score is not None:
        m = env.metric
        if m.baseline is None:
            verdict = ""
        elif m.better(idea.score, m.baseline):
            verdict = " (beats the baseline)"
        else:
            verdict = " (no better than the baseline)"
        return f"{m.name} = {_fmt(idea.score)}{verdict}"
    if idea.failed:
        return f"FAILED ({idea.status.replace('_', ' ')})"
    if idea.status == "rejected":
        return "rejected by the researcher before it ran"
    return f"not measured yet ({idea.status.replace('_', ' ')})"


def _gist(text: str) -> str:
    """One line that identifies an idea: its [Experiment] part, shortened."""
    match = _EXPERIMENT_BODY.search(text)
    body = match.group(1) if match else text
    return _clip(" ".join(body.split()), _PREVIOUS_ENTRY_CHARS)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.6g}"


# -- parsing -------------------------------------------------------------------------------------

# A tag, tolerant of markdown emphasis, stray spaces, case, a trailing colon, and (for code
# changes) the singular and the joined spellings.
_B = r"(?:\*\*|__|\*|_)?"
# The look-behind keeps code such as `tokens[end]` from reading as a tag.
_TAG = re.compile(
    rf"(?<![\w\])'\"]){_B}\s*\[\s*(?P<tag>experiment|code[\s_-]*changes?|end)\s*\]\s*{_B}\s*:?{_B}[ \t]*",
    re.IGNORECASE,
)
_EXPERIMENT_BODY = re.compile(r"\[\s*experiment\s*\]\s*(.*?)(?:\[\s*code|\Z)",
                              re.IGNORECASE | re.DOTALL)
_FENCE_LINE = re.compile(r"^\s*(```|~~~)[\w+-]*\s*$")
# Lines that carry no content at the edge of a part: blank, fences, rules, bare numbering,
# headings like "## Idea 3" or "**Idea 3**".
_JUNK_LINE = re.compile(
    r"^\s*(|[-*_=]{3,}|\d+[.):]?|#{1,6}\s*(\d|(idea|experiment|proposal)\b).*"
    r"|\*\*[^*]{0,40}\*\*:?|(idea|experiment|proposal)\s*#?\d+\s*[.:)]?)\s*$",
    re.IGNORECASE,
)


def parse_ideas(text: str, *, cut_off: bool = False) -> tuple[list[str], list[str]]:
    """Ideas found in a model's answer, and human-readable problems with what was skipped.

    Each idea comes back as "[Experiment] ...\\n[Code Changes] ...". Tolerated: code fences
    around everything or around each block, a missing [End] (the next [Experiment] or the end of
    the answer closes a block), prose before, between and after blocks, numbering and headings,
    markdown bold around the tags, any case, "[Code Change]". Exact duplicates are dropped.
    `cut_off`: the answer stopped at the model's output limit, so a last block that no [End]
    (or next [Experiment]) closes is a fragment, and is dropped with a problem saying so.
    """
    problems: list[str] = []
    text = text or ""
    tags = [(_tag_kind(m.group("tag")), m.start(), m.end()) for m in _TAG.finditer(text)]
    ideas: list[str] = []
    seen: set[str] = set()
    stray_code = 0
    current: dict[str, str] | None = None
    number = 0

    def close(block: dict[str, str] | None) -> None:
        if block is None:
            return
        label = f"idea {block['number']}"
        experiment = _clean(block.get("experiment", ""))
        code = _clean(block["code"]) if "code" in block else None
        if not experiment:
            problems.append(f"{label}: empty [Experiment] section; skipped")
            return
        if code is None:
            problems.append(f"{label} ({_clip(' '.join(experiment.split()), 60)!r}) has no "
                            "[Code Changes] section; skipped")
            return
        if not code:
            problems.append(f"{label} ({_clip(' '.join(experiment.split()), 60)!r}) has an empty "
                            "[Code Changes] section; skipped")
            return
        if block.get("closed") != "yes":
            code = _drop_sign_off(code)
        idea = f"[Experiment]{_sep(experiment)}{experiment}\n[Code Changes]{_sep(code)}{code}"
        if idea in seen:
            problems.append(f"{label} repeats an earlier idea of the same answer; skipped")
            return
        seen.add(idea)
        ideas.append(idea)

    for index, (kind, _start, end) in enumerate(tags):
        stop = tags[index + 1][1] if index + 1 < len(tags) else len(text)
        body = text[end:stop]
        if kind == "experiment":
            close(current)
            number += 1
            current = {"number": str(number), "experiment": body}
        elif kind == "code":
            if current is None or "code" in current:
                if current is not None and "code" in current:
                    # A second [Code Changes] in one block: keep it as more of the same section.
                    current["code"] += "\n" + body
                else:
                    stray_code += 1
                continue
            current["code"] = body
        else:  # [End]: what follows until the next tag is prose, ignored
            if current is not None:
                current["closed"] = "yes"
            close(current)
            current = None
    if cut_off and current is not None:
        problems.append(f"idea {current['number']} was cut off at the model's output limit; "
                        "dropped")
    else:
        close(current)

    if stray_code:
        problems.append(f"{stray_code} [Code Changes] section(s) without an [Experiment] before "
                        "them; skipped")
    if not tags or number == 0:
        snippet = _clip(" ".join(text.split()), 80)
        problems.append("no [Experiment] block in the answer"
                        + (f" (it starts: {snippet!r})" if snippet else " (it is empty)"))
    return ideas, problems


_SIGN_OFF = re.compile(r"^\s*(i hope|hope th|let me know|feel free|these (ideas|experiments)|"
                       r"each of these|good luck|happy (training|experimenting))", re.IGNORECASE)


def _drop_sign_off(code: str) -> str:
    """Without an [End], the answer's closing chatter ends up in the last block: cut it."""
    lines = code.split("\n")
    # The last paragraph starts after the last blank line or closing fence.
    start = max((i + 1 for i, line in enumerate(lines[:-1])
                 if not line.strip() or _FENCE_LINE.match(line)), default=0)
    if start > 0 and _SIGN_OFF.match(lines[start]):
        return "\n".join(lines[:start]).rstrip()
    return code


def _sep(section: str) -> str:
    """A section that opens with a code fence starts on its own line, so markdown renders."""
    return "\n" if _FENCE_LINE.match(section.split("\n", 1)[0]) else " "


def _tag_kind(tag: str) -> str:
    tag = tag.lower()
    return "experiment" if tag.startswith("exp") else "end" if tag == "end" else "code"


def _clean(part: str) -> str:
    """A section's text without the fences, numbering and headings that surround blocks."""
    lines = part.strip("\n").splitlines()
    _trim(lines)
    # A fence opened before the section and closed inside it (or the reverse) is framing, not
    # content: drop the unbalanced fence line so the stored text is not half a code block.
    fences = [i for i, line in enumerate(lines) if _FENCE_LINE.match(line)]
    if len(fences) % 2 == 1:
        if _FENCE_LINE.match(lines[-1]):
            lines.pop()
        elif _FENCE_LINE.match(lines[0]):
            lines.pop(0)
        else:
            del lines[fences[-1]]
        _trim(lines)
    return "\n".join(lines).strip()


def _trim(lines: list[str]) -> None:
    while lines and _JUNK_LINE.match(lines[-1]):
        lines.pop()
    while lines and _JUNK_LINE.match(lines[0]):
        lines.pop(0)
