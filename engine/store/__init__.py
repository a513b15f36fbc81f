"""The workspace database: tables, schema versions, and every query (SQL lives only here).

`Store`, `StoreError` and `DB_NAME` are loaded on first use (PEP 562), so that importing a
light submodule — `engine.store.first_frame` (stdlib sqlite3) or `engine.store.views` — does not
pay for SQLAlchemy and SQLModel (~0.33 s here) before the console's first frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.db import DB_NAME, Store, StoreError

__all__ = ["DB_NAME", "Store", "StoreError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engine.store import db

        return getattr(db, name)
    raise AttributeError(f"module 'engine.store' has no attribute {name!r}")
