"""Turns model answers into checked, normalised diffs and applies them to environment copies.

Public API (see ARCHITECTURE.md, "Diffs"):

- `prepare_patch(answer, env_dir, protected, protected_lines, *, rules) -> PatchOutcome`
  (`rules`: `engine.protection.DiffRules.of(env)`, the protected regions and evaluator files)
- `apply_diff(files, diff) -> dict[str, str]` (pure)
- `apply_to_copy(env_dir, diff, dest)`
- `combine_diffs(env_dir, diffs) -> str`
"""

from engine.patching.apply import apply_diff, apply_to_copy, combine_diffs, touched_paths
from engine.patching.outcome import PatchError, PatchOutcome
from engine.patching.prepare import prepare_patch

__all__ = ["PatchError", "PatchOutcome", "apply_diff", "apply_to_copy", "combine_diffs",
           "prepare_patch", "touched_paths"]
