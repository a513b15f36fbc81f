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
