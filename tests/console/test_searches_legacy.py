"""The searches list (open, read-only imports) and importing the reference code's output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from console.app import IdeaforgeApp
from console.legacy import NO_RESULT, import_legacy
from console.screens.ideas import IdeasScreen
from console.screens.searches import SearchesScreen
from engine.store import Store, StoreError, ops
from tests.console.builders import Built
from tests.console.helpers import board, until

MakeApp = Callable[..., IdeaforgeApp]


async def test_searches_list_opens_a_search_on_the_board(make_app: MakeApp,
                                                         built: Built) -> None:
    app = make_app(search=None)
    async with app.run_test(size=(150, 30)) as pilot:
        screen = await until(pilot, lambda: isinstance(app.screen, SearchesScreen)
                             and len(app.screen.summaries) == 2 and app.screen,
                             what="the searches")
        first = screen.current
        assert first is not None and first.search.name == "toy-1"
        assert first.best == 4.0 and first.cost_usd == pytest.approx(0.42)
        assert first.ideas["proposed"] == 3
        assert screen.check_action("stop_search", ())  # its engine beats
        assert not screen.check_action("resume_search", ())
        await pilot.press("down")
        assert screen.current.search.status == "imported"
        assert not screen.check_action("resume_search", ())  # imported: never runs
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, IdeasScreen)
                    and board(pilot).total == 2, what="the imported board")
        assert app.search_id == built.imported_id


def write_legacy(folder: Path) -> Path:
    """The reference code's output: two epochs of proposals and the ranked database."""
    run = folder / "ideas_myrun"
    run.mkdir(parents=True)
    e0 = ["[Experiment] Use RMSNorm.\n\n[Code Changes] Replace LayerNorm with RMSNorm.",
          "[Experiment] Raise the learning rate.\n\n[Code Changes] lr 6e-4 -> 1e-3.",
          "[Experiment] Break everything.\n\n[Code Changes] Divide by zero."]
    e1 = ["[Experiment] RMSNorm and a higher learning rate.\n\n[Code Changes] Both."]
    (run / "ideas_epoch0.json").write_text(json.dumps(e0))
    (run / "ideas_epoch1.json").write_text(json.dumps(e1))
    (run / "ideas_epoch1_metadata.json").write_text("[]")  # newer runs write this; ignored
    database = [
        {"epoch": 1, "idea_id": "idea_0", "idea": e1[0], "lowest_val_loss": 3.21},
        {"epoch": 0, "idea_id": "idea_0", "idea": "[Experiment] Use RMSNorm.\n[Code Changes] "
         "Replace LayerNorm with RMSNorm.", "lowest_val_loss": 3.24},  # spacing differs
        {"epoch": 0, "idea_id": "idea_1", "idea": e0[1], "lowest_val_loss": 3.30},
        {"epoch": 0, "idea_id": "idea_9", "idea": "[Experiment] Only in the database.",
         "lowest_val_loss": 3.5},
    ]
    (run / "database.json").write_text(json.dumps(database))
    return folder


def test_legacy_run_imports_as_a_read_only_search(tmp_path: Path) -> None:
    folder = write_legacy(tmp_path / "reference")
    store = Store(tmp_path / "ws")
    view = import_legacy(store, folder, None)
    assert (view.name, view.status, view.goal) == ("legacy-myrun", "imported", "minimize")
    assert view.metric_name == "lowest_val_loss" and view.baseline == 3.255
    assert (view.epochs, view.env_name) == (2, "nanogpt")
    ideas = ops.list_ideas(store, view.id)
    by_title = {i.title.rstrip("."): i for i in ideas}
    assert len(ideas) == 5
    assert by_title["Use RMSNorm"].score == 3.24  # matched despite different spacing
    assert by_title["Raise the learning rate"].score == 3.30
    assert by_title["RMSNorm and a higher learning rate"].epoch == 1
    broken = by_title["Break everything"]
    assert broken.status == "failed" and broken.reason == NO_RESULT
    assert by_title["Only in the database"].score == 3.5  # a result is never dropped
    again = import_legacy(store, folder, None)  # a second import gets its own name
    assert again.name == "legacy-myrun-2"
    with pytest.raises(StoreError, match="already exists"):
        import_legacy(store, folder, "legacy-myrun")
    store.close()


def test_legacy_import_says_what_is_wrong(tmp_path: Path) -> None:
    store = Store(tmp_path / "ws")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not the reference code's output"):
        import_legacy(store, tmp_path / "empty", None)
    two = tmp_path / "two"
    for run in ("ideas_a", "ideas_b"):
        (two / run).mkdir(parents=True)
        (two / run / "ideas_epoch0.json").write_text('["[Experiment] x"]')
    with pytest.raises(StoreError, match="several runs"):
        import_legacy(store, two, None)
    bad = tmp_path / "bad" / "ideas_r"
    bad.mkdir(parents=True)
    (bad / "ideas_epoch0.json").write_text("{not json")
    with pytest.raises(StoreError, match="not readable JSON"):
        import_legacy(store, bad.parent, None)
    assert ops.list_searches(store) == []  # nothing half-imported
    store.close()


async def test_an_imported_run_opens_in_the_console_read_only(tmp_path: Path,
                                                               pinned: None) -> None:
    store = Store(tmp_path / "ws")
    view = import_legacy(store, write_legacy(tmp_path / "reference"), "ref")
    store.close()
    app = IdeaforgeApp(tmp_path / "ws", "ref", keys={}, poll_s=0.1)
    async with app.run_test(size=(150, 30)) as pilot:
        await until(pilot, lambda: board(pilot).total == 5 and app.screen.search,
                    what="the imported board")
        assert app.search_id == view.id
        assert not app.screen.check_action("approve", ())
        assert not app.screen.check_action("add_idea", ())
    assert not app.worker_errors
