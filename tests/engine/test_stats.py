"""Execution analytics (issue 14 item 3): what became of each coder model's ideas, per search,
per environment and over the workspace, from `engine.store.stats` and `ideaforge stats`."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from console.cli import main
from engine.store import Store, ops, stats
from engine.store.console_queries import idea_gpu_hours
from engine.store.models import Idea, Job, LlmCall, PatchAttempt

T0 = 1_800_000_000.0
CRASH = "crashed: exit code 1"


@dataclass
class World:
    store: Store
    ids: dict[str, int] = field(default_factory=dict)
    searches: dict[str, int] = field(default_factory=dict)


def _search(w: World, name: str, env: str) -> int:
    s = ops.create_search(w.store, name=name, env_name=env, env_path=f"/envs/{env}",
                          env_version="v1", profile="smoke", model="m/ideator", epochs=1,
                          ideas_per_epoch=8, metric_name="loss", goal="minimize")
    w.searches[name] = s.id
    return s.id


def _idea(w: World, sid: int, key: str, status: str, attempts: list[tuple[str, str, str]] = (),
          jobs: list[dict[str, object]] = (), origin: str = "explore") -> int:
    """An idea with its attempts (model, outcome, kind) — each with the coder call it took —
    and its jobs (Job fields), written as the engine writes them."""
    with w.store.session() as s:
        idea = Idea(search_id=sid, epoch=0, origin=origin, text=key, status=status)
        s.add(idea)
        s.flush()
        assert idea.id is not None
        job_ids = []
        for spec in jobs:
            job = Job(search_id=sid, idea_id=idea.id, profile="smoke", **spec)
            s.add(job)
            s.flush()
            job_ids.append(job.id)
        for number, (model, outcome, kind) in enumerate(attempts, 1):
            s.add(PatchAttempt(idea_id=idea.id, number=number, model=model, outcome=outcome,
                               kind=kind, job_id=job_ids[0] if kind == "repair" else None))
            s.add(LlmCall(search_id=sid, role="coder", purpose=f"{kind}:idea{idea.id}",
                          model=model, cost_usd=0.25, latency_s=1.0))
        w.ids[key] = idea.id
        return idea.id


def _ran(start: float, seconds: float, gpus: str = "", **extra: object) -> dict[str, object]:
    state = "failed" if extra.get("reason") else "finished"
    return {"state": state, "started_at": T0 + start, "finished_at": T0 + start + seconds,
            "gpus": gpus, "gpus_wanted": gpus.count(",") + 1 if gpus else 0, **extra}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World(Store(tmp_path_factory.mktemp("ws")))
    a, b = "m/coder-a", "m/coder-b"
    s1 = _search(w, "s1", "toy")
    _idea(w, s1, "baseline", "scored", jobs=[_ran(0, 500, "0")], origin="baseline")
    # coder a: right at once; right at the second ask; crashed in pre-flight, then repaired
    _idea(w, s1, "first", "scored", [(a, "ok", "implement")], [_ran(0, 100, "0")])
    _idea(w, s1, "reasked", "scored", [(a, "failed", "implement"), (a, "ok", "implement")],
          [_ran(0, 100, "0,1")])
    _idea(w, s1, "fixed", "scored", [(a, "ok", "implement"), (a, "ok", "repair")],
          [_ran(0, 10, kind="preflight", run=0, reason=CRASH), _ran(20, 100, "0")])
    # coder b: never a usable diff; crashed on a GPU and its repair failed; still implementing
    _idea(w, s1, "never", "implement_failed", [(b, "failed", "implement")] * 2)
    _idea(w, s1, "lost", "failed", [(b, "ok", "implement"), (b, "failed", "repair")],
          [_ran(0, 36, "0", reason=CRASH)])
    _idea(w, s1, "busy", "implementing", [(b, "failed", "implement")])
    _idea(w, s1, "proposed", "proposed")
    with w.store.session() as s:  # an ideator call belongs to no idea
        s.add(LlmCall(search_id=s1, role="ideator", purpose="propose:seed:epoch0",
                      model="m/ideator", cost_usd=9.0))
    s2 = _search(w, "s2", "toy")
    _idea(w, s2, "other-first", "scored", [(a, "ok", "implement")], [_ran(0, 3600, "0")])
    s3 = _search(w, "s3", "cpu-env")
    _idea(w, s3, "void", "failed", [(b, "ok", "implement")],
          [_ran(0, 60, reason="void: the evaluation refused the checkpoint")])
    return w


def _view(store: Store, search_ids: list[int] | None, now: float) -> stats.Overview:
    with stats.store_reader(store) as execute:
        return stats.overview(execute, search_ids, now)


def test_one_search_counts_each_models_ideas(world: World) -> None:
    view = _view(world.store, [world.searches["s1"]], now=T0 + 1000)
    (s1,) = view.searches
    assert list(s1.models) == ["m/coder-a", "m/coder-b"]
    a, b = s1.models["m/coder-a"], s1.models["m/coder-b"]
    assert (a.ideas, a.implemented_first, a.implemented_after_repair, a.never_implemented) == \
        (3, 2, 1, 0)
    assert (a.ran, a.crashed, a.crashed_in_preflight, a.fixed, a.scored, a.unscored) == \
        (3, 1, 1, 1, 3, 0)
    # "busy" is still being implemented: not yet "never"
    assert (b.ideas, b.implemented_first, b.never_implemented, b.ran, b.crashed, b.fixed,
            b.scored, b.unscored) == (3, 1, 1, 1, 1, 0, 0, 2)
    # coder calls: one per attempt; wasted = those of "never" and "lost", not of "busy"
    assert (a.coder_calls, b.coder_calls, b.wasted_calls) == (5, 5, 4)
    assert b.wasted_cost_usd == pytest.approx(1.0) and a.wasted_cost_usd == 0
    assert b.wasted_gpu_hours == pytest.approx(0.01) and b.wasted_job_seconds == 36
    # the total counts the idea no coder answered, and never the baseline
    assert (s1.total.ideas, s1.total.attempted, s1.total.scored) == (7, 6, 3)
    # GPU hours as the budget reckons them (leased GPUs × wall time); CPU pre-flight: none
    ideas = [i for k, i in world.ids.items() if k in ("first", "reasked", "fixed", "never",
                                                       "lost", "busy", "proposed")]
    assert s1.total.gpu_hours == pytest.approx(sum(idea_gpu_hours(world.store, ideas).values()))
    assert a.gpu_hours == pytest.approx(400 / 3600) and a.job_seconds == 310


def test_the_workspace_groups_per_environment_and_model(world: World) -> None:
    view = _view(world.store, None, now=T0 + 1000)
    assert [s.name for s in view.searches] == ["s1", "s2", "s3"]
    toy, cpu = view.environments["toy"], view.environments["cpu-env"]
    assert toy.searches == ("s1", "s2") and cpu.searches == ("s3",)
    assert toy.models["m/coder-a"].implemented_first == 3
    # a void is a failure, not a crash
    assert (cpu.models["m/coder-b"].crashed, cpu.models["m/coder-b"].unscored) == (0, 1)
    assert cpu.total.gpu_hours == 0 and cpu.total.wasted_job_seconds == 60
    assert view.workspace.models["m/coder-b"].ideas == 4
    assert view.workspace.total.ideas == 9


def test_stats_json_names_the_counts_per_model(world: World,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workspace", str(world.store.workspace), "stats", "s1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["search"] == "s1" and out["environment"] == "toy"
    a = out["models"]["m/coder-a"]
    assert {k: a[k] for k in ("implemented_first", "implemented_after_repair", "crashed",
                              "fixed", "scored")} == {
        "implemented_first": 2, "implemented_after_repair": 1, "crashed": 1, "fixed": 1,
        "scored": 3}
    assert out["models"]["m/coder-b"]["wasted_calls"] == 4
    assert main(["--workspace", str(world.store.workspace), "stats", "--json"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert set(every["environments"]) == {"toy", "cpu-env"}
    assert every["models"]["m/coder-a"]["scored"] == 4


def test_stats_text_shows_a_row_per_model(world: World,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--workspace", str(world.store.workspace), "stats", "s1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("m/coder-a"))
    assert row.split()[1:9] == ["3", "2", "1", "0", "3", "1", "1", "3"]
    assert any("wasted" in line for line in lines)
    assert main(["--workspace", str(world.store.workspace), "stats"]) == 0
    text = capsys.readouterr().out
    assert "environment toy" in text and "environment cpu-env" in text


def test_unknown_search_is_bad_input(world: World, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert main(["--workspace", str(world.store.workspace), "stats", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no search 'nope'" in err and "s1" in err


def test_stats_reads_without_sqlalchemy(world: World) -> None:
    """`ideaforge stats` answers through plain sqlite3 (like the console's first frame)."""
    code = ("import sys, json; from console.cli import main; "
            f"rc = main(['--workspace', {str(world.store.workspace)!r}, 'stats', 's2', "
            "'--json']); assert rc == 0; assert 'sqlalchemy' not in sys.modules, 'loaded'")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["models"]["m/coder-a"]["scored"] == 1
