"""Writing a new idea for the search, in the reference's `[Experiment] … [Code Changes]` form,
optionally with the researcher's own diff (a path to a unified diff file), which then is the
idea's implementation. The same dialog edits an idea when the search's ideator cannot
implement new text (the offline catalog): there the diff is required.

A diff is checked against the search's environment before the dialog closes (in a thread:
it test-applies the patch); one that does not apply keeps the dialog open with the file and
the failing hunk named, and nothing is sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static, TextArea

TEMPLATE = "[Experiment] \n[Code Changes] \n"


@dataclass(frozen=True)
class AddedIdea:
    text: str
    diff: str | None = None  # normalised, checked against the environment

    @property
    def note(self) -> str:
        how = "with your diff" if self.diff else "its implementer writes the diff"
        return f"your idea is on its way to the engine ({how})"


class AddIdeaScreen(ModalScreen[AddedIdea | None]):
    """Dismisses with the idea (text and checked diff) on ctrl+s, or None on escape."""

    CSS_PATH = "add_idea.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, search_name: str, epoch: int, text: str = TEMPLATE, *,
                 env_path: str | None = None, catalog: bool = False,
                 editing: int | None = None) -> None:
        super().__init__()
        self.search_name = search_name
        self.epoch = epoch
        self.text = text
        self.env_path = env_path
        self.catalog = catalog
        self.editing = editing

    def compose(self) -> ComposeResult:
        what = (f"Edit idea #{self.editing} of {self.search_name}" if self.editing is not None
                else f"A new idea for {self.search_name} (epoch {self.epoch})")
        with Vertical(id="dialog"):
            yield Static(what, id="title")
            yield TextArea(self.text, id="text", soft_wrap=True, show_line_numbers=False)
            need = "required" if self.catalog else "optional"
            yield Input(placeholder=f"diff file ({need}): a unified diff against the "
                        "environment's code, run as the idea's implementation", id="diff")
            yield Static("", id="error")
            yield Static(self._hint(), id="hint")

    def _hint(self) -> str:
        keys = "ctrl+s: save · esc: cancel · tab: to the diff file"
        if self.catalog:
            return (f"{keys} — the catalog ideator cannot implement new text: give the diff "
                    "that implements it (or run the search with a model)")
        return (f"{keys} — approved as a human idea; with a diff file it runs that diff, "
                "without one the implementer model writes it")

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        first = self.text.split("\n", 1)[0]
        area.cursor_location = (0, len(first))

    async def action_save(self) -> None:
        text = self.query_one(TextArea).text.strip()
        empty = text.replace("[Experiment]", "").replace("[Code Changes]", "").strip()
        if not empty:
            self._refuse("the idea is empty; write what to try, or esc to cancel")
            return
        path = self.query_one("#diff", Input).value.strip()
        if not path:
            if self.catalog:
                self._refuse("the catalog ideator cannot implement new text: give the path of "
                             "a diff that implements it, or run the search with a model")
                return
            self.dismiss(AddedIdea(text))
            return
        if self.env_path is None:  # no environment to check it against: never sent unchecked
            self._refuse("this search's environment is unknown: the diff cannot be checked")
            return
        from engine.human_diff import DiffRefused, check_for_search

        try:
            diff = await asyncio.to_thread(check_for_search, self.env_path, path)
        except DiffRefused as exc:
            self._refuse(f"{exc}; nothing was sent")
            return
        self.dismiss(AddedIdea(text, diff))

    def _refuse(self, message: str) -> None:
        self.query_one("#error", Static).update(message)
        self.notify(message, severity="warning")

    def action_cancel(self) -> None:
        self.dismiss(None)
