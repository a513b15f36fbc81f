"""The GRPO environment's native rollout backend (environments/grpo/native_rollout.py) on a CPU:
the same tokens as transformers `generate()` on the same weights, the same sampled completions
as the transformers backend for the same seed, the sampling distribution, stop strings and
retired rows, per-row seeds, backend selection and the GPU benchmark's --tiny run.

Models are tiny random Qwen2s built from a config (nothing is downloaded). Their weights are
drawn with a large init scale so that the next token depends on the context (with the default
0.02 a random model repeats one token, which would hide position and cache mistakes).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ENV_DIR = Path(__file__).resolve().parents[2] / "environments" / "grpo"
MODULES = ("modeling", "rollout", "native_decode", "native_rollout", "grader", "train_grpo",
           "data", "grpo", "metrics")


@pytest.fixture(scope="module")
def env():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    saved = {name: sys.modules.pop(name) for name in MODULES if name in sys.modules}
    sys.path.insert(0, str(ENV_DIR))
    try:
        yield types.SimpleNamespace(**{name: importlib.import_module(name) for name in MODULES
                                       if name not in ("grader", "train_grpo", "data", "grpo", "metrics")})
    finally:
        sys.path.remove(str(ENV_DIR))
        for name in MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def tiny_qwen2(vocab: int = 384, seed: int = 0, scale: float = 0.35):
    config = transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, initializer_range=scale, rope_theta=10000.0)
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config).float().eval()
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.ByT5Tokenizer()  # pad 0, eos 1, bytes at 3..258


PROMPTS = ["1+1=", "What is twelve times seven? ", "x",
           "Solve for x: 3x + 5 = 11. Think step by step, then answer."]


def hf_greedy(model, tokenizer, prompts, max_new):
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    tokenizer.padding_side = side
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=max_new,
                                           pad_token_id=0, eos_token_id=1)
    out = model.generate(**enc, generation_config=config)[:, enc["input_ids"].shape[1]:].tolist()
    return [row[:row.index(1) + 1] if 1 in row else row for row in out]


def test_greedy_tokens_equal_transformers_generate_with_left_padding(env, tokenizer):
    model = tiny_qwen2()
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    assert len({len(i) for i in ids}) == len(ids)  # every prompt a different length
    expected = hf_greedy(model, tokenizer, PROMPTS, 40)
    backend = env.native_rollout.NativeBackend(model, tokenizer, min_bucket=1, key_chunk=16)
    got = backend.generate_ids(ids, env.rollout.Sampling(temperature=0.0, max_new_tokens=40, stop=()),
                               torch.zeros(len(ids), 40))
    assert got == expected
    assert all(len(set(row)) > 5 for row in got)  # context-dependent text, not one token repeated
    # one prompt per prefill chunk, each chunk padded only to its own longest prompt
    one_by_one = env.native_rollout.NativeBackend(model, tokenizer, min_bucket=1, prefill_tokens=1)
    assert one_by_one.generate_ids(ids, env.rollout.Sampling(temperature=0.0, max_new_tokens=40, stop=()),
                                   torch.zeros(len(ids), 40)) == expected
    # the keys width grew in chunks of 16 past the longest prompt: more than one width was used
    assert backend.last_stats["decode_steps"] == 39


def test_an_end_of_sequence_token_ends_its_row_as_in_generate(env, tokenizer):
    model = tiny_qwen2(seed=5)
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    Sampling = env.rollout.Sampling
    plain = env.native_rollout.NativeBackend(model, _Vocab(384), min_bucket=1)
    free = plain.generate_ids(ids, Sampling(temperature=0.0, max_new_tokens=30, stop=()), torch.zeros(4, 30))
    # an "end of sequence" that some rows write early and some never
    eos = next(t for t in free[0][3:] if sum(t in row for row in free) in (1, 2, 3))
    vocab = _Vocab(384)
    vocab.eos_token_id = eos
    backend = env.native_rollout.NativeBackend(model, vocab, min_bucket=1, check_every=2)
    got = backend.generate_ids(ids, Sampling(temperature=0.0, max_new_tokens=30, stop=()), torch.zeros(4, 30))
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    tokenizer.padding_side = side
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=30, pad_token_id=0, eos_token_id=eos)
    out = model.generate(**enc, generation_config=config)[:, enc["input_ids"].shape[1]:].tolist()
    expected = [row[:row.index(eos) + 1] if eos in row else row for row in out]
    assert got == expected
    assert any(len(row) < 30 for row in got) and any(len(row) == 30 for row in got)
    # the same rows in batches of two (as when the KV cache holds fewer rows than asked for)
    small = env.native_rollout.NativeBackend(model, vocab, min_bucket=1, check_every=2, max_batch_rows=2)
    assert small.generate_ids(ids, Sampling(temperature=0.0, max_new_tokens=30, stop=()), torch.zeros(4, 30)) == got
    assert small.last_stats["batches"] == 2


def test_sampled_completions_equal_the_transformers_backend_for_the_same_seed(env, tokenizer):
    model = tiny_qwen2(seed=1, scale=0.1)
    sampling = env.rollout.Sampling(temperature=0.9, top_p=0.9, max_new_tokens=24)
    reference = env.rollout.TransformersBackend(model, tokenizer, id_range=(3, 131))
    native = env.native_rollout.NativeBackend(model, tokenizer, id_range=(3, 131), min_bucket=1)
    expected = reference.generate(PROMPTS, n=3, sampling=sampling, seed=11)
    got = native.generate(PROMPTS, n=3, sampling=sampling, seed=11)
    assert got == expected
    assert len({c.text for group in got for c in group}) == 12  # twelve different samples
    assert native.generate(PROMPTS, n=3, sampling=sampling, seed=12) != got


def reference_probs(logits, temperature, top_p):
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    ranked, order = probs.sort(descending=True)
    keep = (ranked.cumsum(-1) - ranked) < top_p
    out = torch.zeros_like(probs)
    out[order[keep]] = ranked[keep]
    return out / out.sum()


class _Vocab:
    """All a tokenizer has to offer when no text is decoded: its size, no end of sequence."""
    eos_token_id, pad_token_id = None, 0

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def test_sampled_tokens_follow_softmax_over_temperature_within_top_p(env, tokenizer):
    """First token (prefill) and second token (a decoding step, given the first) of 6,000 rows
    of one prompt: total variation from softmax(logits / T) cut to its top-p nucleus."""
    vocab, rows, temperature, top_p = 12, 6000, 0.7, 0.85
    model = tiny_qwen2(vocab=vocab, seed=3, scale=0.1)
    prompt = [5, 7, 2, 9]
    sampling = env.rollout.Sampling(temperature=temperature, top_p=top_p, max_new_tokens=2, stop=())
    uniforms = env.native_rollout.row_uniforms(list(range(rows)), 1, 2)
    backend = env.native_rollout.NativeBackend(model, _Vocab(vocab), min_bucket=rows)
    out = backend.generate_ids([prompt] * rows, sampling, uniforms)
    first = torch.tensor([row[0] for row in out])
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1]
    want = reference_probs(logits, temperature, top_p)
    seen = torch.bincount(first, minlength=vocab).double() / rows
    assert (want > 0).sum() >= 3 and (want == 0).sum() >= 1  # the nucleus cuts something
    assert float((seen - want).abs().sum() / 2) < 0.03
    assert seen[want == 0].sum() == 0  # never outside the nucleus
    common = int(first.mode().values)
    second = torch.tensor([row[1] for row in out if row[0] == common])
    with torch.no_grad():
        logits = model(torch.tensor([prompt + [common]])).logits[0, -1]
    want = reference_probs(logits, temperature, top_p)
    seen = torch.bincount(second, minlength=vocab).double() / len(second)
    assert len(second) > 1000
    assert float((seen - want).abs().sum() / 2) < 0.05
    assert seen[want == 0].sum() == 0


def test_stop_strings_end_rows_and_retired_rows_leave_the_others_unchanged(env, tokenizer):
    model = tiny_qwen2(seed=2)
    prompts = PROMPTS + ["abc", "The answer is", "Let me think.", "2*3+4"]
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    Sampling = env.rollout.Sampling
    free = env.native_rollout.NativeBackend(model, tokenizer, id_range=(3, 131), min_bucket=1,
                                            check_every=2)
    full = free.generate_ids(ids, Sampling(temperature=0.0, max_new_tokens=40, stop=()),
                             torch.zeros(len(ids), 40))
    texts = tokenizer.batch_decode(full)
    # a stop string that some rows write early and others never: a character of row 0's text
    stop = next(c for c in texts[0][2:12] if sum(c in t[:30] for t in texts) in range(2, len(texts) - 2))
    stopped = env.native_rollout.NativeBackend(model, tokenizer, id_range=(3, 131), min_bucket=1,
                                               check_every=2)
    sampling = Sampling(temperature=0.0, max_new_tokens=40, stop=(stop,))
    got = stopped.generate_ids(ids, sampling, torch.zeros(len(ids), 40))
    completions = stopped.to_completions(got, (stop,))
    for row, text in enumerate(texts):
        if stop in text:
            cut = text.index(stop) + len(stop)
            assert completions[row].text == text[:cut]
            assert completions[row].n_tokens == cut  # one token per byte
            assert len(got[row]) <= cut + 2  # ended within check_every tokens of its stop
        else:
            assert got[row] == full[row]  # a row that never stops: its tokens are unchanged
            assert completions[row].n_tokens == 40
    assert stopped.last_stats["compactions"] >= 1
    assert stopped.last_stats["row_steps"] < free.last_stats["row_steps"]


def test_each_row_draws_from_its_own_seed_whatever_the_batch(env, tokenizer):
    model = tiny_qwen2(seed=4, scale=0.1)
    sampling = env.rollout.Sampling(temperature=1.0, top_p=1.0, max_new_tokens=16, stop=())
    backend = env.native_rollout.NativeBackend(model, tokenizer, id_range=(3, 131), min_bucket=1)
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in PROMPTS]
    seeds = [101, 202, 303, 404]
    uniforms = env.native_rollout.row_uniforms(seeds, 1, 16)
    together = backend.generate_ids(ids, sampling, uniforms)
    assert backend.generate_ids(ids, sampling, uniforms) == together  # reproducible
    alone = backend.generate_ids([ids[2]], sampling, env.native_rollout.row_uniforms([303], 1, 16))
    assert alone == [together[2]]  # the same row alone in its batch: the same tokens
    reordered = backend.generate_ids(ids[::-1], sampling, env.native_rollout.row_uniforms(seeds[::-1], 1, 16))
    assert reordered == together[::-1]
    other = backend.generate_ids([ids[2]], sampling, env.native_rollout.row_uniforms([304], 1, 16))
    assert other != alone


def test_auto_takes_native_on_a_gpu_without_vllm_and_a_variable_forces_a_backend(env, monkeypatch):
    rollout = env.rollout
    monkeypatch.delenv("GRPO_ROLLOUT_BACKEND", raising=False)
    monkeypatch.setattr(rollout, "vllm_installed", lambda: False)
    assert rollout.resolve_backend("auto", on_gpu=True, model_name="Qwen/Qwen2.5-Math-1.5B") == "native"
    assert rollout.resolve_backend("auto", on_gpu=False, model_name="random:tiny") == "transformers"
    monkeypatch.setattr(rollout, "vllm_installed", lambda: True)
    assert rollout.resolve_backend("auto", on_gpu=True, model_name="Qwen/Qwen2.5-Math-1.5B") == "vllm"
    assert rollout.resolve_backend("auto", on_gpu=True, model_name="random:qwen2-0.5b") == "native"
    monkeypatch.setenv("GRPO_ROLLOUT_BACKEND", "transformers")
    assert rollout.resolve_backend("auto", on_gpu=True, model_name="Qwen/Qwen2.5-Math-1.5B") == "transformers"
    assert rollout.resolve_backend("native", on_gpu=False, model_name="random:tiny") == "native"
    monkeypatch.setenv("GRPO_ROLLOUT_BACKEND", "fast")
    with pytest.raises(ValueError, match="GRPO_ROLLOUT_BACKEND"):
        rollout.resolve_backend("auto", on_gpu=True, model_name="random:tiny")
    model, tok = env.modeling.load_policy("random:tiny", torch.device("cpu"), torch.float32)
    backend = rollout.make_backend("native", model=model, tokenizer=tok, model_name="random:tiny",
                                   gpu_memory_utilization=0.5, seed=0, id_range=(3, 131))
    assert backend.name == "native"
    groups = backend.generate(["1+1="], n=2, sampling=rollout.Sampling(max_new_tokens=5), seed=1)
    assert [c.n_tokens for c in groups[0]] == [5, 5]


def test_the_benchmark_runs_its_tiny_shape_on_a_cpu(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUT": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ENV_DIR / "bench_native.py"), "--tiny"],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "bench_native.json").read_text())
    for shape in report["shapes"]:
        assert shape["native"]["tokens_per_s"] > 0 and shape["transformers"]["tokens_per_s"] > 0
        assert shape["floor_ms_per_step"] > 0
        assert shape["greedy_agreement"] == 1.0
    assert "| shape |" in (tmp_path / "bench_native.md").read_text()
