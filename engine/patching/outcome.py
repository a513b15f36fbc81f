"""What patching hands back to its callers, and its error types."""

from __future__ import annotations

from dataclasses import dataclass


class PatchError(Exception):
    """A diff that cannot be applied; the message says which file and hunk, and why."""


class Rejected(Exception):
    """A model answer that cannot become a patch; each problem is written for the model."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)

    def for_model(self) -> str:
        if len(self.problems) == 1:
            return f"The patch was not applied: {self.problems[0]}"
        items = "\n".join(f"- {p}" for p in self.problems)
        return f"The patch was not applied, for these reasons:\n{items}"


@dataclass(frozen=True)
class PatchOutcome:
    """The result of turning one model answer into a patch for an environment."""

    ok: bool
    #: normalised unified diff ('--- a/<rel>' / '+++ b/<rel>', LF, final newline) when ok
    diff: str | None
    #: when not ok: what was wrong and what to do, written for the model (fed back on retry)
    error: str | None
    #: mechanical repairs that were applied, for people reading the attempt
    repairs: tuple[str, ...]
    changed_files: tuple[str, ...]
    #: "unified" | "search_replace": the form the model answered in
    form: str
