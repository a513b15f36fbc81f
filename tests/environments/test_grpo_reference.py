"""The GRPO environment trains like the reference implementation (issue 17): the loss of a
micro-batch, accumulation windows, no gradient clipping, the profiles' batch shapes, sampling
seeds, vLLM start-up order and weight sync, response lengths.

Runs on a CPU with a tiny random model; vLLM is not installed here, so a stand-in `vllm` module
(recording what it is given) is the only thing faked.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ENV_DIR = Path(__file__).resolve().parents[2] / "environments" / "grpo"
MODULES = ("data", "grader", "grpo", "metrics", "modeling", "rollout", "evaluate", "train_grpo")


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


def _tiny(env, seed: int = 0):
    return env.modeling.load_policy("random:tiny", torch.device("cpu"), torch.float32, seed=seed)


# ---------------------------------------------------------------- the loss of a micro-batch


def test_a_micro_batch_loss_is_one_mean_over_all_its_response_tokens(env):
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 1]])
    # three tokens of the first response and one of the second, pooled: (1 + 2 + 3 + 40) / 4.
    # (Averaging each response first would give (2 + 40) / 2 = 21.)
    assert float(env.grpo.aggregate_loss(per_token, mask)) == pytest.approx(11.5)


def test_accumulation_windows_divide_by_their_own_count(env):
    assert env.grpo.accumulation_counts(4, 2) == [2, 2, 2, 2]
    assert env.grpo.accumulation_counts(5, 2) == [2, 2, 2, 2, 1]  # the last window holds one
    assert env.grpo.accumulation_counts(7, 16) == [7] * 7  # fewer micro-batches than a window
    assert env.grpo.accumulation_counts(0, 16) == []


class _RecordingOptimizer:
    """Stands in for AdamW: keeps a copy of the gradients at every step, changes nothing."""

    def __init__(self, model):
        self.model, self.steps = model, []

    def step(self):
        self.steps.append({n: p.grad.detach().clone() for n, p in self.model.named_parameters()
                           if p.grad is not None})

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)


def _rollouts(env, lengths: list[int], advantages: list[float]):
    gen = torch.Generator().manual_seed(5)
    return [env.train_grpo.Rollout(prompt_ids=[5, 6, 7],
                                   response_ids=torch.randint(3, 130, (n,), generator=gen).tolist(),
                                   reward=0.0, advantage=a)
            for n, a in zip(lengths, advantages)]


def _by_hand(env, model, rollouts, windows: list[list[list[int]]]) -> list[dict[str, torch.Tensor]]:
    """The gradient of each optimizer step, from the definition: for each micro-batch, the sum of
    -A * log p over its response tokens divided by its token count; each window's micro-batch
    losses divided by the window's micro-batch count. Every response is run alone (no padding)."""
    grads = []
    for window in windows:
        model.zero_grad(set_to_none=True)
        total = 0.0
        for micro in window:
            token_sum, tokens = 0.0, 0
            for i in micro:
                r = rollouts[i]
                ids = torch.tensor([r.prompt_ids + r.response_ids])
                logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
                picked = logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]][len(r.prompt_ids) - 1:]
                token_sum = token_sum + (-r.advantage * picked).sum()
                tokens += len(r.response_ids)
            total = total + token_sum / tokens / len(window)
        total.backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    return grads


def test_training_steps_on_token_pooled_micro_batch_losses_with_a_partial_last_window(env):
    model, tok = _tiny(env)
    rollouts = _rollouts(env, lengths=[3, 9, 5, 2, 7], advantages=[1.0, -0.5, 2.0, -1.0, 0.75])
    cfg = env.train_grpo.Config(profile="smoke", loss_type="reinforce_with_baseline",
                                micro_batch=2, grad_accum=2)
    optimizer = _RecordingOptimizer(model)
    import random

    stats = env.train_grpo.train_on_rollouts(model, optimizer, rollouts, cfg, tok.pad_token_id,
                                             torch.device("cpu"), random.Random(0))
    assert stats["optimizer_steps"] == 2
    # micro-batches in sampling order (no shuffle): [0 1] [2 3] | [4] -- the last window alone
    expected = _by_hand(env, model, rollouts, [[[0, 1], [2, 3]], [[4]]])
    for got, want in zip(optimizer.steps, expected):
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_no_gradient_clipping_by_default(env):
    assert env.train_grpo.Config().grad_clip == 0.0
    model, tok = _tiny(env)
    rollouts = _rollouts(env, lengths=[6, 4], advantages=[50.0, -50.0])  # a large gradient
    import random

    def step(grad_clip: float):
        cfg = env.train_grpo.Config(profile="smoke", loss_type="reinforce_with_baseline",
                                    micro_batch=2, grad_accum=1, grad_clip=grad_clip)
        optimizer = _RecordingOptimizer(model)
        stats = env.train_grpo.train_on_rollouts(model, optimizer, rollouts, cfg, tok.pad_token_id,
                                                 torch.device("cpu"), random.Random(0))
        norm = math.sqrt(sum(float(g.float().norm()) ** 2 for g in optimizer.steps[0].values()))
        return stats["grad_norm"], norm

    reported, applied = step(0.0)
    assert reported > 1.0 and applied == pytest.approx(reported, rel=1e-5)  # untouched
    reported_clipped, applied_clipped = step(1.0)  # the knob still clips when asked
    assert reported_clipped == pytest.approx(reported, rel=1e-5)
    assert applied_clipped == pytest.approx(1.0, rel=1e-3)


# ---------------------------------------------------------------- profiles


# The reference's two launch scripts, as read (env/grpo/run_job.sh for a B200, run.sh for 80 GB):
# --grpo_steps, --group_size, --rollout_subset_size, --batch_size, --gradient_accumulation_steps,
# --learning_rate, --cliprange, --loss_type, --train_steps_per_rollout; and the grpo.py defaults
# they keep (AdamW betas 0.9/0.95, weight decay 0, advantage eps 1e-6, std normalisation, 1,024
# new tokens at temperature 1.0, top-p 1.0, vLLM at 0.55 of the GPU's memory).
REFERENCE_SHAPES = {
    "full": {"n_steps": 20, "group_size": 8, "prompts_per_step": 128, "micro_batch": 4,
             "grad_accum": 16},
    "h100": {"n_steps": 20, "group_size": 8, "prompts_per_step": 64, "micro_batch": 2,
             "grad_accum": 32},
}
REFERENCE_COMMON = {"lr": 1e-5, "clip_range": 0.2, "loss_type": "grpo_clip", "epochs_per_rollout": 1,
                    "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.0, "adv_eps": 1e-6,
                    "normalize_std": True, "max_new_tokens": 1024, "temperature": 1.0, "top_p": 1.0,
                    "vllm_gpu_memory": 0.55, "grad_clip": 0.0, "shuffle_rollouts": False,
                    "model": "Qwen/Qwen2.5-Math-1.5B"}


@pytest.mark.parametrize("profile", ["full", "h100"])
def test_the_gpu_profiles_have_the_reference_scripts_shapes(env, profile):
    cfg = env.train_grpo.Config(profile=profile, **env.train_grpo.PROFILES[profile])
    wanted = {**REFERENCE_COMMON, **REFERENCE_SHAPES[profile]}
    assert {k: getattr(cfg, k) for k in wanted} == wanted
    assert env.train_grpo.TIME_LIMIT_S[profile] == 3600  # `timeout 1h`
    rollouts = cfg.prompts_per_step * cfg.group_size
    assert rollouts % (cfg.micro_batch * cfg.grad_accum) == 0  # whole windows, as the reference
    assert rollouts // (cfg.micro_batch * cfg.grad_accum) == {"full": 16, "h100": 8}[profile]


# ---------------------------------------------------------------- sampling seeds


def test_seeds_are_derived_per_use_and_reproducible(env):
    derive = env.rollout.derive_seed
    assert derive(7, "rollout", 1) == derive(7, "rollout", 1)  # reproducible
    seeds = {derive(7, "rollout", 1), derive(7, "rollout", 2), derive(8, "rollout", 1),
             derive(7, "evaluation")}
    assert len(seeds) == 4 and all(0 <= s < 2**63 for s in seeds)
    # no offset arithmetic: seed 1's step 2 is not seed 2's step 1
    assert derive(1, "rollout", 2) != derive(2, "rollout", 1)
    per_prompt = env.rollout.prompt_seeds(derive(7, "rollout", 1), 128)
    assert len(set(per_prompt)) == 128
    assert per_prompt == env.rollout.prompt_seeds(derive(7, "rollout", 1), 128)


def test_the_evaluation_seed_follows_the_run_seed(env, monkeypatch):
    monkeypatch.delenv("IDEAFORGE_SEED", raising=False)
    assert env.evaluate.eval_seed() == env.evaluate.EVAL_SEED  # a run without a seed: the fixed one
    monkeypatch.setenv("IDEAFORGE_SEED", "41")
    first = env.evaluate.eval_seed()
    monkeypatch.setenv("IDEAFORGE_SEED", "42")
    second = env.evaluate.eval_seed()
    assert len({first, second, env.evaluate.EVAL_SEED}) == 3  # each run's evaluation its own
    monkeypatch.setenv("IDEAFORGE_SEED", "41")
    assert env.evaluate.eval_seed() == first  # and reproducible
    # never one of the training run's rollout seeds
    assert first not in {env.rollout.derive_seed(41, "rollout", s) for s in range(1, 21)}


class _FakeLLM:
    """Stands in for vllm.LLM: records its arguments, the weights loaded into it (copies, as a
    real engine copies them into its own buffers), prefix-cache resets and sampling requests."""

    instances: ClassVar[list] = []
    events: ClassVar[list[str]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.loads: list[list[tuple[str, torch.Tensor]]] = []
        self.prefix_resets = 0
        self.requests: list = []
        runner = types.SimpleNamespace(model=types.SimpleNamespace(load_weights=self._load))
        # V1's in-process executor: the worker wrapper holds the worker, which holds the runner
        # (test_grpo.py's stand-in has V0's shape, the reference's)
        worker = types.SimpleNamespace(worker=types.SimpleNamespace(model_runner=runner))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))
        _FakeLLM.instances.append(self)
        _FakeLLM.events.append("vllm engine")

    def _load(self, weights):
        self.loads.append([(name, tensor.detach().clone()) for name, tensor in weights])

    def reset_prefix_cache(self):
        self.prefix_resets += 1

    def generate(self, prompts, params, use_tqdm=False):
        self.requests.append((list(prompts), params))
        return [types.SimpleNamespace(outputs=[
            types.SimpleNamespace(text=f" </think> <answer> {j} </answer>", token_ids=[1] * (j + 2))
            for j in range(p.n)]) for p in params]


@pytest.fixture
def fake_vllm(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.LLM = _FakeLLM
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    _FakeLLM.instances.clear()
    _FakeLLM.events.clear()
    return fake


def test_each_prompt_samples_from_its_own_stream_under_vllm(env, fake_vllm):
    backend = env.rollout.VLLMBackend("some/model", 0.55, seed=3)
    sampling = env.rollout.Sampling(max_new_tokens=9)
    step_seed = env.rollout.derive_seed(3, "rollout", 1)
    backend.generate(["a", "b", "c"], n=8, sampling=sampling, seed=step_seed)
    backend.generate(["a", "b", "c"], n=8, sampling=sampling, seed=step_seed)
    backend.generate(["a", "b", "c"], n=8, sampling=sampling, seed=env.rollout.derive_seed(3, "rollout", 2))
    first, again, next_step = [[p.seed for p in params] for _, params in backend.llm.requests]
    assert len(set(first)) == 3  # not one seed shared by every prompt's j-th sample
    assert first == again == env.rollout.prompt_seeds(step_seed, 3)  # reproducible
    assert not set(first) & set(next_step)  # another step, other streams
    assert all(p.n == 8 and p.max_tokens == 9 for _, params in backend.llm.requests for p in params)


def test_the_transformers_backend_gives_each_prompt_its_own_stream(env):
    model, tok = _tiny(env)
    backend = env.rollout.TransformersBackend(model, tok, id_range=env.modeling.sample_id_range("random:tiny"))
    sampling = env.rollout.Sampling(max_new_tokens=12)

    def texts(prompts, seed, gen_batch=0):
        backend.gen_batch = gen_batch
        return [[c.text for c in g] for g in backend.generate(prompts, 2, sampling, seed)]

    both = texts(["1+1=", "2+2="], 11)
    assert both == texts(["1+1=", "2+2="], 11)  # reproducible
    assert both != texts(["1+1=", "2+2="], 12)
    [[a, b], [c, d]] = both
    assert len({a, b, c, d}) == 4  # every sample its own draws
    assert texts(["1+1="], 11) == both[:1]  # prompt 0's samples do not depend on prompt 1
    assert texts(["1+1=", "2+2="], 11, gen_batch=1) == both  # nor on how rows are batched
    same_text = texts(["1+1=", "1+1="], 11)
    assert same_text[0] != same_text[1]  # the same prompt twice: two streams


def test_row_streams_sample_by_inverse_cdf(env):
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.2]] * 4))
    uniforms = torch.tensor([[0.1], [0.6], [0.9], [0.5]])
    ids = torch.zeros(4, 7, dtype=torch.long)  # 7 prompt tokens, no token generated yet
    sample = env.rollout.SampleFromRowStreams(uniforms, temperature=1.0, top_p=1.0, prompt_len=7)
    picked = sample(ids, scores.clone())
    # cdf 0.5, 0.8, 1.0: 0.1 -> 0, 0.6 -> 1, 0.9 -> 2, 0.5 -> 1 (the first cdf above u)
    assert picked.argmax(-1).tolist() == [0, 1, 2, 1]
    assert bool(torch.isinf(picked).sum(-1).eq(2).all())  # one finite score per row
    nucleus = env.rollout.SampleFromRowStreams(uniforms, temperature=1.0, top_p=0.6, prompt_len=7)
    # top-p 0.6 keeps tokens 0 and 1 (0.5 + 0.3 reaches it); u is scaled to their mass 0.8:
    # 0.08 -> 0, 0.48 -> 0, 0.72 -> 1, 0.4 -> 0
    assert nucleus(ids, scores.clone()).argmax(-1).tolist() == [0, 0, 1, 0]


# ---------------------------------------------------------------- vLLM start-up and weight sync


def test_training_starts_vllm_before_the_policy_and_syncs_every_weight(env, fake_vllm, monkeypatch):
    loaded = env.train_grpo.load_policy

    def load_policy(*args, **kwargs):
        _FakeLLM.events.append("policy")
        return loaded(*args, **kwargs)

    monkeypatch.setattr(env.train_grpo, "load_policy", load_policy)
    cfg = env.train_grpo.Config(profile="smoke", model="random:tiny", backend="vllm", seed=5)
    model, _, backend = env.train_grpo.build_policy_and_backend(cfg, torch.device("cpu"))
    assert _FakeLLM.events == ["vllm engine", "policy"]  # the reference's order
    [llm] = _FakeLLM.instances
    assert llm.kwargs["gpu_memory_utilization"] == 0.55 and llm.kwargs["model"] == "random:tiny"
    assert llm.kwargs["seed"] == 5

    state = model.state_dict()
    [first] = llm.loads  # the first sync, right after the policy was loaded
    assert [name for name, _ in first] == list(state)  # every tensor, Hugging Face names
    assert [tuple(t.shape) for _, t in first] == [tuple(t.shape) for t in state.values()]
    assert all(torch.equal(t, state[name]) for name, t in first)
    assert llm.prefix_resets == 1

    with torch.no_grad():  # an optimizer step: the next sync sends the new values
        model.model.norm.weight.add_(0.5)
    backend.refresh(model)
    second = dict(llm.loads[1])
    assert torch.equal(second["model.norm.weight"], model.model.norm.weight)
    assert torch.equal(second["model.norm.weight"], dict(first)["model.norm.weight"] + 0.5)
    assert llm.prefix_resets == 2  # KV blocks of the old weights are dropped


def test_the_transformers_backend_needs_no_engine(env, fake_vllm):
    cfg = env.train_grpo.Config(profile="smoke", model="random:tiny", backend="auto")
    model, _, backend = env.train_grpo.build_policy_and_backend(cfg, torch.device("cpu"))
    assert backend.name == "transformers" and backend.model is model and _FakeLLM.instances == []


# ---------------------------------------------------------------- small things


def test_response_lengths_stop_at_the_stop_string(env):
    _, tok = _tiny(env)
    ids = tok("so 4 </think> <answer> 4 </answer> and then more text", add_special_tokens=False).input_ids
    through = tok("so 4 </think> <answer> 4 </answer>", add_special_tokens=False).input_ids
    assert env.rollout.tokens_through_stop(tok, ids, ("</answer>",)) == len(through)
    assert env.rollout.tokens_through_stop(tok, through[:-3], ("</answer>",)) == len(through) - 3


def test_generated_tokens_past_the_stop_are_not_counted(env, monkeypatch):
    model, tok = _tiny(env)
    backend = env.rollout.TransformersBackend(model, tok)
    text = " 4 </think> <answer> 4 </answer> junk junk"
    scripted = tok(text, add_special_tokens=False).input_ids

    def generate(input_ids, **kwargs):  # the model "ran on" past its stop, as StopOnText allows
        return torch.cat([input_ids, torch.tensor([scripted] * input_ids.shape[0])], dim=1)

    monkeypatch.setattr(model, "generate", generate)
    [[completion]] = backend.generate(["p"], 1, env.rollout.Sampling(max_new_tokens=64), seed=0)
    assert completion.text == " 4 </think> <answer> 4 </answer>"
    assert completion.n_tokens == len(tok(completion.text, add_special_tokens=False).input_ids)
    assert completion.n_tokens < len(scripted)


PY311_ONLY = ("from typing import Self", "typing.Self", "import tomllib", "ExceptionGroup",
              "TaskGroup", "datetime.UTC", "StrEnum", "except*")


def test_the_code_runs_on_the_python_its_pyproject_names(env):
    pyproject = (ENV_DIR / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in pyproject
    for path in [*ENV_DIR.glob("*.py"), *ENV_DIR.glob("*.sh"), *ENV_DIR.glob("scripts/*")]:
        text = path.read_text()
        assert [name for name in PY311_ONLY if name in text] == [], path.name


# ---------------------------------------------------------------- grading


@pytest.fixture(scope="module")
def grader(env):
    pytest.importorskip("math_verify")
    with env.grader.Grader(workers=2, timeout_s=3.0) as g:
        yield g


# math-verify alone accepts every one of these (it reads a relation's last side as the answer,
# and drops subscripts and units); each is wrong.
WRONG_BUT_MATH_VERIFY_ACCEPTS = [
    ("42", "41 = 42"),
    ("42", "42 \\approx 41"),
    ("1011_2", "1011_3"),  # another base
    ("1011_2", "1011"),  # no base: base 10
    ("10_8", "10_{16}"),
    ("5\\text{ cm}^2", "5\\text{ cm}^3"),  # another power of the unit
    ("12\\text{ cm}", "12\\text{ cm}^2"),
    ("-50", "-51\\%"),
]
STILL_RIGHT = [
    ("42", "x = 42"),
    ("42", "42 \\approx 42"),
    ("\\frac12", "x \\approx 0.5"),
    ("3", "x_1 = 3"),  # a subscripted name is not a base
    ("8", "\\log_2 256 = 8"),
    ("1011_2", "1011_{2}"),
    ("5", "5_{10}"),
    ("5\\text{ cm}^2", "5"),  # units may be left out
    ("5\\text{ cm}^2", "5 \\text{ cm}^2"),
    ("(1,2)", "x = 1, y = 2"),
    ("y = 2x + 3", "y = 3 + 2x"),  # an equation answer is compared whole
    ("9", "9."),  # the full stop that ends a sentence
    ("-50", "-50\\%"),  # a percent sign the gold does not have
    ("10,\\!080", "x = 10,\\!080"),  # a thousands separator is not a list
    ("\\frac{14}{3}", "\\frac{14}{3}."),
]


def test_wrong_answers_math_verify_accepts_are_rejected(grader):
    verdicts = grader.equivalent_many(WRONG_BUT_MATH_VERIFY_ACCEPTS + STILL_RIGHT)
    got = dict(zip(WRONG_BUT_MATH_VERIFY_ACCEPTS + STILL_RIGHT, verdicts))
    assert [pair for pair in WRONG_BUT_MATH_VERIFY_ACCEPTS if got[pair]] == []
    assert [pair for pair in STILL_RIGHT if not got[pair]] == []


@pytest.mark.parametrize(("response", "answer"), [
    ("so 4 </think> <answer> 4 </answer>", "4"),
    ("so 4 </think> <answer> 4 </answer>\n", "4"),
    ("so 4 </think> <answer>\\boxed{4}</answer>", "\\boxed{4}"),
    ("so <answer> 3 </think> <answer> 4 </answer>", "4"),  # the last <answer>, as the reference
    ("a </think> b </think> <answer> 4 </answer>", "4"),
    ("so </think> <answer>  </answer>", ""),  # well formed, empty: wrong, not malformed
    ("so 4 </think><answer> 4 </answer>", None),  # the reference's literal "</think> <answer>"
    ("so 4 </think>  <answer> 4 </answer>", None),
    ("so 4 </think>\n<answer> 4 </answer>", None),
    ("so 4 </think> <answer> 4", None),
])
def test_the_format_is_the_references(env, response, answer):
    assert env.grader.extract_r1_zero_answer(response) == answer


def test_the_benchmarks_reading_of_the_reference_rules():
    """bench/grpo_reference_rules.py restates the reference's rules; pin what the agreement
    benchmark relies on, including the reference's own quirks."""
    sys.path.insert(0, str(ENV_DIR.parents[1] / "bench"))
    try:
        rules = importlib.import_module("grpo_reference_rules")
    finally:
        sys.path.pop(0)
    grade = rules.reference_grade
    assert grade("so </think> <answer> \\boxed{\\dfrac{1}{2}} </answer>", "\\frac12") == (True, True)
    assert grade("so </think><answer> 4 </answer>", "4") == (False, False)
    assert grade("so </think> <answer> 0.5 </answer>", "\\frac{1}{2}") == (True, True)
    assert grade("so </think> <answer> 180 miles </answer>", "180") == (True, True)
    assert grade("so </think> <answer> \\frac{2}{4} </answer>", "\\frac{1}{2}") == (True, False)
    assert grade("so </think> <answer> 5 = 4 </answer>", "4") == (True, True)  # its "k =" rule
    assert grade("so </think> <answer> 41 = 42 </answer>", "42") == (True, False)
    assert grade("so </think> <answer> 9. </answer>", "9") == (True, True)
    assert grade("so </think> <answer> \\boxed{4 </answer>", "4") == (True, False)
