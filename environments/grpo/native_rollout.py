"""The native rollout backend: batched sampling from the training model itself in plain PyTorch,
with a static KV cache and (on a GPU) each decoding step replayed from a CUDA graph.

`NativeBackend(model, tokenizer).generate(prompts, n, sampling, seed)` returns what the other
backends return. Per generate() call (rollout.Sampling settings; seeds as the transformers
backend: prompt i's n rows take their uniforms from a generator seeded
`rollout.prompt_seeds(seed, len(prompts))[i]`, so the same seed gives the same tokens on both
backends up to floating point):

1. rows are tokenized and left-padded to one width P; the KV cache for B rows x (P + budget)
   columns is allocated, B sized from the GPU's free memory (`plan_rows`); more rows than that
   run as several batches one after another;
2. prefill in chunks of rows (`native_decode.DecodeState.prefill`), which samples token 0;
3. decoding steps (`DecodeState.step`), one CUDA graph per (active rows bucket, keys width)
   captured the first time it is needed and replayed after; the keys width grows in chunks of
   `key_chunk` columns, so early steps do not read the empty end of the cache;
4. every `check_every` steps the host looks at which rows ended (end of sequence, or a stop
   string in their last tokens; only rows that recently produced a token holding the stop's
   last character are decoded), and when the rows still running fit the next smaller bucket
   (powers of two down to `min_bucket`) they are compacted to the front of the cache;
5. completions are cut after the first stop string and counted as the transformers backend does.
"""

from __future__ import annotations

import os
import time

import torch
from native_decode import DecodeState, check_architecture
from rollout import Completion, Sampling, prompt_seeds, tokens_through_stop, truncate_at_stop


def row_uniforms(seeds: list[int], rows_per_seed: int, max_new_tokens: int) -> torch.Tensor:
    """[len(seeds) * rows_per_seed, max_new_tokens] uniforms: seed i's rows from its own
    torch.Generator (CPU, so the draw does not depend on the device), as the transformers
    backend draws them. The per-row seed interface: pass rows_per_seed=1 for one seed per row."""
    if not seeds:
        return torch.zeros(0, max_new_tokens)
    return torch.cat([torch.rand(rows_per_seed, max_new_tokens, generator=torch.Generator().manual_seed(s))
                      for s in seeds])


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def free_memory_bytes(device: torch.device) -> int:
    """What a new allocation can take: the driver's free memory plus what torch's allocator
    holds reserved but unused (freed training activations)."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def kv_bytes_per_row(config, width: int, element_size: int) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * 2 * config.num_key_value_heads * width * head_dim * element_size


def plan_rows(model, rows: int, width: int, max_new_tokens: int, memory_fraction: float,
              prefill_tokens: int) -> dict:
    """How many rows one decoding batch holds: on a GPU, what fits in memory_fraction of the free
    memory after the per-step scratch (logits, probabilities and their cumulative sum in float32,
    a sort for top-p) and a prefill chunk's activations; on a CPU, all rows."""
    config = model.config
    param = next(model.parameters())
    per_row_kv = kv_bytes_per_row(config, width, param.element_size())
    per_row_scratch = config.vocab_size * 4 * 8 + max_new_tokens * 12 + 64
    plan = {"rows": rows, "cache_width": width, "kv_bytes_per_row": per_row_kv,
            "scratch_bytes_per_row": per_row_scratch, "memory_fraction": memory_fraction}
    if param.device.type != "cuda":
        plan.update(batch_rows=rows, free_bytes=None, budget_bytes=None)
        return plan
    free = free_memory_bytes(param.device)
    prefill = prefill_tokens * (config.intermediate_size * 3 + config.hidden_size * 8) * param.element_size()
    budget = int(free * memory_fraction) - prefill - config.vocab_size * 64 * 4 * 4
    fits = max(1, budget // (per_row_kv + per_row_scratch))
    plan.update(batch_rows=int(min(rows, fits)), free_bytes=free, budget_bytes=budget,
                prefill_reserve_bytes=prefill)
    return plan


class NativeBackend:
    name = "native"

    def __init__(self, model, tokenizer, id_range: tuple[int, int] | None = None, *,
                 use_graphs: bool | None = None, memory_fraction: float | None = None,
                 max_batch_rows: int = 0, min_bucket: int = 8, key_chunk: int = 256,
                 check_every: int = 8, prefill_tokens: int = 16384):
        check_architecture(model)
        self.model, self.tokenizer = model, tokenizer
        vocab = min(len(tokenizer), model.config.vocab_size)
        self.id_range = id_range or (0, vocab)
        if self.id_range == (0, model.config.vocab_size):
            self.id_range = None  # nothing to mask
        on_gpu = next(model.parameters()).is_cuda
        self.use_graphs = on_gpu if use_graphs is None else use_graphs
        env_fraction = os.environ.get("GRPO_NATIVE_MEMORY_FRACTION", "").strip()
        self.memory_fraction = memory_fraction or (float(env_fraction) if env_fraction else 0.85)
        self.max_batch_rows = max_batch_rows  # 0: as many as memory allows
        self.min_bucket, self.key_chunk = max(1, min_bucket), max(1, key_chunk)
        self.check_every, self.prefill_tokens = max(1, check_every), prefill_tokens
        self._ends_stop: dict[tuple[str, ...], torch.Tensor] = {}
        self.last_stats: dict = {}

    def refresh(self, model) -> None:
        """Nothing to copy: this backend samples from the training model itself."""

    # ------------------------------------------------------------------ public entry points

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, sampling: Sampling, seed: int) -> list[list[Completion]]:
        rows = [p for p in prompts for _ in range(n)]
        if not rows:
            return [[] for _ in prompts]
        uniforms = row_uniforms(prompt_seeds(seed, len(prompts)), n, sampling.max_new_tokens)
        ids = self.tokenizer(rows, add_special_tokens=False)["input_ids"]
        generated = self.generate_ids(ids, sampling, uniforms)
        completions = self.to_completions(generated, sampling.stop)
        return [completions[i * n:(i + 1) * n] for i in range(len(prompts))]

    def to_completions(self, generated: list[list[int]], stops: tuple[str, ...]) -> list[Completion]:
        """Text cut after the first stop string; tokens counted as the transformers backend
        counts them (no padding ids; only those through the stop when it ran past it)."""
        tok, pad_id = self.tokenizer, self._pad_id()
        texts = tok.batch_decode(generated, skip_special_tokens=True)
        out = []
        for ids, text in zip(generated, texts):
            k = sum(1 for i in ids if i != pad_id)
            kept = truncate_at_stop(text, stops)
            if kept != text:
                k = tokens_through_stop(tok, ids[:k], stops)
            out.append(Completion(text=kept, n_tokens=k))
        return out

    @torch.no_grad()
    def generate_ids(self, prompt_ids: list[list[int]], sampling: Sampling,
                     uniforms: torch.Tensor) -> list[list[int]]:
        """Generated token ids per row (through the end-of-sequence token when one came; rows may
        run up to check_every tokens past a stop string: to_completions cuts them). uniforms:
        [rows, max_new_tokens], row r's draws (row_uniforms)."""
        started = time.perf_counter()
        T = sampling.max_new_tokens
        width_p = max(len(p) for p in prompt_ids)
        if min(len(p) for p in prompt_ids) == 0:
            raise ValueError("the native rollout backend needs at least one prompt token per row")
        if T < 1:
            raise ValueError(f"max_new_tokens must be at least 1 (got {T})")
        cache_width = round_up(width_p + T, 64)
        plan = plan_rows(self.model, len(prompt_ids), cache_width, T, self.memory_fraction,
                         self.prefill_tokens)
        batch = plan["batch_rows"]
        if self.max_batch_rows:
            batch = min(batch, self.max_batch_rows)
        stats = {"plan": plan, "batch_rows": batch, "prompt_width": width_p, "batches": 0,
                 "graphs_captured": 0, "capture_s": 0.0, "prefill_s": 0.0, "decode_s": 0.0,
                 "decode_steps": 0, "row_steps": 0, "compactions": 0, "checks_s": 0.0,
                 "kv_cache_bytes": 0}
        # Rows by prompt length: prefill chunks (and batches) hold prompts of similar lengths,
        # so little of their work is padding; the results go back to the callers' order.
        order = sorted(range(len(prompt_ids)), key=lambda r: len(prompt_ids[r]))
        results: list[list[int]] = [[] for _ in prompt_ids]
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), batch):
                rows = order[start:start + batch]
                chunk = [prompt_ids[r] for r in rows]
                width = max(len(p) for p in chunk)
                out = self._run_batch(chunk, width, round_up(width + T, 64), sampling,
                                      uniforms[torch.tensor(rows)], stats)
                for r, ids in zip(rows, out):
                    results[r] = ids
                stats["batches"] += 1
        finally:
            self.model.train(was_training)
        if next(self.model.parameters()).is_cuda:
            stats["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        stats["total_s"] = time.perf_counter() - started
        self.last_stats = stats
        return results

    # ------------------------------------------------------------------ one batch

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _sync(self) -> None:
        if self.state.device.type == "cuda":
            torch.cuda.synchronize(self.state.device)

    def _buckets(self, rows: int) -> list[int]:
        sizes = {rows}
        size = 1
        while size < rows:
            if size >= self.min_bucket:
                sizes.add(size)
            size *= 2
        return sorted(sizes, reverse=True)

    def _run_batch(self, prompt_ids, width_p, cache_width, sampling, uniforms, stats) -> list[list[int]]:
        n, T = len(prompt_ids), sampling.max_new_tokens
        device = next(self.model.parameters()).device
        eos = self.tokenizer.eos_token_id
        state = DecodeState(self.model, n, width_p, T, cache_width, uniforms, sampling.temperature,
                            sampling.top_p, self.id_range, eos)
        self.state = state
        stats["kv_cache_bytes"] = max(stats["kv_cache_bytes"], state.kv_bytes())
        pad_id = self._pad_id()
        t0 = time.perf_counter()
        per_chunk = max(1, self.prefill_tokens // width_p)
        for start in range(0, n, per_chunk):
            rows = prompt_ids[start:start + per_chunk]
            width = max(len(p) for p in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for r, p in enumerate(rows):
                ids[r, width - len(p):] = torch.tensor(p)
                attention[r, width - len(p):] = 1
            state.prefill(start, ids.to(device), attention.to(device))
        self._sync()
        stats["prefill_s"] += time.perf_counter() - t0

        finished: dict[int, list[int]] = {}
        slots = list(range(n))  # slot -> row, -1 once the row ended
        buckets = self._buckets(n)
        active_rows = buckets[0]
        graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        side = torch.cuda.Stream(device) if self.use_graphs else None  # warm-ups and captures
        t = 1  # tokens generated so far per row (token 0 came from the prefill)
        t0 = time.perf_counter()
        self._check(slots, finished, t, sampling.stop, eos, stats)
        while t < T and any(s >= 0 for s in slots):
            keys_width = min(cache_width, round_up(width_p + t, self.key_chunk))
            key = (active_rows, keys_width)
            if not self.use_graphs:
                state.step(*key)
            elif key in graphs:
                graphs[key].replay()
            else:  # run the step eagerly (warm-up, real work), then capture it for the next ones
                c0 = time.perf_counter()
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    state.step(*key)
                side.synchronize()
                graph = torch.cuda.CUDAGraph()
                try:
                    self._capture(graph, pool, key, side)
                except RuntimeError as exc:  # decode on without graphs (slower), say why
                    self.use_graphs = False
                    stats["graph_error"] = f"{type(exc).__name__}: {exc}"[:500]
                    print(f"native rollout: CUDA graph capture failed, decoding without graphs: "
                          f"{stats['graph_error']}", flush=True)
                else:
                    graphs[key] = graph
                    stats["graphs_captured"] += 1
                stats["capture_s"] += time.perf_counter() - c0
            t += 1
            stats["decode_steps"] += 1
            stats["row_steps"] += active_rows
            if t % self.check_every == 0 or t == T:
                c0 = time.perf_counter()
                self._check(slots, finished, t, sampling.stop, eos, stats)
                stats["checks_s"] += time.perf_counter() - c0
                running = [s for s, row in enumerate(slots) if row >= 0]
                fits = [b for b in buckets if b >= len(running)]
                if running and fits and fits[-1] < active_rows:
                    state.compact(running)
                    slots = [slots[s] for s in running]
                    active_rows = fits[-1]
                    state.done[len(running):active_rows] = True  # stale slots: never active
                    slots += [-1] * (active_rows - len(running))
                    stats["compactions"] += 1
        self._sync()
        stats["decode_s"] += time.perf_counter() - t0
        tail = state.generated[:len(slots), :t].tolist()
        for slot, row in enumerate(slots):
            if row >= 0:
                finished[row] = self._cut_eos(tail[slot], eos)
        del graphs
        self.state = None
        return [finished[r] for r in range(n)]

    def _capture(self, graph, pool, key: tuple[int, int], stream) -> None:
        """Records one step into graph on `stream` (recording runs nothing; the step was just run
        there as the warm-up). torch.cuda.graph() would also run gc.collect() and empty the
        allocator's cache at every capture; this does not."""
        with torch.cuda.stream(stream):
            graph.capture_begin(pool=pool)
            try:
                self.state.step(*key)
            finally:
                graph.capture_end()
        torch.cuda.current_stream(stream.device).wait_stream(stream)

    @staticmethod
    def _cut_eos(ids: list[int], eos: int | None) -> list[int]:
        if eos is not None and eos in ids:
            return ids[:ids.index(eos) + 1]
        return ids

    def _ends_stop_mask(self, stops: tuple[str, ...]) -> torch.Tensor:
        """Per vocabulary id: whether its text holds the last character of a stop string (only
        rows that produced such a token lately can have just completed one)."""
        if stops not in self._ends_stop:
            vocab = self.model.config.vocab_size
            known = min(len(self.tokenizer), vocab)
            last = {s[-1] for s in stops if s}
            texts = self.tokenizer.batch_decode([[i] for i in range(known)])
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[:known] = torch.tensor([any(c in text for c in last) for text in texts])
            self._ends_stop[stops] = mask.to(next(self.model.parameters()).device)
        return self._ends_stop[stops]

    def _check(self, slots, finished, t, stops, eos, stats) -> None:
        """Marks rows that ended (end of sequence, or a stop string in their recent text)."""
        state = self.state
        b = len(slots)
        ended = state.done[:b].clone()
        stops = tuple(s for s in stops if s)
        if stops:
            recent = state.generated[:b, max(0, t - self.check_every - 1):t]
            candidates = self._ends_stop_mask(stops)[recent].any(dim=1) & ~ended
            rows = candidates.nonzero().flatten().tolist()
            if rows:
                window = self.check_every + max(len(s) for s in stops) + 4
                tails = state.generated[rows, max(0, t - window):t].tolist()
                texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
                hit = [r for r, text in zip(rows, texts) if any(s in text for s in stops)]
                if hit:
                    ended[hit] = True
        ended_slots = [s for s in ended.nonzero().flatten().tolist() if slots[s] >= 0]
        if not ended_slots:
            return
        tokens = state.generated[ended_slots, :t].tolist()
        for slot, ids in zip(ended_slots, tokens):
            finished[slots[slot]] = self._cut_eos(ids, eos)
            slots[slot] = -1
        state.done[ended_slots] = True

