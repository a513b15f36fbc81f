"""hosts.toml's `[slurm]` table: run jobs through a Slurm cluster's own queue.

Parsing and validation only (every field: hosts.toml.example). ideaforge runs on a login node
and calls the local `sbatch`, `squeue`, `sacct` and `scancel`, or reaches one over SSH
(`login`, parsed in engine/executors/hosts.py); the attempt directories live in `workdir`,
which the compute nodes must see (shared storage).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.executors.hosts import Endpoint, _Checker

SLURM_FIELDS = {"partition", "account", "qos", "constraint", "extra_sbatch", "workdir",
                "python", "max_queued", "cpus_per_gpu", "mem_per_gpu", "time_margin_s",
                "poll_interval", "unreachable_after"}
#: `login = "user@host"` and how to reach it (as a [[hosts]] entry): engine/executors/hosts.py.
LOGIN_FIELDS = {"login", "port", "identity_file", "known_hosts", "connect_timeout", "jump"}
#: Options ideaforge sets itself: an `extra_sbatch` line may not set them again.
OWN_OPTIONS = ("--job-name", "--comment", "--output", "--error", "--gres", "--gpus", "--time",
               "--signal", "--chdir", "--nodes", "--ntasks", "--array", "--wrap", "-J", "-o",
               "-e", "-t", "-N", "-n", "-D", "-G")
MEM_RE = re.compile(r"^[1-9][0-9]*[KMGT]?$")
WORD_RE = re.compile(r"^[A-Za-z0-9_.,:+=@-]+$")


@dataclass(frozen=True)
class SlurmConfig:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_sbatch: tuple[str, ...] = ()  # whole options, e.g. "--mail-type=NONE"
    workdir: str | None = None  # None: the workspace's own folder
    python: str | None = None  # None: the Python running ideaforge
    max_queued: int = 16  # this engine's jobs in Slurm's queue at once (pending + running)
    cpus_per_gpu: int | None = None
    mem_per_gpu: str | None = None  # Slurm's size syntax: 16G, 4000 (MB)
    time_margin_s: float = 300.0  # Slurm's --time = the job's own limit + grace + this
    poll_interval: float = 5.0  # seconds between the squeue calls
    unreachable_after: float = 120.0  # squeue failing this long: the jobs are unreachable
    login: Endpoint | None = None  # SSH to this login node (None: ideaforge runs on one)
    jump: Endpoint | None = None  # through this jump host

    def sbatch_options(self) -> list[str]:
        """The site's options, in the order they are written into the script."""
        out = [f"--{name}={value}" for name, value in (
            ("partition", self.partition), ("account", self.account), ("qos", self.qos),
            ("constraint", self.constraint)) if value]
        return out + list(self.extra_sbatch)


def parse(chk: _Checker, table: Mapping[str, Any]) -> SlurmConfig:
    """The `[slurm]` table; a HostsError naming the field when a value cannot work."""
    chk.known(table, SLURM_FIELDS | LOGIN_FIELDS)
    words = {}
    for key in ("partition", "account", "qos", "constraint"):
        value = chk.get(table, key, str, None)
        if value is not None and not (WORD_RE.match(value) or key == "constraint"
                                      and not any(c.isspace() for c in value)):
            raise chk.fail(key, f"must be one Slurm name without spaces, got {value!r}")
        words[key] = value or None
    extra = []
    for n, line in enumerate(chk.get(table, "extra_sbatch", list, [])):
        if not isinstance(line, str) or not line.strip():
            raise chk.fail(f"extra_sbatch[{n}]", "must be a non-empty string such as "
                           "\"--mail-type=NONE\"")
        option = line.strip().removeprefix("#SBATCH").strip()
        if not option.startswith("-") or "\n" in option:
            raise chk.fail(f"extra_sbatch[{n}]", f"must be one sbatch option starting with "
                           f"'-' (like \"--mail-type=NONE\"), got {line!r}")
        name = re.split(r"[= ]", option, maxsplit=1)[0]
        if name in OWN_OPTIONS:
            raise chk.fail(f"extra_sbatch[{n}]", f"sets {name}, which ideaforge sets itself "
                           "(job name, comment, output, GPUs, time, signal, one node); remove it")
        try:
            shlex.split(option)
        except ValueError as exc:
            raise chk.fail(f"extra_sbatch[{n}]", f"is not valid shell words ({exc})") from None
        extra.append(option)
    workdir = chk.get(table, "workdir", str, None)
    if workdir is not None and (not workdir.startswith(("/", "~/")) or "\0" in workdir
                                or "/../" in workdir + "/"):
        raise chk.fail("workdir", f"must be an absolute path (or start with '~/') on storage "
                       f"the compute nodes see, got {workdir!r}")
    python = chk.get(table, "python", str, None)
    max_queued = chk.get(table, "max_queued", int, 16)
    if max_queued < 1:
        raise chk.fail("max_queued", f"must be at least 1, got {max_queued}")
    cpus = chk.get(table, "cpus_per_gpu", int, None)
    if cpus is not None and cpus < 1:
        raise chk.fail("cpus_per_gpu", f"must be at least 1, got {cpus}")
    mem = chk.get(table, "mem_per_gpu", (str, int), None)
    if mem is not None and not MEM_RE.match(str(mem)):
        raise chk.fail("mem_per_gpu", f"must be a Slurm size like \"16G\" or a number of MB, "
                       f"got {mem!r}")
    margin = float(chk.get(table, "time_margin_s", (int, float), 300.0))
    if margin < 0:
        raise chk.fail("time_margin_s", "must be 0 or more")
    poll = float(chk.get(table, "poll_interval", (int, float), 5.0))
    if poll < 0.2:
        raise chk.fail("poll_interval", f"must be at least 0.2 seconds, got {poll}")
    unreachable = float(chk.get(table, "unreachable_after", (int, float), 120.0))
    if unreachable < 1:
        raise chk.fail("unreachable_after", f"must be at least 1 second, got {unreachable}")
    return SlurmConfig(**words, extra_sbatch=tuple(extra), workdir=workdir, python=python,
                       max_queued=max_queued, cpus_per_gpu=cpus,
                       mem_per_gpu=None if mem is None else str(mem), time_margin_s=margin,
                       poll_interval=poll, unreachable_after=unreachable)
