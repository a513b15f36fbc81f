"""The GRPO environment (environments/grpo): grader, GRPO arithmetic, backends, saved policy,
the evaluation stage (run as the runner runs it: training, then pristine evaluator copies), catalog.

The environment is stand-alone (its modules import each other by plain names), so these tests
import it from its folder and put sys.modules back afterwards. vLLM cannot be installed here:
its glue is checked against a stand-in `vllm` module, which is the only thing faked.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import types
from pathlib import Path
from typing import ClassVar

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("math_verify")

ENV_DIR = Path(__file__).resolve().parents[2] / "environments" / "grpo"
MODULES = ("data", "grader", "grpo", "metrics", "modeling", "rollout", "evaluate", "train_grpo",
           "prepare")


@pytest.fixture(scope="module")
def env():
    saved = {name: sys.modules.pop(name) for name in MODULES if name in sys.modules}
    sys.path.insert(0, str(ENV_DIR))
    try:
        yield types.SimpleNamespace(**{name: importlib.import_module(name) for name in MODULES})
    finally:
        sys.path.remove(str(ENV_DIR))
        for name in MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def grader(env):
    with env.grader.Grader(workers=2, timeout_s=3.0) as g:
        yield g


# ---------------------------------------------------------------- grader


EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("\\frac12", "1/2"),
    ("\\dfrac{3}{4}", "\\frac{3}{4}"),
    ("0.25", "\\frac{1}{4}"),
    ("3\\sqrt{2}", "\\sqrt{18}"),
    ("180\\text{ miles}", "180"),
    ("(1,2)", "(1, 2)"),
    ("[2,5)", "[2, 5)"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("(3, -1)", "\\left( 3, -1 \\right)"),
    ("x^2+1", "1+x^2"),
    ("\\text{(C)}", "C"),
    ("10", "\\boxed{10}"),
    ("5", "x = 5"),
]
NOT_EQUIVALENT = [
    ("10", "11"),
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("(1,2)", "(2,1)"),
    ("[2,5)", "[2,5]"),
    ("\\pi", "3.14"),
    ("x^2+1", "x^2-1"),
]


def test_equivalent_forms_are_accepted_and_wrong_answers_rejected(grader):
    verdicts = grader.equivalent_many(EQUIVALENT + NOT_EQUIVALENT)
    accepted = dict(zip(EQUIVALENT + NOT_EQUIVALENT, verdicts))
    assert [pair for pair in EQUIVALENT if not accepted[pair]] == []
    assert [pair for pair in NOT_EQUIVALENT if accepted[pair]] == []


@pytest.mark.parametrize(
    "response",
    [
        "2+2 is 4 <answer> 4 </answer>",  # no </think>
        "2+2 is 4 </think> 4",  # no answer tags
        "2+2 is 4 </think> <answer> 4",  # unterminated
        "2+2 is 4 </think><answer> 4 </answer>",  # not the literal "</think> <answer>"
        "2+2 is 4 </think>\n<answer> 4 </answer>",
        "2+2 </think> <answer> 3 </answer> </think> <answer> 4 </answer>",  # two answers
        "2+2 is 4 </think> <answer> 4 </answer> and more text",  # text after the answer
    ],
)
def test_malformed_responses_get_no_reward(env, grader, response):
    assert env.grader.extract_r1_zero_answer(response) is None
    [score] = env.grader.grade_r1_zero([response], ["4"], grader)
    assert (score.reward, score.format_ok) == (0.0, False)


def test_r1_zero_reward_separates_format_from_accuracy(env, grader):
    responses = [
        "half of one </think> <answer> \\frac{1}{2} </answer>",
        "half of one </think> <answer>0.5</answer>",
        "a guess </think> <answer> 7 </answer>",
        "no idea </think> <answer>  </answer>",  # well formed, nothing to grade: wrong
    ]
    scores = env.grader.grade_r1_zero(responses, ["1/2", "\\frac12", "8", "8"], grader)
    assert [(s.reward, s.format_ok, s.correct) for s in scores] == [
        (1.0, True, True), (1.0, True, True), (0.0, True, False), (0.0, True, False)]


def test_a_pathological_answer_is_bounded_in_time_even_off_the_main_thread(env):
    # sympy does not finish 9^(9^(9^9)) == 1 in any useful time; the grader must give up.
    pairs = [("1", "9^{9^{9^{9}}}"), ("\\frac{1}{2}", "0.5")]
    with env.grader.Grader(workers=1, timeout_s=1.5) as g:
        g.equivalent_many([("1/3", "\\frac{1}{3}")])  # wait for the worker to start
        out: list = []
        started = time.monotonic()
        thread = threading.Thread(target=lambda: out.append(g.equivalent_many(pairs)))
        thread.start()
        thread.join(timeout=60)
        elapsed = time.monotonic() - started
        assert out == [[False, True]]
        assert g.restarts == 1
    assert elapsed < 15, f"grading took {elapsed:.1f} s"


# ---------------------------------------------------------------- GRPO arithmetic


def _close(got, expected) -> None:
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), rtol=1e-6, atol=1e-6)


def test_group_advantages_by_hand(env):
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # group 1: mean 0.5, unbiased std sqrt(1/3); group 2: all equal -> 0
    std = math.sqrt(1 / 3)
    expected = [0.5 / (std + 1e-6), -0.5 / (std + 1e-6), -0.5 / (std + 1e-6), 0.5 / (std + 1e-6),
                0, 0, 0, 0]
    _close(env.grpo.group_advantages(rewards, group_size=4), expected)
    centred = env.grpo.group_advantages(rewards, group_size=4, normalize_std=False)
    _close(centred, [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_loss_variants_by_hand(env):
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]])
    old = torch.tensor([[-1.0, -2.5], [-0.2, -0.1]])
    rewards = torch.tensor([1.0, 0.0])
    adv = torch.tensor([2.0, -1.0])
    pg = env.grpo.policy_gradient_loss

    loss, _ = pg("no_baseline", logprobs, raw_rewards=rewards)
    _close(loss, [[1.0, 2.0], [0.0, 0.0]])
    loss, _ = pg("reinforce_with_baseline", logprobs, advantages=adv)
    _close(loss, [[2.0, 4.0], [-0.5, -0.1]])

    loss, clipped = pg("grpo_clip", logprobs, advantages=adv, old_logprobs=old, clip_range=0.2)
    r = [[1.0, math.exp(0.5)], [math.exp(-0.3), 1.0]]
    expected = [
        [-min(r[0][0] * 2, 1.0 * 2), -min(r[0][1] * 2, 1.2 * 2)],  # ratio 1.65 clipped at 1.2
        [-min(r[1][0] * -1, 0.8 * -1), -min(r[1][1] * -1, 1.0 * -1)],  # ratio 0.74 clipped at 0.8
    ]
    _close(loss, expected)
    assert clipped.tolist() == [[False, True], [True, False]]


def test_masked_mean_and_aggregation(env):
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 1]])
    assert float(env.grpo.masked_mean(values, mask)) == pytest.approx((1 + 2 + 6) / 3)
    _close(env.grpo.masked_mean(values, mask, dim=1), [1.5, 6.0])
    assert float(env.grpo.aggregate_loss(values, mask)) == pytest.approx((1 + 2 + 6) / 3)  # pooled
    empty = torch.zeros_like(mask)
    assert env.grpo.masked_mean(values, empty, dim=1).tolist() == [0.0, 0.0]


def test_token_logprobs_and_collate_mark_response_tokens(env):
    model, tok = env.modeling.load_policy("random:tiny", torch.device("cpu"), torch.float32)
    rollouts = [env.train_grpo.Rollout([5, 6, 7], [8, 9], 1.0),
                env.train_grpo.Rollout([5, 6], [10, 11, 12], 0.0)]
    ids, attention, mask = env.train_grpo.collate(rollouts, tok.pad_token_id, torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 10, 11, 12]]
    assert mask.tolist() == [[False, False, True, True], [False, True, True, True]]
    with torch.no_grad():
        logprobs, entropy = env.grpo.token_logprobs(model, ids, attention, with_entropy=True)
        full = torch.log_softmax(model(ids).logits.float(), -1)
    assert float(logprobs[0, 2]) == pytest.approx(float(full[0, 2, 8]), abs=1e-5)  # p(8 | 5 6 7)
    assert logprobs.shape == entropy.shape == (2, 4)
    assert bool((entropy > 0).all())


# ---------------------------------------------------------------- rollout backends


def test_stop_text_truncation_and_criterion(env):
    rollout = env.rollout
    stops = ("</answer>",)
    assert rollout.truncate_at_stop("a </think> <answer> 4 </answer> junk", stops) == \
        "a </think> <answer> 4 </answer>"
    assert rollout.truncate_at_stop("no stop here", stops) == "no stop here"
    tok = env.modeling.load_policy("random:tiny", torch.device("cpu"), torch.float32)[1]
    prompt = tok(["The prompt mentions </answer> itself"], add_special_tokens=False).input_ids[0]
    done_text = tok(["x </answer>"], add_special_tokens=False).input_ids[0]
    going_text = tok(["still thinking"], add_special_tokens=False).input_ids[0]
    rows = torch.tensor([prompt + done_text + [0] * (len(going_text) - len(done_text) + 3),
                         prompt + going_text + [0] * 3])
    criterion = rollout.StopOnText(tok, stops, prompt_len=len(prompt), every=1)
    assert criterion(rows, None).tolist() == [True, False]  # the prompt's own </answer> is ignored


def test_transformers_backend_samples_n_completions_per_prompt(env):
    model, tok = env.modeling.load_policy("random:tiny", torch.device("cpu"), torch.float32)
    backend = env.rollout.make_backend("auto", model=model, tokenizer=tok, model_name="random:tiny",
                                       gpu_memory_utilization=0.5, seed=0)
    assert backend.name == "transformers"
    sampling = env.rollout.Sampling(max_new_tokens=5)
    groups = backend.generate(["1+1=", "2+2="], n=3, sampling=sampling, seed=1)
    assert [len(g) for g in groups] == [3, 3]
    assert all(0 < c.n_tokens <= 5 for g in groups for c in g)


class _FakeLLM:
    """Stands in for vllm.LLM (which cannot be installed here) and records what it was asked."""

    instances: ClassVar[list[_FakeLLM]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.multiprocessing_env = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        self.loaded: list[tuple[str, torch.Tensor]] = []
        self.prefix_resets = 0
        runner = types.SimpleNamespace(model=types.SimpleNamespace(load_weights=self._load))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(
            driver_worker=types.SimpleNamespace(model_runner=runner)))
        _FakeLLM.instances.append(self)

    def _load(self, weights):
        self.loaded.extend(weights)

    def reset_prefix_cache(self):
        self.prefix_resets += 1

    def generate(self, prompts, params, use_tqdm=False):
        self.params = params  # one SamplingParams per prompt (each its own seed)
        return [types.SimpleNamespace(outputs=[
            types.SimpleNamespace(text=f"{p} </think> <answer> {i} </answer>", token_ids=[1] * (i + 1))
            for i in range(sp.n)]) for p, sp in zip(prompts, params)]


def test_vllm_glue_refreshes_weights_in_memory_and_maps_outputs(env, monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = _FakeLLM
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    model, tok = env.modeling.load_policy("random:tiny", torch.device("cpu"), torch.float32)

    backend = env.rollout.make_backend("vllm", model=model, tokenizer=tok, model_name="some/model",
                                       gpu_memory_utilization=0.55, seed=3)
    llm = _FakeLLM.instances[-1]
    assert llm.multiprocessing_env == "0"  # set before the engine was created
    assert llm.kwargs["gpu_memory_utilization"] == 0.55 and llm.kwargs["enable_prefix_caching"]
    # make_backend refreshed once: every tensor of the state dict, by name, then the prefix cache
    state = model.state_dict()
    assert [name for name, _ in llm.loaded] == list(state)
    assert all(tensor is state[name] or torch.equal(tensor, state[name]) for name, tensor in llm.loaded)
    assert llm.prefix_resets == 1

    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    llm.loaded.clear()
    backend.refresh(model)
    assert llm.prefix_resets == 2
    first_name, first_tensor = llm.loaded[0]
    assert torch.equal(first_tensor, model.state_dict()[first_name])  # the updated weights

    sampling = env.rollout.Sampling(temperature=1.0, top_p=1.0, max_new_tokens=7)
    groups = backend.generate(["p"], n=2, sampling=sampling, seed=9)
    assert [(c.text, c.n_tokens) for c in groups[0]] == [
        ("p </think> <answer> 0 </answer>", 1), ("p </think> <answer> 1 </answer>", 2)]
    [params] = llm.params
    assert (params.n, params.max_tokens, params.stop, params.include_stop_str_in_output, params.seed) \
        == (2, 7, ["</answer>"], True, env.rollout.prompt_seeds(9, 1)[0])


# ---------------------------------------------------------------- data and setup


PROBLEMS = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "answer": "\\frac{3}{4}", "level": "Level 1",
     "subject": "Prealgebra"},
    {"problem": "Solve $x^2 = 9$ for $x > 0$.", "answer": "3", "level": "Level 2", "subject": "Algebra"},
    {"problem": "Write the interval where $x > 2$.", "answer": "(2, \\infty)", "level": "Level ?"},
]


def test_local_json_lines_reach_training_and_evaluation(env, tmp_path, monkeypatch):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (source / name).write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    monkeypatch.setenv("IDEAFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "argv", ["prepare.py", "--from-jsonl", str(source), "--skip-model"])
    env.prepare.main()
    train = env.data.load_jsonl(tmp_path / "data" / "grpo" / "math_train.jsonl")
    assert [(p.answer, p.level) for p in train] == [("\\frac{3}{4}", 1), ("3", 2), ("(2, \\infty)", 0)]
    evaluation, seed = env.evaluate.load_eval_problems("full")
    assert [p.problem for p in evaluation] == [p["problem"] for p in PROBLEMS] and seed is None
    prompt = env.data.format_prompt(train[1])
    assert prompt.endswith("User: Solve $x^2 = 9$ for $x > 0$.\nAssistant: <think>")


def test_smoke_evaluation_problems_come_from_a_seed_training_cannot_see(env, monkeypatch):
    monkeypatch.delenv("IDEAFORGE_EVAL_SEED", raising=False)
    first, seed_a = env.evaluate.load_eval_problems("smoke")
    second, seed_b = env.evaluate.load_eval_problems("smoke")
    assert seed_a != seed_b and first != second  # the training process cannot regenerate them
    again, seed = env.evaluate.load_eval_problems("smoke", problem_seed=seed_a)
    assert (again, seed) == (first, seed_a)
    assert again != env.data.synthetic_arithmetic(16, seed=env.evaluate.EVAL_SEED)
    monkeypatch.setenv("IDEAFORGE_EVAL_SEED", "8812345678901")  # the search's: the same draw
    search_a, search_b = env.evaluate.load_eval_problems("smoke"), env.evaluate.load_eval_problems("smoke")
    assert search_a == search_b == (env.data.synthetic_arithmetic(16, seed=8812345678901), 8812345678901)


def test_reference_answers_come_from_the_last_boxed_expression(env):
    solution = "So $a=\\boxed{2}$ and then $b = \\boxed{\\frac{\\sqrt{3}}{2}}$."
    assert env.prepare.last_boxed(solution) == "\\frac{\\sqrt{3}}{2}"
    assert env.prepare.last_boxed("no box") is None


# ---------------------------------------------------------------- saved policy and its checks


def _tiny(env, seed: int = 0):
    return env.modeling.load_policy("random:tiny", torch.device("cpu"), torch.float32, seed=seed)[0]


def test_the_evaluator_rebuilds_exactly_the_saved_policy(env, tmp_path):
    trained = _tiny(env, seed=7)  # other weights than the evaluator's fresh build (seed 0)
    env.train_grpo.save_policy(trained, "random:tiny", 3, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json", "policy.safetensors"]
    model, _, meta = env.evaluate.read_policy(tmp_path, "random:tiny", torch.device("cpu"), torch.float32)
    assert meta == {"model": "random:tiny", "dtype": "float32", "step": 3, "tensors": 27}
    got, want = model.state_dict(), trained.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)


def _void_reason(env, artifacts: Path, spec: str = "random:tiny") -> str:
    with pytest.raises(env.evaluate.VoidRun) as caught:
        env.evaluate.read_policy(artifacts, spec, torch.device("cpu"), torch.float32)
    return str(caught.value)


def test_the_evaluator_refuses_weights_it_cannot_trust(env, tmp_path):
    from safetensors.torch import save_file

    def saved(name: str, state: dict | None = None, meta: dict | None = None) -> Path:
        folder = tmp_path / name
        env.train_grpo.save_policy(_tiny(env), "random:tiny", 2, folder)
        if state is not None:
            save_file(state, str(folder / "policy.safetensors"))
        if meta is not None:
            (folder / "policy.json").write_text(json.dumps(meta))
        return folder

    state = {k: v.clone() for k, v in _tiny(env).state_dict().items()}
    wider = dict(state, **{"model.norm.weight": torch.ones(65)})
    assert "shape [65]" in _void_reason(env, saved("shape", wider))
    deeper = dict(state, **{"model.layers.2.mlp.up_proj.weight": torch.zeros(128, 64)})
    assert "unexpected ['model.layers.2.mlp.up_proj.weight']" in _void_reason(env, saved("keys", deeper))
    untied = dict(state, **{"lm_head.weight": state["lm_head.weight"] + 1})
    assert "tie" in _void_reason(env, saved("untied", untied))
    other = saved("model", meta={"model": "Qwen/Qwen2.5-Math-7B", "dtype": "float32", "step": 2})
    assert "not the base model 'random:tiny'" in _void_reason(env, other)
    pickled = saved("pickle")
    torch.save(state, pickled / "policy.safetensors")  # a pickle under the expected name
    assert "not a readable safetensors file" in _void_reason(env, pickled)
    extra = saved("extra")
    (extra / "evaluate.py").write_text("print('eval_accuracy 1.0')\n")
    assert "unexpected files in the artifacts: evaluate.py" in _void_reason(env, extra)
    assert "no artifacts folder" in _void_reason(env, tmp_path / "never-written")


def test_grader_workers_do_not_import_a_math_verify_next_to_the_code_or_in_cwd(tmp_path):
    """The shadowing cheat: a math_verify.py that calls every answer right. The process that
    starts the grader sees it (it is on its path); the isolated workers must not."""
    job = _copy_env(tmp_path / "job")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    marker = tmp_path / "shadow-imported"
    shadow = (f"open({str(marker)!r}, 'a').write('imported\\n')\n"
              "def parse(text, **kw):\n    return [text]\n"
              "def verify(gold, answer, **kw):\n    return True\n")
    for folder in (job, cwd):
        (folder / "math_verify.py").write_text(shadow)
    script = ("import sys, math_verify, grader\n"
              "assert math_verify.verify(1, 2), 'the shadow is what this process imports'\n"
              "with grader.Grader(workers=1) as g:\n"
              "    print(g.equivalent_many([('10', '11'), ('1/2', '0.5')]))\n")
    env = dict(os.environ, PYTHONPATH=f"{job}{os.pathsep}{cwd}")
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[False, True]"
    assert marker.read_text() == "imported\n"  # once: in the parent only, never in a worker


# ---------------------------------------------------------------- the environment as a whole


def _metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _copy_env(dest: Path) -> Path:
    shutil.copytree(ENV_DIR, dest, ignore=shutil.ignore_patterns(
        "__pycache__", "catalog", "bench_results", "*.egg-info", "artifacts"))
    return dest


def _spec() -> dict:
    return tomllib.loads((ENV_DIR / "environment.toml").read_text())


def _stage_env(job: Path, **values: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("IDEAFORGE_")}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"  # `python`
    return dict(base, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", IDEAFORGE_PROFILE="smoke",
                IDEAFORGE_JOB_DIR=str(job), **values)


def _train(job: Path, workdir: Path) -> subprocess.Popen:
    """The training stage as the runner starts it: the patched copy, a data view without the
    held-out file, a fresh artifacts folder, train-time metrics in their own file."""
    (job / "data" / "grpo").mkdir(parents=True, exist_ok=True)
    (job / "artifacts").mkdir(exist_ok=True)
    env = _stage_env(job, IDEAFORGE_METRICS=str(job / "train.jsonl"), IDEAFORGE_DATA_DIR=str(job / "data"),
                     IDEAFORGE_ARTIFACTS=str(job / "artifacts"))
    return subprocess.Popen(["bash", "-c", _spec()["profiles"]["smoke"]["command"]], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _evaluate(job: Path) -> subprocess.Popen:
    """The evaluation stage: pristine copies of [evaluate].files in a fresh folder."""
    spec = _spec()["evaluate"]
    folder = job / "evaluator"
    folder.mkdir()
    for rel in spec["files"]:
        shutil.copy(ENV_DIR / rel, folder / rel)
    env = _stage_env(job, IDEAFORGE_METRICS=str(job / "eval.jsonl"), IDEAFORGE_DATA_DIR=str(job / "data"),
                     IDEAFORGE_ARTIFACTS=str(job / "artifacts"), IDEAFORGE_TRAIN_SECONDS="9.5")
    return subprocess.Popen(["bash", "-c", spec["command"]], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_the_environment_declares_the_contract(env):
    import ast

    spec = _spec()
    assert spec["metric"] == {"name": "eval_accuracy", "goal": "maximize", "baseline": 0.49,
                              "suspicious_above": 0.95}
    for rel in spec["context"]:
        assert (ENV_DIR / rel).is_file(), rel
    for pattern in spec["protected"]:
        assert list(ENV_DIR.glob(pattern)), pattern
    evaluation = spec["evaluate"]
    for rel in ("evaluate.py", "grader.py", "data.py", "metrics.py", "modeling.py", "environment.toml"):
        assert rel in spec["protected"]
    # Everything the evaluator imports from this folder travels with it (and nothing it does not).
    local = {p.stem for p in ENV_DIR.glob("*.py")}
    needed, queue = set(), ["evaluate"]
    while queue:
        tree = ast.parse((ENV_DIR / f"{queue.pop()}.py").read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name in local and name not in needed:
                    needed.add(name)
                    queue.append(name)
    assert set(evaluation["files"]) == {f"{m}.py" for m in needed | {"evaluate"}}
    assert "train_grpo" not in needed and "grpo" not in needed
    assert evaluation["held_out"] == ["grpo/math500.jsonl"]
    assert env.data.default_data_dir().name == "grpo"
    assert "evaluate" not in {n.module for n in ast.walk(ast.parse((ENV_DIR / "train_grpo.py").read_text()))
                              if isinstance(n, ast.ImportFrom)}
    assert "protected_lines" not in spec
    tree = ast.parse((ENV_DIR / "train_grpo.py").read_text())
    top = {f"def {n.name}" for n in tree.body if isinstance(n, ast.FunctionDef)}
    top |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assert set(spec["protected_regions"]["train_grpo.py"]) <= top
    assert "def save_policy" in spec["protected_regions"]["train_grpo.py"]
    profiles = spec["profiles"]
    assert profiles["smoke"]["gpus"] == 0
    for name in ("smoke", "full", "h100"):
        assert profiles[name]["time_limit"] == env.train_grpo.TIME_LIMIT_S[name]
        assert profiles[name]["evaluate_timeout"] <= evaluation["timeout"]
    assert profiles["full"]["time_limit"] == profiles["h100"]["time_limit"] == 3600
    assert set(env.train_grpo.TIME_LIMIT_S) == set(env.train_grpo.PROFILES) == set(env.evaluate.BASE_MODEL)
    for name, overrides in env.train_grpo.PROFILES.items():
        assert overrides.get("model", env.train_grpo.Config.model) == env.evaluate.BASE_MODEL[name]


@pytest.mark.slow
def test_training_saves_the_policy_and_the_evaluator_scores_it(tmp_path):
    job = tmp_path / "job"
    workdir = _copy_env(job / "work")
    proc = _train(job, workdir)
    output, _ = proc.communicate(timeout=170)
    assert proc.returncode == 0, output[-3000:]
    records = _metrics(job / "train.jsonl")
    names = {r["name"] for r in records}
    assert {"train_reward", "train_accuracy", "loss", "clip_fraction", "response_length",
            "rollout_tokens_per_s", "time_rollout_s", "time_reward_s", "time_old_logprobs_s",
            "time_train_s", "time_weight_refresh_s"} <= names
    assert not any(n.startswith("eval_") for n in names)  # training does not evaluate
    assert all({"name", "value", "step", "time_s"} <= set(r) for r in records)
    assert sorted(p.name for p in (job / "artifacts").iterdir()) == ["policy.json", "policy.safetensors"]
    assert json.loads((job / "artifacts" / "policy.json").read_text())["step"] == 2

    proc = _evaluate(job)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-3000:]
    scores = {r["name"]: r for r in _metrics(job / "eval.jsonl")}
    assert set(scores) == {"eval_accuracy", "eval_accuracy_se", "eval_format_rate",
                           "eval_response_length", "time_eval_s"}
    assert 0.0 <= scores["eval_accuracy"]["value"] <= 1.0 and scores["eval_accuracy"]["step"] == 2
    assert 0.0 <= scores["eval_accuracy_se"]["value"] <= 0.5
    assert scores["eval_accuracy"]["eval_samples"] == _evaluate_constant("EVAL_SAMPLES")["smoke"] == 2
    assert scores["eval_accuracy"]["eval_problems"] == 16
    assert isinstance(scores["eval_accuracy"]["problem_seed"], int)
    assert scores["eval_accuracy"]["train_seconds"] == 9.5


@pytest.mark.slow
def test_the_evaluator_voids_a_run_whose_weights_do_not_fit(env, tmp_path):
    from safetensors.torch import save_file

    job = tmp_path / "job"
    (job / "data").mkdir(parents=True)
    (job / "artifacts").mkdir()
    env.train_grpo.save_policy(_tiny(env), "random:tiny", 2, job / "artifacts")
    state = {k: v.clone() for k, v in _tiny(env).state_dict().items()}
    state["model.embed_tokens.weight"] = torch.zeros(512, 64)  # a larger vocabulary
    save_file(state, str(job / "artifacts" / "policy.safetensors"))
    proc = _evaluate(job)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, output[-3000:]
    [void] = _metrics(job / "eval.jsonl")
    assert void["name"] == "void" and "model.embed_tokens.weight has shape [512, 64]" in void["reason"]


def _catalog() -> list[str]:
    return sorted(p.stem for p in (ENV_DIR / "catalog").glob("*.diff"))


def test_catalog_pairs_are_complete_and_touch_only_open_files():
    spec = _spec()
    stems = _catalog()
    assert 8 <= len(stems) <= 12
    assert sorted(p.stem for p in (ENV_DIR / "catalog").glob("*.txt")) == stems
    for stem in stems:
        text = (ENV_DIR / "catalog" / f"{stem}.txt").read_text()
        assert text.startswith("[Experiment]") and "[Code Changes]" in text, stem
        diff = (ENV_DIR / "catalog" / f"{stem}.diff").read_text()
        touched = {line[6:].strip() for line in diff.splitlines() if line.startswith("+++ b/")}
        assert touched, stem
        for rel in touched:
            assert (ENV_DIR / rel).is_file(), (stem, rel)
            assert not any(Path(rel).match(p) for p in spec["protected"]), (stem, rel)


@pytest.mark.slow
def test_every_catalog_diff_applies_and_its_patched_run_is_scored(tmp_path):
    """Each idea trains in its patched copy; the pristine evaluator scores what it saved."""
    pending = _catalog()
    running: list[tuple[str, str, subprocess.Popen, Path]] = []  # (stem, stage, process, job)
    failures = []
    while pending or running:
        while pending and len(running) < 2:
            stem = pending.pop(0)
            job = tmp_path / stem
            workdir = _copy_env(job / "work")
            diff = ENV_DIR / "catalog" / f"{stem}.diff"
            applied = subprocess.run(["git", "apply", str(diff)], cwd=workdir, capture_output=True,
                                     text=True, check=False)
            if applied.returncode != 0:
                failures.append(f"{stem}: git apply: {applied.stderr}")
                continue
            running.append((stem, "train", _train(job, workdir), job))
        stem, stage, proc, job = running.pop(0)
        output, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(f"{stem}: {stage} exit {proc.returncode}\n{output[-2000:]}")
        elif stage == "train":
            running.append((stem, "evaluate", _evaluate(job), job))
        elif "eval_accuracy" not in {r["name"] for r in _metrics(job / "eval.jsonl")}:
            failures.append(f"{stem}: no eval_accuracy\n{output[-2000:]}")
    assert failures == []


# ---------------------------------------------------------------- the score's standard error, seeds


def _evaluate_constant(name: str):
    """A constant of evaluate.py read from its source (the end-to-end test has no `env`)."""
    import ast

    tree = ast.parse((ENV_DIR / "evaluate.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def test_the_accuracy_and_its_standard_error_are_taken_over_problems(env):
    # one sample per problem: 3 of 4 right; sd of (1, 0, 1, 1) is 0.5, so the SE is 0.5 / 2
    assert env.evaluate.accuracy_and_se([1, 0, 1, 1]) == pytest.approx((0.75, 0.25))
    # several samples: per-problem shares (1, 0.5, 0.5, 0); sample variance 1/6, SE sqrt(1/24)
    assert env.evaluate.accuracy_and_se([1, 0.5, 0.5, 0]) == pytest.approx((0.5, math.sqrt(1 / 24)))
    # problems that are all alike leave no spread between them
    assert env.evaluate.accuracy_and_se([0.5] * 8) == (0.5, 0.0)
    accuracy, se = env.evaluate.accuracy_and_se([1.0])
    assert accuracy == 1.0 and math.isnan(se)  # not estimable from one problem


class _ScriptedBackend:
    """Answers problem i correctly in the first `right[i]` of its samples (a stand-in for a
    policy whose per-problem solve rates are known)."""

    def __init__(self, right: list[int]):
        self.right, self.asked = right, []

    def generate(self, prompts, n, sampling, seed):
        self.asked.append((len(prompts), n, seed))
        completion = types.SimpleNamespace
        return [[completion(text=f" </think> <answer> {'42' if j < self.right[i] else '7'} </answer>",
                            n_tokens=5) for j in range(n)] for i in range(len(prompts))]


def test_the_evaluation_samples_each_problem_k_times_and_reports_the_se(env, grader, monkeypatch, tmp_path):
    monkeypatch.setitem(env.evaluate.EVAL_SAMPLES, "smoke", 4)
    problems = [env.data.Problem(problem=f"What is {i} + 0?", answer="42") for i in range(5)]
    backend = _ScriptedBackend([4, 2, 0, 1, 3])
    results = env.evaluate.evaluate(backend, problems, grader, "smoke")
    assert backend.asked == [(5, 4, env.evaluate.EVAL_SEED)]  # a fixed schedule: seed and k
    shares = [1, 0.5, 0, 0.25, 0.75]
    mean = sum(shares) / 5
    se = math.sqrt(sum((x - mean) ** 2 for x in shares) / 4 / 5)
    assert results["eval_accuracy"] == pytest.approx(0.5)
    assert results["eval_accuracy_se"] == pytest.approx(se)
    assert results["eval_format_rate"] == 1.0 and results["eval_response_length"] == 5
    reporter = env.metrics.Reporter(0.0, path=str(tmp_path / "m.jsonl"))
    for name, value in results.items():
        reporter.emit(name, value, 2)
    reporter.close()
    lines = {r["name"]: r["value"] for r in _metrics(tmp_path / "m.jsonl")}
    assert lines["eval_accuracy_se"] == pytest.approx(se)


def test_every_profile_names_its_samples_per_problem(env):
    assert set(env.evaluate.EVAL_SAMPLES) == set(env.evaluate.EVAL_PROBLEMS) == set(env.evaluate.BASE_MODEL)
    assert all(k >= 1 for k in env.evaluate.EVAL_SAMPLES.values())


def test_the_run_seed_drives_training(env, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train_grpo.py", "--profile", "smoke"])
    monkeypatch.delenv("IDEAFORGE_SEED", raising=False)
    plain, _ = env.train_grpo.parse_args()
    assert plain.seed == 0  # unset: the historical seed and training problems
    assert env.train_grpo.load_train_problems(plain, Path()) == env.data.synthetic_arithmetic(256, seed=0)
    monkeypatch.setenv("IDEAFORGE_SEED", str(2**40 + 77))  # any integer; kept below 2^31
    seeded, _ = env.train_grpo.parse_args()
    assert seeded.seed == 77
    problems = env.train_grpo.load_train_problems(seeded, Path())
    assert problems == env.train_grpo.load_train_problems(seeded, Path())  # reproducible
    assert problems != env.train_grpo.load_train_problems(plain, Path())
    monkeypatch.setattr(sys, "argv", ["train_grpo.py", "--profile", "smoke", "--set", "seed=3"])
    assert env.train_grpo.parse_args()[0].seed == 3  # an explicit seed still wins


def test_profiles_state_noise_only_where_the_score_varies(env):
    profiles = _spec()["profiles"]
    assert all(p["baseline_runs"] == 3 for p in profiles.values())
    assert "noise" not in profiles["smoke"]  # a random policy scores 0 on every run
    binomial = math.sqrt(0.49 * 0.51 / env.evaluate.EVAL_PROBLEMS["full"])
    for name in ("full", "h100"):
        assert binomial <= profiles[name]["noise"] < binomial + 0.001
