"""The command registry: every key it declares works on its screens, the config file remaps
keys, the help screen and the palette come from the same table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from console import commands
from console.app import IdeaforgeApp
from console.config import load
from console.screens.compare import CompareScreen
from console.screens.help import HelpScreen
from console.screens.idea_detail import IdeaDetailScreen
from console.screens.ideas import IdeasScreen
from console.screens.jobs import JobsScreen
from console.screens.lineage import LineageScreen
from console.screens.searches import SearchesScreen
from engine.store import ops
from tests.console.builders import Built
from tests.console.helpers import board, cursor_to, until

MakeApp = Callable[..., IdeaforgeApp]
SCREENS = {"app": IdeaforgeApp, "searches": SearchesScreen, "ideas": IdeasScreen,
           "detail": IdeaDetailScreen, "jobs": JobsScreen, "lineage": LineageScreen,
           "compare": CompareScreen}


@pytest.mark.parametrize("scope", list(commands.SCOPES))
def test_every_command_has_its_action_on_its_screen(scope: str) -> None:
    cls = SCREENS[scope]
    for c in commands.commands_for(scope):
        name = c.action.removeprefix("app.").split("(", 1)[0]
        owner = IdeaforgeApp if c.action.startswith("app.") else cls
        assert hasattr(owner, f"action_{name}"), f"{c.id}: {owner.__name__} lacks {name}"
    keys = [c.key for c in commands.commands_for(scope)]
    if scope != "app":
        app_keys = {c.key for c in commands.commands_for("app")}
        assert not app_keys & set(keys), "a screen key would hide a global one"
    assert len(keys) == len(set(keys)), f"two commands share a key in {scope}"


def test_config_file_remaps_keys_and_reports_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[keys]\napprove = "A"\nreject = "R, ctrl+r"\nwarp = "w"\n'
                    '[prices]\n"x/y" = [1, 2]\n')
    config = load(path)
    assert config.keys == {"approve": "A", "reject": "R,ctrl+r"}
    assert len(config.problems) == 1 and "warp" in config.problems[0]
    path.write_text("[keys\n")
    assert "not read" in load(path).problems[0]


async def test_a_remapped_key_approves_and_the_old_one_does_not(
        make_app: MakeApp, built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[keys]\napprove = "A"\n')
    monkeypatch.setenv("IDEAFORGE_CONFIG", str(config))
    app = make_app(keys=None)  # read from the config file, as in use
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        await cursor_to(pilot, built.ideas["p2"])
        await pilot.press("a")
        await pilot.pause(0.2)
        assert not [d for d in ops.pending_decisions(built.store, built.search_id)
                    if d.idea_id == built.ideas["p2"]]
        await pilot.press("A")
        await until(pilot, lambda: [d for d in ops.pending_decisions(built.store,
                                                                     built.search_id)
                                    if d.idea_id == built.ideas["p2"]], what="approval")
        await pilot.press("question_mark")
        help_screen = await until(pilot, lambda: isinstance(app.screen, HelpScreen)
                                  and app.screen, what="help")
        entries = help_screen.entries()
        assert {c.id for c in commands.REGISTRY} <= {c.id for _, _, c in entries}
        keys = {(scope, c.id): key for scope, key, c in entries}
        assert keys[("ideas", "approve")] == "A" and keys[("detail", "approve")] == "A"
        assert entries[0][0] == "ideas"  # where the reader came from, first


async def test_the_palette_offers_what_applies_and_runs_it(make_app: MakeApp,
                                                           built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11 and app.screen.search, what="board")
        await cursor_to(pilot, built.ideas["a"])  # scored: approve does not apply
        provider = commands.RegistryCommands(app.screen)
        offered = {c.id for c, _ in provider._available()}
        assert "approve" not in offered and "go" in offered and "help" in offered
        await cursor_to(pilot, built.ideas["p2"])
        assert "approve" in {c.id for c, _ in provider._available()}
        await pilot.press("colon")
        await pilot.press(*"approve")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: [d for d in ops.pending_decisions(built.store,
                                                                     built.search_id)
                                    if d.idea_id == built.ideas["p2"]], what="approval")
