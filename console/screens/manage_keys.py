"""Managing from the console (issue 15): delete and rename a search, note an idea, retry a
failed or cancelled one. Each is `engine.store.manage`'s function run in a thread, after a
question (delete, retry) or a line typed (rename, note); a refusal is said in a notification
with its reason, and nothing is changed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from console.widgets.search_header import engine_alive

if TYPE_CHECKING:
    from textual.screen import Screen

    from engine.store.views import SearchView

#: Idea statuses a retry applies to (engine.store.manage.RETRYABLE, without its import).
RETRYABLE = frozenset({"failed", "implement_failed"})


def _console(screen: Screen[Any]) -> Any:
    return screen.app


async def _run(screen: Screen[Any], title: str, fn: Any, *args: Any) -> Any:
    """`fn(store, *args)` in a thread; None (and a warning naming why) when it is refused."""
    from engine.store import StoreError

    try:
        return await asyncio.to_thread(fn, _console(screen).store(), *args)
    except StoreError as exc:
        screen.notify(str(exc), title=title, severity="warning", timeout=8)
        return None


async def delete_search(screen: Screen[Any], search: SearchView) -> None:
    from console.screens.confirm import ConfirmScreen
    from engine.store import manage

    if engine_alive(search):
        screen.notify(f"an engine runs {search.name!r}: stop it first (X), then delete it",
                      title="delete", severity="warning")
        return
    if not await screen.app.push_screen_wait(ConfirmScreen(
            f"Delete search {search.name!r}?", "Its ideas, jobs, metrics, decisions and "
            "events, and its job folders in this workspace, are removed for good.",
            yes="Delete")):
        return
    deleted = await _run(screen, "delete", manage.delete_search, search.id)
    if deleted is None:
        return
    app = _console(screen)
    if app.search_id == search.id or app.search_ref in (search.id, search.name):
        app.search_ref = None
        app.search_id = None
    screen.notify(f"search {deleted.name!r} deleted ({sum(deleted.rows.values())} rows)",
                  title="delete")


async def rename_search(screen: Screen[Any], search: SearchView) -> None:
    from console.screens.prompt import PromptScreen
    from engine.store import manage

    new = await screen.app.push_screen_wait(PromptScreen(
        f"Rename search {search.name!r}", "A name without spaces, not only digits.",
        value=search.name))
    if not new or new == search.name:
        return
    old = await _run(screen, "rename", manage.rename_search, search.id, new)
    if old is None:
        return
    app = _console(screen)
    if app.search_ref == old:
        app.search_ref = search.id  # the name it was opened by is gone
    screen.notify(f"search {old!r} is now {new!r}", title="rename")


async def note_idea(screen: Screen[Any], idea_id: int) -> None:
    from console.screens.prompt import PromptScreen
    from engine.store import manage

    store = _console(screen).store()
    current = await asyncio.to_thread(manage.get_note, store, idea_id)
    text = await screen.app.push_screen_wait(PromptScreen(
        f"Note on idea #{idea_id}", "Yours alone: the search does not read it (an empty "
        "line removes it).", placeholder="e.g. rerun with a longer schedule",
        value=current or ""))
    if text is None or text == (current or ""):
        return
    await _run(screen, "note", manage.set_note, idea_id, text or None)
    screen.notify(f"note on #{idea_id} " + ("saved" if text else "removed"), title="note")


async def retry_idea(screen: Screen[Any], idea_id: int, status: str) -> int | None:
    from console.screens.confirm import ConfirmScreen
    from engine.store import manage

    if status not in RETRYABLE:
        screen.notify(f"#{idea_id} is {status}: only a failed or cancelled idea can be retried",
                      title="retry", severity="warning")
        return None
    if not await screen.app.push_screen_wait(ConfirmScreen(
            f"Retry idea #{idea_id}?", "A new attempt of it, with this one as its parent, "
            "joins the search's current epoch.", yes="Retry")):
        return None
    done = await _run(screen, "retry", manage.retry_idea, idea_id)
    if done is None:
        return None
    after = (f"; `ideaforge resume {done.search}` (R) runs it" if done.reopened
             else "")
    screen.notify(f"#{idea_id} retried as #{done.idea_id} ({done.status}){after}",
                  title="retry", timeout=8)
    return int(done.idea_id)
