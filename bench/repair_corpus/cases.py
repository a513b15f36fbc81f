"""Crash cases on the nanoGPT environment's train.py for bench/repair.py.

Each case is one idea: its text (what the scripted ideator proposes), the edit its coder makes
first and the edit it makes when shown the crash (the same idea, fixed). Edits are (old, new)
replacements of exact text of `environments/nanogpt/train.py`; `diff()` turns them into the
unified diff a coder model would answer, so the corpus follows the shipped train.py (an edit
whose old text is gone fails loudly instead of drifting).

`crash` names the class of the first diff's fault and `cpu_error` the text its traceback shows
on the CPU smoke profile; `cpu_error = None` marks a first diff that does not crash on a CPU
(a device mismatch only crashes on a GPU, so CPU pre-flight cannot see it) and the controls,
whose first diff is right.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

Edit = tuple[str, str]


@dataclass(frozen=True)
class Case:
    stem: str
    crash: str  # the class of the first diff's fault, or "control"
    cpu_error: str | None  # what the first diff's CPU crash says; None: it does not crash there
    idea: str  # "[Experiment] ... [Code Changes] ..." as the ideator writes it
    first: tuple[Edit, ...]
    fixed: tuple[Edit, ...] | None  # None: the first diff is right (a control)

    def title(self) -> str:
        return self.idea.split("[Experiment]", 1)[1].split(":", 1)[0].strip()


def apply_edits(source: str, edits: tuple[Edit, ...]) -> str:
    for old, new in edits:
        if source.count(old) != 1:
            raise ValueError(f"edit's old text occurs {source.count(old)} times: {old[:60]!r}")
        source = source.replace(old, new)
    return source


def diff(source: str, edits: tuple[Edit, ...]) -> str:
    """The edit as a coder model answers it: a fenced unified diff of train.py."""
    new = apply_edits(source, edits)
    body = "".join(difflib.unified_diff(source.splitlines(True), new.splitlines(True),
                                        "a/train.py", "b/train.py"))
    return f"```diff\n{body}```\n"


_ATTN_INIT = """        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
"""
_SDPA = "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n"
_MLP = """        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))
"""
_INIT = "                nn.init.normal_(p, mean=0.0, std=std)\n"
_BLOCK_INIT = """        self.norm2 = nn.RMSNorm(cfg.n_embd)
        self.mlp = MLP(cfg)
"""
_BLOCK_FWD = """        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
"""
_GPT_INIT = "        self.vocab_size = cfg.vocab_size\n"
_EMBED = "        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))\n"
_BLOCKS = """        for block in self.blocks:
            x = block(x)
"""
_GROUPS = """    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
"""
_LR = """            group["lr"] = lr_at(step, cfg)
"""
_IMPORTS = "from torch.nn.parallel import DistributedDataParallel as DDP\n"

CASES: tuple[Case, ...] = (
    # ------------------------------------------------------------------ wrong tensor shape
    Case("qk_norm", "wrong tensor shape", "normalized_shape",
         "[Experiment] QK-norm: normalise queries and keys with RMSNorm before attention, which "
         "keeps attention logits bounded and allows a higher learning rate.\n[Code Changes] In "
         "CausalSelfAttention add q_norm and k_norm (nn.RMSNorm) and apply them to q and k "
         "after the head split, before scaled_dot_product_attention.",
         ((_ATTN_INIT, _ATTN_INIT + "        self.q_norm = nn.RMSNorm(cfg.n_embd)\n"
                                    "        self.k_norm = nn.RMSNorm(cfg.n_embd)\n"),
          (_SDPA, "        q, k = self.q_norm(q), self.k_norm(k)\n" + _SDPA)),
         ((_ATTN_INIT, _ATTN_INIT + "        self.q_norm = nn.RMSNorm(cfg.n_embd // cfg.n_head)\n"
                                    "        self.k_norm = nn.RMSNorm(cfg.n_embd // cfg.n_head)\n"),
          (_SDPA, "        q, k = self.q_norm(q), self.k_norm(k)\n" + _SDPA))),
    Case("swiglu", "wrong tensor shape", "cannot be multiplied",
         "[Experiment] SwiGLU MLP: replace the GELU MLP with a gated SiLU unit (hidden width "
         "4 x n_embd), as in LLaMA.\n[Code Changes] In MLP, fc projects to two halves (gate, up); "
         "the output is proj(silu(gate) * up).",
         ((_MLP, """        self.fc = nn.Linear(cfg.n_embd, 8 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(8 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.proj(F.silu(gate) * up)
"""),),
         ((_MLP, """        self.fc = nn.Linear(cfg.n_embd, 8 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.proj(F.silu(gate) * up)
"""),)),
    # ------------------------------------------------------------------ missing import
    Case("trunc_init", "missing import", "name 'init' is not defined",
         "[Experiment] Truncated-normal initialisation: draw the weight matrices from a normal "
         "truncated at two standard deviations, avoiding rare large weights early in training."
         "\n[Code Changes] In GPT.__init__ use trunc_normal_ (a=-2 std, b=2 std) instead of "
         "normal_.",
         ((_INIT, ("                init.trunc_normal_(p, mean=0.0, std=std, a=-2 * std, "
                  "b=2 * std)\n")),),
         ((_INIT, ("                nn.init.trunc_normal_(p, mean=0.0, std=std, a=-2 * std, "
                  "b=2 * std)\n")),)),
    Case("grad_ckpt", "missing import", "name 'checkpoint' is not defined",
         "[Experiment] Activation checkpointing: recompute each block's activations in the "
         "backward pass, so the memory saved can hold a larger micro-batch.\n[Code Changes] In "
         "GPT.forward wrap each block call in torch.utils.checkpoint's checkpoint "
         "(use_reentrant=False) during training.",
         ((_BLOCKS, """        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.training else block(x)
"""),),
         ((_IMPORTS, _IMPORTS + "from torch.utils.checkpoint import checkpoint\n"),
          (_BLOCKS, """        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.training else block(x)
"""))),
    # ------------------------------------------------------------------ wrong attribute
    Case("sandwich_norm", "wrong attribute", "has no attribute 'RMSnorm'",
         "[Experiment] Sandwich norm: also normalise each sub-layer's output before it is added "
         "to the residual stream, which keeps the residual's scale stable.\n[Code Changes] In "
         "Block add post_attn_norm and post_mlp_norm (RMSNorm) applied to the attention and MLP "
         "outputs.",
         ((_BLOCK_INIT, _BLOCK_INIT + "        self.post_attn_norm = nn.RMSnorm(cfg.n_embd)\n"
                                      "        self.post_mlp_norm = nn.RMSnorm(cfg.n_embd)\n"),
          (_BLOCK_FWD, """        x = x + self.post_attn_norm(self.attn(self.norm1(x)))
        return x + self.post_mlp_norm(self.mlp(self.norm2(x)))
""")),
         ((_BLOCK_INIT, _BLOCK_INIT + "        self.post_attn_norm = nn.RMSNorm(cfg.n_embd)\n"
                                      "        self.post_mlp_norm = nn.RMSNorm(cfg.n_embd)\n"),
          (_BLOCK_FWD, """        x = x + self.post_attn_norm(self.attn(self.norm1(x)))
        return x + self.post_mlp_norm(self.mlp(self.norm2(x)))
"""))),
    Case("embed_scale", "wrong attribute", "has no attribute 'config'",
         "[Experiment] Scaled token embeddings: multiply the token embedding by sqrt(n_embd) "
         "so it is not drowned by the position embedding early in training.\n[Code Changes] In "
         "GPT.forward scale wte(idx) by sqrt(n_embd).",
         ((_EMBED, ("        x = self.wte(idx) * math.sqrt(self.config.n_embd) "
                   "+ self.wpe(torch.arange(T, device=idx.device))\n")),),
         ((_GPT_INIT, _GPT_INIT + "        self.embed_scale = math.sqrt(cfg.n_embd)\n"),
          (_EMBED, ("        x = self.wte(idx) * self.embed_scale "
                   "+ self.wpe(torch.arange(T, device=idx.device))\n")))),
    Case("attn_dropout", "wrong keyword argument", "unexpected keyword argument 'dropout'",
         "[Experiment] Attention dropout: drop 5% of attention weights during training as a "
         "regulariser.\n[Code Changes] Pass a dropout probability of 0.05 to "
         "scaled_dot_product_attention while training (0 in eval mode).",
         ((_SDPA, ("        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, "
                  "dropout=0.05 if self.training else 0.0)\n")),),
         ((_SDPA, ("        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, "
                  "dropout_p=0.05 if self.training else 0.0)\n")),)),
    # ------------------------------------------------------------------ dtype mismatch
    Case("sliding_window", "dtype mismatch", "attn_mask",
         "[Experiment] Sliding-window attention: each token attends to at most the 48 tokens "
         "before it, a local bias that can speed up early learning.\n[Code Changes] In "
         "CausalSelfAttention build a banded lower-triangular mask of width 48 and pass it as "
         "attn_mask to scaled_dot_product_attention instead of is_causal.",
         ((_SDPA, """        ones = torch.ones(T, T, dtype=torch.long, device=x.device)
        band = torch.tril(ones) - torch.tril(ones, diagonal=-48)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
"""),),
         ((_SDPA, """        ones = torch.ones(T, T, dtype=torch.bool, device=x.device)
        band = torch.tril(ones) & ~torch.tril(ones, diagonal=-48)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
"""),)),
    # ------------------------------------------------------------------ index out of range
    Case("unet_skips", "index out of range", "list index out of range",
         "[Experiment] U-net skip connections: add each block output of the first half of the "
         "network to the input of its mirror block in the second half, as in the modded-nanoGPT "
         "speedrun.\n[Code Changes] In GPT.forward keep the first half's block outputs in a "
         "list and add them, last first, before each block of the second half.",
         ((_BLOCKS, """        skips, half = [], len(self.blocks) // 2
        for i, block in enumerate(self.blocks):
            if i >= half:
                x = x + skips[len(self.blocks) - i]
            x = block(x)
            if i < half:
                skips.append(x)
"""),),
         ((_BLOCKS, """        skips, half = [], len(self.blocks) // 2
        for i, block in enumerate(self.blocks):
            if i >= half:
                x = x + skips[len(self.blocks) - 1 - i]
            x = block(x)
            if i < half:
                skips.append(x)
"""),)),
    # ------------------------------------------------------------------ optimiser set-up
    Case("embed_lr", "parameter in two groups", "more than one parameter group",
         "[Experiment] Faster embeddings: give the token and position embeddings 5x the peak "
         "learning rate and no weight decay.\n[Code Changes] In make_optimizer put wte and wpe "
         "in their own group with lr_mult 5; the training loop scales each group's lr by its "
         "lr_mult.",
         ((_GROUPS, """    embed = [model.wte.weight, model.wpe.weight]
    groups = [
        {"params": embed, "weight_decay": 0.0, "lr_mult": 5.0},
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
"""),
          (_LR, """            group["lr"] = lr_at(step, cfg) * group.get("lr_mult", 1.0)
""")),
         ((_GROUPS, """    embed = [model.wte.weight, model.wpe.weight]
    embed_ids = {id(p) for p in embed}
    groups = [
        {"params": embed, "weight_decay": 0.0, "lr_mult": 5.0},
        {"params": [p for p in params if p.dim() >= 2 and id(p) not in embed_ids],
         "weight_decay": cfg.weight_decay},
"""),
          (_LR, """            group["lr"] = lr_at(step, cfg) * group.get("lr_mult", 1.0)
"""))),
    # ------------------------------------------------------------------ device mismatch
    Case("sinusoid_pos", "device mismatch (GPU only)", None,
         "[Experiment] Sinusoidal positions added to learned ones: a fixed sinusoidal position "
         "signal on top of the learned position embedding, which helps early in training.\n"
         "[Code Changes] In GPT.forward build the standard sin/cos table for T positions and "
         "n_embd channels and add it to the embeddings.",
         ((_GPT_INIT, _GPT_INIT + "        self.n_embd = cfg.n_embd\n"),
          (_EMBED, _EMBED + """        pos = torch.arange(T).float()[:, None]
        freq = torch.exp(torch.arange(0, self.n_embd, 2).float()
                         * (-math.log(10000.0) / self.n_embd))
        table = torch.zeros(T, self.n_embd)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        x = x + table
""")),
         ((_GPT_INIT, _GPT_INIT + "        self.n_embd = cfg.n_embd\n"),
          (_EMBED, _EMBED + """        pos = torch.arange(T, device=idx.device).float()[:, None]
        freq = torch.exp(torch.arange(0, self.n_embd, 2, device=idx.device).float()
                         * (-math.log(10000.0) / self.n_embd))
        table = torch.zeros(T, self.n_embd, device=idx.device)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        x = x + table.to(x.dtype)
"""))),
    # ------------------------------------------------------------------ controls
    Case("relu_squared", "control", None,
         "[Experiment] ReLU-squared MLP: replace GELU with relu(x)^2, which the modded-nanoGPT "
         "speedrun found trains faster.\n[Code Changes] In MLP.forward use "
         "F.relu(self.fc(x)).square().",
         ((_MLP, _MLP.replace('F.gelu(self.fc(x), approximate="tanh")',
                              "F.relu(self.fc(x)).square()")),), None),
    Case("longer_warmup", "control", None,
         "[Experiment] Longer warm-up: warm the learning rate up over twice as many steps, "
         "steadier early training.\n[Code Changes] Double warmup_steps in the Config defaults "
         "and in the smoke profile.",
         (("    warmup_steps: int = 256\n", "    warmup_steps: int = 512\n"),
          ("lr=5e-3, warmup_steps=10,", "lr=5e-3, warmup_steps=20,")), None),
    Case("less_decay", "control", None,
         "[Experiment] Lighter weight decay: halve AdamW's weight decay to 0.05, the small "
         "model may be over-regularised.\n[Code Changes] Set weight_decay to 0.05 in Config.",
         (("    weight_decay: float = 0.1\n", "    weight_decay: float = 0.05\n"),), None),
)
