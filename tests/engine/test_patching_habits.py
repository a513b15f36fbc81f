"""Patching: line numbers pasted from the prompt's listing, and comments models add to context
lines, are undone only where the file vouches for it (issue 11, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.environments import load
from engine.patching import PatchOutcome, prepare_patch
from tests.engine.test_patching import TRAIN, applied, rejected

#: a data file whose lines really start with numbers; line 5 even holds its own number
TABLE = 'TABLE = [\n10: "ten",\n20 | FLAG,\n30 * SCALE,\n5: "five",\n40: "forty",\n]\n'


@pytest.fixture()
def env(tmp_path: Path) -> Path:
    root = tmp_path / "nanogpt"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "table.py").write_text(TABLE)
    (root / "environment.toml").write_text(
        'name = "nanogpt"\ncontext = ["train.py"]\n[metric]\nname = "val_loss"\n'
        'goal = "minimize"\n[profiles.smoke]\ncommand = "python train.py"\ntimeout = 60\n')
    return root


def prep(env: Path, answer: str) -> PatchOutcome:
    return prepare_patch(answer, env, [], {})


def _numbered(fmt: str, plus: bool) -> str:
    def line(tag: str, n: int, text: str) -> str:
        return tag + (fmt.format(n=n) if tag != "+" or plus else "") + text
    return "\n".join([
        "--- a/train.py", "+++ b/train.py", "@@ -7,3 +7,3 @@",
        line(" ", 7, "def get_lr(step, warmup=100, total=1000):"),
        line("-", 8, "    if step < warmup:"),
        line("+", 8, "    if step < warmup * 2:"),
        line(" ", 9, "        return 3e-4 * step / warmup"),
        "@@ -20,3 +20,4 @@",
        line(" ", 20, "    def forward(self, x, targets):"),
        line(" ", 21, "        h = F.gelu(self.fc1(x))"),
        line("+", 22, "        h = F.dropout(h, 0.1, self.training)"),
        line(" ", 22, "        logits = self.fc2(h)"),
    ]) + "\n"


WANTED = (TRAIN.replace("    if step < warmup:\n", "    if step < warmup * 2:\n")
          .replace("        logits = self.fc2(h)\n",
                   "        h = F.dropout(h, 0.1, self.training)\n        logits = self.fc2(h)\n"))


@pytest.mark.parametrize("fmt", ["{n:>2} | ", "{n}: ", "{n}| ", "{n}|", "{n} ", "{n}\t",
                                 "{n} | ", "{n:>3}: "])
@pytest.mark.parametrize("plus", [False, True], ids=["plain_added", "numbered_added"])
def test_line_numbers_in_the_forms_models_write_are_removed(env: Path, fmt: str,
                                                            plus: bool) -> None:
    outcome = prep(env, _numbered(fmt, plus))
    assert applied(env, outcome) == WANTED
    assert "removed line numbers copied from the listing (hunk 1 of train.py)" in outcome.repairs


def test_the_numbers_match_the_prompts_own_listing(env: Path) -> None:
    listing = load(env).context_listing()
    copied = [line for line in listing.splitlines() if line.endswith("if step < warmup:")]
    assert copied == [" 8 |     if step < warmup:"]  # the exact form the coder sees
    diff = ("--- a/train.py\n+++ b/train.py\n@@ -7,3 +7,3 @@\n 7 | def get_lr(step, warmup=100,"
            " total=1000):\n-" + copied[0] + "\n+ 8 |     if step < warmup * 2:\n  9 |"
            "         return 3e-4 * step / warmup\n")
    assert "    if step < warmup * 2:\n        return" in applied(env, prep(env, diff))


def test_numbers_on_only_the_first_lines_of_a_hunk(env: Path) -> None:
    diff = """\
--- a/train.py
+++ b/train.py
@@ -20,3 +20,4 @@
 20:     def forward(self, x, targets):
 21:         h = F.gelu(self.fc1(x))
+        h = F.dropout(h, 0.1, self.training)
         logits = self.fc2(h)
"""
    assert "F.dropout(h, 0.1, self.training)\n        logits" in applied(env, prep(env, diff))


def test_new_side_numbers_on_added_lines_of_a_later_hunk(env: Path) -> None:
    diff = """\
--- a/train.py
+++ b/train.py
@@ -7,3 +7,4 @@
 7: def get_lr(step, warmup=100, total=1000):
+8:     warmup = warmup * 2
 8:     if step < warmup:
 9:         return 3e-4 * step / warmup
@@ -20,3 +21,4 @@
 20:     def forward(self, x, targets):
 21:         h = F.gelu(self.fc1(x))
+23:         h = F.dropout(h, 0.1, self.training)
 22:         logits = self.fc2(h)
"""
    text = applied(env, prep(env, diff))
    assert "\n    warmup = warmup * 2\n    if step" in text
    assert "\n        h = F.dropout(h, 0.1, self.training)\n        logits" in text


def test_lines_that_really_start_with_numbers_survive(env: Path) -> None:
    diff = """\
--- a/table.py
+++ b/table.py
@@ -3,3 +3,4 @@
 20 | FLAG,
 30 * SCALE,
 5: "five",
+6: "six",
"""
    outcome = prep(env, diff)
    assert applied(env, outcome, "table.py") == TABLE.replace('5: "five",\n',
                                                              '5: "five",\n6: "six",\n')
    assert not any("line numbers" in r for r in outcome.repairs)


def test_numbered_context_with_added_lines_that_start_with_numbers_is_refused(env: Path
                                                                               ) -> None:
    # numbers on the context, and '+' lines starting with numbers in a file whose own lines
    # start that way: stripping would be a guess, applying them as they are might be too
    diff = """\
--- a/table.py
+++ b/table.py
@@ -4,2 +4,3 @@
 4: 30 * SCALE,
 5: 5: "five",
+6: "six",
"""
    rejected(prep(env, diff), "line numbers", "hunk 1 of table.py")
    numbered_too = diff.replace('+6: "six"', '+6: 6: "six"')
    rejected(prep(env, numbered_too), "line numbers")


def test_numbers_that_name_other_lines_are_not_stripped(env: Path) -> None:
    diff = """\
--- a/train.py
+++ b/train.py
@@ -7,3 +7,3 @@
 31 | def get_lr(step, warmup=100, total=1000):
-12 |     if step < warmup:
+    if step < warmup * 2:
 3 |         return 3e-4 * step / warmup
"""
    rejected(prep(env, diff), "does not match")


def test_mixed_numbered_and_plain_added_lines_are_refused(env: Path) -> None:
    diff = _numbered("{n}: ", True).replace("+22: ", "+")
    diff = diff.replace("@@ -20,3 +20,4 @@", "@@ -20,3 +20,5 @@").replace(
        "+        h = F.dropout", "+23:         h = h * 1.0\n+        h = F.dropout")
    rejected(prep(env, diff), "line numbers", "hunk 2 of train.py")


ANNOTATED = """\
--- a/train.py
+++ b/train.py
@@ -7,3 +7,3 @@
 def get_lr(step, warmup=100, total=1000):  # unchanged
-    if step < warmup:  # (unchanged)
+    if step < warmup * 2:
         return 3e-4 * step / warmup  // unchanged
@@ -20,3 +20,4 @@
     # ... existing code ...
     def forward(self, x, targets):
         h = F.gelu(self.fc1(x))  # ... existing code
+        h = F.dropout(h, 0.1, self.training)
         logits = self.fc2(h)
"""


def test_comments_added_to_context_lines_are_dropped(env: Path) -> None:
    outcome = prep(env, ANNOTATED)
    assert applied(env, outcome) == WANTED
    assert "dropped comments the model added to 3 context line(s) (hunk 1 of train.py)" \
        in outcome.repairs
    assert any("elision line" in r and "hunk 2" in r for r in outcome.repairs)


def test_an_annotation_after_a_real_comment_keeps_the_real_one(env: Path) -> None:
    (env / "train.py").write_text(TRAIN.replace("    if step < warmup:\n",
                                                "    if step < warmup:  # linear warmup\n"))
    diff = """\
--- a/train.py
+++ b/train.py
@@ -7,3 +7,3 @@
 def get_lr(step, warmup=100, total=1000):
-    if step < warmup:  # linear warmup  # unchanged
+    if step < warmup * 2:  # linear warmup
         return 3e-4 * step / warmup
"""
    text = applied(env, prep(env, diff))
    assert "    if step < warmup * 2:  # linear warmup\n        return 3e-4" in text


def test_added_lines_keep_their_comments(env: Path) -> None:
    diff = ANNOTATED.replace("+        h = F.dropout(h, 0.1, self.training)",
                             "+        h = F.dropout(h, 0.1, self.training)  # unchanged")
    assert "F.dropout(h, 0.1, self.training)  # unchanged\n" in applied(env, prep(env, diff))


def test_annotation_on_a_line_that_differs_from_the_file_is_refused(env: Path) -> None:
    diff = ANNOTATED.replace("-    if step < warmup:  # (unchanged)",
                             "-    if step <= warmup:  # (unchanged)")
    rejected(prep(env, diff), "does not match", "if step <= warmup:")


def test_elision_inside_a_hunk_is_refused(env: Path) -> None:
    diff = """\
--- a/train.py
+++ b/train.py
@@ -7,3 +7,3 @@
 def get_lr(step, warmup=100, total=1000):
     # ... existing code ...
-        return 3e-4 * step / warmup
+        return 6e-4 * step / warmup
"""
    rejected(prep(env, diff), "does not match")
