"""The one command registry: every key of the console is declared here, once.

Each `Command` has an id (what `[keys]` in the config file remaps), a default key, the action it
runs, and the scopes (screens) where it applies. From this table come the screens' `BINDINGS`,
the command palette's entries and the help screen, so the three can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from textual.app import App
    from textual.screen import Screen

#: Scopes in the order the help screen lists them.
SCOPES: dict[str, str] = {
    "app": "Everywhere",
    "searches": "Searches (0)",
    "ideas": "Ideas board (1)",
    "detail": "Idea detail",
    "jobs": "Jobs and hosts (2)",
    "lineage": "Lineage (3)",
    "compare": "Compare (c on the board)",
}


@dataclass(frozen=True)
class Command:
    id: str
    key: str
    action: str
    label: str  # short, for the footer
    help: str  # one sentence, for the help screen and the palette
    scopes: tuple[str, ...]
    show: bool = True  # in the footer
    palette: bool = True
    priority: bool = False
    key_display: str | None = None


def _c(id_: str, key: str, action: str, label: str, help_: str, *scopes: str,
       show: bool = True, palette: bool = True, priority: bool = False,
       key_display: str | None = None) -> Command:
    return Command(id_, key, action, label, help_, scopes, show, palette, priority, key_display)


REGISTRY: tuple[Command, ...] = (
    # everywhere
    _c("mode.searches", "0", "app.mode('searches')", "Searches",
       "Show every search in the workspace", "app", show=False),
    _c("mode.ideas", "1", "app.mode('ideas')", "Ideas", "Show the ideas board", "app",
       show=False),
    _c("mode.jobs", "2", "app.mode('jobs')", "Jobs", "Show jobs and hosts", "app",
       show=False),
    _c("mode.lineage", "3", "app.mode('lineage')", "Lineage", "Show the lineage tree", "app",
       show=False),
    _c("mode.stats", "4", "app.mode('stats')", "Stats",
       "Show execution statistics: ideas implemented, crashed, fixed, scored per coder model",
       "app", show=False),
    _c("help", "question_mark", "app.help", "Help", "List every key", "app",
       key_display="?"),
    _c("palette", "colon", "app.command_palette", "Commands", "Open the command palette",
       "app", key_display=":"),
    _c("quit", "q", "app.quit", "Quit",
       "Leave the console (running searches keep running)", "app"),
    # searches
    _c("open", "enter", "open", "Open", "Open the highlighted item", "searches", "ideas",
       "jobs", "lineage", palette=False),
    _c("search.new", "n", "new_search", "New", "Start a new search", "searches"),
    _c("search.import", "i", "import_legacy", "Import",
       "Import the reference code's JSON output as a read-only search", "searches"),
    _c("search.stop", "X", "stop_search", "Stop", "Stop the search (asks first)", "searches",
       "ideas"),
    _c("search.resume", "R", "resume_search", "Resume",
       "Resume the search in a background engine", "searches", "ideas"),
    _c("search.delete", "D", "delete_search", "Delete",
       "Delete the search: its ideas, jobs, metrics and job folders (asks first)", "searches"),
    _c("search.rename", "r", "rename_search", "Rename", "Give the search another name",
       "searches"),
    # the ideas board
    _c("mark", "space", "mark", "Mark", "Mark the row for a batch decision", "ideas",
       palette=False),
    _c("mark.all", "asterisk", "mark_all", "Mark all",
       "Mark every loaded idea that awaits a decision", "ideas", show=False,
       key_display="*"),
    _c("approve", "a", "approve", "Approve", "Approve the idea (or the marked ones)", "ideas",
       "detail"),
    _c("reject", "r", "reject", "Reject",
       "Reject with an optional reason that steers later prompts", "ideas", "detail"),
    _c("edit", "e", "edit", "Edit", "Edit the idea in $EDITOR as a new version", "ideas",
       "detail"),
    _c("add", "n", "add_idea", "Add", "Add your own idea to the search", "ideas"),
    _c("idea.note", "N", "note", "Note",
       "Write a note on the idea (yours: the search does not read it)", "ideas", show=False),
    _c("idea.retry", "t", "retry", "Retry",
       "Retry a failed or cancelled idea: a new attempt with it as parent (asks first)",
       "ideas", show=False),
    _c("go", "g", "go", "Go", "Release the gate: undecided ideas are skipped (asks first)",
       "ideas"),
    _c("filter", "slash", "filter", "Filter",
       "Filter: words, status:proposed, origin:exploit, epoch:3, #12", "ideas",
       key_display="/"),
    _c("epoch.prev", "left_square_bracket", "epoch(-1)", "Epoch-",
       "Show the previous epoch (or all)", "ideas", show=False, key_display="["),
    _c("epoch.next", "right_square_bracket", "epoch(1)", "Epoch+",
       "Show the next epoch (or all)", "ideas", show=False, key_display="]"),
    _c("sort", "s", "sort", "Sort", "Sort by the next column", "ideas", show=False),
    _c("sort.reverse", "S", "sort_reverse", "Reverse", "Reverse the sort order", "ideas",
       show=False),
    _c("back", "escape", "back", "Back",
       "Back: clear marks or the filter, close a pane, leave a view", "ideas", "detail",
       "lineage", "jobs", palette=False, key_display="esc"),
    _c("compare", "c", "compare", "Compare",
       "Overlay the marked ideas' curves (or the highlighted one's) with the baseline's",
       "ideas"),
    # compare
    _c("compare.metric", "m", "metric(1)", "Metric", "Show the next metric", "compare"),
    _c("compare.metric.prev", "M", "metric(-1)", "Metric-", "Show the previous metric",
       "compare", show=False),
    _c("compare.close", "escape", "close", "Back", "Back to the board", "compare",
       palette=False, key_display="esc"),
    # idea detail
    _c("pane.next", "right_square_bracket", "pane(1)", "Pane+",
       "Next pane (idea, lineage, diff, attempts, log, curves)", "detail", key_display="]"),
    _c("pane.prev", "left_square_bracket", "pane(-1)", "Pane-", "Previous pane", "detail",
       show=False, key_display="["),
    _c("diff.split", "d", "toggle_split", "Split/unified", "Show the diff split or unified",
       "detail"),
    _c("quarantine.accept", "y", "quarantine('accept')", "Accept result",
       "Accept a quarantined (suspicious) result: it may become a parent", "detail"),
    _c("quarantine.discard", "x", "quarantine('discard')", "Discard result",
       "Discard a quarantined result (asks first)", "detail"),
    _c("lineage.jump", "l", "lineage", "Lineage", "Show this idea's ancestry in the lineage view",
       "detail"),
    # jobs and hosts
    _c("job.cancel", "c", "cancel_job", "Cancel", "Cancel the highlighted job (asks first)",
       "jobs"),
    _c("jobs.scope", "t", "toggle_scope", "This/all",
       "Show the jobs of this search or of every search", "jobs"),
    # lineage
    _c("lineage.ancestry", "p", "ancestry", "Ancestry", "Show the highlighted idea's ancestry",
       "lineage"),
    _c("lineage.descendants", "c", "descendants", "Descendants",
       "Show the highlighted idea's descendants", "lineage"),
    _c("lineage.forest", "f", "forest", "Forest", "Show every founder and its descendants",
       "lineage"),
)

BY_ID: dict[str, Command] = {c.id: c for c in REGISTRY}


def commands_for(scope: str) -> list[Command]:
    return [c for c in REGISTRY if scope in c.scopes]


def bindings(scope: str) -> list[Binding]:
    """The `BINDINGS` of a screen (or the app, scope "app"), generated from the registry."""
    return [Binding(c.key, c.action.removeprefix("app.") if scope == "app" else c.action,
                    c.label, show=c.show, id=c.id, priority=c.priority,
                    key_display=c.key_display) for c in commands_for(scope)]


def effective_key(app: App | None, command: Command) -> str:
    """The key a command has now: the user's remapping if any, else the default."""
    keymap: dict[str, str] = getattr(app, "_keymap", {}) or {}
    key = keymap.get(command.id, command.key)
    if key == command.key and command.key_display:
        return command.key_display
    return _pretty(key)


def _pretty(key: str) -> str:
    names = {"question_mark": "?", "colon": ":", "slash": "/", "escape": "esc",
             "space": "space", "left_square_bracket": "[", "right_square_bracket": "]",
             "asterisk": "*"}
    return ",".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def scope_of(screen: Screen | None) -> str:
    return getattr(screen, "SCOPE", "") if screen is not None else ""


class RegistryCommands(Provider):
    """The command palette's entries: the registry's commands that apply on this screen."""

    def _available(self) -> Iterable[tuple[Command, object]]:
        target = self.screen  # the screen the palette was opened from
        scope = scope_of(target)
        for c in REGISTRY:
            if not c.palette or (scope not in c.scopes and "app" not in c.scopes):
                continue
            node: object = self.app if "app" in c.scopes else target
            name = c.action.removeprefix("app.").split("(", 1)[0]
            check = getattr(node, "check_action", None)
            if check is not None and check(name, ()) is False:
                continue
            yield c, node

    async def discover(self) -> Hits:
        for c, node in self._available():
            yield DiscoveryHit(f"{c.label}  [dim]({effective_key(self.app, c)})[/]",
                               partial(self._run, node, c), help=c.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for c, node in self._available():
            text = f"{c.label}: {c.help}"
            match = matcher.match(text)
            if match > 0:
                yield Hit(match, matcher.highlight(text), partial(self._run, node, c),
                          help=f"key {effective_key(self.app, c)}")

    async def _run(self, node: object, command: Command) -> None:
        await node.run_action(command.action.removeprefix("app."))  # type: ignore[attr-defined]


def idea_ref(query: str) -> int | None:
    """The idea a palette query names: `12`, `#12` (spaces around allowed), else None."""
    found = re.fullmatch(r"\s*#?\s*(\d{1,12})\s*", query)
    return int(found.group(1)) if found else None


class IdeaJump(Provider):
    """Typing `12` or `#12` in the palette offers "Go to idea #12" (its detail screen)."""

    async def search(self, query: str) -> Hits:
        idea_id = idea_ref(query)
        open_idea = getattr(self.app, "open_idea", None)
        if idea_id is None or open_idea is None:
            return
        yield Hit(1.0, f"Go to idea #{idea_id}", partial(open_idea, idea_id),
                  help="open the idea's detail (any search of this workspace)")
