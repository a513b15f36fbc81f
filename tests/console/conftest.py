"""Fixtures of the console's tests: a deterministic workspace and an app pinned in time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from console import fmt
from console.app import IdeaforgeApp
from tests.console.builders import NOW, Built, build


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The console's clock at NOW, times in UTC, no user config file."""
    monkeypatch.setattr(fmt, "clock", lambda: NOW)
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("IDEAFORGE_CONFIG", "/nonexistent/ideaforge/config.toml")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def built(tmp_path: Path, pinned: None) -> Iterator[Built]:
    result = build(tmp_path / "ws")
    yield result
    result.store.close()


@pytest.fixture
def make_app(built: Built) -> Iterator[Callable[..., IdeaforgeApp]]:
    """Apps on the built workspace; a test fails if any of their workers failed."""
    apps: list[IdeaforgeApp] = []

    def make(search: str | int | None = "toy-1", **kwargs: object) -> IdeaforgeApp:
        kwargs.setdefault("keys", {})
        kwargs.setdefault("poll_s", 0.1)
        app = IdeaforgeApp(built.store.workspace, search, **kwargs)  # type: ignore[arg-type]
        app.workspace_label = "/ws"
        apps.append(app)
        return app

    yield make
    errors = [e for app in apps for e in app.worker_errors]
    assert not errors, f"background tasks failed: {errors!r}"

