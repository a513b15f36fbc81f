"""Mode 3: the lineage of ideas — from founders through their exploit descendants, lazily;
jump from any idea to its ancestry and back (esc)."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode
from textual.worker import Worker

from console import commands
from console.screens.base import ConsoleScreen
from console.widgets.key_bar import KeyBar
from console.widgets.lineage_tree import FOREST_PAGE, LineageTree, NodeData, View
from engine.store import console_queries as cq
from engine.store.console_queries import IdeaBrief
from engine.store.views import SearchView


class LineageScreen(ConsoleScreen):
    SCOPE = "lineage"
    CSS_PATH = "lineage.tcss"
    BINDINGS = commands.bindings("lineage")

    class Loaded(Message):
        """Ideas to hang under a node (or the root of a new view)."""

        def __init__(self, view: View, node_id: int | None, briefs: list[IdeaBrief],
                     root: IdeaBrief | None = None, total: int = 0, offset: int = 0,
                     search: SearchView | None = None) -> None:
            super().__init__()
            self.view = view
            self.node_id = node_id
            self.briefs = briefs
            self.root = root
            self.total = total
            self.offset = offset
            self.search = search

    def __init__(self) -> None:
        super().__init__()
        self.history: list[View] = []
        self.search: SearchView | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="lineage-title")
        yield LineageTree(id="tree")
        yield KeyBar()

    @property
    def tree(self) -> LineageTree:
        return self.query_one(LineageTree)

    def on_mount(self) -> None:
        self.tree.focus()
        self.watch(self.app, "search_id", self._search_changed, init=False)
        if not self._take_request():
            self._show(View("forest"), remember=False)

    def on_screen_resume(self) -> None:
        self._take_request()

    def _take_request(self) -> bool:
        """Show the ancestry another screen asked for (`IdeaforgeApp.show_lineage`)."""
        idea_id, self.console.lineage_request = self.console.lineage_request, None
        if idea_id is None or not self.is_mounted:
            self.console.lineage_request = idea_id
            return False
        if self.tree.view.kind == "forest" and self.tree.root.data is not None \
                and not self.tree.root.children:
            # opened straight onto an ancestry: "back" leads to the forest
            self._show(View("ancestry", idea_id), remember=False)
            self.history.append(View("forest"))
            self._title()
        else:
            self.show_ancestry(idea_id)
        return True

    def _search_changed(self) -> None:
        self.history.clear()
        self._show(View("forest"), remember=False)

    # ------------------------------------------------------------------ views
    def show_ancestry(self, idea_id: int) -> None:
        self._show(View("ancestry", idea_id))

    def _show(self, view: View, remember: bool = True) -> None:
        if remember and self.tree.view != view:
            self.history.append(self.tree.view)
        self.tree.view = view
        self.tree.reset("loading…", NodeData())
        self._title()
        if view.kind == "forest":
            if self.console.search_id is None:
                self.tree.root.set_label("no search open — press 0 to pick one")
                return
            self._load_forest(view, self.console.search_id, 0)
        else:
            assert view.idea_id is not None
            self._load_root(view, view.idea_id)

    def _title(self) -> None:
        v = self.tree.view
        what = {"forest": "founders and their descendants (best first)",
                "ancestry": f"ancestry of #{v.idea_id} (each node's children are its parents)",
                "descendants": f"descendants of #{v.idea_id}"}[v.kind]
        back = " · esc: back" if self.history else ""
        self.query_one("#lineage-title", Static).update(
            f"Lineage: {what} · space expands · enter opens · p ancestry · c descendants · "
            f"f forest{back}")

    # ------------------------------------------------------------------ loading
    @work(thread=True, group="lineage", exit_on_error=False, name="load the founders")
    def _load_forest(self, view: View, search_id: int, offset: int) -> None:
        store = self.console.store()
        search = cq.get_search(store, search_id)
        total, briefs = cq.lineage_roots(store, search_id, offset, FOREST_PAGE,
                                         search.goal if search else "minimize")
        self.post_message(self.Loaded(view, None, briefs, total=total, offset=offset,
                                      search=search))

    @work(thread=True, group="lineage", exit_on_error=False, name="load the lineage")
    def _load_root(self, view: View, idea_id: int) -> None:
        store = self.console.store()
        (root,) = cq.idea_briefs(store, [idea_id]) or (None,)
        search = None
        if root is not None:
            detail_search = cq.idea_detail(store, idea_id)
            search = cq.get_search(store, detail_search.idea.search_id) if detail_search \
                else None
        briefs = (cq.parent_briefs(store, idea_id) if view.kind == "ancestry"
                  else cq.children_briefs(store, idea_id))
        self.post_message(self.Loaded(view, None, briefs, root=root, search=search))

    @work(thread=True, exit_on_error=False, name="expand a lineage node")
    def _load_node(self, view: View, node_id: int, idea_id: int) -> None:
        store = self.console.store()
        briefs = (cq.parent_briefs(store, idea_id) if view.kind == "ancestry"
                  else cq.children_briefs(store, idea_id))
        self.post_message(self.Loaded(view, node_id, briefs))

    def on_lineage_screen_loaded(self, message: Loaded) -> None:
        tree = self.tree
        if message.view != tree.view:
            return  # the reader moved on to another view meanwhile
        if message.search is not None:
            self.search = message.search
            tree.baseline, tree.goal = message.search.baseline, message.search.goal
        if message.node_id is not None:
            node = tree.get_node_by_id(message.node_id)  # type: ignore[arg-type]
            if node is None:
                return
            ancestry = tree.view.kind == "ancestry"
            tree.add_ideas(node, message.briefs, expandable=ancestry)
            if ancestry and not message.briefs:
                node.allow_expand = False
            node.data.loaded = True  # type: ignore[union-attr]
            return
        if tree.view.kind == "forest":
            self._forest_page(message)
            return
        if message.root is None:
            tree.root.set_label(f"no idea #{tree.view.idea_id}")
            return
        tree.root.set_label(tree.label_for(message.root))
        tree.root.data = NodeData(idea=message.root, loaded=True)
        tree.add_ideas(tree.root, message.briefs, expandable=tree.view.kind == "ancestry")
        tree.root.expand()
        if not message.briefs:
            tree.root.add_leaf("no parents: a founder" if tree.view.kind == "ancestry"
                               else "no descendants yet", data=NodeData(loaded=True))

    def _forest_page(self, message: Loaded) -> None:
        tree = self.tree
        name = self.search.name if self.search else "this search"
        if message.offset == 0:
            tree.root.set_label(f"{name}: {message.total} founder(s) with descendants"
                                if message.total else
                                f"{name}: no idea has descendants yet (exploit ideas come "
                                "from epoch 2 on)")
        else:  # drop the "more" node that asked for this page
            for child in list(tree.root.children):
                if child.data is not None and child.data.more_offset == message.offset:
                    child.remove()
        tree.add_ideas(tree.root, message.briefs, expandable=False)
        shown = message.offset + len(message.briefs)
        if shown < message.total:
            tree.add_more(tree.root, shown, message.total - shown)
        tree.root.expand()

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[NodeData]) -> None:
        data = event.node.data
        if data is None or data.loaded or data.idea is None:
            return
        self._load_node(self.tree.view, event.node.id, data.idea.id)

    def on_tree_node_selected(self, event: Tree.NodeSelected[NodeData]) -> None:
        data = event.node.data
        if data is None:
            return
        if data.more_offset is not None and self.console.search_id is not None:
            self._load_forest(self.tree.view, self.console.search_id, data.more_offset)
        elif data.idea is not None:
            self.console.open_idea(data.idea.id)

    # ------------------------------------------------------------------ actions
    def _cursor_idea(self) -> int | None:
        node: TreeNode[NodeData] | None = self.tree.cursor_node
        return node.data.idea.id if node and node.data and node.data.idea else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("ancestry", "descendants"):
            return self._cursor_idea() is not None
        if action == "forest":
            return self.tree.view.kind != "forest"
        return True

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[NodeData]) -> None:
        self.refresh_bindings()

    def action_open(self) -> None:
        idea = self._cursor_idea()
        if idea is not None:
            self.console.open_idea(idea)

    def action_ancestry(self) -> None:
        idea = self._cursor_idea()
        if idea is not None:
            self._show(View("ancestry", idea))

    def action_descendants(self) -> None:
        idea = self._cursor_idea()
        if idea is not None:
            self._show(View("descendants", idea))

    def action_forest(self) -> None:
        self._show(View("forest"))

    def action_back(self) -> None:
        if self.history:
            self._show(self.history.pop(), remember=False)
        else:
            self.console.action_mode("ideas")

    def poll(self) -> Worker[None] | None:
        return None  # the tree changes only when the reader expands it (r reloads a view)
