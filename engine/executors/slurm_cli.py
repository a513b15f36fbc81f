"""Slurm's own commands, as the Slurm executor calls them: sbatch, squeue, sacct, scancel.

Each call is one subprocess with a time limit; what Slurm printed is parsed here and nowhere
else. A failing command raises `SlurmError` with Slurm's own words; `unreachable` tells a
controller that does not answer (try later) from a refusal (this job cannot be submitted).
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

#: squeue's fields: job id, state, reason, node list, elapsed time, comment (our tag).
SQUEUE_FORMAT = "%i|%T|%r|%N|%M|%k"
#: Words in Slurm's messages that mean its controller did not answer, not that it refused.
UNREACHABLE_WORDS = ("unable to contact", "socket timed out", "zero bytes were transmitted",
                     "connection refused", "communication connection failure",
                     "slurm_load_", "timed out", "could not establish a configuration")
#: Slurm states of a job that still waits for its node.
PENDING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                     "RESV_DEL_HOLD", "SUSPENDED", "STOPPED", "SIGNALING", "RESIZING"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT"})


class SlurmError(RuntimeError):
    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class QueueRow:
    slurm_id: str
    state: str
    reason: str
    nodes: str
    elapsed: str
    comment: str


def _run(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 30.0
         ) -> str:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              env=env, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SlurmError(f"{args[0]} is not installed here (not on PATH): run ideaforge on "
                         "a login node of the cluster", unreachable=True) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{args[0]} did not answer within {timeout:.0f} s",
                         unreachable=True) from None
    if proc.returncode != 0:
        said = " ".join((proc.stderr or proc.stdout).split())[:400] or "no message"
        low = said.lower()
        raise SlurmError(f"{args[0]} failed (exit {proc.returncode}): {said}",
                         unreachable=any(w in low for w in UNREACHABLE_WORDS))
    return proc.stdout


def user() -> str:
    return os.environ.get("USER") or getpass.getuser()


def squeue() -> list[QueueRow]:
    """Every job of this user that Slurm still remembers (finished ones for MinJobAge too):
    ONE call, whatever the number of jobs."""
    out = _run(["squeue", "--noheader", "--states=all", f"--user={user()}",
                f"--format={SQUEUE_FORMAT}"])
    rows = []
    for line in out.splitlines():
        parts = line.split("|", 5)
        if len(parts) == 6:
            rows.append(QueueRow(*(p.strip() for p in parts)))
    return rows


def sacct(slurm_ids: Sequence[str]) -> dict[str, str]:
    """{Slurm job id: state} from accounting, for jobs squeue forgot. Raises SlurmError where
    there is no accounting ("Slurm accounting storage is disabled")."""
    if not slurm_ids:
        return {}
    out = _run(["sacct", "--noheader", "--parsable2", "--allocations",
                f"--jobs={','.join(slurm_ids)}", "--format=JobIDRaw,State"])
    states = {}
    for line in out.splitlines():
        job, _, state = line.partition("|")
        if job.strip():
            states[job.strip()] = state.split()[0] if state.split() else ""
    return states


def sbatch(options: Sequence[str], script: str, env: dict[str, str] | None = None) -> str:
    """Submit `script` (a path); the new job's id."""
    out = _run(["sbatch", "--parsable", *options, script], env=env, timeout=60)
    job = out.strip().split(";")[0]
    if not job.isdigit():
        raise SlurmError(f"sbatch printed no job id: {out.strip()[:200]!r}")
    return job


def scancel(slurm_id: str, *extra: str) -> None:
    _run(["scancel", *extra, slurm_id])
