"""Near-duplicate ideas in a real search (issue 13, item 4): the engine, litellm and a local
OpenAI-compatible server; the model proposes in epoch 1 a paraphrase of an epoch-0 idea.

With --auto the paraphrase is replaced by asking again and never gets a job; without --auto it
waits at the gate with `twin_of` pointing at the earlier idea."""

from __future__ import annotations

import asyncio
import difflib
import json
import re
import sqlite3
from pathlib import Path

import pytest

from engine import environments
from engine.executors.local import LocalExecutor
from engine.llm import LlmClient, LlmConfig
from engine.search import SearchEngine
from engine.store import Store, job_ops, ops
from tests.support.openai_server import OpenAIServer

FIRST = [("[Experiment] Set BONUS_A to 1.0 to move the score.\n"
          "[Code Changes] In train.py set BONUS_A = 1.0.\n[End]"),
         ("[Experiment] Set BONUS_B to 0.5 to move the score.\n"
          "[Code Changes] In train.py set BONUS_B = 0.5.\n[End]")]
# the same experiment as FIRST[0] in other words, and a new one (another knob, same template)
SECOND = [("[Experiment] Raise the knob BONUS_A to 1.0 so the score improves.\n"
           "[Code Changes] train.py: BONUS_A = 1.0\n[End]"),
          ("[Experiment] Set BONUS_C to 2.0 to move the score.\n"
           "[Code Changes] In train.py set BONUS_C = 2.0.\n[End]")]
REPLACEMENT = ("[Experiment] Set BONUS_B to 0.25 and BONUS_C to 0.25 together.\n"
               "[Code Changes] In train.py set BONUS_B = 0.25 and BONUS_C = 0.25.\n[End]")


class Model:
    def __init__(self, train: str) -> None:
        self.train = train
        self.ideator: list[str] = []
        self.follow_ups: list[str] = []
        self.coded: list[str] = []

    def __call__(self, req: dict) -> str:
        prompt = req["messages"][-1]["content"]
        if "# Idea to implement" in prompt:
            idea = prompt.split("# Idea to implement", 1)[1]
            self.coded.append(idea)
            new = self.train
            for knob, value in re.findall(r"BONUS_([ABC]) = (\d+(?:\.\d+)?)", idea):
                new = new.replace(f"BONUS_{knob} = 0.0", f"BONUS_{knob} = {value}")
            diff = difflib.unified_diff(self.train.splitlines(True), new.splitlines(True),
                                        "a/train.py", "b/train.py")
            return "```diff\n" + "".join(diff) + "```\n"
        if "repeat ideas this search already has" in prompt:
            self.follow_ups.append(prompt)
            return REPLACEMENT
        self.ideator.append(prompt)
        if len(self.ideator) == 1:
            return "\n\n".join(FIRST)
        # epoch 1 asks in two batches of one idea, at once: each gets another idea first
        k = len(self.ideator) % 2
        return "\n\n".join(SECOND[k:] + SECOND[:k])


def _search(store: Store, env_root: Path, url: str, auto: bool) -> object:
    env = environments.load(str(env_root))
    return ops.create_search(
        store, name="t", env_name=env.name, env_path=str(env.root), env_version=env.version(),
        profile="smoke", model="openai/test", api_base=url, epochs=2, ideas_per_epoch=2,
        auto=auto, confirm="off", baseline_runs=1, metric_name=env.metric.name,
        goal=env.metric.goal, baseline=env.baseline_for("smoke"),
        config_json=json.dumps({"cpu_slots": 2, "dedup": {}}), evaluator=env.evaluator_id())


def _engine(store: Store, search: object, url: str, workspace: Path) -> SearchEngine:
    llm = LlmClient(LlmConfig(model="openai/test", api_base=url, backoff_base_s=0.01))
    return SearchEngine(store, search, LocalExecutor(workspace, cpu_slots=2), llm,  # type: ignore[arg-type]
                        poll_s=0.05)


def test_auto_replaces_a_paraphrase_and_it_never_runs(toy_env: Path, workspace: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("TOY_SLEEP_S", "0")
    model = Model((toy_env / "train.py").read_text())
    with OpenAIServer(responder=model) as srv:
        store = Store(workspace)
        try:
            search = _search(store, toy_env, srv.url, auto=True)
            outcome = asyncio.run(_engine(store, search, srv.url, workspace).run())
            assert outcome.code == 0, outcome.message
            ideas = [i for i in ops.list_ideas(store, search.id) if i.origin != "baseline"]
            jobs = job_ops.list_jobs(store, search.id)
        finally:
            store.close()
    with sqlite3.connect(workspace / "ideaforge.db") as db:
        notes = [e for (e,) in db.execute("select error from batch") if e]
    texts = {i.text: i for i in ideas}
    # the paraphrase was never stored, so it got no job; its replacement was, and ran
    assert not any("Raise the knob" in t for t in texts)
    replacement = next(i for t, i in texts.items() if "0.25" in t)
    assert replacement.epoch == 1 and replacement.status == "scored"
    assert {j.idea_id for j in jobs} >= {i.id for i in ideas}
    assert len(ideas) == 4 and all(i.twin_of is None for i in ideas), (notes, list(texts))
    # the model was told which idea repeated which earlier one
    (follow_up,) = model.follow_ups
    earlier = next(i for i in ideas if i.text.startswith("[Experiment] Set BONUS_A"))
    assert "Raise the knob BONUS_A" in follow_up and f"idea {earlier.id}" in follow_up
    assert any("1 near duplicate(s) replaced" in n for n in notes)


def test_gate_shows_a_paraphrase_with_its_twin(toy_env: Path, workspace: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("TOY_SLEEP_S", "0")
    model = Model((toy_env / "train.py").read_text())
    with OpenAIServer(responder=model) as srv:
        store = Store(workspace)
        try:
            search = _search(store, toy_env, srv.url, auto=False)
            engine = _engine(store, search, srv.url, workspace)

            async def drive() -> None:
                task = asyncio.create_task(engine.run())
                for epoch in (0, 1):
                    while not (engine.search.epoch == epoch
                               and engine.search.phase == "review_ideas"):
                        assert not task.done(), task.result()
                        await asyncio.sleep(0.05)
                    if epoch == 0:
                        for i in ops.list_ideas(store, search.id, 0, ("proposed",)):
                            ops.add_decision(store, search.id, "approve", i.id)
                ops.add_decision(store, search.id, "stop")
                await asyncio.wait_for(task, 30)

            asyncio.run(asyncio.wait_for(drive(), 60))
            first = ops.list_ideas(store, search.id, 0)
            second = ops.list_ideas(store, search.id, 1)
        finally:
            store.close()
    twin = next(i for i in second if "Raise the knob" in i.text)
    new = next(i for i in second if "BONUS_C" in i.text)
    earlier = next(i for i in first if "Set BONUS_A to 1.0" in i.text)
    assert twin.status == "proposed" and twin.twin_of == earlier.id
    assert new.twin_of is None  # another knob from the same template is no twin
    assert not model.follow_ups  # nothing was asked again without --auto
