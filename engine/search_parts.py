"""What every part of the search engine may read of `engine.search.SearchEngine`: the
attributes its mixins (jobs, baseline, repeats, repairs, ideas) share, declared once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.environments import Environment, Profile
    from engine.executors.base import Executor
    from engine.store import Store
    from engine.store.views import SearchView


class EngineParts:
    store: Store
    search_id: int
    env: Environment
    profile: Profile
    executor: Executor
    llm: Any
    progress: Callable[[str], None]
    tasks: dict[str, Any]
    _fatal: tuple[int, str] | None
    _wake: Any  # asyncio.Event: set, the loop's next tick comes at once
    search: SearchView  # a property of SearchEngine: the search as stored now
