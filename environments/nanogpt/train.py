"""GPT-2 pre-training on FineWeb under a hard time limit: the nanoGPT environment of ideaforge.

One file, meant to be read and edited by people and language models. Its sections:
  1. settings: profiles and model sizes                       (ideas may change these)
  2. PROTECTED rules: the time limit                          (ideas must not change these)
  3. data: token shards, the synthetic stream of `smoke`
  4. the model: GPT-2 with RMSNorm, learned positions, tied embeddings
  5. optimiser and learning-rate schedule
  6. PROTECTED checkpoint: what evaluate.py scores
  7. the training loop and the metric protocol

This process never sees validation data and reports no score: after training it leaves a
checkpoint (save_checkpoint) that evaluate.py, a separate process started by ideaforge from a
pristine copy, loads and scores on held-out tokens.

Run:  python train.py --profile smoke                      (CPU, seconds, no data needed)
      python evaluate.py --artifacts artifacts --profile smoke      (the score)
      python -m torch.distributed.run --standalone --nproc_per_node=8 train.py --profile full
"""

import argparse
import contextlib
import glob
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

T_START = time.time()  # PROTECTED: the training clock starts when the script starts

# ---------------------------------------------------------------------------------------------
# 1. Settings (ideas may change these)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    # model: GPT-2 small
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50257
    seq_len: int = 1024  # training context length
    # optimisation
    tokens_per_step: int = 262_144  # per optimizer step, summed over all GPUs
    micro_batch: int = 32  # sequences per GPU in one forward/backward
    lr: float = 1.5e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_steps: int = 256
    planned_steps: int = 26_880  # the schedule decays over these; the time limit usually ends first
    final_lr_frac: float = 0.1
    # run
    device: str = "cuda"
    compile: bool = True
    data: str = "fineweb"  # "fineweb" shards on disk, or "synthetic" (made on the fly)
    log_every: int = 50
    cpu_threads: int = 0  # 0: torch's default


PROFILES = {
    "full": Config(),  # 8 GPUs under torchrun
    "debug": Config(planned_steps=2_000),  # 2 GPUs
    "single": Config(planned_steps=2_500),  # 1 GPU
    "smoke": Config(  # CPU, a tiny model on a synthetic token stream
        n_layer=2, n_head=4, n_embd=64, vocab_size=256, seq_len=64,
        tokens_per_step=2048, micro_batch=16, lr=5e-3, warmup_steps=10, planned_steps=60,
        device="cpu", compile=False, data="synthetic", log_every=10, cpu_threads=1,
    ),
}

MODEL_SIZES = {  # --model: the GPT-2 family
    "d12": {"n_layer": 12, "n_head": 12, "n_embd": 768},
    "d24": {"n_layer": 24, "n_head": 16, "n_embd": 1024},
    "d36": {"n_layer": 36, "n_head": 20, "n_embd": 1280},
    "d48": {"n_layer": 48, "n_head": 25, "n_embd": 1600},
}

# ---------------------------------------------------------------------------------------------
# 2. PROTECTED rules: ideas must not change these (environment.toml lists them)
# ---------------------------------------------------------------------------------------------
# The limit counts from T_START; ideaforge also measures the whole training command and voids a
# run that overruns the profile's limit by more than its slack.
TIME_LIMIT_S = {"full": 1500.0, "debug": 600.0, "single": 1500.0, "smoke": 60.0}
# evaluate.py scores rows of this many tokens (a copy of its setting): the model must take them.
VAL_SEQ_LEN = {"full": 1024, "debug": 1024, "single": 1024, "smoke": 64}


def time_limit_s(profile, requested=None):
    """The profile's limit; --time-limit or NANOGPT_TIME_LIMIT_S may only shorten it."""
    env_limit = float(os.environ.get("NANOGPT_TIME_LIMIT_S", "inf"))
    return min(TIME_LIMIT_S[profile], env_limit, requested or math.inf)


def time_is_up(limit, world, device):
    """True on every rank once any rank has trained for `limit` seconds."""
    up = time.time() - T_START >= limit
    if world == 1:
        return up
    flag = torch.tensor([float(up)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


# ---------------------------------------------------------------------------------------------
# 3. Data
# ---------------------------------------------------------------------------------------------
# A shard is 256 little-endian int32 (magic, version, token count, zeros) and then the tokens
# as uint16. prepare_data.py writes them; `fineweb_val_*.bin` is held out: only evaluate.py
# reads it (under ideaforge, this process's data folder does not even hold it).
SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256


class ShardError(RuntimeError):
    """A token shard that is missing or not what it claims to be."""


def data_dir_from(flag=None):
    """--data-dir, else NANOGPT_DATA_DIR, else $IDEAFORGE_DATA_DIR/fineweb10B, else the cache."""
    if flag:
        return flag
    if os.environ.get("NANOGPT_DATA_DIR"):
        return os.environ["NANOGPT_DATA_DIR"]
    root = os.environ.get("IDEAFORGE_DATA_DIR") or os.path.expanduser("~/.cache/ideaforge/data")
    return os.path.join(root, "fineweb10B")


def load_shard(path):
    """The tokens of one shard (uint16, memory-mapped) after checking its header and size."""
    if not os.path.isfile(path):
        raise ShardError(f"{path}: missing; prepare the data with `python prepare_data.py`")
    size = os.path.getsize(path)
    if size < HEADER_INTS * 4:
        raise ShardError(f"{path}: truncated: {size} bytes, shorter than the 1024-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: not a token shard (magic {header[0]}, expected {SHARD_MAGIC})")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: shard version {header[1]}, this code reads {SHARD_VERSION}")
    n_tokens = int(header[2])
    expected = HEADER_INTS * 4 + 2 * n_tokens
    if size != expected:
        raise ShardError(f"{path}: truncated or damaged: its header promises {n_tokens} tokens "
                         f"({expected} bytes) but the file has {size} bytes; prepare it again")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_INTS * 4, shape=(n_tokens,))


def shard_paths(data_dir, split):
    paths = sorted(glob.glob(os.path.join(data_dir, f"fineweb_{split}_*.bin")))
    if not paths:
        raise ShardError(f"no fineweb_{split}_*.bin shards in {data_dir}; prepare them with "
                         f"`python prepare_data.py --data-dir {data_dir}` or pass --data-dir")
    return paths


def synthetic_tokens(n_tokens, vocab_size, seed):
    """A toy language for `smoke`: a fixed lexicon of 96 random 'words' of 3 to 12 tokens, and a
    stream of words drawn at random. Within a word the next token is predictable from the ones
    before it, so the loss falls fast; `seed` picks the stream, never the lexicon."""
    lexicon_rng = np.random.default_rng(20240520)
    lengths = lexicon_rng.integers(3, 13, size=96)
    lexicon = lexicon_rng.integers(0, vocab_size, size=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    words = np.random.default_rng(seed).integers(0, 96, size=n_tokens // 3 + 1)
    word_starts = np.repeat(starts[words], lengths[words])[:n_tokens]
    word_offsets = np.arange(len(word_starts)) - np.repeat(
        np.cumsum(lengths[words]) - lengths[words], lengths[words])[:n_tokens]
    return lexicon[word_starts + word_offsets].astype(np.uint16)


class TrainLoader:
    """Consecutive windows of the training tokens; rank r of w takes every w-th window."""

    def __init__(self, cfg, data_dir, rank, world):
        self.batch, self.seq, self.rank, self.world = cfg.micro_batch, cfg.seq_len, rank, world
        if cfg.data == "synthetic":
            n = cfg.planned_steps * cfg.tokens_per_step + world * self.batch * self.seq + 1
            self.shards = [lambda: synthetic_tokens(n, cfg.vocab_size, seed=1)]
        else:
            self.shards = [lambda p=p: load_shard(p) for p in shard_paths(data_dir, "train")]
        self.shard_index, self.tokens, self.pos = 0, self.shards[0](), 0

    def next_batch(self, device):
        span = self.batch * self.seq
        if self.pos + self.world * span + 1 > len(self.tokens):  # next shard (wrapping around)
            self.shard_index = (self.shard_index + 1) % len(self.shards)
            self.tokens, self.pos = self.shards[self.shard_index](), 0
        start = self.pos + self.rank * span
        chunk = torch.from_numpy(self.tokens[start:start + span + 1].astype(np.int64))
        self.pos += self.world * span
        if device.type == "cuda":
            chunk = chunk.pin_memory().to(device, non_blocking=True)
        return chunk[:-1].view(self.batch, self.seq), chunk[1:].view(self.batch, self.seq)

    def shuffle(self, cfg, seed):
        """Another data order for another run seed, the same on every rank: `smoke`'s synthetic
        stream drawn from the seed, the shards in a shuffled order, and the windows starting at
        an offset shifted by less than one window. Without a seed the order stays fixed."""
        if cfg.data == "synthetic":
            n, stream = len(self.tokens), seed_sequence(seed, 1)
            self.shards = [lambda: synthetic_tokens(n, cfg.vocab_size, seed=stream)]
        order_rng = np.random.default_rng(seed_sequence(seed, 2))
        self.shards = [self.shards[i] for i in order_rng.permutation(len(self.shards))]
        self.shard_index, self.tokens = 0, self.shards[0]()
        self.pos = int(order_rng.integers(0, self.batch * self.seq))


def run_seed():
    """$IDEAFORGE_SEED: ideaforge gives each run of an idea its own (a retry keeps it), so
    repeats are independent and each is reproducible. None when unset (a run by hand)."""
    value = os.environ.get("IDEAFORGE_SEED", "").strip()
    return int(value) if value else None


def seed_sequence(seed, purpose):
    """numpy's seed for one use of the run seed (1: the synthetic stream, 2: the data order).
    The spawn key keeps these apart from each other and from any stream evaluate.py draws."""
    return np.random.SeedSequence(seed % 2**64, spawn_key=(purpose,))


# ---------------------------------------------------------------------------------------------
# 4. The model
# ---------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = nn.RMSNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.vocab_size = cfg.vocab_size
        padded_vocab = -(-cfg.vocab_size // 64) * 64  # a multiple of 64 keeps the matmuls fast
        self.wte = nn.Embedding(padded_vocab, cfg.n_embd)
        self.wpe = nn.Embedding(max(cfg.seq_len, max(VAL_SEQ_LEN.values())), cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = nn.RMSNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, padded_vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input and output embeddings
        for name, p in self.named_parameters():
            if p.dim() == 2:  # residual projections are scaled down with depth (GPT-2)
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx, targets=None):
        """Logits (B, T, vocab) for every position, or the mean loss when targets are given."""
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm_f(x))[..., :self.vocab_size]
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
        return loss


# ---------------------------------------------------------------------------------------------
# 5. Optimiser and learning-rate schedule
# ---------------------------------------------------------------------------------------------


def make_optimizer(model, cfg, device):
    """AdamW; matrices and embeddings decay, norm gains do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=device.type == "cuda")


def lr_at(step, cfg):
    """Linear warm-up, then linear decay to final_lr_frac of the peak at planned_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.planned_steps - cfg.warmup_steps))
    return cfg.lr * (1.0 - (1.0 - cfg.final_lr_frac) * progress)


# ---------------------------------------------------------------------------------------------
# 6. PROTECTED checkpoint: what evaluate.py scores (ideas must not change save_checkpoint)
# ---------------------------------------------------------------------------------------------
# evaluate.py imports model.py (a copy of this file) by path, rebuilds
# GPT(Config(**config["config"])), loads model.pt with load_state_dict(strict=True) and calls
# model(idx) for logits. So the model must be built by GPT(cfg) from Config fields alone, live
# in this file, and take the state_dict saved here; main() stays under `__name__ == "__main__"`.


def save_checkpoint(model, cfg, profile, step, train_time_s, rank):
    """Write model.pt (the raw model's state_dict), config.json and model.py (a copy of this
    file) to $IDEAFORGE_ARTIFACTS (./artifacts when run by hand). Only rank 0 writes."""
    if rank != 0:
        return None
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):  # DDP, then torch.compile
        model = model.module if hasattr(model, "module") else model._orig_mod
    out_dir = os.environ.get("IDEAFORGE_ARTIFACTS") or "artifacts"
    os.makedirs(out_dir, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(out_dir, "model.pt"))
    shutil.copyfile(os.path.abspath(__file__), os.path.join(out_dir, "model.py"))
    facts = {"config": asdict(cfg), "profile": profile, "step": step,
             "train_time_s": round(train_time_s, 2)}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(facts, f, indent=1)
    print(f"checkpoint of step {step} written to {out_dir}", flush=True)
    return out_dir


# ---------------------------------------------------------------------------------------------
# 7. Training loop and metric protocol
# ---------------------------------------------------------------------------------------------
WANDB_RUN = None
IS_MAIN_PROCESS = int(os.environ.get("RANK", "0")) == 0


def emit(name, value, **extra):
    """One metric: a JSON line to $IDEAFORGE_METRICS (ideaforge reads it), stdout and W&B."""
    if not IS_MAIN_PROCESS:
        return
    line = json.dumps({"name": name, "value": value, **extra})
    print(f"metric {line}", flush=True)
    if os.environ.get("IDEAFORGE_METRICS"):
        with open(os.environ["IDEAFORGE_METRICS"], "a") as f:
            f.write(line + "\n")
    if WANDB_RUN is not None and isinstance(value, (int, float)):
        WANDB_RUN.log({name: value}, step=extra.get("step"))


def start_wandb(cfg, profile):
    """A W&B run only when the user has W&B set up (API key, login or WANDB_MODE=offline)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    netrc = os.path.expanduser("~/.netrc")
    logged_in = False
    if os.path.isfile(netrc):
        with open(netrc) as f:
            logged_in = "api.wandb.ai" in f.read()
    configured = os.environ.get("WANDB_API_KEY") or logged_in or mode == "offline"
    if mode == "disabled" or not configured:
        return None
    try:
        import wandb
    except ImportError:
        print("W&B is configured but wandb is not installed: not logging to W&B")
        return None
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "ideaforge-nanogpt"),
                      config={**asdict(cfg), "profile": profile},
                      dir=os.environ.get("IDEAFORGE_JOB_DIR"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    p.add_argument("--data-dir", help="where the fineweb_*.bin shards are (see data_dir_from)")
    p.add_argument("--model", choices=sorted(MODEL_SIZES), help="model size (default: d12)")
    p.add_argument("--micro-batch", type=int, help="sequences per GPU per forward/backward")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (benchmarks)")
    p.add_argument("--time-limit", type=float, help="a shorter time limit in seconds (tests)")
    p.add_argument("--log-every", type=int, help="steps between train-loss lines")
    return p.parse_args(argv)


def main(argv=None):
    global WANDB_RUN
    args = parse_args(argv)
    cfg = PROFILES[args.profile]
    if args.model:
        cfg = replace(cfg, **MODEL_SIZES[args.model])
    if args.micro_batch:
        cfg = replace(cfg, micro_batch=args.micro_batch)
    if args.log_every:
        cfg = replace(cfg, log_every=args.log_every)
    if cfg.cpu_threads and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cfg.cpu_threads)
    limit = time_limit_s(args.profile, args.time_limit)

    # processes: one per GPU under torchrun, else one
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    micro_tokens = cfg.micro_batch * cfg.seq_len * world
    if cfg.tokens_per_step % micro_tokens:
        raise SystemExit(f"tokens_per_step {cfg.tokens_per_step} is not a multiple of "
                         f"micro_batch x seq_len x GPUs = {micro_tokens}")
    grad_accum = cfg.tokens_per_step // micro_tokens
    max_steps = min(cfg.planned_steps, args.max_steps or cfg.planned_steps)
    if rank == 0:
        WANDB_RUN = start_wandb(cfg, args.profile)

    data_dir = data_dir_from(args.data_dir)
    loader = TrainLoader(cfg, data_dir, rank, world)
    seed = run_seed()
    if seed is not None:
        loader.shuffle(cfg, seed)
    torch.manual_seed(1337 if seed is None else seed % 2**63)  # the same on every rank
    raw_model = GPT(cfg).to(device)
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if world > 1:
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)
    optimizer = make_optimizer(raw_model, cfg, device)
    n_params = sum(p.numel() for p in raw_model.parameters())
    if rank == 0:
        print(f"profile {args.profile}: {n_params / 1e6:.1f}M parameters, {world} process(es), "
              f"{grad_accum} micro-batch(es) of {cfg.micro_batch}x{cfg.seq_len} per step, "
              f"time limit {limit:.0f} s, data {cfg.data} ({data_dir})", flush=True)

    step, window_start, window_steps = 0, time.time(), 0
    while step < max_steps:
        if time_is_up(limit, world, device):
            if rank == 0:
                print(f"time limit of {limit:g} s reached after {step} steps", flush=True)
            break
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss_sum = torch.zeros((), device=device)
        for micro in range(grad_accum):
            x, y = loader.next_batch(device)
            if world > 1:  # average gradients across GPUs only after the last micro-batch
                model.require_backward_grad_sync = micro == grad_accum - 1
            with autocast:
                loss = model(x, y)
            (loss / grad_accum).backward()
            loss_sum += loss.detach()
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_steps += 1
        if step % cfg.log_every == 0 or step == max_steps:
            train_loss = loss_sum.item() / grad_accum  # waits for the GPU: the timing is honest
            elapsed = time.time() - window_start
            tokens_per_s = window_steps * cfg.tokens_per_step / elapsed
            emit("train_loss", round(train_loss, 4), step=step,
                 time_s=round(time.time() - T_START, 2))
            emit("tokens_per_s", round(tokens_per_s), step=step,
                 ms_per_step=round(1000 * elapsed / window_steps, 2), lr=lr_at(step - 1, cfg))
            window_start, window_steps = time.time(), 0

    train_time_s = time.time() - T_START
    if device.type == "cuda" and rank == 0:
        emit("peak_memory_gb", round(torch.cuda.max_memory_allocated(device) / 1e9, 2), step=step,
             reserved_gb=round(torch.cuda.max_memory_reserved(device) / 1e9, 2))
    save_checkpoint(model, cfg, args.profile, step, train_time_s, rank)
    if WANDB_RUN is not None:
        WANDB_RUN.finish()
    if world > 1:
        dist.barrier()  # no rank tears its connections down while rank 0 still writes
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # The checkpoint is written. DDP keeps the process group, and with it gloo's C++
        # threads, alive past destroy_process_group (3 threads left on torch 2.13): they run on
        # through the interpreter's and C++'s exit-time teardown, the likely source of the rare
        # abort after the result ("terminate called without an active exception", issue 15)
        # that made a finished run exit non-zero, i.e. crashed. So a distributed run leaves
        # without that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
