"""Why a key of the ideas board cannot apply now, in words (issue 15: no key does nothing
without saying why). Read by `IdeasScreen.on_key` for the keys whose action is refused."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from console.widgets.idea_board import IdeaBoard
    from engine.store.views import IdeaView, SearchView


def why_not(s: SearchView | None, board: IdeaBoard, action: str) -> str:
    """Why `action` cannot apply to the board's cursor (or marked rows) in search `s`."""
    if s is None:
        return "no search is open: press 0 to pick one"
    if s.status == "imported":
        return "this search is imported read-only: it takes no decisions"
    if action in ("approve", "reject", "edit"):
        rows = board.targets()
        if not rows:
            return "no idea is highlighted"
        row = rows[0]
        if len(rows) == 1 and row.pending:
            return f"#{row.id} already has a decision on its way ({row.pending})"
        allowed = {"approve": "a proposed idea or a diff under review",
                   "reject": "a proposed or approved idea, or a diff under review",
                   "edit": "a proposed or approved idea"}[action]
        which = f"#{row.id} is {row.status}" if len(rows) == 1 else "no marked idea fits"
        done = {"approve": "approved", "reject": "rejected", "edit": "edited"}[action]
        return f"{which}: only {allowed} can be {done}"
    if action == "go":
        if s.status == "finished":
            return "the search is finished: it has no gate to release"
        return f"no gate to release: the search is in phase {s.phase}"
    if action in ("note", "retry") and board.current is None:
        return "no idea is highlighted"
    if action == "retry" and board.current is not None:
        row = board.current
        return f"#{row.id} is {row.status}: only a failed or cancelled idea can be retried"
    if action == "add_idea":
        return "the search is finished: it takes no new ideas"
    if action == "stop_search":
        return "no engine runs this search: nothing to stop (R resumes it)"
    if action == "resume_search":
        return ("the search is finished: nothing to resume" if s.status == "finished"
                else "an engine already runs this search")
    return "it does not apply here"


#: Keys of the idea's detail whose refusal is said (its other keys always apply).
DETAIL_WHY_NOT = ("approve", "reject", "edit", "quarantine", "toggle_split")


def why_not_in_detail(s: SearchView | None, idea: IdeaView | None, pending: bool,
                      action: str) -> str:
    """Why `action` cannot apply to the idea the detail screen shows."""
    if idea is None or s is None:
        return "the idea is still loading"
    if s.status == "imported":
        return "this search is imported read-only: it takes no decisions"
    if action in ("approve", "reject", "edit"):
        if pending:
            return f"#{idea.id} already has a decision on its way"
        allowed = {"approve": "a proposed idea or a diff under review",
                   "reject": "a proposed or approved idea, or a diff under review",
                   "edit": "a proposed or approved idea"}[action]
        done = {"approve": "approved", "reject": "rejected", "edit": "edited"}[action]
        return f"#{idea.id} is {idea.status}: only {allowed} can be {done}"
    if action == "quarantine":
        return f"#{idea.id} has no suspicious result waiting for a verdict"
    if action == "toggle_split":
        return "only the Diff pane splits: ] moves to it"
    return "it does not apply here"
