"""Setup step: MATH train and MATH500 as JSON lines, and the model into the Hugging Face cache.

    python prepare.py                              # download (needs internet)
    python prepare.py --from-jsonl DIR             # copy DIR/train.jsonl and DIR/test.jsonl
    python prepare.py --skip-model                 # data only

Writes <data dir>/math_train.jsonl and <data dir>/math500.jsonl, where the data dir is
$IDEAFORGE_DATA_DIR/grpo or ~/.cache/ideaforge/data/grpo (see data.default_data_dir).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from data import default_data_dir

TRAIN_DATASET = "DigitalLearningGmbH/MATH-lighteval"  # the 7,500 MATH training problems
TEST_DATASET = "HuggingFaceH4/MATH-500"  # the 500-problem test subset
MODEL = "Qwen/Qwen2.5-Math-1.5B"


def last_boxed(solution: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) in a MATH solution, braces matched."""
    start = max(solution.rfind("\\boxed{"), solution.rfind("\\fbox{"))
    if start < 0:
        return None
    i = solution.index("{", start) + 1
    depth, begin = 1, i
    while i < len(solution):
        if solution[i] == "{":
            depth += 1
        elif solution[i] == "}":
            depth -= 1
            if depth == 0:
                return solution[begin:i]
        i += 1
    return None


def write_jsonl(rows: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    tmp.replace(path)
    print(f"wrote {len(rows)} problems to {path}")


def download_data(out: Path) -> None:
    """MATH500 must exist on the host only as the held-out <data dir>/math500.jsonl, which the
    training stage's data folder leaves out: the datasets are read through a temporary cache
    that is deleted afterwards, not the user's Hugging Face cache that training could read."""
    with tempfile.TemporaryDirectory(prefix="grpo-prepare-") as cache:
        _download_data(out, cache)


def _download_data(out: Path, cache: str) -> None:
    from datasets import load_dataset

    train = []
    for row in load_dataset(TRAIN_DATASET, split="train", cache_dir=cache):
        answer = last_boxed(row["solution"])
        if answer is not None:
            train.append({"problem": row["problem"], "answer": answer, "level": row["level"],
                          "subject": row.get("type", "")})
    write_jsonl(train, out / "math_train.jsonl")
    test = [
        {"problem": r["problem"], "answer": r["answer"], "level": r["level"], "subject": r["subject"],
         "unique_id": r["unique_id"]}
        for r in load_dataset(TEST_DATASET, split="test", cache_dir=cache)
    ]
    write_jsonl(test, out / "math500.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-jsonl", type=Path, help="folder with train.jsonl and test.jsonl")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--model", default=MODEL)
    args = parser.parse_args()
    out = default_data_dir()
    out.mkdir(parents=True, exist_ok=True)
    if args.from_jsonl:
        shutil.copyfile(args.from_jsonl / "train.jsonl", out / "math_train.jsonl")
        shutil.copyfile(args.from_jsonl / "test.jsonl", out / "math500.jsonl")
        print(f"copied {args.from_jsonl} to {out}")
    elif not ((out / "math_train.jsonl").exists() and (out / "math500.jsonl").exists()):
        download_data(out)
    if not args.skip_model:
        from huggingface_hub import snapshot_download

        print(f"model in {snapshot_download(args.model)}")


if __name__ == "__main__":
    main()
