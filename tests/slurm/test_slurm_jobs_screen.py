"""Slurm's word on a job where a researcher looks: the console's jobs screen shows its Slurm
job id, Slurm's state, why it waits, its node and how long it has run; `ideaforge show` names
its Slurm job (a real engine on the real one-node Slurm)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from console.app import IdeaforgeApp
from console.screens.jobs import JobsScreen
from console.widgets.jobs_table import JobsTable
from tests.conftest import base_env, cli, start_cli, wait_for
from tests.console.helpers import until
from tests.engine.test_headless_progress import progress_env
from tests.slurm.cluster import Cluster


async def test_the_jobs_screen_and_show_tell_slurms_job_id_state_reason_and_node(
        slurm: Cluster, toy_env: Path, tmp_path: Path) -> None:
    env = progress_env(toy_env)  # its training waits for the gate, reporting as it goes
    gate = tmp_path / "gate"
    # the node's 4 GPUs are taken: the search's job waits in Slurm's queue for Resources
    blocker = slurm.run("sbatch", "--parsable", "--gres=gpu:4", "-o", "/dev/null",
                        "--wrap", "sleep 60").strip()
    shared = tmp_path / "shared"
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(f'[slurm]\nworkdir = "{shared}"\npoll_interval = 0.3\nmax_queued = 1\n')
    ws = tmp_path / "ws"
    engine = start_cli("run", str(env), "--profile", "gpu", "--name", "t", "--hosts",
                       str(hosts), "--model", "catalog", "--auto", "--epochs", "1",
                       "--ideas-per-epoch", "1", "--baseline-runs", "1", "--confirm", "off",
                       "--fix-attempts", "0", workspace=ws,
                       env=base_env(PROGRESS_GATE=str(gate)))
    try:
        wait_for(lambda: (ws / "ideaforge.db").exists(), 60, "the workspace", proc=engine)
        app = IdeaforgeApp(ws, "t", poll_s=0.2, keys={})
        async with app.run_test(size=(220, 30)) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: isinstance(app.screen, JobsScreen), 10, "the jobs mode")
            table = app.screen.query_one(JobsTable)

            def cells(column: str) -> list[str]:
                return [str(table.get_cell(str(j), column)) for j in table.rows_by_id]

            def first_dir() -> Path | None:
                found = sorted(shared.glob("*/jobs/search-*/job-*/slurm_job"))
                return found[0].parent if found else None

            await until(pilot, lambda: "running · PENDING (Resources)" in cells("state"), 60,
                        "the queued job's Slurm state and reason",
                        state=lambda: (cells("state"), cells("host")))
            job_dir = first_dir()
            assert job_dir is not None
            sid = json.loads((job_dir / "slurm_job").read_text())["id"]
            assert f"slurm {sid}" in cells("host")  # no node yet: it waits
            assert cells("time")[cells("host").index(f"slurm {sid}")] == "-"

            freed = time.monotonic()
            slurm.run("scancel", blocker)  # the GPUs free up: Slurm starts it on its node
            placed = f"slurm {sid} on {slurm.node}"
            await until(pilot, lambda: placed in cells("host")
                        and "running · RUNNING" in cells("state"), 60,
                        "the running job's node and state",
                        state=lambda: (cells("state"), cells("host")))
            row = cells("host").index(placed)
            # its run time counts from when it started on its node, not from its queueing
            ran = re.fullmatch(r"([\d.]+)s", cells("time")[row])
            assert ran is not None and float(ran.group(1)) <= time.monotonic() - freed + 1

            gate.touch()  # the jobs finish; each row keeps its Slurm job id and node
            await until(pilot, lambda: table.rows_by_id and all(
                r.job.state not in ("queued", "launching", "running")
                for r in table.rows_by_id.values()), 90, "the jobs to finish",
                state=lambda: (cells("state"), cells("host")))
            assert all(re.fullmatch(rf"slurm \d+ on {slurm.node}", h) for h in cells("host"))
            assert not any("RUNNING" in s or "PENDING" in s for s in cells("state"))
        engine.wait(60)
        assert engine.returncode == 0
    finally:
        gate.touch()
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    # `show` names each job's Slurm job, as its attempt folder on the shared workdir does
    ideas = json.loads(cli("ideas", "t", "--json", workspace=ws, check=True).stdout)
    for idea in ideas:
        shown = json.loads(cli("show", str(idea["id"]), "--json", workspace=ws,
                               check=True).stdout)
        for job in shown["jobs"]:
            recorded = json.loads((Path(job["job_dir"]) / "slurm_job").read_text())["id"]
            assert (job["external_id"], job["node"]) == (recorded, slurm.node)
            assert job["external_state"] in ("COMPLETED", "RUNNING", "COMPLETING")
        text = cli("show", str(idea["id"]), workspace=ws, check=True).stdout
        assert re.search(rf"slurm job \d+ \w+ on {slurm.node}", text), text
