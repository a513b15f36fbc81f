"""The lineage tree: ideas as nodes, loaded one level at a time as the reader expands them.

Three views share it: the forest (founders of a search, best first, a page at a time, each
opening onto its descendants), an idea's ancestry (children in the tree are its parents) and
an idea's descendants. Scores are coloured against the baseline; a mean of several runs shows
its standard error and run count, and a confirmation mark (✓ confirmed, ○ unconfirmed, ✗ refuted).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from console import fmt
from engine.store.console_queries import IdeaBrief

FOREST_PAGE = 200


@dataclass
class NodeData:
    idea: IdeaBrief | None = None  # None: the forest's root, or a "more" node
    loaded: bool = False
    more_offset: int | None = None  # a "… more founders" node


@dataclass(frozen=True)
class View:
    kind: str  # forest | ancestry | descendants
    idea_id: int | None = None  # for ancestry and descendants


class LineageTree(Tree[NodeData]):
    DEFAULT_CSS = """
    LineageTree { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("lineage", data=NodeData(), id=id)
        self.auto_expand = False
        self.show_root = True
        self.baseline: float | None = None
        self.goal = "minimize"
        self.view = View("forest")

    def label_for(self, b: IdeaBrief, relation: str = "") -> Text:
        t = Text()
        t.append(f"#{b.id} ", style="bold")
        # The mean ± its error over several runs, and whether repeats upheld it (✓ ○ ✗).
        shown = " ".join(p for p in (fmt.mean_se(b.score, b.score_se, b.runs),
                                     fmt.mark(b.confirmation)) if p)
        t.append(f"[{shown}] ", style=fmt.verdict_style(b.score, self.baseline, self.goal,
                                                        b.confirmation))
        if b.quarantine == "pending":
            t.append("⚠ ", style="magenta")
        t.append(fmt.clip(b.title, 70))
        t.append(f"  ep{b.epoch} {b.origin}", style="dim")
        if b.status != "scored":
            t.append(f" {b.status}", style=fmt.STATUS_STYLE.get(b.status, "dim"))
        if relation:
            t.append(f" ({relation})", style="dim italic")
        return t

    def add_ideas(self, node: TreeNode[NodeData], briefs: list[IdeaBrief], *,
                  expandable: bool) -> None:
        """Children of `node`; `expandable` says whether they may have more below them."""
        for b in briefs:
            can = b.children > 0 if self.view.kind != "ancestry" else expandable
            child = node.add(self.label_for(b, b.kind if b.kind and b.kind != "exploit"
                                            else ""), data=NodeData(idea=b), allow_expand=can)
            if not can:
                child.data.loaded = True  # type: ignore[union-attr]

    def add_more(self, node: TreeNode[NodeData], offset: int, left: int) -> None:
        node.add_leaf(Text(f"… {left} more founders (enter loads them)", style="dim"),
                      data=NodeData(more_offset=offset, loaded=True))
