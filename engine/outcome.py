"""How an engine run ends: its exit code (documented in the README) and one-line message."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_BUDGET, EXIT_BUSY, EXIT_STOPPED = 0, 1, 2, 3, 4, 5


class EngineBusy(RuntimeError):
    """Another engine already drives the search."""


@dataclass
class Outcome:
    code: int
    message: str
