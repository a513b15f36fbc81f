"""hosts.toml: the GPU hosts a search may use over SSH (every field: hosts.toml.example).

Parsing and validation only; no network. Every error is one `HostsError` line that names the
file, the host and the field, and says how to fix it.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.executors import slurm_config
from engine.executors.slurm_config import SlurmConfig

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_WORKDIR = "~/.ideaforge-host"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
#: Marks a variable name as secret: such values must live on the host, never in hosts.toml.
SECRET_MARKERS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "CREDENTIAL")


class HostsError(ValueError):
    """hosts.toml cannot be used; the message names the file, host and field."""


@dataclass(frozen=True)
class HostEnv:
    """How one environment runs on one host."""

    python: str | None = None  # interpreter the job's `python` runs
    venv: str | None = None  # a virtualenv: its bin/python is the job's `python`, its bin/ on PATH
    setup: str | None = None  # replaces the profile's setup here; "" means none
    data_dir: str | None = None  # IDEAFORGE_DATA_DIR for setup and jobs
    setup_timeout: float = 3600.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to log in: shared by GPU hosts and jump hosts."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None  # None: keys from ssh-agent
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    connect_timeout: float = 10.0

    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts).expanduser()

    def identity_path(self) -> Path | None:
        return Path(self.identity_file).expanduser() if self.identity_file else None

    def login_user(self) -> str:
        return self.user or os.environ.get("USER") or "root"


@dataclass(frozen=True)
class HostConfig(Endpoint):
    workdir: str = DEFAULT_WORKDIR
    gpus: tuple[int, ...] | None = None  # None: every GPU nvidia-smi reports
    cpu_slots: int = 1  # concurrent CPU-only (gpus = 0) jobs
    max_jobs: int | None = None
    labels: tuple[str, ...] = ()
    python: str = "python3"  # runs the shipped runner (standard library only)
    jump: Endpoint | None = None
    poll_interval: float = 2.0
    unreachable_after: float = 30.0
    environments: Mapping[str, HostEnv] = field(default_factory=dict)
    env_vars: Mapping[str, str] = field(default_factory=dict)
    #: Words put before each training command (a container, another user, a sandbox); the
    #: evaluation stage runs without it. Empty: the job runs as the login user.
    job_prefix: tuple[str, ...] = ()

    def env_for(self, env_name: str) -> HostEnv:
        return self.environments.get(env_name, HostEnv())


@dataclass(frozen=True)
class Policy:
    """`[scheduling]`: retries, quarantine and fairness, for every host of the file."""

    max_attempts: int = 3  # runs of one idea's job, first included, when hosts fail
    quarantine_after: int = 3  # infrastructure failures in a row that quarantine a host
    quarantine_minutes: float = 30.0
    aging_hours: float = 4.0  # a 1-GPU job waiting this long goes ahead of wide jobs
    kill_grace_s: float = 10.0  # between the runner's TERM and KILL at a job's time limit
    margin_s: float = 120.0  # past limit + grace, a silent host's job is surely over


@dataclass(frozen=True)
class HostsFile:
    path: Path
    hosts: tuple[HostConfig, ...]
    policy: Policy = Policy()
    slurm: SlurmConfig | None = None  # `[slurm]`: jobs go through Slurm's queue instead

    def get(self, name: str) -> HostConfig:
        for h in self.hosts:
            if h.name == name:
                return h
        raise HostsError(f"{self.path}: no host named {name!r} (hosts: "
                         f"{', '.join(h.name for h in self.hosts)})")

    def names(self) -> list[str]:
        return [h.name for h in self.hosts]


ENDPOINT_FIELDS = {"address", "port", "user", "identity_file", "known_hosts",
                   "connect_timeout"}
HOST_FIELDS = ENDPOINT_FIELDS | {"name", "workdir", "gpus", "cpu_slots", "max_jobs", "labels",
                                 "python", "jump", "poll_interval", "unreachable_after",
                                 "environments", "env", "job_prefix"}
POLICY_FIELDS = {"max_attempts", "quarantine_after", "quarantine_minutes", "aging_hours",
                 "kill_grace_s", "margin_s"}
DEFAULT_FIELDS = HOST_FIELDS - {"name", "address"}
HOST_ENV_FIELDS = {"python", "venv", "setup", "data_dir", "setup_timeout"}


class _Checker:
    def __init__(self, path: Path, where: str) -> None:
        self.path = path
        self.where = where

    def fail(self, key: str, problem: str) -> HostsError:
        return HostsError(f"{self.path}: {self.where}: field {key!r} {problem}")

    def known(self, table: Mapping[str, Any], allowed: set[str], prefix: str = "") -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else \
                    f" (known: {', '.join(sorted(allowed))})"
                raise self.fail(prefix + key, f"is not a known field{hint}")

    def get(self, table: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
            default: Any = ..., prefix: str = "") -> Any:
        if key not in table:
            if default is ...:
                raise self.fail(prefix + key, "is missing")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(prefix + key, f"must be {_names(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(prefix + key, f"must be {_names(kinds)}, got "
                            f"{type(value).__name__} {value!r}")
        return value


def _names(kinds: tuple[type, ...]) -> str:
    words = {str: "a string", int: "an integer", float: "a number", list: "a list",
             dict: "a table", bool: "true or false"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def load(path: str | os.PathLike[str], *, check_files: bool = True) -> HostsFile:
    """Read and validate hosts.toml. `check_files`: identity files must exist and be readable."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HostsError(f"{path}: no such file; copy hosts.toml.example and edit it") from None
    except tomllib.TOMLDecodeError as exc:
        raise HostsError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    top = _Checker(path, "top level")
    top.known(data, {"defaults", "hosts", "jump_hosts", "scheduling", "slurm"})
    policy = _policy(_Checker(path, "[scheduling]"), top.get(data, "scheduling", dict, {}))
    jumps_t = top.get(data, "jump_hosts", dict, {})
    jumps: dict[str, Endpoint] = {}
    for jname, jt in jumps_t.items():
        chk = _Checker(path, f"jump host {jname!r}")
        if not isinstance(jt, dict):
            raise chk.fail(jname, "must be a table [jump_hosts.NAME]")
        chk.known(jt, ENDPOINT_FIELDS)
        jumps[jname] = _endpoint(chk, jname, jt, {}, check_files)
    if "slurm" in data:
        if "hosts" in data:
            raise top.fail("slurm", "and [[hosts]] are both set: a search runs either on SSH "
                           "hosts or through Slurm; keep one of them")
        table = top.get(data, "slurm", dict)
        chk = _Checker(path, "[slurm]")
        slurm = slurm_config.parse(chk, table)
        return HostsFile(path, (), policy, _slurm_login(chk, table, slurm, jumps, check_files))
    defaults = top.get(data, "defaults", dict, {})
    _Checker(path, "[defaults]").known(defaults, DEFAULT_FIELDS)
    rows = top.get(data, "hosts", list)
    if not rows:
        raise top.fail("hosts", "is empty: add at least one [[hosts]] table")
    hosts: list[HostConfig] = []
    for n, row in enumerate(rows, 1):
        label = row.get("name") if isinstance(row, dict) else None
        chk = _Checker(path, f"host {label!r}" if isinstance(label, str) else f"host #{n}")
        if not isinstance(row, dict):
            raise chk.fail("hosts", "must hold tables ([[hosts]])")
        chk.known(row, HOST_FIELDS)
        hosts.append(_host(chk, row, defaults, jumps, check_files))
    seen: set[str] = set()
    for h in hosts:
        if h.name in seen:
            raise HostsError(f"{path}: host {h.name!r}: field 'name' is used by two hosts; "
                             "names must be unique")
        seen.add(h.name)
    return HostsFile(path, tuple(hosts), policy)


def _slurm_login(chk: _Checker, table: Mapping[str, Any], cfg: SlurmConfig,
                 jumps: Mapping[str, Endpoint], check_files: bool) -> SlurmConfig:
    """`[slurm] login = "user@host"` and how to reach it: the fields of a [[hosts]] entry."""
    if "login" not in table:
        stray = sorted(slurm_config.LOGIN_FIELDS & set(table))
        if stray:
            raise chk.fail(stray[0], "only applies with login = \"user@host\" (SSH to a "
                           "login node); set login or remove it")
        return cfg
    login = chk.get(table, "login", str)
    if not (cfg.workdir or "").startswith("/"):
        raise chk.fail("workdir", "must be an absolute path on the cluster's shared storage "
                       "when login is set (its home there: ssh to it and run `echo ~`)")
    user, at, address = login.rpartition("@")
    if not address or (at and not user) or any(c.isspace() for c in login):
        raise chk.fail("login", f"must be \"user@host\" or \"host\" (a login node of the "
                       f"cluster), got {login!r}")
    row = {k: v for k, v in table.items() if k in ENDPOINT_FIELDS - {"address", "user"}}
    ep = _endpoint(chk, address, {**row, "address": address, **({"user": user} if at else {})},
                   {}, check_files)
    return replace(cfg, login=ep, jump=_jump(chk, table, jumps))


def _policy(chk: _Checker, table: Mapping[str, Any]) -> Policy:
    chk.known(table, POLICY_FIELDS)
    p = Policy(max_attempts=chk.get(table, "max_attempts", int, 3),
               quarantine_after=chk.get(table, "quarantine_after", int, 3),
               quarantine_minutes=float(chk.get(table, "quarantine_minutes", (int, float), 30.0)),
               aging_hours=float(chk.get(table, "aging_hours", (int, float), 4.0)),
               kill_grace_s=float(chk.get(table, "kill_grace_s", (int, float), 10.0)),
               margin_s=float(chk.get(table, "margin_s", (int, float), 120.0)))
    for key in sorted(POLICY_FIELDS):
        if getattr(p, key) <= 0:
            raise chk.fail(key, "must be positive")
    return p


def _endpoint(chk: _Checker, name: str, row: Mapping[str, Any], defaults: Mapping[str, Any],
              check_files: bool) -> Endpoint:
    merged = {**{k: v for k, v in defaults.items() if k in ENDPOINT_FIELDS}, **row}
    address = chk.get(merged, "address", str)
    if not address.strip() or any(c.isspace() for c in address):
        raise chk.fail("address", f"must be a host name or IP address, got {address!r}")
    port = chk.get(merged, "port", int, 22)
    if not 0 < port < 65536:
        raise chk.fail("port", f"must be between 1 and 65535, got {port}")
    user = chk.get(merged, "user", str, None)
    identity = chk.get(merged, "identity_file", str, None)
    if identity is not None and check_files:
        ipath = Path(identity).expanduser()
        if not ipath.is_file():
            raise chk.fail("identity_file", f"names {ipath}, which does not exist; give the "
                           "private key's path, or leave it out to use ssh-agent")
        if not os.access(ipath, os.R_OK):
            raise chk.fail("identity_file", f"names {ipath}, which is not readable")
    known = chk.get(merged, "known_hosts", str, DEFAULT_KNOWN_HOSTS)
    timeout = float(chk.get(merged, "connect_timeout", (int, float), 10.0))
    if timeout <= 0:
        raise chk.fail("connect_timeout", "must be positive")
    return Endpoint(name=name, address=address, port=port, user=user, identity_file=identity,
                    known_hosts=known, connect_timeout=timeout)


def _host(chk: _Checker, row: Mapping[str, Any], defaults: Mapping[str, Any],
          jumps: Mapping[str, Endpoint], check_files: bool) -> HostConfig:
    name = chk.get(row, "name", str)
    if not NAME_RE.match(name) or name == "local":
        raise chk.fail("name", f"must be letters, digits, '.', '_' or '-' (not 'local'), "
                       f"got {name!r}")
    merged = {**defaults, **row}
    ep = _endpoint(chk, name, row, defaults, check_files)
    workdir = chk.get(merged, "workdir", str, DEFAULT_WORKDIR)
    if not workdir.startswith(("/", "~/")) or "\0" in workdir \
            or "/../" in workdir + "/":
        raise chk.fail("workdir", f"must be an absolute path or start with '~/', got "
                       f"{workdir!r}")
    gpus_v = merged.get("gpus", "all")
    gpus: tuple[int, ...] | None
    if gpus_v == "all":
        gpus = None
    elif isinstance(gpus_v, list) and all(isinstance(g, int) and not isinstance(g, bool)
                                          and g >= 0 for g in gpus_v):
        if len(set(gpus_v)) != len(gpus_v):
            raise chk.fail("gpus", f"lists a GPU twice: {gpus_v}")
        gpus = tuple(sorted(gpus_v))
    else:
        raise chk.fail("gpus", f'must be "all" or a list of GPU indices like [0, 1], got '
                       f"{gpus_v!r}")
    cpu_slots = chk.get(merged, "cpu_slots", int, 1)
    if cpu_slots < 0:
        raise chk.fail("cpu_slots", "must be 0 or more")
    max_jobs = chk.get(merged, "max_jobs", int, None)
    if max_jobs is not None and max_jobs < 1:
        raise chk.fail("max_jobs", f"must be at least 1, got {max_jobs}")
    labels = chk.get(merged, "labels", list, [])
    if not all(isinstance(x, str) and x for x in labels):
        raise chk.fail("labels", "must be a list of non-empty strings")
    python = chk.get(merged, "python", str, "python3")
    poll = float(chk.get(merged, "poll_interval", (int, float), 2.0))
    if poll < 0.2:
        raise chk.fail("poll_interval", f"must be at least 0.2 seconds, got {poll}")
    unreachable = float(chk.get(merged, "unreachable_after", (int, float), 30.0))
    if unreachable < 1:
        raise chk.fail("unreachable_after", f"must be at least 1 second, got {unreachable}")
    jump = _jump(chk, merged, jumps)
    envs: dict[str, HostEnv] = {}
    for ename, et in chk.get(merged, "environments", dict, {}).items():
        prefix = f"environments.{ename}."
        if not isinstance(et, dict):
            raise chk.fail(f"environments.{ename}", "must be a table")
        chk.known(et, HOST_ENV_FIELDS, prefix)
        if "python" in et and "venv" in et:
            raise chk.fail(prefix + "venv", "and 'python' are both set: a venv's own "
                           "bin/python is what its setup and jobs run, so set only one of them")
        setup_timeout = float(chk.get(et, "setup_timeout", (int, float), 3600.0, prefix))
        if setup_timeout <= 0:
            raise chk.fail(prefix + "setup_timeout", "must be positive")
        envs[ename] = HostEnv(python=chk.get(et, "python", str, None, prefix),
                              venv=chk.get(et, "venv", str, None, prefix),
                              setup=chk.get(et, "setup", str, None, prefix),
                              data_dir=chk.get(et, "data_dir", str, None, prefix),
                              setup_timeout=setup_timeout)
    env_vars: dict[str, str] = {}
    for key, value in chk.get(merged, "env", dict, {}).items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key) or not isinstance(value, str):
            raise chk.fail(f"env.{key}", "must map a variable name to a string")
        if any(m in key.upper() for m in SECRET_MARKERS):
            raise chk.fail(f"env.{key}", "looks like a secret: keep secrets on the host "
                           "(its shell profile or the venv's activate script), never in "
                           "hosts.toml")
        env_vars[key] = value
    prefix_text = chk.get(merged, "job_prefix", str, "")
    try:
        job_prefix = tuple(shlex.split(prefix_text))
    except ValueError as exc:
        raise chk.fail("job_prefix", f"is not a valid shell word list ({exc}): quote it as "
                       "you would on a command line") from None
    return HostConfig(
        job_prefix=job_prefix,
        name=name, address=ep.address, port=ep.port, user=ep.user,
        identity_file=ep.identity_file, known_hosts=ep.known_hosts,
        connect_timeout=ep.connect_timeout, workdir=workdir, gpus=gpus, cpu_slots=cpu_slots,
        max_jobs=max_jobs, labels=tuple(labels), python=python, jump=jump,
        poll_interval=poll, unreachable_after=unreachable, environments=envs, env_vars=env_vars,
    )


def _jump(chk: Any, table: dict[str, Any], jumps: dict[str, Endpoint]) -> Endpoint | None:
    """The [jump_hosts.NAME] endpoint a host or login table names with `jump` (None: none)."""
    name = chk.get(table, "jump", str, None)
    if name is None:
        return None
    if name not in jumps:
        known = ", ".join(sorted(jumps)) or "none defined"
        raise chk.fail("jump", f"names {name!r}, which is not a [jump_hosts.NAME] table "
                       f"(jump hosts: {known})")
    return jumps[name]
