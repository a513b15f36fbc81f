"""Patching: each mechanical repair and each rejection rule, on real files in tmp dirs.

Every accepted diff is also checked with the real `git apply --check`, so the normalised output
is something standard tools take, not only our own applier.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from engine.patching import (
    PatchError,
    PatchOutcome,
    apply_diff,
    apply_to_copy,
    combine_diffs,
    prepare_patch,
)

TRAIN = textwrap.dedent("""\
    import math

    import torch
    import torch.nn.functional as F


    def get_lr(step, warmup=100, total=1000):
        if step < warmup:
            return 3e-4 * step / warmup
        progress = (step - warmup) / (total - warmup)
        return 3e-4 * 0.5 * (1 + math.cos(math.pi * progress))


    class Model(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc1 = torch.nn.Linear(width, 4 * width)
            self.fc2 = torch.nn.Linear(4 * width, width)

        def forward(self, x, targets):
            h = F.gelu(self.fc1(x))
            logits = self.fc2(h)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
            return logits, loss


    def train(steps=1000):
        model = Model(64)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = get_lr(step)
            x = torch.randn(8, 64)
            _, loss = model(x, torch.randint(0, 64, (8,)))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return model
    """)

LOSS_LINE = "loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))"
PROTECTED = ["prepare_data.py", "eval/*"]
PROTECTED_LINES = {"train.py": [LOSS_LINE]}

# The canonical edit used throughout: a different warmup and a dropout layer.
GOOD_DIFF = """\
--- a/train.py
+++ b/train.py
@@ -7,3 +7,3 @@
 def get_lr(step, warmup=100, total=1000):
-    if step < warmup:
+    if step < warmup * 2:
         return 3e-4 * step / warmup
@@ -20,3 +20,4 @@
     def forward(self, x, targets):
         h = F.gelu(self.fc1(x))
+        h = F.dropout(h, 0.1, self.training)
         logits = self.fc2(h)
"""


def _expected() -> str:
    text = TRAIN.replace("    if step < warmup:\n", "    if step < warmup * 2:\n")
    return text.replace("        logits = self.fc2(h)\n",
                        "        h = F.dropout(h, 0.1, self.training)\n"
                        "        logits = self.fc2(h)\n")


EXPECTED = _expected()


@pytest.fixture()
def env(tmp_path: Path) -> Path:
    root = tmp_path / "nanogpt"
    (root / "lib").mkdir(parents=True)
    (root / "eval").mkdir()
    (root / "data").mkdir()
    (root / "__pycache__").mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "prepare_data.py").write_text("print('prepare')\n")
    (root / "eval" / "score.py").write_text("SCORE = 1\n")
    (root / "lib" / "model.py").write_text("WIDTH = 64\nDEPTH = 2\n")
    (root / "environment.toml").write_text('name = "nanogpt"\n')
    (root / "data" / "shard.txt").write_text("tokens\n")
    (root / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0\1")
    return root


def prep(env: Path, answer: str) -> PatchOutcome:
    return prepare_patch(answer, env, PROTECTED, PROTECTED_LINES)


def git_apply_check(env: Path, diff: str) -> None:
    """The normalised diff must satisfy real `git apply` too."""
    work = env.parent / "git-check"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(env, work, symlinks=True)
    run = subprocess.run(["git", "apply", "--check", "-"], input=diff, text=True, cwd=work,
                         check=False, capture_output=True)
    assert run.returncode == 0, run.stderr


def applied(env: Path, outcome: PatchOutcome, rel: str = "train.py") -> str:
    """The patched file's text, after checking the outcome and the diff's form."""
    assert outcome.ok, outcome.error
    assert outcome.diff is not None and outcome.diff.endswith("\n")
    assert "\r" not in outcome.diff
    git_apply_check(env, outcome.diff)
    dest = env.parent / "copy"
    shutil.rmtree(dest, ignore_errors=True)
    apply_to_copy(env, outcome.diff, dest)
    return (dest / rel).read_text()


def rejected(outcome: PatchOutcome, *words: str) -> str:
    assert not outcome.ok and outcome.diff is None
    assert outcome.error
    for word in words:
        assert word in outcome.error, outcome.error
    return outcome.error


# -- accepted as written ---------------------------------------------------------------------
def test_clean_diff_applies_and_is_normalised(env: Path) -> None:
    outcome = prep(env, GOOD_DIFF)
    assert applied(env, outcome) == EXPECTED
    assert outcome.form == "unified"
    assert outcome.changed_files == ("train.py",)
    assert outcome.repairs == ()
    assert outcome.diff.startswith("--- a/train.py\n+++ b/train.py\n@@ ")


# -- repairs ---------------------------------------------------------------------------------
def test_code_fence_and_prose_are_stripped(env: Path) -> None:
    answer = f"Here is the change.\n\n```diff\n{GOOD_DIFF}```\n\nIt should help."
    outcome = prep(env, answer)
    assert applied(env, outcome) == EXPECTED
    assert "stripped code fence" in outcome.repairs
    assert "ignored prose around the diff" in outcome.repairs


def test_unclosed_fence_around_a_complete_diff(env: Path) -> None:
    outcome = prep(env, "```diff\n" + GOOD_DIFF)
    assert applied(env, outcome) == EXPECTED
    assert "closed an unterminated code fence" in outcome.repairs


def test_unfenced_diff_after_prose(env: Path) -> None:
    outcome = prep(env, "I will lengthen the warmup:\n" + GOOD_DIFF + "\nDone.\n")
    assert applied(env, outcome) == EXPECTED
    assert "ignored prose before the diff" in outcome.repairs


def test_paths_without_a_b_prefixes(env: Path) -> None:
    diff = GOOD_DIFF.replace("a/train.py", "train.py").replace("b/train.py", "train.py")
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED
    assert "added a/ b/ prefixes to the paths" in outcome.repairs
    assert "--- a/train.py" in outcome.diff


def test_environments_prefix_is_removed(env: Path) -> None:
    diff = GOOD_DIFF.replace("a/train.py", "a/environments/nanogpt/train.py").replace(
        "b/train.py", "b/environments/nanogpt/train.py")
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED
    assert "removed 'environments/nanogpt/' from the path" in outcome.repairs
    assert "environments/" not in outcome.diff


def test_wrong_hunk_counts_are_fixed(env: Path) -> None:
    diff = GOOD_DIFF.replace("@@ -7,3 +7,3 @@", "@@ -7,9 +7,2 @@").replace(
        "@@ -20,3 +20,4 @@", "@@ -20,1 +20,12 @@")
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED
    assert "fixed hunk counts (hunk 1, 2 of train.py)" in outcome.repairs


def test_shifted_line_numbers_are_relocated_by_context(env: Path) -> None:
    diff = GOOD_DIFF.replace("@@ -7,3 +7,3 @@", "@@ -10,3 +10,3 @@").replace(
        "@@ -20,3 +20,4 @@", "@@ -29,3 +29,4 @@")
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED
    assert "relocated hunk 1 of train.py by context (-3 lines)" in outcome.repairs


def test_hunk_header_without_numbers(env: Path) -> None:
    diff = GOOD_DIFF.replace("@@ -7,3 +7,3 @@", "@@").replace("@@ -20,3 +20,4 @@",
                                                                "@@ ... @@")
    assert applied(env, prep(env, diff)) == EXPECTED


def test_whitespace_differences_in_context_are_tolerated(env: Path) -> None:
    # trailing blanks on a context line and the whole second hunk dedented by four columns
    diff = GOOD_DIFF.replace(" def get_lr(step, warmup=100, total=1000):",
                             " def get_lr(step, warmup=100, total=1000):   ")
    for line in ("def forward(self, x, targets):", "    h = F.gelu", "    logits = self"):
        diff = diff.replace(" " * 5 + line, " " + line)
    diff = diff.replace("+        h = F.dropout", "+    h = F.dropout")
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED
    assert any("ignoring" in r and "hunk 1" in r for r in outcome.repairs)
    assert "re-indented the added lines of hunk 2 of train.py (+4 columns)" in outcome.repairs


def test_missing_blank_context_line_is_tolerated(env: Path) -> None:
    # one of the two blank lines between get_lr and Model is missing
    diff = ("--- a/train.py\n+++ b/train.py\n@@ -11,4 +11,4 @@\n"
            "     return 3e-4 * 0.5 * (1 + math.cos(math.pi * progress))\n"
            " \n"
            " class Model(torch.nn.Module):\n"
            "-    def __init__(self, width):\n"
            "+    def __init__(self, width, dropout=0.1):\n")
    outcome = prep(env, diff)
    assert applied(env, outcome) == TRAIN.replace("def __init__(self, width):",
                                                  "def __init__(self, width, dropout=0.1):")
    assert any("blank lines" in r for r in outcome.repairs)


def test_blank_context_lines_without_leading_space(env: Path) -> None:
    diff = """\
--- a/train.py
+++ b/train.py
@@ -1,4 +1,5 @@
 import math

+import os
 import torch
"""
    text = applied(env, prep(env, diff))
    assert text.startswith("import math\n\nimport os\nimport torch\n")


def test_context_lines_without_leading_space(env: Path) -> None:
    diff = """\
--- a/train.py
+++ b/train.py
@@ -27,3 +27,3 @@
def train(steps=1000):
     model = Model(64)
-    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
+    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1)
"""
    outcome = prep(env, diff)
    assert "lr=6e-4, weight_decay" in applied(env, outcome)
    assert any("without a leading space" in r for r in outcome.repairs)


def test_indented_context_lines_without_leading_space_keep_added_indent(env: Path) -> None:
    # every context line lost the diff's leading space; the added line is right as written
    diff = """\
--- a/train.py
+++ b/train.py
@@ -20,3 +20,4 @@
    def forward(self, x, targets):
        h = F.gelu(self.fc1(x))
+        h = F.dropout(h, 0.1, self.training)
        logits = self.fc2(h)
"""
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED.replace("    if step < warmup * 2:",
                                                     "    if step < warmup:")
    assert not any("re-indented" in r for r in outcome.repairs)


def test_missing_hunk_header_line(env: Path) -> None:
    diff = GOOD_DIFF.split("@@ -20")[0].replace("@@ -7,3 +7,3 @@\n", "")
    outcome = prep(env, diff)
    assert "if step < warmup * 2:" in applied(env, outcome)
    assert "added the missing '@@' line for train.py" in outcome.repairs


def test_fuzz_ignores_a_wrong_outer_context_line(env: Path) -> None:
    diff = GOOD_DIFF.replace(" def get_lr(step, warmup=100, total=1000):",
                             " def get_lr(step, warmup=50, total=2000):")
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED
    assert any("context line(s) of hunk 1" in r for r in outcome.repairs)


def test_fuzz_never_pins_a_hunk_on_brackets_alone(env: Path) -> None:
    (env / "lib" / "configs.py").write_text(
        'CONFIGS = {\n    "tiny": dict(\n        width=64,\n    ),\n}\n\n\ndef build():\n'
        "    return 1\n")
    # the one worded context line is invented; what is left, "    )," and "}", pins nothing
    diff = ("--- a/lib/configs.py\n+++ b/lib/configs.py\n@@ -3,5 +3,6 @@\n"
            "         width_v2=64,\n     ),\n+EXTRA = 1\n }\n \n \n")
    rejected(prep(env, diff), "hunk 1 of lib/configs.py does not match")


def test_bare_file_name_maps_to_the_only_matching_file(env: Path) -> None:
    diff = "--- model.py\n+++ model.py\n@@ -1,2 +1,2 @@\n-WIDTH = 64\n+WIDTH = 128\n DEPTH = 2\n"
    outcome = prep(env, diff)
    assert applied(env, outcome, "lib/model.py") == "WIDTH = 128\nDEPTH = 2\n"
    assert outcome.changed_files == ("lib/model.py",)
    assert any("mapped 'model.py' to 'lib/model.py'" in r for r in outcome.repairs)


def test_wrong_directory_maps_to_the_only_matching_file(env: Path) -> None:
    diff = GOOD_DIFF.replace("a/train.py", "a/src/nanogpt/train.py").replace(
        "b/train.py", "b/src/nanogpt/train.py")
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED
    assert any("to 'train.py'" in r for r in outcome.repairs)


def test_crlf_answer_is_converted(env: Path) -> None:
    outcome = prep(env, GOOD_DIFF.replace("\n", "\r\n"))
    assert applied(env, outcome) == EXPECTED
    assert "converted CRLF line endings to LF" in outcome.repairs


def test_crlf_file_keeps_its_line_endings(env: Path) -> None:
    (env / "train.py").write_bytes(TRAIN.replace("\n", "\r\n").encode())
    outcome = prep(env, GOOD_DIFF)
    assert outcome.ok, outcome.error
    dest = env.parent / "copy"
    apply_to_copy(env, outcome.diff, dest)
    assert (dest / "train.py").read_bytes() == EXPECTED.replace("\n", "\r\n").encode()


def test_missing_final_newline_in_answer(env: Path) -> None:
    outcome = prep(env, GOOD_DIFF.rstrip("\n"))
    assert applied(env, outcome) == EXPECTED
    assert "added missing final newline" in outcome.repairs


def test_spurious_no_newline_marker_is_ignored(env: Path) -> None:
    outcome = prep(env, GOOD_DIFF + "\\ No newline at end of file\n")
    assert applied(env, outcome) == EXPECTED
    assert any("No newline" in r for r in outcome.repairs)


def test_file_without_final_newline_keeps_it_missing(env: Path) -> None:
    (env / "lib" / "model.py").write_text("WIDTH = 64\nDEPTH = 2")
    diff = ("--- a/lib/model.py\n+++ b/lib/model.py\n@@ -1,2 +1,3 @@\n WIDTH = 64\n"
            "-DEPTH = 2\n+DEPTH = 4\n+HEADS = 2\n")
    outcome = prep(env, diff)
    assert "\\ No newline at end of file" in outcome.diff
    assert applied(env, outcome, "lib/model.py") == "WIDTH = 64\nDEPTH = 4\nHEADS = 2"


def test_search_replace_blocks_become_a_unified_diff(env: Path) -> None:
    answer = textwrap.dedent("""\
        I lengthen the warmup and add dropout.

        train.py
        ```python
        <<<<<<< SEARCH
        def get_lr(step, warmup=100, total=1000):
            if step < warmup:
        =======
        def get_lr(step, warmup=100, total=1000):
            if step < warmup * 2:
        >>>>>>> REPLACE
        ```

        ```python
        <<<<<<< SEARCH
                h = F.gelu(self.fc1(x))
        =======
                h = F.gelu(self.fc1(x))
                h = F.dropout(h, 0.1, self.training)
        >>>>>>> REPLACE
        ```
        """)
    outcome = prep(env, answer)
    assert outcome.form == "search_replace"
    assert applied(env, outcome) == EXPECTED
    assert outcome.diff.startswith("--- a/train.py\n+++ b/train.py\n")


def test_search_replace_creates_a_new_file(env: Path) -> None:
    answer = "lib/extra.py\n<<<<<<< SEARCH\n=======\nFACTOR = 2\n>>>>>>> REPLACE\n"
    outcome = prep(env, answer)
    assert applied(env, outcome, "lib/extra.py") == "FACTOR = 2\n"


def test_line_numbers_copied_from_the_listing_are_removed(env: Path) -> None:
    diff = """\
--- a/train.py
+++ b/train.py
@@ -7,3 +7,3 @@
  7 | def get_lr(step, warmup=100, total=1000):
- 8 |     if step < warmup:
+ 8 |     if step < warmup * 2:
  9 |         return 3e-4 * step / warmup
"""
    outcome = prep(env, diff)
    assert "if step < warmup * 2:\n        return" in applied(env, outcome)
    assert any("line numbers copied from the listing" in r for r in outcome.repairs)


def test_hunks_without_file_header_are_matched_by_content(env: Path) -> None:
    diff = GOOD_DIFF.split("\n", 2)[2]  # drop the --- / +++ lines
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED
    assert "the diff's hunks named no file; matched them to train.py by content" in \
        outcome.repairs


def test_repeated_file_headers_are_merged(env: Path) -> None:
    first, second = GOOD_DIFF.split("@@ -20")
    diff = first + "--- a/train.py\n+++ b/train.py\n@@ -20" + second
    outcome = prep(env, diff)
    assert applied(env, outcome) == EXPECTED
    assert outcome.diff.count("--- a/train.py") == 1


def test_new_file_inside_the_environment_is_allowed(env: Path) -> None:
    diff = "--- /dev/null\n+++ b/lib/schedule.py\n@@ -0,0 +1,2 @@\n+def lr():\n+    return 1\n"
    outcome = prep(env, diff)
    assert applied(env, outcome, "lib/schedule.py") == "def lr():\n    return 1\n"
    assert outcome.changed_files == ("lib/schedule.py",)


def test_deleting_an_unprotected_file_is_allowed(env: Path) -> None:
    diff = "--- a/lib/model.py\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-WIDTH = 64\n-DEPTH = 2\n"
    outcome = prep(env, diff)
    assert outcome.ok, outcome.error
    git_apply_check(env, outcome.diff)
    dest = env.parent / "copy"
    apply_to_copy(env, outcome.diff, dest)
    assert not (dest / "lib" / "model.py").exists() and (dest / "train.py").exists()


# -- rejections ----------------------------------------------------------------------------
def test_dotdot_path_is_rejected(env: Path) -> None:
    diff = GOOD_DIFF.replace("a/train.py", "a/../train.py").replace("b/train.py", "b/../train.py")
    rejected(prep(env, diff), "'../train.py'", "outside the environment")


def test_absolute_path_is_rejected(env: Path) -> None:
    path = str(env / "train.py")
    diff = GOOD_DIFF.replace("a/train.py", path).replace("b/train.py", path)
    rejected(prep(env, diff), "absolute path", "relative to the environment")


def test_symlinked_target_is_rejected(env: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(TRAIN)
    os.symlink(outside, env / "link.py")
    diff = GOOD_DIFF.replace("train.py", "link.py")
    rejected(prep(env, diff), "'link.py'", "symbolic link")
    assert outside.read_text() == TRAIN


def test_new_file_through_a_symlinked_folder_is_rejected(env: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", env / "plugins")
    diff = "--- /dev/null\n+++ b/plugins/evil.py\n@@ -0,0 +1 @@\n+import os\n"
    rejected(prep(env, diff), "symbolic link")


def test_protected_file_is_rejected(env: Path) -> None:
    diff = ("--- a/prepare_data.py\n+++ b/prepare_data.py\n@@ -1 +1 @@\n-print('prepare')\n"
            "+print('cheat')\n")
    rejected(prep(env, diff), "prepare_data.py is protected")


def test_environment_toml_is_always_protected(env: Path) -> None:
    diff = ('--- a/environment.toml\n+++ b/environment.toml\n@@ -1 +1 @@\n-name = "nanogpt"\n'
            '+name = "other"\n')
    assert prepare_patch(diff, env, [], {}).ok is False
    rejected(prepare_patch(diff, env, [], {}), "environment.toml is protected")


def test_new_file_in_a_protected_glob_is_rejected(env: Path) -> None:
    diff = "--- /dev/null\n+++ b/eval/fake.py\n@@ -0,0 +1 @@\n+SCORE = 100\n"
    rejected(prep(env, diff), "eval/fake.py is protected", "may not create")


def test_deleting_a_protected_file_is_rejected(env: Path) -> None:
    diff = "--- a/prepare_data.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-print('prepare')\n"
    rejected(prep(env, diff), "prepare_data.py is protected", "may not delete")


def test_changed_protected_line_is_rejected(env: Path) -> None:
    diff = f"""\
--- a/train.py
+++ b/train.py
@@ -22,3 +22,3 @@
         logits = self.fc2(h)
-        {LOSS_LINE}
+        {LOSS_LINE.replace("targets.view(-1))", "targets.view(-1)) * 0.5")}
         return logits, loss
"""
    rejected(prep(env, diff), "protected line", repr(LOSS_LINE), "train.py")


def test_removed_protected_line_is_rejected(env: Path) -> None:
    diff = f"""\
--- a/train.py
+++ b/train.py
@@ -22,3 +22,2 @@
         logits = self.fc2(h)
-        {LOSS_LINE}
         return logits, loss
"""
    rejected(prep(env, diff), "protected line", "changed or removed")


def test_protected_line_may_move_within_the_change(env: Path) -> None:
    diff = f"""\
--- a/train.py
+++ b/train.py
@@ -22,3 +22,4 @@
         logits = self.fc2(h)
-        {LOSS_LINE}
+        logits = logits / 2
+        {LOSS_LINE}
         return logits, loss
"""
    assert "logits = logits / 2\n        loss = F" in applied(env, prep(env, diff))


def test_git_binary_patch_is_rejected(env: Path) -> None:
    diff = ("diff --git a/weights.bin b/weights.bin\nnew file mode 100644\nindex 0000000..e69\n"
            "GIT binary patch\nliteral 12\nzcmV-CAIw\n\nliteral 0\nHcmV?d00001\n\n")
    rejected(prep(env, diff), "binary patch")


def test_binary_files_differ_is_rejected(env: Path) -> None:
    rejected(prep(env, GOOD_DIFF + "Binary files a/logo.png and b/logo.png differ\n"),
             "binary patch")


def test_answer_without_a_diff_is_rejected(env: Path) -> None:
    error = rejected(prep(env, "I think we should raise the learning rate."), "no diff")
    assert "```diff" in error  # tells the model the expected form
    rejected(prep(env, ""), "no diff")
    rejected(prep(env, "```diff\n```\n"), "no diff")


def test_cut_off_answer_is_rejected_not_half_applied(env: Path) -> None:
    cut = GOOD_DIFF.rsplit("\n", 3)[0] + "\n"  # ends after the added dropout line
    rejected(prep(env, "Here it is:\n```diff\n" + cut), "cut off")


def test_headers_without_hunks_are_rejected(env: Path) -> None:
    rejected(prep(env, "--- a/train.py\n+++ b/train.py\nchange the lr please\n"),
             "no usable '@@' hunks")
    rejected(prep(env, "@@ in train.py @@\nraise the lr\n"), "no usable '@@' hunks")


def test_diff_that_changes_nothing_is_rejected(env: Path) -> None:
    diff = ("--- a/train.py\n+++ b/train.py\n@@ -1,1 +1,1 @@\n-import math\n+import math\n")
    rejected(prep(env, diff), "changes nothing")


def test_hunk_that_matches_nowhere_is_rejected_naming_the_line(env: Path) -> None:
    diff = """\
--- a/train.py
+++ b/train.py
@@ -28,3 +28,3 @@
     model = Model(64)
-    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
+    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
     for step in range(steps):
"""
    error = rejected(prep(env, diff), "hunk 1 of train.py does not match",
                     "'optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)'",
                     "closest, line 29")
    assert "Copy the ' ' and '-' lines exactly" in error


def test_unknown_file_is_rejected_listing_the_files(env: Path) -> None:
    diff = GOOD_DIFF.replace("train.py", "trainer.py")
    rejected(prep(env, diff), "'trainer.py' is not a file of the environment", "train.py")


def test_ambiguous_bare_name_is_rejected(env: Path) -> None:
    (env / "eval" / "model.py").write_text("X = 1\n")
    diff = "--- model.py\n+++ model.py\n@@ -1,2 +1,2 @@\n-WIDTH = 64\n+WIDTH = 128\n DEPTH = 2\n"
    rejected(prep(env, diff), "could mean several environment files")


def test_ignored_folders_are_rejected(env: Path) -> None:
    diff = "--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+rm -rf /\n"
    rejected(prep(env, diff), "not part of the environment's code")


def test_rename_is_rejected(env: Path) -> None:
    diff = ("--- a/lib/model.py\n+++ b/train.py\n@@ -1,2 +1,2 @@\n-WIDTH = 64\n+WIDTH = 128\n"
            " DEPTH = 2\n")
    rejected(prep(env, diff), "renaming is not supported")


def test_unterminated_search_replace_is_rejected(env: Path) -> None:
    answer = "train.py\n<<<<<<< SEARCH\nimport math\n>>>>>>> REPLACE\n"
    rejected(prep(env, answer), "'======='")


def test_all_problems_are_reported_together(env: Path) -> None:
    diff = GOOD_DIFF + ("--- a/prepare_data.py\n+++ b/prepare_data.py\n@@ -1 +1 @@\n"
                        "-print('prepare')\n+print('x')\n")
    diff = diff.replace("+++ b/train.py", "+++ b/../train.py").replace("--- a/train.py",
                                                                     "--- a/../train.py")
    error = rejected(prep(env, diff), "outside the environment", "prepare_data.py is protected")
    assert error.startswith("The patch was not applied, for these reasons:\n- ")


# -- apply_diff / apply_to_copy / combine_diffs -------------------------------------------------
def test_apply_diff_is_pure_and_tolerates_moved_hunks() -> None:
    files = {"train.py": "x = 1\n" * 0 + "\n".join(f"line{i}" for i in range(30)) + "\n"}
    diff = "--- a/train.py\n+++ b/train.py\n@@ -20,3 +20,3 @@\n line11\n-line12\n+LINE12\n line13\n"
    out = apply_diff(files, diff)
    assert "LINE12\n" in out["train.py"] and "line12\n" not in out["train.py"]
    assert "line12\n" in files["train.py"]  # input untouched


def test_apply_diff_conflict_raises(env: Path) -> None:
    files = {"train.py": TRAIN.replace("if step < warmup:", "if step <= warmup:")}
    with pytest.raises(PatchError, match="hunk 1 of train.py"):
        apply_diff(files, GOOD_DIFF)
    with pytest.raises(PatchError, match="does not parse"):
        apply_diff({"train.py": TRAIN}, "--- a/train.py\n+++ b/train.py\n@@ -1,5 +1,5 @@\n x\n")


def test_apply_to_copy_skips_caches_and_data(env: Path, tmp_path: Path) -> None:
    (env / ".git").mkdir()
    (env / ".git" / "HEAD").write_text("ref\n")
    dest = tmp_path / "job" / "env"
    apply_to_copy(env, None, dest)
    assert (dest / "train.py").read_text() == TRAIN
    assert (dest / "lib" / "model.py").exists()
    for skipped in (".git", "data", "__pycache__"):
        assert not (dest / skipped).exists()


def test_apply_to_copy_refuses_symlinked_targets(env: Path, tmp_path: Path) -> None:
    os.symlink("train.py", env / "alias.py")
    diff = "--- a/alias.py\n+++ b/alias.py\n@@ -1 +1 @@\n-import math\n+import cmath\n"
    with pytest.raises(PatchError, match="symbolic link"):
        apply_to_copy(env, diff, tmp_path / "dest")
    assert (env / "train.py").read_text() == TRAIN


def test_apply_to_copy_conflict_writes_nothing(env: Path, tmp_path: Path) -> None:
    bad = GOOD_DIFF.replace("-    if step < warmup:", "-    if step < warmup_steps:")
    with pytest.raises(PatchError):
        apply_to_copy(env, bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_combine_diffs_applies_both(env: Path) -> None:
    first, second = GOOD_DIFF.split("@@ -20")
    second = "--- a/train.py\n+++ b/train.py\n@@ -20" + second
    other = "--- a/lib/model.py\n+++ b/lib/model.py\n@@ -1 +1 @@\n-WIDTH = 64\n+WIDTH = 96\n"
    combined = combine_diffs(env, [first, second, other])
    outcome = prep(env, combined)
    assert applied(env, outcome) == EXPECTED
    assert applied(env, outcome, "lib/model.py") == "WIDTH = 96\nDEPTH = 2\n"
    assert outcome.repairs == ()  # the combined diff is already normalised


def test_combine_conflicting_diffs_raises(env: Path) -> None:
    rival = GOOD_DIFF.replace("+    if step < warmup * 2:", "+    if step < warmup // 2:")
    with pytest.raises(PatchError, match="diff 2 of 2 changes the same lines of train.py"):
        combine_diffs(env, [GOOD_DIFF, rival])


def test_combine_merges_diffs_that_share_only_context(env: Path) -> None:
    # each diff's context holds a line the other one changes: neither applies on top of the
    # other as written, but the changed lines are apart, so a three-way merge combines them
    first = ("--- a/train.py\n+++ b/train.py\n@@ -28,3 +28,3 @@\n     model = Model(64)\n"
             "-    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)\n"
             "+    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1)\n"
             "     for step in range(steps):\n")
    second = ("--- a/train.py\n+++ b/train.py\n@@ -29,3 +29,3 @@\n"
              "     opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)\n"
              "     for step in range(steps):\n"
              "-        for group in opt.param_groups:\n"
              "+        for group in opt.param_groups[:1]:\n")
    combined = combine_diffs(env, [first, second])
    text = applied(env, prep(env, combined))
    assert "lr=6e-4, weight_decay" in text and "opt.param_groups[:1]:" in text


def test_combine_refuses_adjacent_changes(env: Path) -> None:
    first = ("--- a/train.py\n+++ b/train.py\n@@ -28,2 +28,2 @@\n     model = Model(64)\n"
             "-    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)\n"
             "+    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1)\n")
    second = ("--- a/train.py\n+++ b/train.py\n@@ -29,2 +29,2 @@\n"
              "     opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)\n"
              "-    for step in range(steps):\n+    for step in range(2 * steps):\n")
    with pytest.raises(PatchError, match="the same lines"):
        combine_diffs(env, [first, second])
