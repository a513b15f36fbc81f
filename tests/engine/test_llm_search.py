"""A search driven by a model: the real engine reaches a local OpenAI-compatible server through
litellm, proposes, implements (repairing and retrying faulty diffs), runs and ranks."""

from __future__ import annotations

import difflib
import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import base_env, cli, start_cli, wait_for
from tests.support.openai_server import OpenAIServer, Reply

KNOBS = {"A": "1.0", "B": "0.5", "C": "-1.0"}


def _diff_for(train: str, knob: str, value: str, *, break_protected: bool = False) -> str:
    new = train.replace(f"BONUS_{knob} = 0.0", f"BONUS_{knob} = {value}")
    if break_protected:
        new = new.replace("score = 5.0 - BONUS_A", "score = 4.0 - BONUS_A")
    lines = difflib.unified_diff(train.splitlines(True), new.splitlines(True),
                                 "a/train.py", "b/train.py")
    return "Here is the change:\n```diff\n" + "".join(lines) + "```\n"


class Model:
    """Answers like a tiny research model: ideas about the toy knobs, diffs that set them."""

    def __init__(self, train: str) -> None:
        self.train = train
        self.coder_calls: dict[str, int] = {}
        self.ideator_prompts: list[str] = []

    def __call__(self, req: dict) -> str | Reply:
        prompt = req["messages"][-1]["content"]
        if "# Idea to implement" in prompt:
            idea = prompt.split("# Idea to implement", 1)[1]
            knob = re.search(r"BONUS_([ABC])", idea).group(1)  # type: ignore[union-attr]
            n = self.coder_calls[knob] = self.coder_calls.get(knob, 0) + 1
            # knob B's first diff touches a protected line: it must be rejected and retried
            return _diff_for(self.train, knob, KNOBS[knob],
                             break_protected=(knob == "B" and n == 1))
        self.ideator_prompts.append(prompt)
        blocks = [f"**[Experiment]** Set BONUS_{k} to {v} to move the score.\n"
                  f"[Code Changes] In train.py set BONUS_{k} = {v}.\n[End]"
                  for k, v in KNOBS.items()]
        return "Sure! Here are my ideas:\n\n" + "\n\n".join(blocks)


def test_model_driven_search_with_gate_retries_and_steering(toy_env: Path,
                                                             workspace: Path) -> None:
    model = Model((toy_env / "train.py").read_text())
    with OpenAIServer(responder=model) as srv:
        env = base_env(OPENAI_API_KEY="sk-test-not-a-real-key")
        engine = start_cli("run", str(toy_env), "--name", "t", "--model", "openai/test",
                           "--api-base", srv.url, "--epochs", "2", "--ideas-per-epoch", "3",
                           # every winner is a parent at once (repeats: test_confirm_search)
                           "--confirm", "off",
                           "--llm-backoff", "0.01", workspace=workspace, env=env)
        try:
            def at_gate(epoch: int) -> bool:
                proc = cli("status", "t", "--json", workspace=workspace)
                st = json.loads(proc.stdout) if proc.returncode == 0 else {}
                return st.get("epoch") == epoch and st.get("phase") == "review_ideas"

            def proposed(epoch: int) -> list[dict]:
                rows = json.loads(cli("ideas", "t", "--epoch", str(epoch), "--json",
                                      workspace=workspace).stdout or "[]")
                return [r for r in rows if r["status"] == "proposed"]

            wait_for(lambda: at_gate(0), 60, "the idea gate", proc=engine)
            first = proposed(0)
            assert len(first) == 3
            by_knob = {re.search(r"BONUS_(\w)", r["text"]).group(1): r for r in first}
            assert model.coder_calls == {}  # nothing implemented before approval
            cli("approve", str(by_knob["A"]["id"]), str(by_knob["B"]["id"]),
                workspace=workspace, check=True)
            cli("reject", str(by_knob["C"]["id"]), "--reason", "negative bonuses are pointless",
                workspace=workspace, check=True)
            wait_for(lambda: at_gate(1), 90, "epoch 1's idea gate", proc=engine)
            second = proposed(1)
            assert "negative bonuses are pointless" in model.ideator_prompts[-1]
            for r in second:
                cli("approve", str(r["id"]), workspace=workspace, check=True)
            out, _ = engine.communicate(timeout=120)
            assert engine.returncode == 0, out
        finally:
            engine.kill()
    rows = {r["id"]: r for r in json.loads(cli("ideas", "t", "--json",
                                                workspace=workspace).stdout)}
    a, b = rows[by_knob["A"]["id"]], rows[by_knob["B"]["id"]]
    assert a["score"] == 4.0 and a["attempts"] == 1
    assert b["score"] == 4.5 and b["attempts"] == 2  # the protected-line diff was retried
    attempts = json.loads(cli("show", str(b["id"]), "--json", workspace=workspace).stdout)
    assert attempts["attempts"][0]["outcome"] == "failed"
    assert "protected" in attempts["attempts"][0]["error"]
    # epoch 1 exploited the winners: its exploit ideas name both parents
    exploit = [r for r in rows.values() if r["epoch"] == 1 and r["origin"] == "exploit"]
    assert exploit and all(set(r["parents"]) == {a["id"], b["id"]} for r in exploit)
    status = json.loads(cli("status", "t", "--json", workspace=workspace).stdout)
    assert status["llm_calls"] >= 2 + 3  # proposals and implementations were recorded
    db_text = (workspace / "ideaforge.db").read_bytes()
    assert b"sk-test-not-a-real-key" not in db_text  # the key is never stored


def test_budget_cap_stops_new_calls_and_says_so(toy_env: Path, workspace: Path,
                                                tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[prices]\n"openai/test" = [100000.0, 100000.0]\n')
    model = Model((toy_env / "train.py").read_text())
    with OpenAIServer(responder=model) as srv:
        env = base_env(OPENAI_API_KEY="sk-test", IDEAFORGE_CONFIG=str(config))
        proc = cli("run", str(toy_env), "--name", "t", "--model", "openai/test", "--api-base",
                   srv.url, "--epochs", "2", "--ideas-per-epoch", "3", "--auto",
                   "--max-cost", "1", "--llm-backoff", "0.01", workspace=workspace, env=env)
        calls = len(srv.requests)
    assert proc.returncode == 3, proc.stderr
    assert "--max-cost" in proc.stderr
    assert calls == 1  # the first answer spent the budget; nothing was called after it
    st = json.loads(cli("status", "t", "--json", workspace=workspace).stdout)
    assert st["status"] == "stopped" and st["cost_usd"] > 1
    assert len([r for r in json.loads(cli("ideas", "t", "--json", workspace=workspace).stdout)
                if r["origin"] != "baseline"]) == 3  # the paid-for ideas were kept


def test_model_server_down_is_one_clear_error(toy_env: Path, workspace: Path) -> None:
    proc = cli("run", str(toy_env), "--name", "t", "--model", "openai/test", "--api-base",
               "http://127.0.0.1:9/v1", "--auto", "--llm-retries", "1", "--llm-backoff", "0.01",
               workspace=workspace, env=base_env(OPENAI_API_KEY="sk-test"))
    assert proc.returncode == 1
    assert "127.0.0.1:9" in proc.stderr or "connect" in proc.stderr.lower()


def test_missing_key_names_the_variable(toy_env: Path, workspace: Path) -> None:
    env = base_env()
    env.pop("OPENAI_API_KEY", None)
    proc = cli("run", str(toy_env), "--model", "openai/gpt-4o", workspace=workspace, env=env)
    assert proc.returncode == 1
    assert "OPENAI_API_KEY" in proc.stderr


def _two_hunk_diff(train: str) -> str:
    """BONUS_A = 1.0 and BONUS_C = 2.0: two hunks, so half of it is a different program."""
    new = train.replace("BONUS_A = 0.0", "BONUS_A = 1.0").replace("BONUS_C = 0.0",
                                                                  "BONUS_C = 2.0")
    return "".join(difflib.unified_diff(train.splitlines(True), new.splitlines(True),
                                        "a/train.py", "b/train.py"))


def _cut(diff: str, where: str) -> str:
    lines = diff.splitlines(True)
    second = max(i for i, line in enumerate(lines) if line.startswith("@@"))
    if where == "mid_hunk":  # unfenced, ends right after the second hunk's '-' line
        end = next(i for i in range(second, len(lines)) if lines[i].startswith("-"))
        return "".join(lines[:end + 1])
    if where == "hunk_boundary":  # unfenced, the first hunk whole and nothing after it
        return "".join(lines[:second])
    return "Here is the change:\n```diff\n" + "".join(lines[:second])  # fence never closed


@pytest.mark.parametrize("where", ["mid_hunk", "hunk_boundary", "open_fence"])
def test_answer_cut_at_the_output_limit_is_never_applied(toy_env: Path, workspace: Path,
                                                         where: str) -> None:
    train = (toy_env / "train.py").read_text()
    whole = _two_hunk_diff(train)
    coder_prompts: list[str] = []

    def model(req: dict) -> str | Reply:
        prompt = req["messages"][-1]["content"]
        if "# Idea to implement" not in prompt:
            # two whole ideas and a third cut by the output limit
            return Reply.cut(
                "[Experiment] Raise BONUS_A to 1.0 and BONUS_C to 2.0.\n[Code Changes] In "
                "train.py set BONUS_A = 1.0 and BONUS_C = 2.0.\n[End]\n\n"
                "[Experiment] Raise BONUS_B to 0.5.\n[Code Changes] Set BONUS_B = 0.5.\n[End]\n"
                "\n[Experiment] Lower SLEEP_S.\n[Code Changes] In train.py set SLE")
        coder_prompts.append(prompt)
        if "BONUS_B" in prompt.split("# Idea to implement", 1)[1]:
            return _diff_for(train, "B", "0.5")
        if len([p for p in coder_prompts if "BONUS_C" in p.split("# Idea to implement")[1]
                ]) == 1:
            return Reply.cut(_cut(whole, where))
        return f"```diff\n{whole}```\n"

    with OpenAIServer(responder=model) as srv:
        proc = cli("run", str(toy_env), "--name", "t", "--model", "openai/test", "--api-base",
                   srv.url, "--epochs", "1", "--ideas-per-epoch", "3", "--auto",
                   "--llm-backoff", "0.01", workspace=workspace,
                   env=base_env(OPENAI_API_KEY="sk-test"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [r for r in json.loads(cli("ideas", "t", "--json", workspace=workspace).stdout)
            if r["origin"] != "baseline"]
    # the cut third idea was dropped, the two whole ones kept
    assert len(rows) == 2 and not any("SLEEP_S" in r["text"] for r in rows)
    idea = next(r for r in rows if "BONUS_C" in r["text"])
    assert idea["score"] == 2.0 and idea["attempts"] == 2  # the whole diff, not half of it
    shown = json.loads(cli("show", str(idea["id"]), "--json", workspace=workspace).stdout)
    first, second = shown["attempts"]
    assert first["outcome"] == "failed"
    assert "cut off at the model's output limit" in first["error"]
    assert second["outcome"] == "ok"
    retry = [p for p in coder_prompts if "BONUS_C" in p.split("# Idea to implement")[1]][1]
    assert "cut off at the model's output limit" in retry and "shorter diff" in retry
    with sqlite3.connect(workspace / "ideaforge.db") as db:
        batch_errors = [e for (e,) in db.execute("select error from batch") if e]
        call_errors = [e for (e,) in db.execute("select error from llm_call") if e]
    assert any("idea 3 was cut off" in e for e in batch_errors)
    assert sum("cut off at the model's output limit" in e for e in call_errors) == 2
