"""The evaluation stage of the nanoGPT environment: the only place its score comes from.

ideaforge runs `python evaluate.py` after the training process tree is gone, from a pristine,
hash-checked copy of this file in a fresh folder. It reads the checkpoint that train.py's
save_checkpoint left in $IDEAFORGE_ARTIFACTS (model.pt, config.json, model.py), scores it on
held-out tokens from $IDEAFORGE_DATA_DIR, and appends one line to $IDEAFORGE_METRICS:
`val_loss`, or `void` (exit 3) when the result cannot be trusted.

The score is the mean next-token loss over the first VAL_TOKENS held-out tokens, cut into rows
of VAL_SEQ_LEN, with a causality probe on every batch (README.md: "Validation"). The code of
model.py is the idea's: it runs here, so this process guards what it relies on.

  * Everything the score depends on is captured before model.py is imported, and the loss and
    the probe are computed here with those references, in this (the main) thread.
  * model.py is imported, built and run in a separate thread ("the model thread") whose frames
    hold nothing but the model and the input rows: the targets, the held-out tokens and this
    process's bookkeeping live in the main thread's locals only.
  * After the import and after every forward: the watched namespaces (torch, torch.Tensor,
    torch.nn.functional, builtins, json, this module, ...) must still hold the very objects
    they held before; no torch function or dispatch mode may be active; the logits must be
    exactly a torch.Tensor; no thread the model started may be running.
  * An audit hook (sys.addaudithook), armed after the data is loaded and before model.py is
    imported, refuses and records: opening files outside the Python installation, the
    artifacts and this folder (and any write at all); subprocesses, exec, fork, signals to
    other processes; sockets; ctypes; gc.get_objects/get_referrers/get_referents;
    sys._current_frames, sys.settrace/setprofile, more audit hooks; replacing the code or
    defaults of functions that are not model.py's, and setting attributes on this module's
    functions and classes; frame access from the main thread.
Any of these voids the run. README.md ("The evaluation stage") says what this does not stop.

Run by hand:  python evaluate.py --artifacts artifacts --profile smoke [--val-seed 2]
"""

# Imported before anything of the artifacts runs: what train.py imports is loaded here, so its
# import needs no file access under the audit hook and its namespaces are in the snapshot.
import _thread
import argparse
import builtins
import contextlib
import dataclasses  # noqa: F401  (train.py's Config)
import gc
import glob
import importlib.util
import json
import math
import os
import queue
import signal
import site
import sys
import threading
import time
import traceback

import numpy as np
import torch
import torch.distributed  # train.py imports it
import torch.nn.functional as F
import torch.nn.parallel  # train.py imports DDP
import torch.overrides
from torch import nn

# ---------------------------------------------------------------------------------------------
# Settings: the validation budget (the same as train.py's section 6 before the evaluation stage)
# ---------------------------------------------------------------------------------------------
VAL_TOKENS = {"full": 10_485_760, "debug": 10_485_760, "single": 10_485_760, "smoke": 131_072}
VAL_SEQ_LEN = {"full": 1024, "debug": 1024, "single": 1024, "smoke": 64}
VAL_BATCH_ROWS = {"full": 32, "debug": 32, "single": 32, "smoke": 16}
VAL_DATA = {"full": "fineweb", "debug": "fineweb", "single": "fineweb", "smoke": "synthetic"}
VOCAB_SIZE = {"full": 50257, "debug": 50257, "single": 50257, "smoke": 256}
PROBE_TOLERANCE = 1e-3  # largest change of any logit before the cut of a probe (see validate)
VOID_EXIT_CODE = 3
ERROR_EXIT_CODE = 1
EVALUATOR_MODULE = __name__
EVALUATOR_DIR = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------------
# Held-out data: the shard reader and the synthetic language of `smoke` (the same as train.py's;
# a copy, because the evaluator runs only from its own files)
# ---------------------------------------------------------------------------------------------
SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256


class ShardError(RuntimeError):
    """A token shard that is missing or not what it claims to be."""


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


def synthetic_tokens(n_tokens, vocab_size, seed):
    """train.py's toy language for `smoke`: the same lexicon; `seed` picks the stream."""
    lexicon_rng = np.random.default_rng(20240520)
    lengths = lexicon_rng.integers(3, 13, size=96)
    lexicon = lexicon_rng.integers(0, vocab_size, size=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    words = np.random.default_rng(seed).integers(0, 96, size=n_tokens // 3 + 1)
    word_starts = np.repeat(starts[words], lengths[words])[:n_tokens]
    word_offsets = np.arange(len(word_starts)) - np.repeat(
        np.cumsum(lengths[words]) - lengths[words], lengths[words])[:n_tokens]
    return lexicon[word_starts + word_offsets].astype(np.uint16)


def validation_tokens(profile, data_dir, seed):
    """The first VAL_TOKENS + 1 held-out tokens: the val shards, or for `smoke` a stream of the
    synthetic language drawn with `seed` (unknown to the training process)."""
    need = VAL_TOKENS[profile] + 1
    if VAL_DATA[profile] == "synthetic":
        return torch.from_numpy(synthetic_tokens(need, VOCAB_SIZE[profile], seed).astype(np.int64))
    paths = sorted(glob.glob(os.path.join(data_dir, "fineweb_val_*.bin")))
    if not paths:
        raise ShardError(f"no fineweb_val_*.bin shards in {data_dir}; prepare them with "
                         f"`python prepare_data.py --data-dir {data_dir}` or pass --data-dir")
    parts, have = [], 0
    for path in paths:
        parts.append(np.asarray(load_shard(path)[:need - have]))
        have += len(parts[-1])
        if have == need:
            return torch.from_numpy(np.concatenate(parts).astype(np.int64))
    raise ShardError(f"the val shards in {data_dir} hold {have} tokens; validation needs {need}")


# ---------------------------------------------------------------------------------------------
# What the score relies on, captured before model.py runs
# ---------------------------------------------------------------------------------------------
class Violation(Exception):
    """The model's code reached for something the evaluation relies on: the run is void."""


class ModelError(Exception):
    """The model's code raised; the text is its traceback, formatted in the model thread (the
    main thread neither reads frames nor runs the model's __str__)."""


# Namespaces whose every entry must still be the same object after model.py ran. A module may
# gain submodules (lazy imports); nothing else may be added, replaced or removed.
WATCHED = {
    "torch": torch, "torch.nn.functional": F, "torch.Tensor": torch.Tensor,
    "torch._C.TensorBase": torch._C.TensorBase, "torch._C._nn": torch._C._nn,
    "torch._C": torch._C, "torch.nn.Module": nn.Module, "torch.overrides": torch.overrides,
    "torch.autograd.grad_mode": torch.autograd.grad_mode, "builtins": builtins, "json": json,
    "json.encoder": json.encoder, "math": math, "os": os, "os.path": os.path,
    "threading": threading, "queue": queue, "signal": signal, "time": time, "sys": sys,
}
IGNORED_KEYS = {"__warningregistry__", "_"}


def snapshot(namespaces):
    return {name: dict(vars(obj)) for name, obj in namespaces.items()}


def changed_entries(namespaces, before):
    """'namespace.key' for every entry that differs from the snapshot (by identity)."""
    changed = []
    for name, obj in namespaces.items():
        now, then = vars(obj), before[name]
        for key, value in then.items():
            if key not in IGNORED_KEYS and now.get(key, changed) is not value:
                changed.append(f"{name}.{key}")
        for key in now.keys() - then.keys():
            if key not in IGNORED_KEYS and not (isinstance(obj, type(os))
                                                and isinstance(now[key], type(os))):
                changed.append(f"{name}.{key} (added)")
    return changed


def modes_active():
    """Torch function and dispatch modes active in the calling thread (both are per thread)."""
    return (torch._C._len_torch_function_stack() + torch._C._len_torch_dispatch_stack()
            + (not torch._C._is_torch_function_enabled()))


def under(path, roots):
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def python_roots():
    """Where the interpreter and its packages live: what imports read."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(torch.__file__)),
             os.path.dirname(os.path.dirname(np.__file__))}
    with contextlib.suppress(Exception):
        roots.update(site.getsitepackages())
    with contextlib.suppress(Exception):
        roots.add(site.getusersitepackages())
    roots.update(p for p in sys.path if p and os.path.isdir(p))
    return tuple(sorted(os.path.realpath(r) for r in roots if r))


BLOCKED_EVENTS = frozenset({
    "os.system", "os.fork", "os.forkpty", "os.kill", "os.killpg", "os.setsid", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
    "os.truncate", "os.chmod", "os.chown", "os.utime", "os.chdir", "os.chroot",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames",
    "sys.settrace", "sys.setprofile", "sys.addaudithook", "sys.remote_exec", "_posixsubprocess",
    "pty.spawn", "mmap.__new__", "code.__new__", "function.__new__", "resource.setrlimit",
    "signal.pthread_kill", "shutil.rmtree", "shutil.move", "shutil.copyfile",
})
BLOCKED_PREFIXES = ("subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "socket.",
                    "ctypes.", "_ctypes.", "winreg.", "webbrowser.", "urllib.", "http.",
                    "ftplib.", "smtplib.", "telnetlib.", "poplib.", "imaplib.", "nntplib.")
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_code",
                              "gi_code", "cr_code", "ag_code"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def arm_audit_hook(readable, denied, model_prefix, own=()):
    """Install the audit hook (it cannot be removed). Returns (violations, window): every
    refusal is appended to `violations` even when the model's code catches the exception;
    `window` holds the one path the main thread may append to while it emits the result."""
    violations, window = [], []
    main_ident = threading.main_thread().ident
    get_ident, realpath, fsdecode, inside = _thread.get_ident, os.path.realpath, os.fsdecode, under
    evaluator, write_flags, blocked, blocked_prefixes, frame_attributes = (
        EVALUATOR_MODULE, WRITE_FLAGS, BLOCKED_EVENTS, BLOCKED_PREFIXES, FRAME_ATTRIBUTES)

    def refuse(what):
        violations.append(what)
        raise PermissionError(f"evaluate.py refuses this during evaluation: {what}")

    def owner(obj):
        module = getattr(obj, "__module__", None)
        return module if isinstance(module, str) else ""

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = bool((flags or 0) & write_flags) or any(c in (mode or "") for c in "wax+")
            if isinstance(path, int):
                if writing:
                    refuse(f"writing to file descriptor {path}")
                return
            real = realpath(fsdecode(path))
            if window and get_ident() == main_ident and real == window[0]:
                return
            if writing:
                refuse(f"opening {real} for writing")
            # The artifacts and the evaluator's code may lie inside the job's folder, which is
            # otherwise out of bounds (the metrics file, the data): they are checked first.
            if not inside(real, own) and (inside(real, denied) or not inside(real, readable)):
                refuse(f"opening {real}")
        elif event in blocked or event.startswith(blocked_prefixes):
            refuse(f"{event} {str(args)[:120]}")
        elif event in ("object.__setattr__", "object.__delattr__"):
            obj, name = args[0], args[1]
            module = owner(obj)
            if module == evaluator:
                refuse(f"{event} {name} on evaluate.py's {getattr(obj, '__qualname__', obj)}")
            if (name in ("__code__", "__defaults__", "__kwdefaults__", "__globals__")
                    and not module.startswith((model_prefix, "namedtuple_"))):
                refuse(f"replacing {name} of {module}.{getattr(obj, '__qualname__', obj)}")
        elif (event == "sys._getframe" or (event == "object.__getattr__"
                                           and args[1] in frame_attributes)) \
                and get_ident() == main_ident:  # only model code called back in this thread
            refuse(f"{event} in the evaluator's thread")

    sys.addaudithook(hook)
    return violations, window


# ---------------------------------------------------------------------------------------------
# The model thread: model.py is imported, built and run there, never in the main thread
# ---------------------------------------------------------------------------------------------
def start_model_thread(device):
    """Run calls in a thread of their own. Returns call(fn, *args) -> (result, modes_active):
    the main thread waits for each call; exceptions come back raised."""
    requests, replies = queue.SimpleQueue(), queue.SimpleQueue()
    count_modes = modes_active
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def serve():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        while True:
            job = requests.get()
            if job is None:
                return
            fn, args = job
            try:
                with torch.no_grad():
                    result = fn(*args)
                sync()
                replies.put((True, result, count_modes()))
            except BaseException:  # noqa: BLE001  (reported in the main thread)
                replies.put((False, traceback.format_exc(), count_modes()))

    thread = threading.Thread(target=serve, name="model", daemon=True)
    thread.start()

    def call(fn, *args):
        requests.put((fn, args))
        ok, result, modes = replies.get()
        if not ok:
            raise ModelError(result)
        return result, modes

    def stop():
        requests.put(None)
        thread.join(timeout=30)
        return not thread.is_alive()

    return call, stop


def import_model(path, module_name):
    """model.py (the trained code) as a module of its own, by path; its folder is not put on
    sys.path, so it cannot bring modules of its own."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses looks the module up while building Config
    spec.loader.exec_module(module)
    return module


def build_model(module, config, state, device):
    """GPT(Config(**config)) with the trained weights, in eval mode."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    model = module.GPT(module.Config(**fields))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def forward(model, x, autocast):
    with autocast:
        return model(x)


# ---------------------------------------------------------------------------------------------
# Validation: loss over fixed tokens, causality probe on every batch
# ---------------------------------------------------------------------------------------------
# Rows of VAL_SEQ_LEN tokens; the B rows of a batch are far apart in the text (strided). Every
# batch is run twice: as it is, and with each row's tokens after a random cut replaced by other
# text. A causal model gives the same logits up to each cut; any logit there that moves by more
# than PROBE_TOLERANCE voids the run. The cuts walk through a random order of all positions.


def validate(call, model, val_tokens, settings, device, autocast, check, ops):
    """Mean validation loss and the largest logit change any causality probe saw. `call` runs
    the model in the model thread; `check(where, modes)` raises Violation; `ops` are the torch
    functions captured before model.py was imported."""
    T, B, n_tokens_total, vocab = settings
    n_rows = n_tokens_total // T
    n_batches = n_rows // B
    if n_batches * B * T != n_tokens_total:
        raise ValueError("VAL_TOKENS must fill whole batches")
    tensor_type = ops.Tensor
    probe_rng = ops.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    cut_order = ops.randperm(T - 1, generator=probe_rng)  # all positions before any repeats
    loss_sum = ops.zeros((), dtype=torch.float64, device=device)
    worst_change = ops.zeros((), dtype=torch.float32, device=device)
    positions = ops.arange(T, device=device)
    for batch in range(n_batches):
        rows = ops.arange(batch, n_rows, n_batches)  # strided: B rows far apart in the text
        window = val_tokens[rows[:, None] * T + ops.arange(T + 1)[None, :]].to(device)
        x, y = window[:, :-1], window[:, 1:]
        logits, modes = call(forward, model, ops.clone(x), autocast)  # the model gets a copy
        check(f"the forward of batch {batch}", modes)
        if type(logits) is not tensor_type:
            raise Violation(f"the model returned a {type(logits).__qualname__}, not a "
                            "torch.Tensor (tensor subclasses are not accepted)")
        if tuple(logits.shape) != (B, T, vocab) or not logits.is_floating_point():
            raise ValueError(f"model returned logits of shape {tuple(logits.shape)} and dtype "
                             f"{logits.dtype} for {B}x{T} tokens of a {vocab}-token vocabulary")
        logits = ops.clone(logits)  # the model keeps no handle on what is compared below
        loss_sum += ops.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1),
                                      reduction="sum")
        cuts = cut_order[rows % (T - 1)].to(device)  # keep x[:, :cut+1], replace what follows
        after_cut = positions[None, :] > cuts[:, None]
        other_text = x.roll(1, dims=0)
        other_text = ops.where(other_text == x, (other_text + 1) % vocab, other_text)
        probe_logits, modes = call(forward, model, ops.where(after_cut, other_text, x), autocast)
        check(f"the probe forward of batch {batch}", modes)
        if type(probe_logits) is not tensor_type or probe_logits.shape != logits.shape:
            raise Violation("the probe forward returned something else than a torch.Tensor of "
                            "the shape of the first")
        change = (probe_logits - logits).abs().amax(dim=-1).masked_fill(after_cut, 0.0)
        worst_change = ops.maximum(worst_change, change.max().float())
    n_tokens = ops.tensor(float(n_batches * B * T), dtype=torch.float64, device=device)
    return (loss_sum / n_tokens).item(), worst_change.item()


class Ops:
    """The torch functions validate() calls, bound before model.py is imported."""

    def __init__(self):
        self.Tensor, self.Generator, self.randperm = torch.Tensor, torch.Generator, torch.randperm
        self.zeros, self.arange, self.tensor = torch.zeros, torch.arange, torch.tensor
        self.where, self.maximum, self.clone = torch.where, torch.maximum, torch.clone
        self.cross_entropy = F.cross_entropy


# ---------------------------------------------------------------------------------------------
# The metric protocol and the main flow
# ---------------------------------------------------------------------------------------------
def metric_line(name, value, **extra):
    return json.dumps({"name": name, "value": value, **extra})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", help="the checkpoint folder (default $IDEAFORGE_ARTIFACTS, "
                   "else ./artifacts)")
    p.add_argument("--profile", choices=sorted(VAL_TOKENS),
                   help="default $IDEAFORGE_PROFILE, else the checkpoint's")
    p.add_argument("--data-dir", help="where fineweb_val_*.bin are (default "
                   "$NANOGPT_DATA_DIR, else $IDEAFORGE_DATA_DIR/fineweb10B, else the cache)")
    p.add_argument("--val-seed", type=int, help="smoke: the seed of the held-out stream "
                   "(default: drawn from os.urandom for every evaluation)")
    return p.parse_args(argv)


def data_dir_from(flag=None):
    if flag:
        return flag
    if os.environ.get("NANOGPT_DATA_DIR"):
        return os.environ["NANOGPT_DATA_DIR"]
    root = os.environ.get("IDEAFORGE_DATA_DIR") or os.path.expanduser("~/.cache/ideaforge/data")
    return os.path.join(root, "fineweb10B")


def main(argv=None):
    """Returns (exit code, the metric line or None, a message for stderr or None)."""
    start = time.time()
    args = parse_args(argv)
    artifacts = os.path.realpath(args.artifacts or os.environ.get("IDEAFORGE_ARTIFACTS")
                                 or "artifacts")
    with open(os.path.join(artifacts, "config.json")) as f:
        checkpoint = json.load(f)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), dict):
        raise TypeError(f"{artifacts}/config.json holds no Config (save_checkpoint writes it)")
    profile = args.profile or os.environ.get("IDEAFORGE_PROFILE") or checkpoint.get("profile")
    if profile not in VAL_TOKENS:
        raise ValueError(f"unknown profile {profile!r}")
    data_dir = os.path.realpath(data_dir_from(args.data_dir))
    seed = args.val_seed
    if seed is None and os.environ.get("IDEAFORGE_EVAL_SEED"):
        # The same draw for every job of a search (scores compare without sampling noise),
        # and never visible to the training stage (the runner keeps it from spec.json).
        seed = int(os.environ["IDEAFORGE_EVAL_SEED"])
    if VAL_DATA[profile] == "synthetic" and seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    val_tokens = validation_tokens(profile, data_dir, seed)
    settings = (VAL_SEQ_LEN[profile], VAL_BATCH_ROWS[profile], VAL_TOKENS[profile],
                VOCAB_SIZE[profile])
    device = torch.device("cuda", 0) if profile != "smoke" and torch.cuda.is_available() \
        else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.zeros(1, device=device)  # CUDA starts before the audit hook
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        torch.set_num_threads(1) if profile == "smoke" and "OMP_NUM_THREADS" not in os.environ \
            else None
        autocast = contextlib.nullcontext()
    state = torch.load(os.path.join(artifacts, "model.pt"), map_location="cpu", weights_only=True)
    facts = {"step": checkpoint.get("step"), "val_tokens": VAL_TOKENS[profile]}
    if os.environ.get("IDEAFORGE_TRAIN_SECONDS"):  # measured by the runner
        facts["time_s"] = round(float(os.environ["IDEAFORGE_TRAIN_SECONDS"]), 2)
    facts["checkpoint_time_s"] = checkpoint.get("train_time_s")  # what train.py says
    if seed is not None:
        facts["val_seed"] = seed

    # From here on the idea's code runs: bind what the rest relies on to locals, snapshot the
    # namespaces, arm the audit hook.
    ops, validate_fn, changed, modes, line = Ops(), validate, changed_entries, modes_active, \
        metric_line
    count_threads, isfinite, thread_count = _thread._count, math.isfinite, None
    sys.dont_write_bytecode = True  # no __pycache__ written into the artifacts
    watched = {**WATCHED, EVALUATOR_MODULE: sys.modules[EVALUATOR_MODULE]}
    before = snapshot(watched)
    signals = {s: signal.getsignal(s) for s in signal.valid_signals()
               if s not in (signal.SIGKILL, signal.SIGSTOP)}
    getsignal = signal.getsignal
    metrics_path = os.environ.get("IDEAFORGE_METRICS")
    denied = tuple(os.path.realpath(p) for p in
                   (data_dir, metrics_path, os.environ.get("IDEAFORGE_DATA_DIR"),
                    os.environ.get("IDEAFORGE_JOB_DIR")) if p)
    readable = python_roots() + (artifacts, EVALUATOR_DIR)
    model_name = f"ideaforge_model_{os.urandom(6).hex()}"
    call, stop = start_model_thread(device)
    thread_count = count_threads()
    violations, window = arm_audit_hook(readable, denied, model_name,
                                        own=(artifacts, EVALUATOR_DIR))

    def check(where, worker_modes=0):
        if violations:
            raise Violation(f"{violations[0]} (during {where})")
        if worker_modes or modes():
            raise Violation(f"a torch function or dispatch mode was left active after {where}")
        tampered = changed(watched, before)
        if tampered:
            raise Violation(f"{', '.join(tampered[:5])} changed during {where}")
        if count_threads() != thread_count:
            raise Violation(f"the model's code started a thread ({where})")
        moved = [s for s, handler in signals.items() if getsignal(s) is not handler]
        if moved:
            raise Violation(f"the model's code installed a signal handler ({where})")

    val_start = time.time()
    try:
        module, worker_modes = call(import_model, os.path.join(artifacts, "model.py"), model_name)
        check("the import of model.py", worker_modes)
        model, worker_modes = call(build_model, module, checkpoint["config"], state, device)
        check("building the model", worker_modes)
        val_loss, worst_change = validate_fn(call, model, val_tokens, settings, device, autocast,
                                             check, ops)
        check("validation")
        facts.update(val_time_s=round(time.time() - val_start, 2), probe_max_change=worst_change)
        if not worst_change <= PROBE_TOLERANCE:
            reason = (f"causality probe failed: logits before the cut moved by "
                      f"{worst_change:.3g} (> {PROBE_TOLERANCE}) when later tokens changed: "
                      "the model sees the future")
        elif not isfinite(val_loss):
            reason = f"validation loss is {val_loss}"
        else:
            reason = None
    except Violation as err:
        val_loss, reason = None, str(err)
    except (ModelError, ValueError, RuntimeError) as err:  # the model failed: no score
        if not violations:
            return ERROR_EXIT_CODE, None, f"evaluate.py: {type(err).__name__}: {err}\n"
        val_loss, reason = None, f"{violations[0]} (then the model's code failed)"
    stopped = stop()
    if reason is None and not stopped:
        reason = "the model thread did not stop"
    facts["eval_wall_s"] = round(time.time() - start, 2)
    if reason is None:
        text = line("val_loss", val_loss, **facts)
        code = 0
    else:
        text = line("void", 1, reason=reason, val_loss_unverified=val_loss, **facts)
        code = VOID_EXIT_CODE
    if metrics_path:
        gc.disable()  # no finalizer of the model's objects runs while the file may be opened
        window.append(os.path.realpath(metrics_path))
        with open(metrics_path, "a") as f:
            f.write(text + "\n")
        window.clear()
    return code, text, None


if __name__ == "__main__":
    try:
        exit_code, metric, message = main()
    except (OSError, ValueError, TypeError, ShardError) as err:  # before the idea's code ran
        exit_code, metric, message = ERROR_EXIT_CODE, None, f"evaluate.py: {err}\n"
    if metric:
        print(f"metric {metric}", flush=True)
    if message:
        sys.stderr.write(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)  # no atexit handler or finalizer of the model's code runs after this
