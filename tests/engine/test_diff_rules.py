"""Diff rules that mean what they say: protected regions and module shadowing.

A real environment folder (loaded through engine.environments), diffs written the way a coder
model writes them, and the real patch pipeline (`prepare_patch` with the environment's
`DiffRules`), as the search calls it.
"""

from __future__ import annotations

import difflib
import textwrap
from pathlib import Path

import pytest

from engine import environments, ideation
from engine.environments import Environment, EnvironmentError_
from engine.patching import PatchOutcome, apply_diff, prepare_patch
from engine.protection import DiffRules

TRAIN = textwrap.dedent('''\
    import json
    import math

    import torch

    TIME_LIMIT_S = 3600


    class Config:
        lr = 1e-5
        group_size = 8


    class Trainer:
        def __init__(self, config):
            self.config = config

        def reward(self, answer, gold):
            return float(answer.strip() == gold.strip())


    def save_checkpoint(model, path):
        """Write the weights the evaluator reads."""
        torch.save(model.state_dict(), path)


    def get_lr(step):
        return Config.lr * min(1.0, step / 10)


    def main():
        trainer = Trainer(Config())
        for step in range(20):
            lr = get_lr(step)
        save_checkpoint(trainer, "ckpt.pt")


    if __name__ == "__main__":
        main()
    ''')

EVALUATE = textwrap.dedent('''\
    import json
    import sys

    from math_verify import parse, verify

    import model_io


    def score(model, problems):
        return sum(verify(parse(p["gold"]), parse(model(p))) for p in problems)
    ''')

MODEL_IO = "def load(path):\n    return path\n"

TOML = textwrap.dedent('''\
    name = "tiny-grpo"
    context = ["train_grpo.py"]
    protected = ["evaluate.py"]

    [metric]
    name = "accuracy"
    goal = "maximize"

    [evaluate]
    command = "python evaluate.py"
    files = ["evaluate.py", "model_io.py"]
    timeout = 60

    [protected_regions]
    "train_grpo.py" = ["def save_checkpoint", "class Config", "TIME_LIMIT_S", "Trainer.reward"]

    [profiles.smoke]
    command = "python train_grpo.py"
    timeout = 60
    ''')


@pytest.fixture()
def env(tmp_path: Path) -> Environment:
    root = tmp_path / "tiny-grpo"
    root.mkdir()
    (root / "train_grpo.py").write_text(TRAIN)
    (root / "evaluate.py").write_text(EVALUATE)
    (root / "model_io.py").write_text(MODEL_IO)
    (root / "environment.toml").write_text(TOML)
    return environments.load(root)


def prep(env: Environment, answer: str) -> PatchOutcome:
    """The check the search runs on every coder answer."""
    return prepare_patch(answer, env.root, env.protected, env.protected_lines,
                         rules=DiffRules.of(env))


def refused(outcome: PatchOutcome, *words: str) -> str:
    assert not outcome.ok, outcome.diff
    error = outcome.error or ""
    assert error.startswith("The patch was not applied")
    for word in words:
        assert word in error, error
    return error


def accepted(env: Environment, outcome: PatchOutcome, rel: str = "train_grpo.py") -> str:
    assert outcome.ok, outcome.error
    files = {r: (env.root / r).read_text() for r in env.files() if (env.root / r).is_file()}
    return apply_diff(files, outcome.diff or "")[rel]


def _diff(rel: str, before: str, after: str) -> str:
    """Hunks as a model writes them: 3 lines of context, `--- a/` `+++ b/` headers."""
    lines = difflib.unified_diff(before.splitlines(keepends=True),
                                 after.splitlines(keepends=True), f"a/{rel}", f"b/{rel}", n=3)
    return "".join(lines)


def _new_file(rel: str, text: str) -> str:
    body = "".join("+" + line + "\n" for line in text.splitlines())
    return f"--- /dev/null\n+++ b/{rel}\n@@ -0,0 +1,{len(text.splitlines())} @@\n{body}"


# -- protected regions -----------------------------------------------------------------------
def test_editing_a_protected_region_is_refused_with_the_fix(env: Environment) -> None:
    diff = """\
--- a/train_grpo.py
+++ b/train_grpo.py
@@ -22,4 +22,4 @@
 def save_checkpoint(model, path):
     \"\"\"Write the weights the evaluator reads.\"\"\"
-    torch.save(model.state_dict(), path)
+    torch.save({"accuracy": 1.0, **model.state_dict()}, path)
 
"""
    error = refused(prep(env, diff), "train_grpo.py", "`def save_checkpoint` was changed",
                    "different body", "keep `def save_checkpoint` as it is")
    assert "put new code around it" in error


def test_a_changed_docstring_or_default_is_a_change(env: Environment) -> None:
    doc = TRAIN.replace('"""Write the weights the evaluator reads."""', '"""Weights."""')
    refused(prep(env, _diff("train_grpo.py", TRAIN, doc)), "different docstring")
    default = TRAIN.replace("def save_checkpoint(model, path):",
                            "def save_checkpoint(model, path='best.pt'):")
    refused(prep(env, _diff("train_grpo.py", TRAIN, default)), "arguments or defaults")
    value = TRAIN.replace("TIME_LIMIT_S = 3600", "TIME_LIMIT_S = 36000")
    refused(prep(env, _diff("train_grpo.py", TRAIN, value)), "`TIME_LIMIT_S` was changed")


def test_reformatting_a_region_is_accepted(env: Environment) -> None:
    after = TRAIN.replace(
        "def save_checkpoint(model, path):\n",
        "def save_checkpoint(\n    model,\n    path,\n):  # the evaluator reads this file\n",
    ).replace("class Config:\n    lr = 1e-5", "class Config:\n    # learning rate\n    lr = 1e-05")
    patched = accepted(env, prep(env, _diff("train_grpo.py", TRAIN, after)))
    assert patched == after


def test_region_moved_into_dead_code_with_a_changed_copy_running_is_refused(
        env: Environment) -> None:
    diff = """\
--- a/train_grpo.py
+++ b/train_grpo.py
@@ -19,9 +19,14 @@
         return float(answer.strip() == gold.strip())
 
 
-def save_checkpoint(model, path):
-    \"\"\"Write the weights the evaluator reads.\"\"\"
-    torch.save(model.state_dict(), path)
+if False:
+    def save_checkpoint(model, path):
+        \"\"\"Write the weights the evaluator reads.\"\"\"
+        torch.save(model.state_dict(), path)
+else:
+    def save_checkpoint(model, path):
+        \"\"\"Write the weights the evaluator reads.\"\"\"
+        torch.save({"accuracy": 1.0}, path)
 
 
 def get_lr(step):
"""
    refused(prep(env, diff), "`def save_checkpoint` is not defined at the top level of "
            "train_grpo.py", "does not count")


def test_region_kept_only_in_a_string_counts_as_missing(env: Environment) -> None:
    after = TRAIN.replace('    """Write the weights the evaluator reads."""\n', "").replace(
        "def save_checkpoint(model, path):\n    torch.save(model.state_dict(), path)\n",
        'ORIGINAL = """\ndef save_checkpoint(model, path):\n'
        '    torch.save(model.state_dict(), path)\n"""\n\n\n'
        "def save_checkpoint(model, path):\n    pass\n")
    refused(prep(env, _diff("train_grpo.py", TRAIN, after)),
            "`def save_checkpoint` was changed")
    gone = TRAIN.replace("def save_checkpoint(model, path):", "def _save(model, path):")
    refused(prep(env, _diff("train_grpo.py", TRAIN, gone)), "is not defined at the top level")


@pytest.mark.parametrize(("added", "words"), [
    ("save_checkpoint = lambda model, path: None\n",
     ["line 41 binds `save_checkpoint` again (an assignment)"]),
    ("from fake_io import save_checkpoint\n", ["binds `save_checkpoint` again (an import)"]),
    ("del save_checkpoint\n", ["`def save_checkpoint` is kept but rebound", "(del)"]),
    ("TIME_LIMIT_S = 10 ** 9\n", ["`TIME_LIMIT_S` is defined 2 times at the top level"]),
    ("Trainer.reward = lambda self, answer, gold: 1.0\n",
     ["`Trainer.reward` is kept but rebound", "assigns to or deletes `Trainer.reward`"]),
    ("setattr(Config, 'lr', 1.0)\n", ["`class Config`", "calls `setattr(Config, 'lr', 1.0)`"]),
    ("Config.lr = 1.0\n", ["`class Config`", "assigns to or deletes `Config.lr`"]),
    ("save_checkpoint.__code__ = get_lr.__code__\n",
     ["assigns to or deletes `save_checkpoint.__code__`"]),
    ("globals()['TIME_LIMIT_S'] = 1e9\n", ["`TIME_LIMIT_S`", "globals()['TIME_LIMIT_S']"]),
    ("for TIME_LIMIT_S in range(3):\n    pass\n", ["binds `TIME_LIMIT_S` again (a for loop)"]),
])
def test_rebinding_or_patching_a_kept_region_is_refused(env: Environment, added: str,
                                                        words: list[str]) -> None:
    after = TRAIN + "\n" + added
    error = refused(prep(env, _diff("train_grpo.py", TRAIN, after)), "train_grpo.py", *words)
    assert "keep `" in error and "put new code around it" in error


def test_a_decorator_around_a_region_is_refused(env: Environment) -> None:
    after = TRAIN.replace("def save_checkpoint(model, path):",
                          "@functools.lru_cache\ndef save_checkpoint(model, path):").replace(
        "import json\n", "import functools\nimport json\n")
    refused(prep(env, _diff("train_grpo.py", TRAIN, after)), "`def save_checkpoint` was changed",
            "different decorators")
    header = TRAIN.replace("class Trainer:", "@dataclasses.dataclass\nclass Trainer:")
    refused(prep(env, _diff("train_grpo.py", TRAIN, header)), "`Trainer.reward`",
            "keep the class header as it is")


def test_a_global_rebinding_in_a_function_is_refused(env: Environment) -> None:
    diff = """\
--- a/train_grpo.py
+++ b/train_grpo.py
@@ -29,6 +29,8 @@
 
 
 def main():
+    global TIME_LIMIT_S
+    TIME_LIMIT_S = 10 ** 9
     trainer = Trainer(Config())
     for step in range(20):
         lr = get_lr(step)
"""
    refused(prep(env, diff), "`TIME_LIMIT_S` is kept but rebound",
            "line 32 declares `global TIME_LIMIT_S` in a function")


def test_a_method_region_rebound_in_its_class_body_is_refused(env: Environment) -> None:
    after = TRAIN.replace(
        "        return float(answer.strip() == gold.strip())\n",
        "        return float(answer.strip() == gold.strip())\n\n"
        "    reward = lambda self, answer, gold: 1.0  # noqa: E731\n")
    refused(prep(env, _diff("train_grpo.py", TRAIN, after)),
            "binds `Trainer.reward` again in the class body")
    changed = TRAIN.replace("return float(answer.strip() == gold.strip())", "return 1.0")
    refused(prep(env, _diff("train_grpo.py", TRAIN, changed)), "`Trainer.reward` was changed")


def test_code_added_around_regions_is_accepted(env: Environment) -> None:
    after = TRAIN.replace(
        "def get_lr(step):\n    return Config.lr * min(1.0, step / 10)\n",
        "WARMUP = 5\n\n\ndef get_lr(step):\n    return Config.lr * min(1.0, step / WARMUP)\n",
    ).replace(
        "    def reward(self, answer, gold):",
        "    def shaped(self, answer, gold):\n        return 0.1 * len(answer) + self.reward("
        "answer, gold)\n\n    def reward(self, answer, gold):",
    ).replace(
        '        save_checkpoint(trainer, "ckpt.pt")\n',
        '        print(json.dumps({"lr": lr, "limit": TIME_LIMIT_S}))\n'
        '        save_checkpoint(trainer, "ckpt.pt")\n')
    assert accepted(env, prep(env, _diff("train_grpo.py", TRAIN, after))) == after


def test_another_file_patching_a_region_is_refused(env: Environment) -> None:
    after = MODEL_IO + "\n\nimport __main__\n__main__.save_checkpoint = lambda model, path: None\n"
    refused(prep(env, _diff("model_io.py", MODEL_IO, after)),
            "model_io.py patches the protected region `def save_checkpoint` of train_grpo.py",
            "__main__.save_checkpoint")
    also = MODEL_IO + "\n\nfrom train_grpo import Config\nConfig.lr = 1.0\n"
    refused(prep(env, _diff("model_io.py", MODEL_IO, also)), "`class Config`")


def test_deleting_the_file_of_regions_is_refused(env: Environment) -> None:
    diff = "--- a/train_grpo.py\n+++ /dev/null\n@@ -1,3 +0,0 @@\n-import json\n-import math\n-\n"
    refused(prep(env, diff), "train_grpo.py holds protected regions", "may not delete it")


# -- module shadowing ------------------------------------------------------------------------
@pytest.mark.parametrize(("rel", "module", "why"), [
    ("math_verify.py", "math_verify", "imported by evaluate.py, a protected file"),
    ("json.py", "json", "imported by evaluate.py"),
    ("torch/__init__.py", "torch", "imported by train_grpo.py"),
    ("sitecustomize.py", "sitecustomize", "Python runs it at start-up"),
    ("model_io/__init__.py", "model_io", "imported by evaluate.py"),
    ("pickle.py", "pickle", "a standard-library module"),
])
def test_a_new_module_that_shadows_one_is_refused(env: Environment, rel: str, module: str,
                                                  why: str) -> None:
    diff = _new_file(rel, "def verify(gold, answer):\n    return True\n")
    refused(prep(env, diff), f"the new file {rel} would shadow the module `{module}`", why,
            "Give the new module a name of its own")


def test_a_new_pth_file_is_refused(env: Environment) -> None:
    refused(prep(env, _new_file("hooks.pth", "import os\n")), "hooks.pth is a .pth file")


def test_a_shadowing_module_works_without_rules_too(env: Environment) -> None:
    """Callers without an Environment (the bench, a catalog check) still get the rule."""
    outcome = prepare_patch(_new_file("csv.py", "x = 1\n"), env.root, ["evaluate.py"], {})
    refused(outcome, "`csv` (a standard-library module)")
    outcome = prepare_patch(_new_file("math_verify.py", "x = 1\n"), env.root, [], {})
    refused(outcome, "`math_verify` (an installed package (math-verify")


def test_an_honest_helper_module_is_accepted(env: Environment) -> None:
    helper = "def cosine(step, total):\n    return 0.5 * step / total\n"
    use = TRAIN.replace("import torch\n", "import torch\nfrom my_schedule import cosine\n")
    diff = _new_file("my_schedule.py", helper) + _diff("train_grpo.py", TRAIN, use)
    outcome = prep(env, diff)
    assert accepted(env, outcome, "my_schedule.py") == helper
    assert set(outcome.changed_files) == {"my_schedule.py", "train_grpo.py"}


def test_editing_an_existing_unprotected_file_is_accepted(env: Environment) -> None:
    after = MODEL_IO.replace("return path", "return str(path)")
    assert accepted(env, prep(env, _diff("model_io.py", MODEL_IO, after)),
                    "model_io.py") == after


# -- the environment and the prompt ------------------------------------------------------------
def test_a_region_missing_from_its_file_fails_the_environment_load(env: Environment) -> None:
    toml = env.root / "environment.toml"
    toml.write_text(TOML.replace('"TIME_LIMIT_S"', '"def validate"'))
    with pytest.raises(EnvironmentError_) as info:
        environments.load(env.root)
    assert "field 'protected_regions.train_grpo.py'" in str(info.value)
    assert "`def validate`" in str(info.value) or "'def validate'" in str(info.value)
    assert "not defined at the top level of train_grpo.py" in str(info.value)
    toml.write_text(TOML.replace('"TIME_LIMIT_S"', '"save checkpoint now"'))
    with pytest.raises(EnvironmentError_, match="is not a definition"):
        environments.load(env.root)
    toml.write_text(TOML.replace('"TIME_LIMIT_S"', '"Trainer.step"'))
    with pytest.raises(EnvironmentError_, match="Trainer.step"):
        environments.load(env.root)


def test_the_coder_is_told_the_regions_and_the_shadowing_rule(env: Environment) -> None:
    prompt = ideation.implement_prompt(env, "warm up for 5 steps")[-1]["content"]
    assert ("Definitions of train_grpo.py that must stay exactly as they are" in prompt
            and "def save_checkpoint, class Config, TIME_LIMIT_S, Trainer.reward" in prompt)
    assert "math_verify.py" in prompt and "sitecustomize.py" in prompt


def test_an_environment_without_an_evaluation_stage_gets_the_same_rules(
        env: Environment) -> None:
    toml = env.root / "environment.toml"
    toml.write_text(TOML.replace('[evaluate]\ncommand = "python evaluate.py"\n'
                                 'files = ["evaluate.py", "model_io.py"]\ntimeout = 60\n', ""))
    legacy = environments.load(env.root)
    assert legacy.evaluation is None and DiffRules.of(legacy).evaluator_files == ()
    refused(prep(legacy, _new_file("math_verify.py", "x = 1\n")),
            "imported by evaluate.py, a protected file")
    value = TRAIN.replace("TIME_LIMIT_S = 3600", "TIME_LIMIT_S = 36000")
    refused(prep(legacy, _diff("train_grpo.py", TRAIN, value)), "`TIME_LIMIT_S` was changed")
