"""Sampling backends: vLLM colocated on the training GPU, or transformers `generate()`.

`make_backend("auto", ...)` takes vLLM when it is installed and a GPU is there, else
transformers. Both return, for each prompt, `n` completions that end at (and include) the stop
string, or at the token limit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    stop: tuple[str, ...] = ("</answer>",)


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int  # tokens the backend generated for it


def derive_seed(base: int, *labels: object) -> int:
    """A seed for one named use of a run's seed (e.g. `derive_seed(seed, "rollout", step)`):
    reproducible, and unrelated between different labels (a hash, not an offset, so that
    seed 1's step 2 never meets seed 2's step 1). 63 bits."""
    text = "/".join(str(part) for part in (base, *labels))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def prompt_seeds(seed: int, count: int) -> list[int]:
    """One sampling seed per prompt of a generate() call: prompt i's samples draw from their own
    stream, so no two prompts share the noise of their j-th sample."""
    return [derive_seed(seed, "prompt", i) for i in range(count)]


def truncate_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """Cut after the first stop string (kept, as vLLM's include_stop_str_in_output does)."""
    cut = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (cut is None or at + len(stop) < cut):
            cut = at + len(stop)
    return text if cut is None else text[:cut]


def tokens_through_stop(tokenizer, token_ids: list[int], stops: tuple[str, ...]) -> int:
    """The fewest leading tokens of token_ids whose text holds a stop string: the response's
    length in tokens when generation ran on past its stop (what vLLM reports, which stops there).
    All of them when no stop string is in the text."""
    def holds_stop(k: int) -> bool:
        text = tokenizer.decode(token_ids[:k], skip_special_tokens=True)
        return any(stop in text for stop in stops)

    if not holds_stop(len(token_ids)):
        return len(token_ids)
    low, high = 1, len(token_ids)  # holds_stop is monotone in k: binary search the first True
    while low < high:
        mid = (low + high) // 2
        if holds_stop(mid):
            high = mid
        else:
            low = mid + 1
    return low


class StopOnText(StoppingCriteria):
    """Stops each row once its generated text contains a stop string.

    Decoding every row at every step is slow for large batches, so it looks every `every`
    steps at the last `window` generated tokens (window must exceed every + the stop's length
    in tokens); rows may run a few tokens past the stop, and truncate_at_stop cuts them.
    """

    def __init__(self, tokenizer, stops: tuple[str, ...], prompt_len: int, every: int = 8,
                 window: int = 32):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len
        self.every, self.window, self.calls = every, window, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        self.calls += 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.calls % self.every:
            return done
        generated = input_ids[:, self.prompt_len:]
        tails = self.tokenizer.batch_decode(generated[:, -self.window:], skip_special_tokens=True)
        for row, tail in enumerate(tails):
            if any(stop in tail for stop in self.stops):
                done[row] = True
        return done


class KeepIdRange(LogitsProcessor):
    """Samples only ids in [low, high): never ids the tokenizer cannot decode (padded embedding
    tables), and for random models only plain ASCII bytes, so text and tokens round-trip."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, :self.low] = float("-inf")
        scores[:, self.high:] = float("-inf")
        return scores


class SampleFromRowStreams(LogitsProcessor):
    """Samples every row's next token from its own stream: row r's t-th token is the inverse CDF
    of its (temperature, top-p) distribution at uniforms[r, t]. Only that token is left finite,
    so generate()'s greedy pick takes it. A row's draws thus depend on its own uniforms, not on
    the other rows of the batch (batched sampling from torch's one generator would)."""

    def __init__(self, uniforms: torch.Tensor, temperature: float, top_p: float, prompt_len: int):
        self.uniforms, self.temperature, self.top_p = uniforms, temperature, top_p
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1] - self.prompt_len
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:  # the smallest set of most likely tokens whose mass reaches top_p
            ranked, order = probs.sort(dim=-1, descending=True)
            ranked = ranked.masked_fill(ranked.cumsum(-1) - ranked >= self.top_p, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, ranked)
        cdf = probs.cumsum(-1)
        u = self.uniforms[:, t].to(cdf.device).unsqueeze(1) * cdf[:, -1:]
        token = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter(-1, token, 0.0)


class TransformersBackend:
    name = "transformers"

    def __init__(self, model, tokenizer, gen_batch: int = 0, id_range: tuple[int, int] | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.gen_batch = gen_batch  # rows per generate() call; 0 = all at once
        self.id_range = id_range or (0, min(len(tokenizer), model.config.vocab_size))

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: Sampling, seed: int) -> list[list[Completion]]:
        """Prompt i samples from its own stream, seeded prompt_seeds(seed, len(prompts))[i] (as
        under vLLM): its n samples take their uniforms from it, whatever else is in the batch."""
        rows = [p for p in prompts for _ in range(n)]
        step = self.gen_batch or len(rows)
        uniforms = torch.cat([
            torch.rand(n, sampling.max_new_tokens, generator=torch.Generator().manual_seed(s))
            for s in prompt_seeds(seed, len(prompts))
        ]) if rows else torch.zeros(0, sampling.max_new_tokens)
        was_training = self.model.training
        self.model.eval()
        try:
            texts: list[Completion] = []
            for start in range(0, len(rows), step):
                texts.extend(self._generate_rows(rows[start:start + step], sampling,
                                                 uniforms[start:start + step]))
        finally:
            self.model.train(was_training)
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _generate_rows(self, rows: list[str], sampling: Sampling, uniforms: torch.Tensor) -> list[Completion]:
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = tok(rows, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = side
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        prompt_len = enc["input_ids"].shape[1]
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        # Sampling is ours (SampleFromRowStreams), so generate() itself always picks greedily.
        config = GenerationConfig(
            do_sample=False, temperature=None, top_p=None, top_k=None,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=tok.eos_token_id,
        )
        processors = LogitsProcessorList()
        if self.id_range != (0, self.model.config.vocab_size):
            processors.append(KeepIdRange(*self.id_range))
        if sampling.temperature > 0:
            processors.append(SampleFromRowStreams(uniforms.to(device), sampling.temperature,
                                                   sampling.top_p, prompt_len))
        out = self.model.generate(
            **enc,
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=[StopOnText(tok, sampling.stop, prompt_len)],
        )
        generated = out[:, prompt_len:]
        n_tokens = (generated != pad_id).sum(dim=1).tolist()
        texts = tok.batch_decode(generated, skip_special_tokens=True)
        completions = []
        for row, (text, k) in enumerate(zip(texts, n_tokens)):
            kept = truncate_at_stop(text, sampling.stop)
            if kept != text:  # ran past the stop (StopOnText looks every few steps): uncount those
                k = tokens_through_stop(tok, generated[row, :k].tolist(), sampling.stop)
            completions.append(Completion(text=kept, n_tokens=k))
        return completions

    def refresh(self, model) -> None:
        """Nothing to copy: this backend samples from the training model itself."""


def refresh_vllm_weights(llm, model) -> None:
    """Copies the training model's weights into a colocated vLLM engine, without touching disk.

    Current (V1) engines, created with VLLM_ENABLE_V1_MULTIPROCESSING=0 so that the model lives
    in this process: load_weights takes (name, tensor) pairs in Hugging Face naming. The model
    runner hangs off `driver_worker.worker` there (vLLM issue 16434) and off `driver_worker` in
    V0 engines (the reference's); both are taken. The prefix
    cache still holds KV blocks computed with the old weights, so it must be dropped.
    """
    worker = llm.llm_engine.model_executor.driver_worker
    worker = getattr(worker, "worker", worker)  # V1 wraps its worker (WorkerWrapperBase.worker)
    worker.model_runner.model.load_weights(model.state_dict().items())
    llm.reset_prefix_cache()


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_name: str, gpu_memory_utilization: float, seed: int,
                 dtype: str = "bfloat16"):
        # Must be set before the engine exists, so that its model is reachable in-process.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        self.llm = LLM(
            model=model_name,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=True,
            generation_config="vllm",  # our sampling settings, not the checkpoint's defaults
        )

    def generate(self, prompts: list[str], n: int, sampling: Sampling, seed: int) -> list[list[Completion]]:
        """Prompt i is sampled with seed prompt_seeds(seed, len(prompts))[i]: its own stream."""
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop),
                include_stop_str_in_output=True,
                seed=prompt_seed,
            )
            for prompt_seed in prompt_seeds(seed, len(prompts))
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [Completion(text=o.text, n_tokens=len(o.token_ids)) for o in request.outputs]
            for request in outputs
        ]

    def refresh(self, model) -> None:
        refresh_vllm_weights(self.llm, model)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


BACKENDS = ("vllm", "native", "transformers")


def resolve_backend(kind: str, *, on_gpu: bool, model_name: str) -> str:
    """"auto" -> "vllm" when vLLM is installed, on a GPU, for a checkpoint on disk or the hub
    (random:* models have no checkpoint vLLM could load), else "native" on a GPU and
    "transformers" on a CPU; $GRPO_ROLLOUT_BACKEND (vllm | native | transformers) forces one."""
    if kind == "auto" and os.environ.get("GRPO_ROLLOUT_BACKEND", "").strip():  # forces one
        kind = os.environ["GRPO_ROLLOUT_BACKEND"].strip()
        if kind not in BACKENDS:
            raise ValueError(f"GRPO_ROLLOUT_BACKEND={kind!r}: use one of {', '.join(BACKENDS)}")
    if kind == "auto":  # no vLLM on a GPU: the native backend (native_rollout.py)
        usable = on_gpu and vllm_installed() and not model_name.startswith("random:")
        return "vllm" if usable else "native" if on_gpu else "transformers"
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}")
    return kind


def make_backend(kind: str, *, model, tokenizer, model_name: str, gpu_memory_utilization: float,
                 seed: int, gen_batch: int = 0, id_range: tuple[int, int] | None = None):
    """kind: "auto" (vLLM if installed, on a GPU, for a checkpoint on disk/hub), "vllm", "transformers".
    For a model already loaded (the evaluator's order); training starts vLLM before its policy
    (train_grpo.build_policy_and_backend)."""
    kind = resolve_backend(kind, on_gpu=next(model.parameters()).is_cuda, model_name=model_name)
    if kind == "vllm":
        backend = VLLMBackend(model_name, gpu_memory_utilization, seed)
        backend.refresh(model)  # start from the training model's weights, whatever their origin
        return backend
    if kind == "native":
        from native_rollout import NativeBackend
        return NativeBackend(model, tokenizer, id_range=id_range)
    if kind == "transformers":
        return TransformersBackend(model, tokenizer, gen_batch=gen_batch, id_range=id_range)
    raise ValueError(f"unknown backend {kind!r}")
