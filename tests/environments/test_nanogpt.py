"""The nanoGPT environment (environments/nanogpt): training leaves a checkpoint, the evaluation
stage scores it, cheats are voided, shards, the rules.

Every job here is the real `python train.py --profile smoke` in a subprocess on a copy of the
environment, then the real `python evaluate.py` from a pristine copy in a fresh folder, as
ideaforge's runner does it (tests/environments/fixtures/nanogpt_stages.py). Jobs go two at a
time (this is a 2-core budget). Nothing is downloaded.
"""

from __future__ import annotations

import ast
import concurrent.futures
import importlib.util
import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

ENV_DIR = Path(__file__).resolve().parents[2] / "environments" / "nanogpt"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMOKE_STEPS = 60  # PROFILES["smoke"].planned_steps
VOID_EXIT = 3


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


train = load_module(ENV_DIR / "train.py", "nanogpt_train")
evaluate = load_module(ENV_DIR / "evaluate.py", "nanogpt_evaluate")
prepare_data = load_module(ENV_DIR / "prepare_data.py", "nanogpt_prepare_data")
stages = load_module(FIXTURES / "nanogpt_stages.py", "nanogpt_stages")


# -- running smoke jobs ------------------------------------------------------------------------


@dataclass
class Job:
    workdir: Path
    env: dict | None = None
    torchrun: int = 0  # processes under torch.distributed.run, 0 = the profile's command
    eval_args: str = ""


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


def run_job(job: Job):
    command = None
    if job.torchrun:
        command = (f"python -m torch.distributed.run --standalone "
                   f"--nproc_per_node={job.torchrun} train.py --profile smoke")
    return stages.run_stages(job.workdir, job.workdir.parent / f"{job.workdir.name}.job",
                             train_env=job.env, command=command, eval_args=job.eval_args)


def run_all(jobs: dict[str, Job]) -> dict:
    """Run the jobs two at a time (each smoke job uses one CPU thread)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_job, job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


# Ways to cheat that the evaluation must not reward.
NEXT_TOKEN_LEAK = ("x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))",
                   ("x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))"
                    " + self.wte(idx.roll(-1, dims=1))"))
NON_CAUSAL = ("y = F.scaled_dot_product_attention(q, k, v, is_causal=True)",
              "y = F.scaled_dot_product_attention(q, k, v, is_causal=False)")
# At import of model.py: the loss the evaluator computes would be halved.
PATCHES_CROSS_ENTROPY = ("T_START = time.time()",
                         ("F.cross_entropy = (lambda f: lambda *a, **k: f(*a, **k) * 0.5)"
                          "(F.cross_entropy)\nT_START = time.time()"))
SEED = "--val-seed 2"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("nanogpt")
    return run_all({
        "baseline": Job(workdir_with(tmp, "baseline"), eval_args=SEED),
        "ddp": Job(workdir_with(tmp, "ddp"), torchrun=2, eval_args=SEED),
        "time_limit": Job(workdir_with(tmp, "time_limit"), env={"NANOGPT_TIME_LIMIT_S": "0.6"}),
        "next_token_leak": Job(workdir_with(tmp, "next_token_leak", [NEXT_TOKEN_LEAK])),
        "non_causal": Job(workdir_with(tmp, "non_causal", [NON_CAUSAL])),
        "patches_cross_entropy": Job(workdir_with(tmp, "patches_cross_entropy",
                                                  [PATCHES_CROSS_ENTROPY])),
    })


# -- the two stages end to end -------------------------------------------------------------------


def test_training_leaves_a_checkpoint_and_reports_no_score(runs):
    run = runs["baseline"]
    assert run.train_code == 0, run.train_output
    losses = [m["value"] for m in run.train_metrics if m["name"] == "train_loss"]
    assert losses[0] - losses[-1] > 1.5, f"train loss did not fall visibly: {losses}"
    assert not [m for m in run.train_metrics if m["name"] in ("val_loss", "void")]
    assert sorted(p.name for p in run.artifacts.iterdir()) == ["config.json", "model.pt",
                                                               "model.py"]
    import torch

    state = torch.load(run.artifacts / "model.pt", weights_only=True)
    assert "wte.weight" in state and state["wte.weight"].shape == (256, 64)
    config = json.loads((run.artifacts / "config.json").read_text())
    assert config["profile"] == "smoke" and config["step"] == SMOKE_STEPS
    assert config["config"]["n_embd"] == 64 and 0 < config["train_time_s"] < 60
    assert (run.artifacts / "model.py").read_text() == (ENV_DIR / "train.py").read_text()


def test_the_evaluation_scores_the_checkpoint(runs):
    run = runs["baseline"]
    assert run.outcome == "scored", run.eval_output
    (final,) = run.eval_metrics
    assert final["name"] == "val_loss" and final["step"] == SMOKE_STEPS
    assert final["val_tokens"] == evaluate.VAL_TOKENS["smoke"] and final["val_seed"] == 2
    assert final["probe_max_change"] == 0.0
    assert 0.5 < final["value"] < 3.0
    assert run.train_s + run.eval_s < 60, "smoke must stay under a minute"


def test_the_score_equals_the_old_in_process_validation(runs):
    """On the same checkpoint and the same val stream (seed 2), evaluate.py's score is what
    train.py's own validate() at ff1d32a computed, within 1e-4."""
    import contextlib

    import torch

    old = load_module(FIXTURES / "nanogpt_validate_ff1d32a.py", "nanogpt_validate_ff1d32a")
    run = runs["baseline"]
    model_py = load_module(run.artifacts / "model.py", "nanogpt_checkpoint_model")
    config = json.loads((run.artifacts / "config.json").read_text())["config"]
    model = model_py.GPT(model_py.Config(**{**config, "betas": tuple(config["betas"])}))
    model.load_state_dict(torch.load(run.artifacts / "model.pt", weights_only=True))
    old.VAL_TOKENS["smoke"] = evaluate.VAL_TOKENS["smoke"]  # the evaluator's larger budget
    tokens = torch.from_numpy(old.synthetic_tokens(old.VAL_TOKENS["smoke"] + 1, 256, seed=2)
                              .astype(np.int64))
    torch.set_num_threads(1)
    old_loss, old_change = old.validate(model, tokens, "smoke", 0, 1, torch.device("cpu"),
                                        contextlib.nullcontext())
    new_loss = run.eval_metrics[0]["value"]
    assert abs(new_loss - old_loss) < 1e-4, (new_loss, old_loss)
    assert old_change == 0.0


def test_two_processes_train_the_same_model_as_one(runs):
    """262,144 tokens per step whatever the world size: torchrun with 2 processes (gloo on CPU)
    halves gradient accumulation and reaches the same validation loss."""
    one, two = runs["baseline"], runs["ddp"]
    assert two.outcome == "scored", two.train_output + two.eval_output
    assert "2 process(es), 1 micro-batch(es)" in two.train_output
    assert two.train_output.count("checkpoint of step") == 1  # only rank 0 writes
    assert "terminate called" not in two.train_output  # issue 15, bug 12: no abort at exit
    assert two.score == pytest.approx(one.score, abs=1e-4)


def test_time_limit_stops_training_and_the_checkpoint_is_still_scored(runs):
    run = runs["time_limit"]
    assert run.outcome == "scored", run.train_output + run.eval_output
    assert "time limit of 0.6 s reached" in run.train_output
    (final,) = run.eval_metrics
    assert final["step"] < SMOKE_STEPS and final["checkpoint_time_s"] < 0.6 + 1.0
    assert final["val_seed"] != 2  # drawn afresh for each evaluation


@pytest.mark.parametrize("cheat", ["next_token_leak", "non_causal"])
def test_a_model_that_reads_future_tokens_is_void(runs, cheat):
    run = runs[cheat]
    assert run.eval_code == VOID_EXIT, run.eval_output
    assert run.outcome == "void" and not run.named("val_loss")
    assert run.reason.startswith("causality probe failed")
    assert run.named("void")[0]["probe_max_change"] > evaluate.PROBE_TOLERANCE


def test_the_probe_is_what_stops_the_next_token_cheat(runs):
    """Unchecked, the leak would have won by far: its loss is far below the honest one."""
    unverified = runs["next_token_leak"].named("void")[0]["val_loss_unverified"]
    assert unverified < runs["baseline"].score - 1.0


def test_a_model_that_patches_the_loss_at_import_is_void(runs):
    run = runs["patches_cross_entropy"]
    assert run.eval_code == VOID_EXIT and run.outcome == "void", run.eval_output
    assert "torch.nn.functional.cross_entropy changed" in run.reason
    assert not run.named("val_loss")


# -- the catalog ---------------------------------------------------------------------------------


def catalog_stems() -> list[str]:
    return sorted(p.stem for p in (ENV_DIR / "catalog").glob("*.diff"))


def protected_regions() -> list[str]:
    toml = tomllib.loads((ENV_DIR / "environment.toml").read_text())
    return toml["protected_regions"]["train.py"]


def top_level_definitions(source: str) -> dict[str, str]:
    """'def name' / 'class Name' / 'NAME' -> the definition's source, for top-level nodes."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            kind = "class" if isinstance(node, ast.ClassDef) else "def"
            found[f"{kind} {node.name}"] = ast.dump(node)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = ast.dump(node)
    return found


def test_catalog_has_8_to_12_ideas_in_the_contract_form():
    stems = catalog_stems()
    assert 8 <= len(stems) <= 12
    for stem in stems:
        text = (ENV_DIR / "catalog" / f"{stem}.txt").read_text()
        assert text.startswith("[Experiment] ") and "\n[Code Changes] " in text, stem
        diff = (ENV_DIR / "catalog" / f"{stem}.diff").read_text()
        assert diff.startswith("--- a/train.py\n+++ b/train.py\n"), stem


def test_every_catalog_diff_applies_and_its_smoke_job_is_scored(tmp_path):
    jobs = {}
    shipped = top_level_definitions((ENV_DIR / "train.py").read_text())
    for stem in catalog_stems():
        workdir = workdir_with(tmp_path, stem)
        patch = ENV_DIR / "catalog" / f"{stem}.diff"
        for args in (["--check"], []):
            applied = subprocess.run(["git", "apply", *args, str(patch)], cwd=workdir,
                                     capture_output=True, text=True, check=False)
            assert applied.returncode == 0, f"{stem}: {applied.stderr}"
        patched = top_level_definitions((workdir / "train.py").read_text())
        assert patched != shipped
        assert all(patched.get(name) == shipped[name] for name in protected_regions()), stem
        jobs[stem] = Job(workdir)
    failed = {stem: (run.outcome, run.reason, run.train_output[-1000:])
              for stem, run in run_all(jobs).items() if run.outcome != "scored"}
    assert not failed, failed


# -- environment.toml ----------------------------------------------------------------------------


def test_protected_regions_are_top_level_definitions_of_train_py():
    defined = top_level_definitions((ENV_DIR / "train.py").read_text())
    assert {"def save_checkpoint", "def time_is_up", "TIME_LIMIT_S"} <= set(protected_regions())
    assert not [name for name in protected_regions() if name not in defined]


def test_the_training_process_holds_no_validation():
    source = (ENV_DIR / "train.py").read_text()
    for gone in ("def validate", "VAL_TOKENS", "PROBE_TOLERANCE", '"val")', "seed=2",
                 'emit("void"', 'emit("val_loss"'):
        assert gone not in source, gone


def test_environment_toml_declares_the_evaluation_and_the_profiles():
    from engine import environments

    env = environments.load(ENV_DIR)  # the engine's own parser accepts it
    assert env.evaluation.command == "python evaluate.py"
    assert env.evaluation.files == ("evaluate.py",)
    assert env.evaluation.held_out == ("fineweb10B/fineweb_val_*",)
    assert env.is_protected("evaluate.py") and env.is_protected("environment.toml")
    assert env.metric.name == "val_loss" and env.metric.goal == "minimize"
    assert env.metric.baseline == 3.255
    profiles = env.profiles
    assert profiles["smoke"].command == "python train.py --profile smoke"
    assert profiles["smoke"].gpus == 0 and profiles["smoke"].setup is None
    assert profiles["full"].command == ("python -m torch.distributed.run --standalone "
                                        "--nproc_per_node=8 train.py --profile full")
    assert profiles["full"].gpus == 8 and profiles["debug"].gpus == 2
    assert profiles["single"].gpus == 1
    for name, profile in profiles.items():
        assert profile.time_limit == train.TIME_LIMIT_S[name]
        assert profile.time_slack >= 30 and profile.evaluate_timeout
        assert profile.timeout > profile.time_limit + profile.time_slack
        if name != "smoke":
            assert profile.setup == "bash setup.sh"


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
    with pytest.raises(evaluate.ShardError, match="prepare_data.py --data-dir"):
        evaluate.validation_tokens("full", str(tmp_path), None)
    with pytest.raises(train.ShardError, match="prepare_data.py --data-dir"):
        train.TrainLoader(replace(train.PROFILES["smoke"], data="fineweb"), str(tmp_path), 0, 1)


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


def test_synthetic_shards_feed_the_evaluation(tmp_path):
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, str(ENV_DIR / "prepare_data.py"), "--synthetic",
                           "--data-dir", str(data), "--max-tokens", "300000"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    tokens = evaluate.validation_tokens("full", str(data), None)
    assert len(tokens) == evaluate.VAL_TOKENS["full"] + 1 and int(tokens.max()) < 50257
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


# -- IDEAFORGE_SEED: repeats of an idea are independent, each one reproducible -------------------


def shuffled(cfg, data_dir, rank, world, seed):
    """The loader as main() makes it when IDEAFORGE_SEED is set."""
    loader = train.TrainLoader(cfg, data_dir, rank, world)
    if seed is not None:
        loader.shuffle(cfg, seed)
    return loader


def test_the_run_seed_moves_the_synthetic_stream_but_never_onto_the_validation_stream():
    import torch

    cfg, cpu = train.PROFILES["smoke"], torch.device("cpu")
    plain = train.TrainLoader(cfg, "", 0, 1).next_batch(cpu)[0]
    first = train.synthetic_tokens(cfg.micro_batch * cfg.seq_len, cfg.vocab_size, seed=1)
    assert plain.flatten().tolist() == first.tolist()  # no seed: the historical stream
    batches = {s: shuffled(cfg, "", 0, 1, s).next_batch(cpu)[0] for s in (7, 8)}
    assert torch.equal(batches[7], shuffled(cfg, "", 0, 1, 7).next_batch(cpu)[0])
    assert not torch.equal(batches[7], batches[8]) and not torch.equal(batches[7], plain)
    # evaluate.py draws its held-out stream from an integer seed: the run seed's stream differs
    val = evaluate.synthetic_tokens(4096, cfg.vocab_size, 7)
    stream = train.synthetic_tokens(4096, cfg.vocab_size, train.seed_sequence(7, 1))
    assert not np.array_equal(val, stream)


def test_the_run_seed_shuffles_shards_and_shifts_the_start_alike_on_every_rank(tmp_path):
    import torch

    for i in range(4):
        prepare_data.write_shard(str(tmp_path / f"fineweb_train_00000{i + 1}.bin"),
                                 np.arange(1000 * i, 1000 * i + 200))
    cfg = replace(train.PROFILES["smoke"], data="fineweb", micro_batch=2, seq_len=4)
    cpu = torch.device("cpu")

    def first(seed, rank=0):
        return shuffled(cfg, str(tmp_path), rank, 2, seed).next_batch(cpu)[0].flatten()

    assert first(None).tolist() == list(range(8))
    starts = {s: int(first(s)[0]) for s in range(12)}
    assert len({start // 1000 for start in starts.values()}) > 1  # shards in another order
    assert any(start % 1000 for start in starts.values())  # a shifted start within the shard
    assert torch.equal(first(5, rank=1), first(5) + 8)  # rank 1 takes the next window
    assert torch.equal(first(5), first(5))


def test_the_run_seed_sets_the_initial_weights_and_the_first_steps(monkeypatch, tmp_path):
    """Two steps of smoke in this process: the same seed gives the same weights bit for bit, a
    different seed other ones (a different init and data order)."""
    import torch

    fresh = load_module(ENV_DIR / "train.py", "nanogpt_train_seeded")  # its own clock
    threads = torch.get_num_threads()
    states = {}
    try:
        for name, seed in (("a", "5"), ("again", "5"), ("b", "6"), ("plain", None)):
            monkeypatch.setenv("IDEAFORGE_ARTIFACTS", str(tmp_path / name))
            if seed is None:
                monkeypatch.delenv("IDEAFORGE_SEED", raising=False)
            else:
                monkeypatch.setenv("IDEAFORGE_SEED", seed)
            assert fresh.main(["--profile", "smoke", "--max-steps", "2"]) == 0
            states[name] = torch.load(tmp_path / name / "model.pt", weights_only=True)
    finally:
        torch.set_num_threads(threads)

    def same(x, y):
        return all(torch.equal(x[k], y[k]) for k in x)

    assert same(states["a"], states["again"])
    assert not same(states["a"], states["b"]) and not same(states["a"], states["plain"])


def test_every_profile_states_its_baseline_runs_and_noise():
    profiles = tomllib.loads((ENV_DIR / "environment.toml").read_text())["profiles"]
    assert {name: (p["baseline_runs"], p["noise"]) for name, p in profiles.items()} == {
        "smoke": (3, 0.014), "single": (3, 0.002), "debug": (3, 0.002), "full": (3, 0.002)}
