"""Slurm's own commands, as the Slurm executor calls them: sbatch, squeue, sacct, scancel.

Each call is one command with a time limit, here or on the login node over SSH
(engine/executors/slurm_access.py); what Slurm printed is parsed here and nowhere
else. A failing command raises `SlurmError` with Slurm's own words; `unreachable` tells a
controller that does not answer (try later) from a refusal (this job cannot be submitted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.executors.slurm_access import ClusterAccess

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


def _run(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 30.0,
         access: ClusterAccess | None = None) -> str:
    """The command, here or on the login node (engine/executors/slurm_access.py)."""
    from engine.executors.slurm_access import LocalAccess

    return (access or LocalAccess()).run(args, env=env, timeout=timeout)


def squeue(access: ClusterAccess | None = None) -> list[QueueRow]:
    """Every job of this user that Slurm still remembers (finished ones for MinJobAge too):
    ONE call, whatever the number of jobs."""
    from engine.executors.slurm_access import LocalAccess

    access = access or LocalAccess()
    out = _run(["squeue", "--noheader", "--states=all", f"--user={access.user()}",
                f"--format={SQUEUE_FORMAT}"], access=access)
    rows = []
    for line in out.splitlines():
        parts = line.split("|", 5)
        if len(parts) == 6:
            rows.append(QueueRow(*(p.strip() for p in parts)))
    return rows


def sacct(slurm_ids: Sequence[str], access: ClusterAccess | None = None) -> dict[str, str]:
    """{Slurm job id: state} from accounting, for jobs squeue forgot. Raises SlurmError where
    there is no accounting ("Slurm accounting storage is disabled")."""
    if not slurm_ids:
        return {}
    out = _run(["sacct", "--noheader", "--parsable2", "--allocations",
                f"--jobs={','.join(slurm_ids)}", "--format=JobIDRaw,State"], access=access)
    states = {}
    for line in out.splitlines():
        job, _, state = line.partition("|")
        if job.strip():
            states[job.strip()] = state.split()[0] if state.split() else ""
    return states


def sbatch(options: Sequence[str], script: str, env: dict[str, str] | None = None,
           access: ClusterAccess | None = None) -> str:
    """Submit `script` (a path on the cluster); the new job's id."""
    out = _run(["sbatch", "--parsable", *options, script], env=env, timeout=60, access=access)
    job = out.strip().split(";")[0]
    if not job.isdigit():
        raise SlurmError(f"sbatch printed no job id: {out.strip()[:200]!r}")
    return job


def scancel(slurm_id: str, *extra: str, access: ClusterAccess | None = None) -> None:
    _run(["scancel", *extra, slurm_id], access=access)
