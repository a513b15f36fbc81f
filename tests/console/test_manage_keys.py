"""Managing searches and ideas from the console (issue 15): D deletes a search (asked first), r
renames it, N writes a note on an idea, t retries a failed one as a new attempt with lineage;
each refusal says why and changes nothing."""

from __future__ import annotations

from collections.abc import Callable

from textual.widgets import DataTable, Input, Static

from console.app import IdeaforgeApp
from console.screens.confirm import ConfirmScreen
from console.screens.idea_detail import IdeaDetailScreen
from console.screens.prompt import PromptScreen
from console.screens.searches import SearchesScreen
from engine.store import console_queries as cq
from engine.store import manage, ops
from tests.console.builders import Built
from tests.console.helpers import board, cursor_to, until
from tests.console.test_detail import shown

MakeApp = Callable[..., IdeaforgeApp]


def notes(app: IdeaforgeApp) -> list[str]:
    return [n.message for n in app._notifications]


def names_shown(app: IdeaforgeApp) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def _searches(pilot: object, app: IdeaforgeApp) -> None:
    await until(pilot, lambda: isinstance(app.screen, SearchesScreen)  # type: ignore[arg-type]
                and len(names_shown(app)) == 2, what="the searches")


async def test_rename_and_delete_a_search(make_app: MakeApp, built: Built) -> None:
    app = make_app(search=None)
    async with app.run_test(size=(150, 40)) as pilot:
        await _searches(pilot, app)
        await pilot.press("down")  # legacy-grpo: no engine
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the name")
        app.screen.query_one(Input).value = "toy-1"  # taken
        await pilot.press("enter")
        await until(pilot, lambda: any("already exists" in n for n in notes(app)), 30,
                    "the refusal", state=lambda: notes(app))
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the name")
        app.screen.query_one(Input).value = "grpo-reference"
        await pilot.press("enter")
        await until(pilot, lambda: "grpo-reference" in names_shown(app), 30, "the new name",
                    state=lambda: names_shown(app))
        assert ops.find_search(built.store, built.imported_id).name == "grpo-reference"

        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("n")  # no: nothing goes
        await until(pilot, lambda: isinstance(app.screen, SearchesScreen), what="the list")
        assert len(cq.search_summaries(built.store)) == 2
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: names_shown(app) == ["toy-1"], 30, "the search gone",
                    state=lambda: names_shown(app))
        assert [s.search.name for s in cq.search_summaries(built.store)] == ["toy-1"]

        await pilot.press("up", "D")  # toy-1 has an engine attached
        await until(pilot, lambda: any("stop it first" in n for n in notes(app)), 30,
                    "the refusal", state=lambda: notes(app))
        assert not isinstance(app.screen, ConfirmScreen)
        assert len(cq.search_summaries(built.store)) == 1


async def test_note_and_retry_an_idea_from_the_board(make_app: MakeApp, built: Built) -> None:
    crash = built.ideas["crash"]
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        await cursor_to(pilot, built.ideas["a"])
        await pilot.press("N")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the note")
        await pilot.press(*"try", "space", *"longer")
        await pilot.press("enter")
        await until(pilot, lambda: manage.get_note(built.store, built.ideas["a"])
                    == "try longer", 30, "the note stored")
        await pilot.press("N")  # the note is there to edit
        await until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the note")
        assert app.screen.query_one(Input).value == "try longer"
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, PromptScreen), what="closed")
        await pilot.press("enter")  # the idea's detail shows the note above its text
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen)
                    and app.screen.detail is not None, what="the detail")
        # (the text pane is filled from the loaded detail a frame later)
        text = lambda: shown(app.screen.query_one("#idea-text", Static))
        said = await until(pilot, lambda: text().startswith("Note: try longer") and text(),
                           what="the note in the detail", state=text)
        assert "Raise bonus A" in said, said
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, IdeaDetailScreen), what="back")

        await pilot.press("t")  # a scored idea: retry does not apply
        await until(pilot, lambda: any("only a failed or cancelled idea can be retried" in n
                                       for n in notes(app)), 30, "the reason")
        await cursor_to(pilot, crash)
        await pilot.press("t")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: board(pilot).total == 12, 30, "the new attempt")
        (new,) = [r for r in cq.children_briefs(built.store, crash)]
        assert new.kind == "retry" and new.status == "implemented"  # its diff runs again
        await until(pilot, lambda: any(f"#{crash} retried as #{new.id}" in n
                                       for n in notes(app)), what="the retry's notice",
                    state=lambda: notes(app))
