"""The nanoGPT environment (environments/nanogpt): smoke runs end to end, shards, the rules.

Every training run here is the real `python train.py --profile smoke` in a subprocess, on a copy
of the environment; runs go two at a time (this is a 2-core budget). Nothing is downloaded.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

ENV_DIR = Path(__file__).resolve().parents[2] / "environments" / "nanogpt"
SMOKE_STEPS = 60  # PROFILES["smoke"].planned_steps
VOID_EXIT = 3


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(f"nanogpt_{name}", ENV_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = load_module("train")
prepare_data = load_module("prepare_data")


# -- running smoke jobs ------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    output: str
    metrics: list[dict]
    wall_s: float
    workdir: Path

    def named(self, name: str) -> list[dict]:
        return [m for m in self.metrics if m["name"] == name]


@dataclass
class Job:
    workdir: Path
    args: tuple[str, ...] = ()
    env: dict | None = None
    torchrun: int = 0  # processes under torch.distributed.run, 0 = plain python


def workdir_with(tmp: Path, name: str, edits: list[tuple[str, str]] = ()) -> Path:
    """A copy of the environment's train.py, with exact (old, new) text edits applied."""
    workdir = tmp / name
    workdir.mkdir()
    source = (ENV_DIR / "train.py").read_text()
    for old, new in edits:
        assert source.count(old) == 1, f"edit for {name} does not match train.py once: {old!r}"
        source = source.replace(old, new)
    (workdir / "train.py").write_text(source)
    return workdir


def run_job(job: Job) -> Run:
    metrics_path = job.workdir / "metrics.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NANOGPT_"))}
    env.update({"IDEAFORGE_METRICS": str(metrics_path), "IDEAFORGE_JOB_DIR": str(job.workdir),
                "HOME": str(job.workdir), "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"})
    env.pop("OMP_NUM_THREADS", None)
    env.update(job.env or {})
    if job.torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={job.torchrun}", "train.py"]
    else:
        cmd = [sys.executable, "train.py"]
    cmd += ["--profile", "smoke", *job.args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=job.workdir, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    metrics = []
    if metrics_path.exists():
        metrics = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    return Run(proc.returncode, proc.stdout + proc.stderr, metrics, time.monotonic() - start,
               job.workdir)


def run_all(jobs: dict[str, Job]) -> dict[str, Run]:
    """Run the jobs two at a time (each smoke job uses one CPU thread)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_job, job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


# Ways to cheat that a validation must not reward: each sees tokens after the one it predicts.
NEXT_TOKEN_LEAK = ("x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))",
                   ("x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))"
                    " + self.wte(idx.roll(-1, dims=1))"))
FAINT_LEAK = (NEXT_TOKEN_LEAK[0], NEXT_TOKEN_LEAK[1].replace("+ self.wte(", "+ 0.01 * self.wte("))
NON_CAUSAL = ("y = F.scaled_dot_product_attention(q, k, v, is_causal=True)",
              "y = F.scaled_dot_product_attention(q, k, v, is_causal=False)")
IGNORES_CLOCK = ("if time_is_up(limit, world, device):",
                 "if False and time_is_up(limit, world, device):")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    tmp = tmp_path_factory.mktemp("nanogpt")
    return run_all({
        "baseline": Job(workdir_with(tmp, "baseline")),
        "ddp": Job(workdir_with(tmp, "ddp"), torchrun=2),
        "time_limit": Job(workdir_with(tmp, "time_limit"), env={"NANOGPT_TIME_LIMIT_S": "2.5"}),
        "next_token_leak": Job(workdir_with(tmp, "next_token_leak", [NEXT_TOKEN_LEAK])),
        "faint_leak": Job(workdir_with(tmp, "faint_leak", [FAINT_LEAK])),
        "non_causal": Job(workdir_with(tmp, "non_causal", [NON_CAUSAL])),
        "ignores_clock": Job(workdir_with(tmp, "ignores_clock", [IGNORES_CLOCK]),
                             args=("--time-limit", "0.5")),
    })


# -- the smoke profile end to end ----------------------------------------------------------------


def test_smoke_trains_and_reports_a_final_val_loss(runs):
    run = runs["baseline"]
    assert run.code == 0, run.output
    losses = [m["value"] for m in run.named("train_loss")]
    assert losses[0] - losses[-1] > 1.5, f"train loss did not fall visibly: {losses}"
    (final,) = run.named("val_loss")
    assert final == run.metrics[-1]
    assert final["step"] == SMOKE_STEPS and final["val_tokens"] == 32_768
    assert final["probe_max_change"] == 0.0
    assert 0.5 < final["value"] < losses[0]
    assert run.named("tokens_per_s") and not run.named("void")
    assert run.wall_s < 60, f"smoke took {run.wall_s:.1f} s; the contract says under a minute"


def test_two_processes_train_the_same_model_as_one(runs):
    """262,144 tokens per step whatever the world size: torchrun with 2 processes (gloo on CPU)
    halves gradient accumulation and reaches the same validation loss."""
    one, two = runs["baseline"], runs["ddp"]
    assert two.code == 0, two.output
    assert "2 process(es), 1 micro-batch(es)" in two.output
    assert two.named("val_loss")[0]["value"] == pytest.approx(
        one.named("val_loss")[0]["value"], abs=1e-4)
    assert len(two.named("val_loss")) == 1  # only rank 0 reports


def test_time_limit_stops_training_and_val_loss_is_still_reported(runs):
    run = runs["time_limit"]
    assert run.code == 0, run.output
    assert "time limit of 2.5 s reached" in run.output
    (final,) = run.named("val_loss")
    assert final["step"] < SMOKE_STEPS
    assert final["time_s"] < 2.5 + 1.0


def test_a_model_that_ignores_the_clock_is_void(runs):
    run = runs["ignores_clock"]
    assert run.code == VOID_EXIT, run.output
    (void,) = run.named("void")
    assert "past the 0.5 s time limit" in void["reason"]
    assert not run.named("val_loss")


@pytest.mark.parametrize("cheat", ["next_token_leak", "faint_leak", "non_causal"])
def test_a_model_that_reads_future_tokens_is_void(runs, cheat):
    run = runs[cheat]
    assert run.code == VOID_EXIT, run.output
    assert not run.named("val_loss"), "a leaking model must not get a score"
    (void,) = run.named("void")
    assert void["reason"].startswith("causality probe failed")
    assert void["probe_max_change"] > train.PROBE_TOLERANCE


def test_the_probe_is_what_stops_the_next_token_cheat(runs):
    """Unchecked, the leak would have won by far: its loss is far below the honest one."""
    honest = runs["baseline"].named("val_loss")[0]["value"]
    unverified = runs["next_token_leak"].named("void")[0]["val_loss_unverified"]
    assert unverified < honest - 1.0


# -- the catalog ---------------------------------------------------------------------------------


def catalog_stems() -> list[str]:
    return sorted(p.stem for p in (ENV_DIR / "catalog").glob("*.diff"))


def protected_lines() -> set[str]:
    toml = tomllib.loads((ENV_DIR / "environment.toml").read_text())
    return set(toml["protected_lines"]["train.py"])


def test_catalog_has_8_to_12_ideas_in_the_contract_form():
    stems = catalog_stems()
    assert 8 <= len(stems) <= 12
    for stem in stems:
        text = (ENV_DIR / "catalog" / f"{stem}.txt").read_text()
        assert text.startswith("[Experiment] ") and "\n[Code Changes] " in text, stem
        diff = (ENV_DIR / "catalog" / f"{stem}.diff").read_text()
        assert diff.startswith("--- a/train.py\n+++ b/train.py\n"), stem
        removed = {line[1:].strip() for line in diff.splitlines()
                   if line.startswith("-") and not line.startswith("---")}
        assert not removed & protected_lines(), f"{stem} changes protected lines"


def test_every_catalog_diff_applies_and_its_smoke_run_completes(tmp_path):
    jobs = {}
    for stem in catalog_stems():
        workdir = workdir_with(tmp_path, stem)
        patch = ENV_DIR / "catalog" / f"{stem}.diff"
        for args in (["--check"], []):
            applied = subprocess.run(["git", "apply", *args, str(patch)], cwd=workdir,
                                     capture_output=True, text=True, check=False)
            assert applied.returncode == 0, f"{stem}: {applied.stderr}"
        assert (workdir / "train.py").read_text() != (ENV_DIR / "train.py").read_text()
        jobs[stem] = Job(workdir)
    failed = {stem: run.output[-2000:] for stem, run in run_all(jobs).items()
              if run.code != 0 or len(run.named("val_loss")) != 1}
    assert not failed, failed


# -- environment.toml ----------------------------------------------------------------------------


def test_protected_lines_exist_verbatim_in_train_py():
    lines = {line.strip() for line in (ENV_DIR / "train.py").read_text().splitlines()}
    missing = [line for line in protected_lines() if line not in lines]
    assert not missing


def test_protected_sections_are_fully_declared():
    """Every distinctive code line of sections 2 and 6, and every line marked PROTECTED, is in
    environment.toml, so an edit to the rules cannot slip past the engine's check."""
    source = (ENV_DIR / "train.py").read_text().splitlines()
    counts: dict[str, int] = {}
    for line in source:
        counts[line.strip()] = counts.get(line.strip(), 0) + 1
    start2 = next(i for i, s in enumerate(source) if s.startswith("# 2. PROTECTED"))
    start3 = next(i for i, s in enumerate(source) if s.startswith("# 3. Data"))
    start6 = next(i for i, s in enumerate(source) if s.startswith("# 6. PROTECTED"))
    start7 = next(i for i, s in enumerate(source) if s.startswith("# 7. Training loop"))
    wanted, in_docstring = [], False
    for line in source[start2:start3] + source[start6:start7]:
        stripped = line.strip()
        if stripped.count('"""') == 1:
            in_docstring = not in_docstring
            continue
        if in_docstring or not stripped or stripped.startswith("#") or '"""' in stripped:
            continue
        if counts[stripped] == 1 and len(stripped) >= 14:
            wanted.append(stripped)
    wanted += [s.strip() for s in source if "# PROTECTED" in s and not s.startswith("#")]
    assert not [line for line in wanted if line not in protected_lines()]


def test_environment_toml_declares_the_profiles():
    toml = tomllib.loads((ENV_DIR / "environment.toml").read_text())
    assert toml["metric"] == {"name": "val_loss", "goal": "minimize", "baseline": 3.255}
    profiles = toml["profiles"]
    assert profiles["smoke"]["command"] == "python train.py --profile smoke"
    assert profiles["smoke"]["gpus"] == 0 and "setup" not in profiles["smoke"]
    assert profiles["full"]["command"] == ("python -m torch.distributed.run --standalone "
                                           "--nproc_per_node=8 train.py --profile full")
    assert profiles["full"]["gpus"] == 8 and profiles["debug"]["gpus"] == 2
    assert profiles["single"]["gpus"] == 1
    for name in ("full", "debug", "single"):
        assert profiles[name]["setup"] == "bash setup.sh"
        assert profiles[name]["timeout"] > train.TIME_LIMIT_S[name] + 120
    assert {"environment.toml", "prepare_data.py"} <= set(toml["protected"])


# -- shards --------------------------------------------------------------------------------------


def test_shard_round_trip(tmp_path):
    tokens = np.array([0, 1, 50256, 65535, 7], dtype=np.uint16)
    path = tmp_path / "fineweb_train_000001.bin"
    prepare_data.write_shard(str(path), tokens)
    assert path.stat().st_size == 1024 + 2 * len(tokens)
    assert np.array_equal(train.load_shard(str(path)), tokens)
    with pytest.raises(ValueError, match="uint16"):
        prepare_data.write_shard(str(tmp_path / "bad.bin"), np.array([70000]))


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    header = np.frombuffer(bytes(data[:1024]), dtype="<i4").copy()
    if how == "truncated header":
        data = data[:100]
    elif how == "truncated tokens":
        data = data[:-2]
    elif how == "foreign magic":
        header[0] = 12345
        data[:1024] = header.tobytes()
    elif how == "wrong version":
        header[1] = 2
        data[:1024] = header.tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("how", "message"), [
    ("missing", "missing; prepare the data"),
    ("truncated header", "shorter than the 1024-byte header"),
    ("truncated tokens", "header promises 5 tokens"),
    ("foreign magic", "not a token shard (magic 12345"),
    ("wrong version", "shard version 2, this code reads 1"),
])
def test_shard_header_errors_name_the_file_and_the_problem(tmp_path, how, message):
    path = tmp_path / "fineweb_val_000000.bin"
    if how != "missing":
        prepare_data.write_shard(str(path), np.arange(5, dtype=np.uint16))
        _damage(path, how)
    with pytest.raises(train.ShardError) as err:
        train.load_shard(str(path))
    assert str(path) in str(err.value) and message in str(err.value)


def test_no_shards_at_all_says_how_to_prepare_them(tmp_path):
    with pytest.raises(train.ShardError, match="prepare_data.py --data-dir"):
        train.validation_tokens("full", 50257, str(tmp_path))


def test_train_loader_splits_windows_across_ranks_and_moves_to_the_next_shard(tmp_path):
    import torch

    prepare_data.write_shard(str(tmp_path / "fineweb_train_000001.bin"), np.arange(0, 40))
    prepare_data.write_shard(str(tmp_path / "fineweb_train_000002.bin"), np.arange(100, 140))
    cfg = replace(train.PROFILES["smoke"], data="fineweb", micro_batch=2, seq_len=4)
    cpu = torch.device("cpu")
    rank0, rank1 = (train.TrainLoader(cfg, str(tmp_path), r, 2) for r in (0, 1))
    x0, y0 = rank0.next_batch(cpu)
    x1, _ = rank1.next_batch(cpu)
    assert x0.flatten().tolist() == list(range(8)) and x1.flatten().tolist() == list(range(8, 16))
    assert torch.equal(y0.flatten(), x0.flatten() + 1)
    for _ in range(2):  # windows at 16 and 32 of rank 0: the second no longer fits shard 1
        x0, _ = rank0.next_batch(cpu)
    assert x0.flatten().tolist() == list(range(100, 108))


def test_shard_writer_resumes_where_it_stopped(tmp_path):
    docs = [np.full(3 + i % 4, i, dtype=np.uint16) for i in range(40)]

    def write(folder: Path, stop_after: int | None = None) -> None:
        writer = prepare_data.ShardWriter(str(folder), val_tokens=12, shard_tokens=20,
                                          max_train_tokens=60)
        for i, doc in enumerate(docs[writer.progress["docs_done"]:]):
            if stop_after is not None and i == stop_after:
                return  # as if killed: the buffered documents are lost
            writer.add(doc)
            if writer.done:
                return

    (tmp_path / "once").mkdir()
    write(tmp_path / "once")
    (tmp_path / "twice").mkdir()
    write(tmp_path / "twice", stop_after=9)
    assert json.loads((tmp_path / "twice" / "progress.json").read_text())["shards_done"] == 2
    write(tmp_path / "twice")
    names = sorted(p.name for p in (tmp_path / "once").glob("*.bin"))
    assert names[0] == "fineweb_train_000001.bin" and names[-1] == "fineweb_val_000000.bin"
    assert names == sorted(p.name for p in (tmp_path / "twice").glob("*.bin"))
    for name in names:
        once = train.load_shard(str(tmp_path / "once" / name))
        assert np.array_equal(once, train.load_shard(str(tmp_path / "twice" / name)))
    val = train.load_shard(str(tmp_path / "once" / "fineweb_val_000000.bin"))
    assert val.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2]  # whole documents only
    progress = json.loads((tmp_path / "once" / "progress.json").read_text())
    assert progress["train_tokens"] == 60


def test_synthetic_shards_feed_the_validation(tmp_path):
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, str(ENV_DIR / "prepare_data.py"), "--synthetic",
                           "--data-dir", str(data), "--max-tokens", "300000"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    tokens = train.validation_tokens("full", 50257, str(data))
    assert len(tokens) == train.VAL_TOKENS["full"] + 1 and int(tokens.max()) < 50257
    assert (data / "SYNTHETIC").exists()
    assert len(train.load_shard(str(data / "fineweb_train_000001.bin"))) == 300_000


# -- small rules ---------------------------------------------------------------------------------


def test_time_limit_overrides_can_only_shorten_it(monkeypatch):
    monkeypatch.delenv("NANOGPT_TIME_LIMIT_S", raising=False)
    assert train.time_limit_s("full") == 1500
    assert train.time_limit_s("full", 10_000) == 1500
    assert train.time_limit_s("full", 60) == 60
    monkeypatch.setenv("NANOGPT_TIME_LIMIT_S", "99999")
    assert train.time_limit_s("smoke") == 60


def test_wandb_stays_off_unless_configured(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    cfg = train.PROFILES["smoke"]
    assert train.start_wandb(cfg, "smoke") is None
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert train.start_wandb(cfg, "smoke") is None
