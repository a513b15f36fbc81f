"""What patching hands back to its callers, and its error types."""

from __future__ import annotations

from dataclasses import dataclass


class PatchError(Exception):
    """A diff that cannot be applied; the message says which file and hunk, and why."""


class Rejected(Exception):
    """A model answer that cannot become a patch; each problem is written for the model."""

    def __init__(self, *problems: str, advice: str = "") -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)
        self.advice = advice  # said once after all problems, however many share it

    def for_model(self) -> str:
        if len(self.problems) == 1:
            text = f"The patch was not applied: {self.problems[0]}"
        else:
            items = "\n".join(f"- {p}" for p in self.problems)
            text = f"The patch was not applied, for these reasons:\n{items}"
        return f"{text}\n{self.advice}" if self.advice else text


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
