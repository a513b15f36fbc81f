"""Crash repair and pre-flight (issue 14): how many ideas whose first diff crashes end scored,
and how much GPU time the CPU pre-flight keeps from crashing jobs.

The corpus (bench/repair_corpus/cases.py): ideas on the nanoGPT environment's train.py whose
first diff crashes the way coder models' diffs do (wrong tensor shape, missing import, wrong
attribute, wrong keyword, dtype mismatch, index error, a parameter in two optimiser groups, and
a device mismatch that only a GPU shows), each with a fixed second diff, and controls whose
first diff is right. A scripted model (tests/support/openai_server.py, real HTTP speaking the
OpenAI chat API) proposes the ideas and answers the crashing diff to the implementation prompt
and the fixed one to a prompt holding "# Your change crashed".

Two searches through the real CLI on a copy of the environment with a profile `gpu` (gpus = 1)
whose command is the smoke command, and a fake `nvidia-smi` that reports one GPU: the "GPU" jobs
really run the smoke training on this CPU, and every job of that profile that crashed is a GPU
job that crashed.

- before: `--fix-attempts 0`, the copy without `preflight`;
- after:  default fix attempts, the copy with `preflight = "smoke"`.

    .venv/bin/python bench/repair.py [--cases qk_norm,relu_squared] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from repair_corpus.cases import CASES, Case, diff

from engine import environments
from engine.patching import prepare_patch
from engine.protection import DiffRules
from tests.support.openai_server import OpenAIServer

ENV_SRC = ROOT / "environments" / "nanogpt"
GPU_PROFILE = """
[profiles.gpu]  # bench/repair.py: a stand-in for a 1-GPU profile that runs the smoke training
command = "python train.py --profile smoke"
gpus = 1
timeout = 180
time_limit = 60
time_slack = 30
evaluate_timeout = 120
baseline_runs = 1
noise = 0.014
"""


def make_env(dest: Path, preflight: bool) -> Path:
    """A copy of nanogpt with the `gpu` stand-in profile, with or without its pre-flight. The
    evaluation is told the smoke profile: evaluate.py knows no profile named `gpu`."""
    shutil.copytree(ENV_SRC, dest, ignore=shutil.ignore_patterns(
        "__pycache__", "artifacts", "*.pyc", "data"))
    toml = dest / "environment.toml"
    text = toml.read_text()
    if not preflight:
        text, n = re.subn(r'(?m)^preflight = "smoke"\n', "", text)
        assert n == 1, "nanogpt's environment.toml no longer names its pre-flight as expected"
    text, n = re.subn(r'(?m)^command = "python evaluate.py"$',
                      'command = "python evaluate.py --profile smoke"', text)
    assert n == 1, "nanogpt's [evaluate] command is not the one this bench expects"
    toml.write_text(text + GPU_PROFILE)
    return dest


def check_corpus(cases: list[Case], env_dir: Path) -> None:
    """Every diff of the corpus as the engine takes it (protected regions included): a refused
    diff stops the bench."""
    env = environments.load(env_dir)
    src = (env.root / "train.py").read_text()
    rules = DiffRules.of(env)
    for case in cases:
        for which, edits in (("first", case.first), ("fixed", case.fixed)):
            if edits is None:
                continue
            out = prepare_patch(diff(src, edits), env.root, env.protected, env.protected_lines,
                                rules=rules)
            if not out.ok:
                raise SystemExit(f"corpus: {case.stem}'s {which} diff is refused: {out.error}")


@dataclass
class Script:
    """The scripted model: the ideator hands out the corpus' ideas in order, the coder answers
    each idea's first diff, or its fixed diff to a repair prompt."""

    cases: list[Case]
    source: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_idea: int = 0
    calls: dict[str, int] = field(default_factory=lambda: {"propose": 0, "implement": 0,
                                                            "repair": 0})
    repair_prompts: dict[str, list[str]] = field(default_factory=dict)

    def case_of(self, prompt: str) -> Case:
        text = prompt.split("# Idea to implement", 1)[1]
        found = [(text.find(c.title()), c) for c in self.cases if c.title() in text]
        if not found:
            raise ValueError("implementation prompt names no idea of the corpus")
        return min(found, key=lambda f: f[0])[1]

    def __call__(self, req: dict) -> str:
        prompt = req["messages"][-1]["content"]
        with self.lock:
            if "# Idea to implement" in prompt:
                case = self.case_of(prompt)
                if "# Your change crashed" in prompt:
                    self.calls["repair"] += 1
                    self.repair_prompts.setdefault(case.stem, []).append(prompt)
                    return diff(self.source, case.fixed or case.first)
                self.calls["implement"] += 1
                return diff(self.source, case.first)
            self.calls["propose"] += 1
            m = re.search(r"Propose (\d+)", prompt)
            n = int(m.group(1)) if m else len(self.cases)
            batch = self.cases[self.next_idea:self.next_idea + n]
            self.next_idea += len(batch)
            return "\n\n".join(f"{c.idea}\n[End]" for c in batch)


def cli_env(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", WANDB_MODE="disabled", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1", OPENAI_API_KEY="sk-bench",
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def cli(ws: Path, env: dict[str, str], *args: str, timeout: float = 1800) -> str:
    proc = subprocess.run([sys.executable, "-m", "console.cli", "--workspace", str(ws), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ideaforge {' '.join(args)} exited {proc.returncode}:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _seconds(job: dict) -> float | None:
    if not job.get("started_at") or not job.get("finished_at"):
        return None
    return float(job["finished_at"]) - float(job["started_at"])


def run_search(mode: str, cases: list[Case], work: Path, bin_dir: Path) -> dict:
    before = mode == "before"
    env_dir = make_env(work / f"env-{mode}", preflight=not before)
    check_corpus(cases, env_dir)
    ws = work / f"ws-{mode}"
    env = cli_env(bin_dir)
    script = Script(cases, (env_dir / "train.py").read_text())
    t0 = time.monotonic()
    with OpenAIServer(responder=script) as srv:
        cli(ws, env, "run", str(env_dir), "--name", mode, "--model", "openai/bench",
            "--api-base", srv.url, "--profile", "gpu", "--auto", "--epochs", "1",
            "--ideas-per-epoch", str(len(cases)), "--confirm", "off", "--no-dedup",
            "--baseline-runs", "1", *(["--fix-attempts", "0"] if before else []),
            "--llm-backoff", "0.01")
        chat_calls = len(srv.chat_requests)
    wall = time.monotonic() - t0
    ideas = json.loads(cli(ws, env, "ideas", mode, "--json"))
    shown = [json.loads(cli(ws, env, "show", str(i["id"]), "--json")) for i in ideas]
    stats = cli(ws, env, "stats", mode, "--json")
    by_stem: dict[str, dict] = {}
    for idea in shown:
        if idea.get("origin") == "baseline":
            continue
        case = next(c for c in cases if c.title() in idea["text"])
        by_stem[case.stem] = idea
    return {"mode": mode, "wall_s": wall, "chat_calls": chat_calls, "calls": script.calls,
            "ideas": by_stem, "baseline": [i for i in shown if i.get("origin") == "baseline"],
            "stats": json.loads(stats), "repair_prompts": script.repair_prompts,
            "workspace": str(ws)}


def summarise(res: dict, cases: list[Case]) -> dict:
    ideas = res["ideas"]
    kinds = {c.stem: ("cpu" if c.cpu_error else "control" if c.fixed is None else "gpu-only")
             for c in cases}
    gpu_jobs = [(stem, j) for stem, i in ideas.items() for j in i["jobs"]
                if j.get("kind") != "preflight" and j.get("profile") == "gpu"]
    checks = [(stem, j) for stem, i in ideas.items() for j in i["jobs"]
              if j.get("kind") == "preflight"]

    def crashed(j: dict) -> bool:
        return j["state"] == "failed" and (j.get("reason") or "").startswith("crashed:")

    gpu_crashes = [(s, j, _seconds(j)) for s, j in gpu_jobs if crashed(j)]
    return {
        "ideas": len(ideas),
        "scored": sum(i["status"] == "scored" for i in ideas.values()),
        "scored_by_kind": {k: (sum(ideas[s]["status"] == "scored" for s in ideas if kinds[s] == k),
                               sum(kinds[s] == k for s in ideas))
                           for k in ("cpu", "gpu-only", "control")},
        "gpu_jobs": len(gpu_jobs),
        "gpu_crashed": len(gpu_crashes),
        "gpu_crash_s": [round(s or 0.0, 1) for _, _, s in gpu_crashes],
        "gpu_crash_gpu_s": sum((s or 0.0) * 1 for _, _, s in gpu_crashes),  # gpus = 1
        "gpu_crashed_stems": [s for s, _, _ in gpu_crashes],
        "checks": len(checks),
        "checks_crashed": sum(crashed(j) for _, j in checks),
        "check_s": sum(_seconds(j) or 0.0 for _, j in checks),
    }


def idea_row(case: Case, res: dict) -> str:
    idea = res["ideas"].get(case.stem)
    if idea is None:
        return "missing"
    seq = " ".join(f"{'pre' if j.get('kind') == 'preflight' else 'gpu'}:"
                   f"{'crash' if (j.get('reason') or '').startswith('crashed:') else j['state']}"
                   for j in idea["jobs"])
    prompts = res["repair_prompts"].get(case.stem, [])
    shown = ""
    if prompts and case.cpu_error:  # did the coder see its own traceback?
        shown = ", traceback shown" if case.cpu_error in prompts[0] else ", TRACEBACK NOT SHOWN"
    return f"{idea['status']} ({seq}{shown})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", help="comma-separated stems (default: the whole corpus)")
    ap.add_argument("--keep", type=Path, help="keep the workspaces and results in this folder")
    ap.add_argument("--modes", default="before,after")
    ap.add_argument("--report", type=Path, help="print the tables of a kept run's results.json")
    args = ap.parse_args()
    cases = list(CASES)
    if args.cases:
        wanted = args.cases.split(",")
        cases = [c for c in CASES if c.stem in wanted]
    if args.report:
        results = json.loads(args.report.read_text())
        report(results, [c for c in cases if c.stem in next(iter(results.values()))["ideas"]])
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="ideaforge-repair-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n'\n")
    smi.chmod(0o755)

    results = {}
    for mode in args.modes.split(","):
        print(f"{mode}: running {len(cases)} ideas ...", flush=True)
        results[mode] = run_search(mode, cases, work, bin_dir)
        print(f"{mode}: done in {results[mode]['wall_s']:.0f} s", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    report(results, cases)
    print(f"\nresults and workspaces: {work}")
    return 0


def report(results: dict, cases: list[Case]) -> None:

    print("\nper idea: status (jobs in order; pre = pre-flight on smoke, gpu = the 1-GPU profile)")
    for c in cases:
        cols = "  |  ".join(f"{m}: {idea_row(c, r)}" for m, r in results.items())
        print(f"  {c.stem:15} {c.crash:28} {cols}")
    sums = {m: summarise(r, cases) for m, r in results.items()}
    print(f"\n| | {' | '.join(sums)} |\n|---|{'---:|' * len(sums)}")
    rows = [
        ("ideas scored", lambda s, r: f"{s['scored']} / {s['ideas']} "
                                      f"({100 * s['scored'] / max(1, s['ideas']):.0f} %)"),
        ("… first diff crashes on CPU", lambda s, r: "{} / {}".format(*s["scored_by_kind"]["cpu"])),
        ("… first diff crashes on GPU only (device)",
         lambda s, r: "{} / {}".format(*s["scored_by_kind"]["gpu-only"])),
        ("… controls (first diff right)",
         lambda s, r: "{} / {}".format(*s["scored_by_kind"]["control"])),
        ("jobs on the GPU profile", lambda s, r: str(s["gpu_jobs"])),
        ("of which crashed", lambda s, r: str(s["gpu_crashed"])),
        ("GPU-seconds of crashed jobs (s × 1 GPU)", lambda s, r: f"{s['gpu_crash_gpu_s']:.1f}"),
        ("time to crash per GPU job (s)",
         lambda s, r: ", ".join(f"{x:.1f}" for x in s["gpu_crash_s"]) or "—"),
        ("pre-flight jobs (crashed)", lambda s, r: f"{s['checks']} ({s['checks_crashed']})"),
        ("pre-flight CPU-seconds", lambda s, r: f"{s['check_s']:.1f}"),
        ("model calls (propose / implement / repair)",
         lambda s, r: f"{r['chat_calls']} ({r['calls']['propose']} / {r['calls']['implement']}"
                      f" / {r['calls']['repair']})"),
        ("`stats --json` total: crashed / in pre-flight / fixed / scored",
         lambda s, r: "{crashed} / {crashed_in_preflight} / {fixed} / {scored}".format(
             **r["stats"]["total"])),
        ("`stats --json` total: wasted GPU-seconds / GPU-seconds",
         lambda s, r: f"{3600 * r['stats']['total']['wasted_gpu_hours']:.1f} / "
                      f"{3600 * r['stats']['total']['gpu_hours']:.1f}"),
        ("wall time of the search (s)", lambda s, r: f"{r['wall_s']:.0f}"),
    ]
    for label, fn in rows:
        print(f"| {label} | {' | '.join(fn(sums[m], results[m]) for m in sums)} |")


if __name__ == "__main__":
    raise SystemExit(main())
