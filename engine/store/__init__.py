"""The workspace database: tables, schema versions, and every query (SQL lives only here)."""

from engine.store.db import DB_NAME, Store, StoreError

__all__ = ["DB_NAME", "Store", "StoreError"]
