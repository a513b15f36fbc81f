"""The fault classes of the diff-repair corpus: how model answers go wrong, one builder each.

Repairable classes damage a clean edit and expect the original edit's result; rejection classes
break a rule and expect an error naming it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import replace

from diff_repair_corpus.generate import (
    Case,
    Edit,
    Source,
    hunks_of,
    make_edit,
    map_body,
    map_headers,
    map_paths,
    unified,
)
from diff_repair_corpus.habits import REFUSAL_HABITS, REPAIRABLE_HABITS

BEFORE = ["Here is the implementation:", "I'll change the training loop as follows.",
          "Sure! The diff below implements the idea.", "Changes:", "### Implementation"]
AFTER = ["This keeps the evaluation untouched.", "Let me know if anything fails.",
         "The rest of the file is unchanged.", ""]
_IDENT = re.compile(r"\b([A-Za-z_]\w*)\b")


def _fenced(diff: str, rng: random.Random) -> str:
    lang = rng.choice(["diff", "diff", "patch", "", "udiff"])
    return f"{rng.choice(BEFORE)}\n\n```{lang}\n{diff}```\n\n{rng.choice(AFTER)}\n"


def _repair(cls: str, src: Source, edit: Edit, answer: str) -> Case:
    return Case(cls, "repair", src, answer, src.protected, src.protected_lines,
                {edit.rel: edit.after})


def _reject(cls: str, src: Source, answer: str, *keywords: str, **kw: object) -> Case:
    case = Case(cls, "reject", src, answer, src.protected, src.protected_lines, {}, keywords)
    return replace(case, **kw) if kw else case  # type: ignore[arg-type]


# -- repairable -----------------------------------------------------------------------------------
def code_fence_and_prose(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    return _repair("code_fence_and_prose", src, edit, _fenced(edit.diff, rng))


def missing_a_b_prefixes(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    old = rng.choice([src.rel, f"a/{src.rel}"])
    return _repair("missing_a_b_prefixes", src, edit, map_paths(edit.diff, old, src.rel))


def environment_prefix(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    prefix = rng.choice([f"environments/{src.env_name}/", f"{src.env_name}/",
                         f"./environments/{src.env_name}/"])
    answer = map_paths(edit.diff, f"a/{prefix}{src.rel}", f"b/{prefix}{src.rel}")
    return _repair("environment_prefix", src, edit, answer)


def wrong_directory(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    base = src.rel.rsplit("/", 1)[-1]
    choices = [f"src/{src.rel}", f"project/{src.rel}", f"code/{src.env_name}_v2/{src.rel}"]
    if "/" in src.rel:
        choices.append(base)
    wrong = rng.choice(choices)
    return _repair("wrong_directory", src, edit, map_paths(edit.diff, f"a/{wrong}", f"b/{wrong}"))


def wrong_hunk_counts(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)

    def damage(n: list[int]) -> list[int | None]:
        a, b, c, d = n
        b2 = max(1, b + rng.choice([-2, -1, 1, 2, 3]))
        d2 = max(1, d + rng.choice([-2, -1, 0, 1, 2]))
        return [a, b2, c, d2]
    return _repair("wrong_hunk_counts", src, edit, map_headers(edit.diff, damage))


def shifted_line_numbers(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    base = rng.choice([-1, 1]) * rng.randint(1, 60)
    jitter = rng.random() < 0.5

    def shift(n: list[int]) -> list[int | None]:
        off = base + (rng.randint(-5, 5) if jitter else 0)
        return [max(1, n[0] + off), n[1], max(1, n[2] + off), n[3]]
    return _repair("shifted_line_numbers", src, edit, map_headers(edit.diff, shift))


def whitespace_in_context(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    how = rng.choice(["trailing", "tabs", "inner", "dedent"])

    def damage(tag: str, text: str, _: int) -> str:
        if how == "dedent":
            return tag + text.removeprefix("    ")
        if tag == "+" or not text.strip():
            return tag + text
        if how == "trailing":
            return tag + (text + "  " if rng.random() < 0.6 else text)
        if how == "tabs":
            lead = text[:len(text) - len(text.lstrip())]
            return tag + lead.replace("    ", "\t") + text.lstrip()
        return tag + re.sub(r"(\S) (\S)", r"\1  \2", text, count=1)
    if how == "dedent" and any(not t.startswith("    ") and t.strip()
                               for side in hunks_of(edit.diff) for t in side[0] + side[1]):
        how = "trailing"  # a hunk with top-level lines cannot be dedented uniformly
    return _repair("whitespace_in_context", src, edit, map_body(edit.diff, damage))


def blank_context_without_space(src: Source, rng: random.Random) -> Case:
    for _ in range(20):
        edit = make_edit(src, rng)
        if "\n \n" in edit.diff:
            break
    answer = edit.diff.replace("\n \n", "\n\n")
    return _repair("blank_context_without_space", src, edit, answer)


def missing_blank_context_line(src: Source, rng: random.Random) -> Case:
    for _ in range(20):
        edit = make_edit(src, rng)
        lines = edit.diff.split("\n")
        blanks = [i for i, line in enumerate(lines) if line == " "]
        if blanks:
            del lines[rng.choice(blanks)]
            return _repair("missing_blank_context_line", src, edit, "\n".join(lines))
    return _repair("missing_blank_context_line", src, edit, edit.diff)


def crlf_line_endings(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    answer = rng.choice([edit.diff, _fenced(edit.diff, rng)]).replace("\n", "\r\n")
    return _repair("crlf_line_endings", src, edit, answer)


def missing_final_newline(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    return _repair("missing_final_newline", src, edit, edit.diff.rstrip("\n"))


def spurious_no_newline_marker(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    return _repair("spurious_no_newline_marker", src, edit,
                   edit.diff + "\\ No newline at end of file\n")


def listing_line_numbers(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    width = len(str(len(src.text.splitlines())))
    number_added = rng.random() < 0.3

    def number(tag: str, text: str, old_no: int) -> str:
        if tag == "+" and not number_added:
            return tag + text
        return f"{tag}{old_no:>{width}} | {text}"
    return _repair("listing_line_numbers", src, edit, map_body(edit.diff, number))


def no_file_header(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    answer = "\n".join(line for line in edit.diff.split("\n")
                       if not line.startswith(("--- ", "+++ ")))
    return _repair("no_file_header", src, edit, answer)


def wrong_outer_context_line(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    lines = edit.diff.split("\n")
    firsts = [i + 1 for i, line in enumerate(lines)
              if line.startswith("@@") and i + 1 < len(lines) and lines[i + 1].startswith(" ")
              and lines[i + 1].strip()]
    if firsts:
        i = rng.choice(firsts)
        lines[i] = _IDENT.sub(lambda m: m.group(1) + "_old", lines[i], count=1)
        if lines[i] == edit.diff.split("\n")[i]:
            lines[i] += "  # was"
    return _repair("wrong_outer_context_line", src, edit, "\n".join(lines))


def search_replace_blocks(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    name = rng.choice([src.rel, f"`{src.rel}`", f"File: {src.rel}", f"### {src.rel}"])
    parts = [rng.choice(BEFORE), ""]
    for old, new in hunks_of(edit.diff):
        parts += [name, "```python", "<<<<<<< SEARCH", *old, "=======", *new,
                  ">>>>>>> REPLACE", "```", ""]
    return _repair("search_replace_blocks", src, edit, "\n".join(parts))


def typical_model_answer(src: Source, rng: random.Random) -> Case:
    """Fence, prose, env prefix, shifted lines and wrong counts together (the common mix)."""
    edit = make_edit(src, rng)
    off = rng.choice([-1, 1]) * rng.randint(1, 30)
    diff = map_headers(edit.diff, lambda n: [max(1, n[0] + off), n[1] + rng.randint(0, 2),
                                             max(1, n[2] + off), n[3] + rng.randint(-1, 2)])
    p = f"environments/{src.env_name}/" if rng.random() < 0.5 else ""
    diff = map_paths(diff, f"a/{p}{src.rel}", f"b/{p}{src.rel}")
    return _repair("typical_model_answer", src, edit, _fenced(diff, rng))


def context_without_leading_space(src: Source, rng: random.Random) -> Case:
    """Every context line lost its leading space (the header's counts are right)."""
    edit = make_edit(src, rng)
    return _repair("context_without_leading_space", src, edit,
                   map_body(edit.diff, lambda tag, text, _: text if tag == " " else tag + text))


def missing_hunk_header(src: Source, rng: random.Random) -> Case:
    """The '@@' line left out of a one-hunk diff: the body follows the file header."""
    edit = make_edit(src, rng, sites=1)
    answer = "\n".join(line for line in edit.diff.split("\n") if not line.startswith("@@"))
    return _repair("missing_hunk_header", src, edit, answer)


def hunks_out_of_order(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng, sites=rng.choice([2, 3]))
    head, *hunks = re.split(r"(?m)^(?=@@ )", edit.diff)
    rng.shuffle(hunks)
    if len(hunks) > 1 and hunks == sorted(hunks, key=lambda h: int(h.split()[1][1:].split(",")[0])):
        hunks.reverse()
    return _repair("hunks_out_of_order", src, edit, head + "".join(hunks))


def file_header_per_hunk(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng, sites=rng.choice([2, 3]))
    head, *hunks = re.split(r"(?m)^(?=@@ )", edit.diff)
    return _repair("file_header_per_hunk", src, edit, "".join(head + h for h in hunks))


def two_files_typical(src: Source, rng: random.Random) -> Case:
    """One answer editing two files (or editing one and adding a helper module), fenced."""
    others = [s for s in SOURCES if s.env_dir == src.env_dir and s.rel != src.rel]
    first = make_edit(src, rng)
    off = rng.randint(-20, 20)
    diff = map_headers(first.diff, lambda n: [max(1, n[0] + off), n[1], max(1, n[2] + off),
                                              n[3]])
    if others:
        second = make_edit(rng.choice(others), rng)
        extra_rel, extra_text = second.rel, second.after
        diff += map_headers(second.diff, lambda n: [max(1, n[0] + off), n[1],
                                                    max(1, n[2] + off), n[3]])
    else:  # a one-file environment: the second file is a new helper module
        extra_rel = f"ideaforge_helper_{rng.randint(1, 99)}.py"
        extra_text = "def scale(x):\n    return 0.5 * x\n"
        diff += unified(extra_rel, "", extra_text).replace(f"--- a/{extra_rel}", "--- /dev/null")
    case = _repair("two_files_typical", src, first, _fenced(diff, rng))
    return replace(case, expected={first.rel: first.after, extra_rel: extra_text})


# -- rejections -----------------------------------------------------------------------------------
def path_outside(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    bad = rng.choice([f"../{src.rel}", f"../../{src.rel}", f"{src.env_name}/../../{src.rel}",
                      f"../grpo_copy/{src.rel}"])
    answer = rng.choice([map_paths(edit.diff, f"a/{bad}", f"b/{bad}"),
                         f"--- /dev/null\n+++ b/{bad}\n@@ -0,0 +1 @@\n+import os\n"])
    return _reject("path_outside", src, answer, "outside the environment")


def absolute_path(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    bad = rng.choice([str(src.env_dir / src.rel), f"/tmp/{src.rel}", "/etc/passwd",
                      f"/workspace/{src.env_name}/{src.rel}"])
    return _reject("absolute_path", src, map_paths(edit.diff, bad, bad), "absolute path")


def symlink_target(src: Source, rng: random.Random) -> Case:
    if rng.random() < 0.5:
        linked = Source(src.env_dir, src.env_name, "linked.py",
                        (src.env_dir / "linked.py").read_text(), src.protected, {})
        edit = make_edit(linked, rng)
        return _reject("symlink_target", src, edit.diff, "symbolic link")
    answer = "--- /dev/null\n+++ b/outside_link/hook.py\n@@ -0,0 +1,2 @@\n+import os\n+X = 1\n"
    return _reject("symlink_target", src, answer, "symbolic link")


def protected_file(src: Source, rng: random.Random) -> Case:
    targets = ["environment.toml"] + [p for p in src.protected
                                      if (src.env_dir / p).is_file() and p.endswith(".py")]
    rel = rng.choice(targets)
    target = Source(src.env_dir, src.env_name, rel, (src.env_dir / rel).read_text(), (), {})
    edit = make_edit(target, rng, sites=1)
    return _reject("protected_file", src, rng.choice([edit.diff, _fenced(edit.diff, rng)]),
                   "is protected")


def protected_line_changed(src: Source, rng: random.Random) -> Case:
    lines = src.protected_lines
    mine = list(lines.get(src.rel, ()))
    if not mine:  # this file has none: protect one of its lines for this case
        code = [ln.strip() for ln in src.text.splitlines()
                if ln.strip() and not ln.strip().startswith(("#", '"', "'", "@"))
                and not ln.strip().endswith(":")]
        mine = [rng.choice(code)]
        lines = {**lines, src.rel: tuple(mine)}
    edit = make_edit(replace(src, protected_lines=lines), rng, must_touch=rng.choice(mine))
    return _reject("protected_line_changed", src, _fenced(edit.diff, rng), "protected line",
                   protected_lines=lines)


def binary_patch(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)
    binary = rng.choice([
        ("diff --git a/ckpt.pt b/ckpt.pt\nnew file mode 100644\nindex 0000000..3b18e51\n"
         "GIT binary patch\nliteral 14\nVcmZ?wbaU*U*x~=dB&+\n\nliteral 0\nHcmV?d00001\n"),
        "Binary files a/weights.bin and b/weights.bin differ\n",
    ])
    answer = rng.choice([edit.diff + binary, binary])
    return _reject("binary_patch", src, answer, "binary patch")


def new_file_in_protected_glob(src: Source, rng: random.Random) -> Case:
    rel = rng.choice(["eval/extra.py", "eval/metrics_override.py", "eval_cheat.py"])
    answer = f"--- /dev/null\n+++ b/{rel}\n@@ -0,0 +1,2 @@\n+def score():\n+    return 1.0\n"
    return _reject("new_file_in_protected_glob", src, _fenced(answer, rng), "is protected",
                   protected=(*src.protected, "eval/*", "eval_*.py"))


def no_diff(src: Source, rng: random.Random) -> Case:
    body = "\n".join(src.text.splitlines()[:12])
    answer = rng.choice([
        "I would increase the learning rate warmup and add dropout to the MLP.",
        f"Here is the new file:\n\n```python\n{body}\n```\n",
        "```diff\n```\n",
        "",
    ])
    return _reject("no_diff", src, answer, "no diff", "no usable '@@' hunks")


def unparseable(src: Source, rng: random.Random) -> Case:
    answer = rng.choice([
        f"--- a/{src.rel}\n+++ b/{src.rel}\nChange the warmup to 200 steps and keep the rest.\n",
        f"```diff\n--- a/{src.rel}\n+++ b/{src.rel}\n(replace the optimizer with Lion)\n```\n",
        f"@@ in {src.rel} @@\nreplace the scheduler by a linear one\n",
    ])
    return _reject("unparseable", src, answer, "no usable '@@' hunks", "no diff")


def context_not_in_file(src: Source, rng: random.Random) -> Case:
    edit = make_edit(src, rng)

    def hallucinate(tag: str, text: str, _: int) -> str:
        if tag == "+" or not _IDENT.search(text):
            return tag + text
        return tag + _IDENT.sub(lambda m: m.group(1) + "_v2", text, count=1)
    return _reject("context_not_in_file", src, map_body(edit.diff, hallucinate),
                   "does not match")


def truncated_answer(src: Source, rng: random.Random) -> Case:
    """Cut off mid-hunk (max tokens): the fence never closes and the hunk is short."""
    edit = make_edit(src, rng)
    lines = edit.diff.rstrip("\n").split("\n")
    cut = "\n".join(lines[:-rng.randint(1, 3)]) + "\n"
    return _reject("truncated_answer", src, f"{rng.choice(BEFORE)}\n\n```diff\n{cut}", "cut off")


def ignored_folder(src: Source, rng: random.Random) -> Case:
    rel = rng.choice([".git/hooks/post-checkout", "__pycache__/train.cpython-311.py",
                      "data/override.py"])
    answer = f"--- /dev/null\n+++ b/{rel}\n@@ -0,0 +1 @@\n+print('hi')\n"
    return _reject("ignored_folder", src, answer, "not part of the environment's code")


REPAIRABLE: tuple[Callable[[Source, random.Random], Case], ...] = (
    code_fence_and_prose, missing_a_b_prefixes, environment_prefix, wrong_directory,
    wrong_hunk_counts, shifted_line_numbers, whitespace_in_context, blank_context_without_space,
    missing_blank_context_line, crlf_line_endings, missing_final_newline,
    spurious_no_newline_marker, listing_line_numbers, no_file_header, wrong_outer_context_line,
    search_replace_blocks, typical_model_answer, hunks_out_of_order, file_header_per_hunk,
    two_files_typical, context_without_leading_space, missing_hunk_header, *REPAIRABLE_HABITS,
)
REJECTION: tuple[Callable[[Source, random.Random], Case], ...] = (
    path_outside, absolute_path, symlink_target, protected_file, protected_line_changed,
    binary_patch, new_file_in_protected_glob, no_diff, unparseable, context_not_in_file,
    truncated_answer, ignored_folder, *REFUSAL_HABITS,
)
#: every source of the current build (two_files_typical picks its second file here)
SOURCES: list[Source] = []


def build(sources: list[Source], per_class: int, seed: int) -> list[Case]:
    """`per_class` cases of every class, spread over the source files round-robin."""
    rng = random.Random(seed)
    SOURCES[:] = sources
    cases = []
    for builder in REPAIRABLE + REJECTION:
        for k in range(per_class):
            cases.append(builder(sources[k % len(sources)], rng))
    return cases


__all__ = ["REJECTION", "REPAIRABLE", "build", "unified"]
