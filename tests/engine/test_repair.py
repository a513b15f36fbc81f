"""Pre-flight and crash repair (issue 14): a patch that crashes is checked on the CPU profile
before it gets a GPU, goes back to its coder with the traceback, and runs once repaired; a void
result is never repaired. Real CLI, real jobs of the toy environment, a local OpenAI-compatible
server as the model, one GPU that a fake `nvidia-smi` reports (the only fake)."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

from tests.conftest import base_env, cli
from tests.support.openai_server import OpenAIServer

#: What each idea's coder writes: first answer, then the answer to a repair prompt.
FIRST = {"A": "BONUS_A = 1.0 + bonus_scale  # NameError: never defined",
         "B": "BONUS_B = 0.5\nopen(os.environ['IDEAFORGE_METRICS'], 'a').write("
              "'{\"name\": \"void\", \"value\": 1, \"reason\": \"caught\"}\\n')"}
REPAIRED = {"A": "BONUS_A = 1.0"}


def _diff(train: str, knob: str, line: str) -> str:
    new = train.replace(f"BONUS_{knob} = 0.0", line)
    body = "".join(difflib.unified_diff(train.splitlines(True), new.splitlines(True),
                                        "a/train.py", "b/train.py"))
    return f"```diff\n{body}```\n"


class Coder:
    def __init__(self, train: str) -> None:
        self.train = train
        self.repair_prompts: list[str] = []

    def __call__(self, req: dict) -> str:
        prompt = req["messages"][-1]["content"]
        if "# Idea to implement" in prompt:
            knob = re.search(r"BONUS_([AB])", prompt.split("# Idea to implement", 1)[1])
            assert knob is not None
            if "# Your change crashed" in prompt:
                self.repair_prompts.append(prompt)
                return _diff(self.train, knob.group(1), REPAIRED[knob.group(1)])
            return _diff(self.train, knob.group(1), FIRST[knob.group(1)])
        return "\n\n".join(f"[Experiment] Raise BONUS_{k}.\n[Code Changes] Set BONUS_{k}.\n[End]"
                           for k in "AB")


def _run(toy_env: Path, workspace: Path, profile: str, env: dict[str, str]) -> Coder:
    coder = Coder((toy_env / "train.py").read_text())
    with OpenAIServer(responder=coder) as srv:
        cli("run", str(toy_env), "--name", "t", "--model", "openai/test", "--api-base", srv.url,
            "--profile", profile, "--epochs", "1", "--ideas-per-epoch", "2", "--auto",
            "--confirm", "off", "--llm-backoff", "0.01", workspace=workspace,
            env={**env, "OPENAI_API_KEY": "sk-test"}, check=True, timeout=180)
    return coder


def _idea(workspace: Path, knob: str) -> dict:
    ideas = json.loads(cli("ideas", "t", "--json", workspace=workspace, check=True).stdout)
    (idea_id,) = [i["id"] for i in ideas if f"BONUS_{knob}" in i["text"]]
    return json.loads(cli("show", str(idea_id), "--json", workspace=workspace, check=True).stdout)


def test_a_crash_is_caught_on_the_cpu_and_repaired_before_any_gpu_job(
        toy_env: Path, workspace: Path, tmp_path: Path) -> None:
    toml = toy_env / "environment.toml"
    toml.write_text('preflight = "smoke"\n' + toml.read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nprintf '0\\n'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = base_env()
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    coder = _run(toy_env, workspace, "gpu", env)

    a = _idea(workspace, "A")
    assert a["status"] == "scored" and a["score"] == 4.0
    assert a["runs"] == 1  # a pre-flight's score is never counted as a run of the idea
    checks = [j for j in a["jobs"] if j["kind"] == "preflight"]
    runs = [j for j in a["jobs"] if j["kind"] == "run"]
    # the crashing version was stopped by its CPU check: the one GPU job ran the repaired code
    assert [j["state"] for j in checks] == ["failed", "finished"]
    assert checks[0]["reason"].startswith("crashed:") and checks[0]["gpus"] == ""
    assert len(runs) == 1 and runs[0]["gpus"] == "0" and runs[0]["state"] == "finished"
    assert runs[0]["started_at"] > checks[1]["finished_at"]
    # the coder saw the traceback of its own code, and both answers are kept
    (prompt,) = coder.repair_prompts
    assert "NameError" in prompt and "bonus_scale" in prompt
    kinds = [(t["kind"], t["outcome"], t["job_id"]) for t in a["attempts"]]
    assert kinds == [("implement", "ok", None), ("repair", "ok", checks[0]["id"])]

    b = _idea(workspace, "B")  # voided by its own run: no repair, and no GPU
    assert b["status"] == "failed" and b["reason"].startswith("pre-flight check: void")
    assert [t["kind"] for t in b["attempts"]] == ["implement"]
    assert all(j["kind"] == "preflight" for j in b["jobs"])


def test_a_crash_of_a_real_job_is_repaired_without_pre_flight(toy_env: Path,
                                                              workspace: Path) -> None:
    coder = _run(toy_env, workspace, "smoke", base_env())  # no `preflight`: none is run
    a = _idea(workspace, "A")
    assert a["status"] == "scored" and a["score"] == 4.0 and len(coder.repair_prompts) == 1
    assert [(j["kind"], j["state"]) for j in a["jobs"]] == [("run", "failed"), ("run", "finished")]
    stats = [t["kind"] for t in a["attempts"]]
    assert stats == ["implement", "repair"]
