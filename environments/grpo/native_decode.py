"""The native backend's arithmetic: prefill and one decoding step of a Qwen2 model over a static
KV cache, and the sampler. Plain PyTorch, the policy's own modules and weights (no copy).

Layout: every row of a decoding batch is left-padded to the same prompt width P, so row r's
prompt sits in cache columns [pad_r, P) and its t-th generated token's key and value go to
column P + t - 1, the same column for every row: one `index_copy_` per layer and step, whose
column is a device tensor. Nothing in `DecodeState.step` depends on Python values that change
between steps (the column, the step index and the positions live on the device and are advanced
in place), so a step for a fixed (rows, key length) can be captured once in a CUDA graph and
replayed. Attention is `scaled_dot_product_attention` over the cache's first `keys` columns with
an additive mask (a key is visible when it is at or after the row's padding and not after the
column being written); grouped-query heads are folded into the query length (the query heads of
one key/value head attend as a group of g queries), so no key/value is repeated while decoding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_architecture(model) -> None:
    """Raises ValueError unless model is a Qwen2-style causal LM this module can run."""
    config = model.config
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, name) for name in needed) or not hasattr(model, "lm_head"):
        raise ValueError(f"the native rollout backend runs Qwen2-style models; {type(model).__name__} "
                         "is not one (use --backend transformers)")
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if getattr(config, "use_sliding_window", False) and layer_types != {"full_attention"}:
        raise ValueError("the native rollout backend has no sliding-window attention "
                         "(use --backend transformers)")


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the half-split convention of Qwen2 (pairs are (i, i + D/2))."""
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + turned * sin


def pick_tokens(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float,
                id_range: tuple[int, int] | None) -> torch.Tensor:
    """Next token per row. temperature <= 0: the most likely (first on ties). Else the inverse
    CDF of softmax(logits / temperature), cut to its top-p nucleus, at the row's uniform: the
    same draw as rollout.SampleFromRowStreams for the same uniform, so a row's tokens depend only
    on its own uniforms. logits [rows, V] (any float dtype), uniforms [rows] in [0, 1)."""
    scores = logits.float()
    if id_range is not None:
        low, high = id_range
        scores[:, :low] = float("-inf")
        scores[:, high:] = float("-inf")
    if temperature <= 0:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores / temperature, dim=-1)
    if top_p < 1.0:  # keep the smallest set of most likely tokens whose mass reaches top_p
        ranked, order = probs.sort(dim=-1, descending=True)
        ranked = ranked.masked_fill(ranked.cumsum(-1) - ranked >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, ranked)
    cdf = probs.cumsum(dim=-1)
    target = uniforms.unsqueeze(1) * cdf[:, -1:]
    return torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1).squeeze(1)


class DecodeState:
    """Static buffers of one decoding batch: the KV cache [rows, kv_heads, width, head_dim] per
    layer, the per-row token, position, padding, uniforms and generated tokens, and the
    device-side column and step counters. Sized once; rows are compacted in place."""

    def __init__(self, model, rows: int, prompt_width: int, max_new_tokens: int, width: int,
                 uniforms: torch.Tensor, temperature: float, top_p: float,
                 id_range: tuple[int, int] | None, eos_id: int | None):
        config = model.config
        self.model = model
        self.inner = model.model
        self.layers = list(self.inner.layers)
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        self.device, self.dtype = device, dtype
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.group = self.heads // self.kv_heads
        self.rows, self.prompt_width, self.width = rows, prompt_width, width
        self.max_new_tokens = max_new_tokens
        self.temperature, self.top_p, self.id_range, self.eos_id = temperature, top_p, id_range, eos_id
        shape = (rows, self.kv_heads, width, self.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.layers]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in self.layers]
        self.token = torch.zeros(rows, dtype=torch.long, device=device)
        self.position = torch.zeros(rows, dtype=torch.long, device=device)
        self.pad = torch.zeros(rows, dtype=torch.long, device=device)
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)
        self.generated = torch.zeros(rows, max_new_tokens, dtype=torch.long, device=device)
        self.uniforms = uniforms.to(device=device, dtype=torch.float32).contiguous()
        self.column = torch.full((1,), prompt_width, dtype=torch.long, device=device)
        self.step_index = torch.ones(1, dtype=torch.long, device=device)
        self.key_index = torch.arange(width, device=device)
        # cos/sin by position from the model's own rotary module (its numerics, its dtype).
        positions = torch.arange(width + 1, device=device).unsqueeze(0)
        probe = torch.zeros(1, device=device, dtype=dtype)
        cos, sin = self.inner.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()

    def kv_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    # ------------------------------------------------------------------ prefill

    def prefill(self, start: int, ids: torch.Tensor, attention: torch.Tensor) -> None:
        """Rows [start, start + len(ids)): prompt ids [n, w] left-padded to the chunk's own width
        w <= P, and their mask. Writes their keys/values into cache columns [P - w, P) (the
        columns before stay padding), samples their first token (uniform column 0)."""
        n, width = ids.shape
        rows = slice(start, start + n)
        first_column = self.prompt_width - width
        position = (attention.cumsum(-1) - 1).clamp(min=0)
        cos = self.cos[position].unsqueeze(1)  # [n, 1, P, D]
        sin = self.sin[position].unsqueeze(1)
        index = torch.arange(width, device=self.device)
        visible = (index[None, :] <= index[:, None]).unsqueeze(0) & attention.bool()[:, None, :]
        visible |= torch.eye(width, dtype=torch.bool, device=self.device)  # padded queries: finite
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device)
        mask = mask.masked_fill(~visible, float("-inf")).unsqueeze(1)
        x = self.inner.embed_tokens(ids)
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(n, width, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(n, width, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(n, width, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            keys[rows, :, first_column:self.prompt_width].copy_(k)
            values[rows, :, first_column:self.prompt_width].copy_(v)
            k = k.repeat_interleave(self.group, dim=1)
            v = v.repeat_interleave(self.group, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(n, width, self.heads * self.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = self.model.lm_head(self.inner.norm(x[:, -1]))
        first = pick_tokens(logits, self.uniforms[rows, 0], self.temperature, self.top_p, self.id_range)
        self.token[rows] = first
        self.generated[rows, 0] = first
        self.position[rows] = attention.sum(-1)
        self.pad[rows] = self.prompt_width - attention.sum(-1)
        if self.eos_id is not None:
            self.done[rows] = first == self.eos_id

    # ------------------------------------------------------------------ one decoding step

    def step(self, rows: int, keys_width: int) -> None:
        """One token for the first `rows` rows, attending to the first `keys_width` columns.
        Graph-safe: static shapes, in-place writes, no host reads."""
        b, group, d = rows, self.group, self.head_dim
        token, position = self.token[:b], self.position[:b]
        cos = self.cos[position][:, None, None, :]  # [b, 1, 1, D]
        sin = self.sin[position][:, None, None, :]
        index = self.key_index[:keys_width]
        visible = (index[None, :] >= self.pad[:b, None]) & (index[None, :] <= self.column)
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device)
        mask = mask.masked_fill(~visible, float("-inf"))[:, None, None, :]
        x = self.inner.embed_tokens(token).unsqueeze(1)  # [b, 1, hidden]
        for layer, keys, values in zip(self.layers, self.keys, self.values):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = rotate(attn.q_proj(h).view(b, self.kv_heads, group, d), cos, sin)
            k = rotate(attn.k_proj(h).view(b, self.kv_heads, 1, d), cos, sin)
            v = attn.v_proj(h).view(b, self.kv_heads, 1, d)
            cache_k, cache_v = keys[:b], values[:b]
            cache_k.index_copy_(2, self.column, k)
            cache_v.index_copy_(2, self.column, v)
            out = F.scaled_dot_product_attention(q, cache_k[:, :, :keys_width], cache_v[:, :, :keys_width],
                                                 attn_mask=mask, scale=attn.scaling)
            x = x + attn.o_proj(out.reshape(b, 1, self.heads * d))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = self.model.lm_head(self.inner.norm(x[:, 0]))
        u = self.uniforms[:b].index_select(1, self.step_index).squeeze(1)
        new = pick_tokens(logits, u, self.temperature, self.top_p, self.id_range)
        self.generated[:b].index_copy_(1, self.step_index, new.unsqueeze(1))
        self.token[:b].copy_(new)
        if self.eos_id is not None:
            self.done[:b].logical_or_(new == self.eos_id)
        self.position[:b].add_(1)
        self.column.add_(1)
        self.step_index.add_(1)

    # ------------------------------------------------------------------ retiring rows

    def compact(self, keep: list[int]) -> None:
        """Moves rows `keep` (slot numbers, in order) to slots 0..len(keep)-1, in place."""
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        k = len(keep)
        for buffer in (self.token, self.position, self.pad, self.done, self.generated, self.uniforms,
                       *self.keys, *self.values):
            buffer[:k] = buffer.index_select(0, index)
