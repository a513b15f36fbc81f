"""Lineage (loaded lazily, ancestry and back) and jobs and hosts (GPU leases, cancel)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from console.app import IdeaforgeApp
from console.screens.confirm import ConfirmScreen
from console.screens.idea_detail import IdeaDetailScreen
from console.screens.jobs import JobsScreen
from console.screens.lineage import LineageScreen
from console.widgets.hosts_panel import HostsPanel
from console.widgets.jobs_table import JobsTable
from console.widgets.lineage_tree import LineageTree
from engine.store import job_ops
from tests.console.builders import Built
from tests.console.helpers import board, cursor_to, until

MakeApp = Callable[..., IdeaforgeApp]


def tree(app: IdeaforgeApp) -> LineageTree:
    return app.screen.query_one(LineageTree)


def child_ids(node) -> list[int]:  # type: ignore[no-untyped-def]
    return [c.data.idea.id for c in node.children if c.data and c.data.idea]


async def test_lineage_loads_descendants_only_when_expanded(make_app: MakeApp,
                                                            built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        await pilot.press("3")
        root = await until(pilot, lambda: isinstance(app.screen, LineageScreen)
                           and len(tree(app).root.children) == 2 and tree(app).root,
                           what="the founders")
        assert child_ids(root) == [built.ideas["a"], built.ideas["b"]]  # best first
        a_node = root.children[0]
        assert a_node.data.loaded is False and not a_node.children  # nothing loaded yet
        await pilot.press("down", "space")
        await until(pilot, lambda: a_node.data.loaded and len(a_node.children) == 3,
                    what="A's children")
        assert set(child_ids(a_node)) == {built.ideas["cross"], built.ideas["running"],
                                          built.ideas["p3"]}
        await pilot.press("down", "enter")  # opens the highlighted idea
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen), what="detail")
        assert app.screen.idea_id == built.ideas["cross"]


async def test_jump_from_an_idea_to_its_ancestry_and_back(make_app: MakeApp,
                                                          built: Built) -> None:
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        await cursor_to(pilot, built.ideas["p3"])
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, IdeaDetailScreen)
                    and app.screen.detail is not None, what="the detail")
        await pilot.press("l")
        t = await until(pilot, lambda: isinstance(app.screen, LineageScreen)
                        and tree(app).view.kind == "ancestry"
                        and len(tree(app).root.children) == 2 and tree(app), what="ancestry")
        assert t.root.data.idea.id == built.ideas["p3"]
        assert set(child_ids(t.root)) == {built.ideas["a"], built.ideas["running"]}
        running = next(c for c in t.root.children if c.data.idea.id == built.ideas["running"])
        running.expand()  # its own parent: idea A, two generations up
        await until(pilot, lambda: child_ids(running) == [built.ideas["a"]], what="grandparent")
        await pilot.press("escape")  # back to where the reader was
        await until(pilot, lambda: tree(app).view.kind == "forest", what="the forest")


async def test_jobs_and_hosts_show_gpu_leases_and_cancel_asks_first(
        make_app: MakeApp, built: Built, tmp_path: Path) -> None:
    job_dir = tmp_path / "job6"
    job_dir.mkdir()
    job_ops.update_job(built.store, built.jobs["running"], job_dir=str(job_dir))
    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        await until(pilot, lambda: board(pilot).total == 11, what="the board")
        await pilot.press("2")
        hosts = await until(pilot, lambda: isinstance(app.screen, JobsScreen)
                            and app.screen.query_one(HostsPanel).row_count >= 2
                            and app.screen.query_one(HostsPanel), what="hosts")
        gpus = str(hosts.get_cell("gpu-1", "gpus"))
        assert "0→#6" in gpus and "1→#6" in gpus and hosts.get_cell("gpu-1", "running") == "1"
        jobs = app.screen.query_one(JobsTable)
        assert jobs.current is not None and jobs.current.job.state == "running"  # first
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asks first")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen), what="back")
        assert not (job_dir / "cancel").exists()
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asks first")
        await pilot.press("y")
        # the attempt directory's protocol: the runner stops a job whose folder has `cancel`
        await until(pilot, lambda: (job_dir / "cancel").exists(), what="the cancel file")
        await pilot.press("down")
        assert not app.screen.check_action("cancel_job", ())  # a finished job
