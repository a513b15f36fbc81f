"""What `ideaforge hosts check` reports for a `[slurm]` target (the console's call is still to
be wired): the login node (over SSH), Slurm's commands, its controller, the partition, the GPUs its nodes offer, and
whether a job on a compute node can write to the shared `workdir`.

Each check is one line: its name, ok (True / False / None when it could not be told) and
what was found or how to fix it.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from engine.executors import slurm_cli
from engine.executors.slurm_access import ClusterAccess, ClusterPath, SshAccess, access_for
from engine.executors.slurm_cli import SlurmError
from engine.executors.slurm_config import SlurmConfig

COMMANDS = ("sbatch", "squeue", "scancel", "sinfo")
GRES_RE = re.compile(r"gpu(?::[A-Za-z0-9_.-]+)?:(\d+)")


@dataclass(frozen=True)
class CheckLine:
    name: str
    ok: bool | None
    detail: str


def _sinfo(access: ClusterAccess, *args: str) -> list[str]:
    try:
        out = access.run(["sinfo", "--noheader", *args])
    except SlurmError as exc:
        raise SlurmError(str(exc), unreachable=True) from None
    return [line for line in out.splitlines() if line.strip()]


def gpus_per_node(gres: str) -> int:
    """The GPUs one node offers, from sinfo's GRES column ("gpu:4", "gpu:a100:8(S:0-1)")."""
    return max((int(n) for n in GRES_RE.findall(gres)), default=0)


def check(cfg: SlurmConfig, workdir: Path | str, *, gpus_wanted: int = 1,
          wait_s: float = 120.0, accept_new: bool = False) -> list[CheckLine]:
    """Every check, in order; a later one is skipped (ok None) where an earlier one failed.
    With `[slurm] login`, each runs over SSH on the login node (`accept_new`: record its
    unknown host key, as `hosts check --accept-new` does for SSH hosts)."""
    access = access_for(cfg, accept_new=accept_new)
    try:
        return _check(access, cfg, str(workdir), gpus_wanted, wait_s)
    finally:
        access.close()


def _check(access: ClusterAccess, cfg: SlurmConfig, workdir: str, gpus_wanted: int,
           wait_s: float) -> list[CheckLine]:
    lines: list[CheckLine] = []
    if isinstance(access, SshAccess):
        try:
            access.expand("~")
        except SlurmError as exc:
            return [CheckLine("login", False, str(exc))]
        lines.append(CheckLine("login", True, f"{access.where[3:]} answers (host key "
                               f"{access.host_key})"))
    lacking = [c for c in COMMANDS if not access.which(c)]
    if lacking:
        return lines + [CheckLine("commands", False, f"{', '.join(lacking)} not on PATH "
                                  f"{access.where}: run ideaforge on a login node of the "
                                  "cluster (or load its Slurm module)")]
    lines.append(CheckLine("commands", True, ", ".join(COMMANDS) + " found" +
                           ("" if access.which("sacct") else "; no sacct (fine)")))
    try:
        slurm_cli.squeue(access)
        rows = [r.split("|") for r in _sinfo(access, "--format=%P|%a|%G|%D")]
    except SlurmError as exc:
        return lines + [CheckLine("controller", False, f"Slurm does not answer: {exc}")]
    lines.append(CheckLine("controller", True, "squeue and sinfo answer"))
    parts = {r[0].rstrip("*"): r for r in rows if len(r) == 4}
    default = next((r[0].rstrip("*") for r in rows if r and r[0].endswith("*")), None)
    name = cfg.partition or default
    if name is None or name not in parts:
        known = ", ".join(sorted(parts)) or "none"
        what = f"partition {cfg.partition!r} does not exist" if cfg.partition else \
            "no default partition"
        return lines + [CheckLine("partition", False, f"{what}; set [slurm] partition to one "
                                  f"of: {known}")]
    up = all(r[1] == "up" for r in rows if r[0].rstrip("*") == name)
    lines.append(CheckLine("partition", up, f"{name} ({'up' if up else 'not up'}"
                           f"{', the default' if name == default and not cfg.partition else ''})"))
    most = max(gpus_per_node(r[2]) for r in rows if r[0].rstrip("*") == name)
    lines.append(CheckLine("gpus", most >= gpus_wanted,
                           f"up to {most} GPU(s) per node in {name}" +
                           ("" if most >= gpus_wanted else
                            f"; the profile wants {gpus_wanted}: one node must hold them all")))
    lines.append(_workdir_check(access, cfg, workdir, name, wait_s))
    return lines


def _workdir_check(access: ClusterAccess, cfg: SlurmConfig, workdir: str, partition: str,
                   wait_s: float) -> CheckLine:
    """A tiny job on a compute node writes a file into the workdir; ideaforge reads it."""
    folder = ClusterPath(access, workdir)
    probe = folder / f".ideaforge-check-{secrets.token_hex(4)}"
    try:
        access.makedirs(workdir)
        (folder / f"{probe.name}.here").write_text("ok\n")
        access.unlink(f"{probe}.here")
    except (OSError, SlurmError) as exc:
        return CheckLine("workdir", False, f"{workdir} is not writable {access.where}: {exc}")
    options = ["--job-name=ideaforge-check", "--nodes=1", "--ntasks=1", "--time=1",
               "--output=/dev/null", *cfg.sbatch_options()]
    if not cfg.partition:
        options.append(f"--partition={partition}")
    script = folder / f"{probe.name}.sh"
    script.write_text(f"#!/bin/bash\necho \"$(hostname -s)\" > {probe}\n")
    try:
        job = slurm_cli.sbatch(options, str(script), access=access)
    except SlurmError as exc:
        access.unlink(str(script))
        return CheckLine("workdir", False, f"a test job was refused: {exc}")
    end = time.monotonic() + wait_s
    try:
        while time.monotonic() < end:
            if probe.exists():
                node = probe.read_text().strip()
                return CheckLine("workdir", True, f"{workdir}: a job on {node} wrote to it")
            time.sleep(0.5)
        rows = [r for r in slurm_cli.squeue(access) if r.slurm_id == job]
        state = f"{rows[0].state} ({rows[0].reason})" if rows else "gone from the queue"
        if rows and rows[0].state in slurm_cli.PENDING:
            return CheckLine("workdir", None, f"the test job {job} still waits ({state}) after "
                             f"{wait_s:.0f} s: not told")
        return CheckLine("workdir", False, f"the test job {job} ({state}) could not write to "
                         f"{workdir}: put [slurm] workdir on storage the compute nodes share")
    finally:
        try:
            slurm_cli.scancel(job, access=access)
        except SlurmError:
            pass
        for path in (probe, script):
            try:
                access.unlink(str(path))
            except SlurmError:
                pass
