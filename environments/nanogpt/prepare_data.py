"""Prepares the token shards that train.py reads.

    python prepare_data.py [--data-dir DIR] [--max-tokens N]           FineWeb, GPT-2 BPE
    python prepare_data.py --synthetic --data-dir DIR --max-tokens N   made-up tokens, no download

A shard is 256 little-endian int32 (magic 20240520, version 1, token count, then zeros) followed
by the tokens as uint16. Documents are tokenized with tiktoken's GPT-2 encoding, each preceded by
<|endoftext|> (50256), and are never split across shards. The first documents fill the validation
shard `fineweb_val_000000.bin`; the rest go to `fineweb_train_000001.bin`, ... The run is
resumable: `progress.json` records the documents behind every finished shard, and shards are
written under a temporary name and renamed, so a half-written shard never looks finished.

The data directory is --data-dir, else $NANOGPT_DATA_DIR, else $IDEAFORGE_DATA_DIR/fineweb10B,
else ~/.cache/ideaforge/data/fineweb10B (the same rule as train.py).
"""

import argparse
import json
import os
import sys

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
EOT = 50256  # GPT-2's <|endoftext|>
GPT2_VOCAB = 50257
SYNTHETIC_MARKER = "SYNTHETIC"  # a file in data dirs that hold made-up tokens


def data_dir_from(flag=None):
    if flag:
        return flag
    if os.environ.get("NANOGPT_DATA_DIR"):
        return os.environ["NANOGPT_DATA_DIR"]
    root = os.environ.get("IDEAFORGE_DATA_DIR") or os.path.expanduser("~/.cache/ideaforge/data")
    return os.path.join(root, "fineweb10B")


def shard_name(split, index):
    return f"fineweb_{split}_{index:06d}.bin"


def write_shard(path, tokens):
    """Write one shard atomically (temporary file, then rename)."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ValueError(f"{path}: token ids must fit in uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())
    os.replace(tmp, path)


class ShardWriter:
    """Packs tokenized documents into shards: the validation shard first, then training ones."""

    def __init__(self, data_dir, val_tokens, shard_tokens, max_train_tokens):
        self.data_dir, self.val_tokens, self.shard_tokens = data_dir, val_tokens, shard_tokens
        self.max_train_tokens = max_train_tokens
        self.progress_path = os.path.join(data_dir, "progress.json")
        self.progress = {"docs_done": 0, "shards_done": 0, "train_tokens": 0}
        if os.path.exists(self.progress_path):
            with open(self.progress_path) as f:
                self.progress = json.load(f)
        self.buffer, self.buffered, self.docs_in_buffer = [], 0, 0

    @property
    def done(self):
        return self.progress["train_tokens"] >= self.max_train_tokens

    def capacity(self):
        if self.progress["shards_done"] == 0:
            return self.val_tokens
        return int(min(self.shard_tokens, self.max_train_tokens - self.progress["train_tokens"]))

    def add(self, tokens):
        """Add one document's tokens; returns the number of tokens written to disk by this call."""
        written = 0
        if self.buffered + len(tokens) > self.capacity():
            written = self.flush()
            tokens = tokens[:self.capacity()]  # a document longer than a whole shard is cut
        self.buffer.append(tokens)
        self.buffered += len(tokens)
        self.docs_in_buffer += 1
        return written

    def flush(self):
        if not self.buffered:
            return 0
        index = self.progress["shards_done"]
        split = "val" if index == 0 else "train"
        path = os.path.join(self.data_dir, shard_name(split, index))
        write_shard(path, np.concatenate(self.buffer))
        written = self.buffered
        self.progress["docs_done"] += self.docs_in_buffer
        self.progress["shards_done"] += 1
        if split == "train":
            self.progress["train_tokens"] += written
        tmp = self.progress_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.progress, f)
        os.replace(tmp, self.progress_path)
        self.buffer, self.buffered, self.docs_in_buffer = [], 0, 0
        return written


_encoder = None


def _tokenize(text):
    global _encoder
    if _encoder is None:
        import tiktoken
        _encoder = tiktoken.get_encoding("gpt2")
    return np.array([EOT] + _encoder.encode_ordinary(text), dtype=np.uint16)


def prepare_fineweb(writer, workers):
    """Stream FineWeb sample-10BT, tokenize in parallel, pack shards; resumes where it stopped."""
    import multiprocessing

    from datasets import load_dataset
    from tqdm import tqdm

    docs = load_dataset("HuggingFaceFW/fineweb", name="sample-10BT", split="train", streaming=True)
    if writer.progress["docs_done"]:
        print(f"resuming after {writer.progress['docs_done']} documents "
              f"({writer.progress['shards_done']} shards)")
        docs = docs.skip(writer.progress["docs_done"])
    total = writer.max_train_tokens if writer.max_train_tokens < float("inf") else 10**10
    bar = tqdm(total=total, initial=writer.progress["train_tokens"], unit="tok", unit_scale=True)
    with multiprocessing.Pool(workers) as pool:
        for tokens in pool.imap(_tokenize, (doc["text"] for doc in docs), chunksize=32):
            if writer.progress["shards_done"] > 0:
                bar.update(writer.add(tokens))
            else:
                writer.add(tokens)
            if writer.done:
                break
        else:
            bar.update(writer.flush())  # the sample ran out: keep the last, partial shard
    bar.close()


def synthetic_stream(n_tokens, seed):
    """Made-up text over the GPT-2 vocabulary: random 'words' (1-8 tokens) from a fixed lexicon
    of 8192, in a random order. For throughput benchmarks where FineWeb cannot be downloaded."""
    lexicon_rng = np.random.default_rng(20240520)
    lengths = lexicon_rng.integers(1, 9, size=8192)
    lexicon = lexicon_rng.integers(0, GPT2_VOCAB, size=int(lengths.sum())).astype(np.uint16)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    words = np.random.default_rng(seed).integers(0, 8192, size=n_tokens // 3 + 1024)
    word_lengths = lengths[words]
    word_ends = np.cumsum(word_lengths)
    assert word_ends[-1] >= n_tokens, "too few words drawn"
    words = words[:np.searchsorted(word_ends, n_tokens) + 1]
    word_lengths = word_lengths[:len(words)]
    word_starts_in_stream = np.repeat(word_ends[:len(words)] - word_lengths, word_lengths)
    offsets = np.arange(n_tokens) - word_starts_in_stream[:n_tokens]
    return lexicon[np.repeat(starts[words], word_lengths)[:n_tokens] + offsets]


def prepare_synthetic(data_dir, val_tokens, shard_tokens, max_train_tokens):
    existing = [n for n in os.listdir(data_dir) if n.startswith("fineweb_") and n.endswith(".bin")]
    if existing and not os.path.exists(os.path.join(data_dir, SYNTHETIC_MARKER)):
        raise SystemExit(f"{data_dir} holds real shards; write synthetic ones elsewhere")
    with open(os.path.join(data_dir, SYNTHETIC_MARKER), "w") as f:
        f.write("made-up tokens, not FineWeb\n")
    write_shard(os.path.join(data_dir, shard_name("val", 0)), synthetic_stream(val_tokens, seed=0))
    index, left = 1, max_train_tokens
    while left > 0:
        n = min(shard_tokens, left)
        write_shard(os.path.join(data_dir, shard_name("train", index)), synthetic_stream(n, index))
        index, left = index + 1, left - n
    print(f"wrote {val_tokens} validation and {max_train_tokens} training tokens "
          f"(synthetic) to {data_dir}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Prepare token shards for train.py.")
    p.add_argument("--data-dir", help="output folder (see the module docstring for the default)")
    p.add_argument("--max-tokens", type=float, default=float("inf"),
                   help="stop after this many training tokens (default: the whole 10B sample)")
    p.add_argument("--val-tokens", type=int, default=2**24, help="size of the validation shard")
    p.add_argument("--shard-tokens", type=int, default=10**8, help="tokens per training shard")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--synthetic", action="store_true",
                   help="made-up tokens instead of FineWeb (needs --data-dir, --max-tokens)")
    args = p.parse_args(argv)
    data_dir = data_dir_from(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    if args.synthetic:
        if not args.data_dir or args.max_tokens == float("inf"):
            p.error("--synthetic needs --data-dir and --max-tokens")
        prepare_synthetic(data_dir, args.val_tokens, args.shard_tokens, int(args.max_tokens))
        return 0
    writer = ShardWriter(data_dir, args.val_tokens, args.shard_tokens, args.max_tokens)
    if writer.done:
        print(f"{data_dir} is already prepared ({writer.progress['shards_done']} shards)")
        return 0
    prepare_fineweb(writer, args.workers)
    print(f"{data_dir}: {writer.progress['shards_done']} shards, "
          f"{writer.progress['train_tokens']} training tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
