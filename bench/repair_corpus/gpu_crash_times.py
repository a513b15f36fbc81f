"""Time to crash of the corpus' first diffs on a real GPU: nanoGPT's `single` profile (one GPU,
torch.compile, bf16 autocast) on synthetic shards, each patched train.py run to its crash (or
for one optimizer step when it does not crash), timed from process start to exit.

Needs only torch and numpy (run it on the GPU machine, not in the bench's venv):

    python bench/repair_corpus/gpu_crash_times.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import CASES, apply_edits

ENV = HERE.parent.parent / "environments" / "nanogpt"


def run(train_py: str, data: Path, work: Path, name: str) -> dict:
    d = work / name
    shutil.copytree(ENV, d, ignore=shutil.ignore_patterns("__pycache__", "artifacts"))
    (d / "train.py").write_text(train_py)
    t = time.monotonic()
    p = subprocess.run([sys.executable, "train.py", "--profile", "single", "--max-steps", "1",
                        "--data-dir", str(data)], cwd=d, capture_output=True, text=True,
                       timeout=600, check=False)
    err = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    return {"case": name, "rc": p.returncode, "seconds": round(time.monotonic() - t, 1),
            "last_line": (err[-1] if err and p.returncode else "")[:200]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crash-times-"))
    data = work / "data"
    subprocess.run([sys.executable, str(ENV / "prepare_data.py"), "--synthetic", "--data-dir",
                    str(data), "--max-tokens", "2e7", "--val-tokens", "1000000"], check=True)
    source = (ENV / "train.py").read_text()
    rows = [run(source, data, work, "shipped (no patch, 1 step)")]
    for case in CASES:
        if case.fixed is None:
            continue
        rows.append(run(apply_edits(source, case.first), data, work, case.stem))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows[0]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
