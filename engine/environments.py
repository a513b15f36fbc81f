"""Loads `environment.toml`, validates it, and builds what prompts and patching need.

An environment is any folder holding an `environment.toml` (see environments/CONTRACT.md).
Errors are `EnvironmentError_` with one line that names the file, the field and the fix.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from engine.protection import missing_region

#: Where the shipped environments live (the repository's environments/ folder).
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "environments"

#: Never part of an environment version, never shipped, never shown to a model.
IGNORED_NAMES = frozenset({".git", "__pycache__", ".venv", "venv", ".pytest_cache", "wandb",
                           ".ruff_cache", ".ipynb_checkpoints", "data", ".DS_Store"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".bin", ".pt", ".safetensors", ".ckpt")

# Files that look like credentials stay on this machine: never shipped to a host, never in a
# job's copy, never in the version hash. `ship` in environment.toml lets named ones through.
# Compared lower-case, per path component.
CREDENTIAL_NAMES = frozenset({
    ".envrc", ".netrc", "_netrc", ".pypirc", ".npmrc", ".pgpass", ".git-credentials",
    "kaggle.json", ".htpasswd"})
CREDENTIAL_GLOBS = (
    ".env", ".env.*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore",
    "*.ppk", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*secret*", "*credential*",
    "*password*", "*passwd*", "*api_key*", "*api-key*", "*apikey*", "*.token",
    "*service_account*.json", "*service-account*.json")
#: A name whose stem is the word "token" (token, hf_token, .token, access-token.json): not
#: the broad `*token*`, which would hold back tokenizer.py, tokenizer.json or a catalog's
#: token_level_loss.diff and break the environment; source files never match.
CREDENTIAL_TOKEN = re.compile(r"^(.*[._-])?token(\.(txt|json|ya?ml|toml|ini|cfg|conf))?$")
#: Folders of credentials (cloud CLIs, SSH, registries): everything under them stays.
CREDENTIAL_DIRS = frozenset({".aws", ".azure", ".kube", ".ssh", ".gnupg", ".huggingface",
                             ".docker"})
#: The same, for a folder inside `.config` (~/.config/gcloud, GitHub's CLI).
CREDENTIAL_CONFIG_DIRS = frozenset({"gcloud", "gh"})


#: The evaluator's files travel inside every job's spec (engine/executors/base.py).
EVALUATOR_MAX_BYTES = 4 * 2**20


class EnvironmentError_(ValueError):
    """An environment that cannot be used; the message says what and how to fix it."""


@dataclass(frozen=True)
class Metric:
    name: str
    goal: Literal["maximize", "minimize"]
    baseline: float | None
    suspicious_below: float | None = None
    suspicious_above: float | None = None

    def better(self, a: float, b: float) -> bool:
        """True when score `a` is strictly better than `b`."""
        return a > b if self.goal == "maximize" else a < b

    def beats_baseline(self, score: float | None) -> bool:
        if score is None:
            return False
        return self.baseline is None or self.better(score, self.baseline)

    def is_suspicious(self, score: float) -> bool:
        if self.suspicious_below is not None and score < self.suspicious_below:
            return True
        return self.suspicious_above is not None and score > self.suspicious_above

    def best(self, values: list[float]) -> float | None:
        if not values:
            return None
        return max(values) if self.goal == "maximize" else min(values)


@dataclass(frozen=True)
class Profile:
    name: str
    command: str
    gpus: int
    timeout: float
    setup: str | None = None
    baseline: float | None = None  # the unmodified code's score on this profile, if known
    time_limit: float | None = None  # training budget, measured by the runner
    time_slack: float = 0.0  # past time_limit + time_slack the training is stopped: void
    evaluate_timeout: float | None = None  # this profile's limit for the evaluation stage
    baseline_runs: int = 3  # how often a search measures the unmodified code at its start
    noise: float | None = None  # prior σ of the score between seeds (issue 13), if known


@dataclass(frozen=True)
class Evaluation:
    """`[evaluate]`: the stage that produces the score, outside the patched code's reach."""

    command: str
    files: tuple[str, ...]  # globs of the files the evaluator runs from (pristine copies)
    timeout: float
    held_out: tuple[str, ...] = ()  # globs under the data dir that only the evaluator sees


@dataclass(frozen=True)
class Environment:
    root: Path
    name: str
    description: str
    metric: Metric
    context: tuple[str, ...]
    protected: tuple[str, ...]
    protected_lines: dict[str, tuple[str, ...]]
    rules: str
    profiles: dict[str, Profile]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    ship: tuple[str, ...] = ()  # globs of files shipped although they look like credentials
    evaluation: Evaluation | None = None  # None: a legacy environment, results unverified
    preflight: str | None = None  # the cheap profile a patch is checked on before a GPU job
    protected_regions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # -- files ---------------------------------------------------------------------------
    def files(self) -> list[str]:
        """Every file of the environment folder (caches, data, .git left out), as sorted
        relative POSIX paths, held-back ones included; `shipped_files` splits them."""
        return walk_files(self.root)

    def shipped_files(self) -> tuple[list[str], list[str]]:
        """(files that go to hosts and job copies, files held back as credential-like)."""
        return split_shipped(self.files(), self.ship)

    def is_protected(self, rel_path: str) -> bool:
        rel = rel_path.lstrip("./")
        if rel == "environment.toml":
            return True
        return any(fnmatch.fnmatch(rel, pat) for pat in self.protected)

    def version(self) -> str:
        """Content hash of the environment (paths and bytes): one pristine copy per version."""
        digest = hashlib.sha256()
        # Shipped files only: the version names exactly what a host's pristine copy holds,
        # editing a held-back file (a .envrc) costs no upload or setup, and no credential's
        # bytes go into a hash that names folders on every host and appears in logs.
        for rel in self.shipped_files()[0]:
            path = self.root / rel
            digest.update(rel.encode() + b"\0")
            if path.is_symlink():
                digest.update(b"link:" + os.readlink(path).encode())
            else:
                digest.update(path.read_bytes())
            digest.update(b"\0")
        return digest.hexdigest()[:16]

    def evaluator_files(self) -> dict[str, str]:
        """The files the evaluation stage runs from: relative path -> SHA-256 of its bytes."""
        if self.evaluation is None:
            return {}
        shipped = self.shipped_files()[0]
        return {rel: hashlib.sha256((self.root / rel).read_bytes()).hexdigest()
                for rel in _matching(shipped, self.evaluation.files)}

    def evaluator_id(self) -> str | None:
        """The evaluator's identity: SHA-256 of its files' `sha256sum`-style manifest."""
        if self.evaluation is None:
            return None
        return manifest_id(self.evaluator_files())

    # -- prompts ---------------------------------------------------------------------------
    def context_listing(self) -> str:
        """The context files with line numbers, as the model sees them."""
        parts = []
        for rel in self.context:
            text = (self.root / rel).read_text(encoding="utf-8")
            lines = text.splitlines()
            width = len(str(len(lines)))
            numbered = "\n".join(f"{i + 1:>{width}} | {line}" for i, line in enumerate(lines))
            parts.append(f"### File: {rel}\n{numbered}")
        return "\n\n".join(parts)

    def baseline_for(self, profile: str) -> float | None:
        """The known baseline score on a profile; None means the engine measures it."""
        p = self.profile(profile)
        if p.baseline is not None:
            return p.baseline
        return self.metric.baseline if profile == "full" else None

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise EnvironmentError_(
                f"environment {self.name!r} has no profile {name!r}; choose one of: {known}"
            ) from None


def manifest_id(files: dict[str, str]) -> str:
    """SHA-256 of the lines `<sha256>  <path>` sorted by path (what `sha256sum` prints);
    runner.py computes the same from the copies it checked."""
    text = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _matching(files: list[str], globs: tuple[str, ...]) -> list[str]:
    return [rel for rel in files if any(fnmatch.fnmatchcase(rel, g) for g in globs)]


def walk_files(root: Path) -> list[str]:
    """Every file under `root` as sorted relative POSIX paths, caches and .git left out
    (symlinks included, symlinked folders not entered)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_NAMES)
        for name in filenames:
            if name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES):
                continue
            out.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(out)


def looks_like_credential(rel: str) -> bool:
    """Whether a relative path names a credential-like file (or one in a credential folder)."""
    parts = rel.lower().split("/")
    folders, name = parts[:-1], parts[-1]
    if any(d in CREDENTIAL_DIRS for d in folders):
        return True
    if any(a == ".config" and b in CREDENTIAL_CONFIG_DIRS for a, b in zip(folders, parts[1:])):
        return True
    return (name in CREDENTIAL_NAMES or bool(CREDENTIAL_TOKEN.match(name))
            or any(fnmatch.fnmatchcase(name, g) for g in CREDENTIAL_GLOBS))


def _allowed(rel: str, ship: tuple[str, ...]) -> bool:
    """`ship` globs match the relative path or one of its folders (`certs` ships certs/*)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(p, pat.rstrip("/")) for pat in ship for p in prefixes)


def split_shipped(files: list[str], ship: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """The one rule of what leaves this machine: (shipped, held back) of relative paths.

    environment.toml is always shipped; a credential-like file only when `ship` names it.
    """
    shipped: list[str] = []
    held: list[str] = []
    for rel in files:
        keep = rel == "environment.toml" or not looks_like_credential(rel) \
            or _allowed(rel, ship)
        (shipped if keep else held).append(rel)
    return shipped, held


def held_back_files(root: str | os.PathLike[str]) -> list[str]:
    """The held-back files of an environment folder, from its environment.toml's `ship`
    (for callers that have a folder, not an `Environment`: the local job copy)."""
    root = Path(root)
    ship: tuple[str, ...] = ()
    try:
        raw = tomllib.loads((root / "environment.toml").read_text(encoding="utf-8"))
        ship = _ship_patterns(raw.get("ship", []), lambda problem: ValueError(problem))
    except (OSError, ValueError):
        pass  # not (yet) a valid environment: hold back by the default rule alone
    return split_shipped(walk_files(root), ship)[1]


def _ship_patterns(value: Any, fail: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise fail("must be a list of non-empty glob strings, e.g. [\"certs/ca.pem\"]")
    for pat in value:
        if pat.startswith("/") or ".." in pat.split("/"):
            raise fail(f"holds {pat!r}: patterns are relative to the environment folder "
                       "(no leading '/', no '..')")
    return tuple(value)


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """A shipped environment's name, or a path to a folder or an environment.toml."""
    candidate = Path(name_or_path).expanduser()
    if candidate.name == "environment.toml" and candidate.is_file():
        return candidate.parent.resolve()
    if (candidate / "environment.toml").is_file():
        return candidate.resolve()
    builtin = BUILTIN_DIR / str(name_or_path)
    if (builtin / "environment.toml").is_file():
        return builtin.resolve()
    shipped = sorted(p.parent.name for p in BUILTIN_DIR.glob("*/environment.toml"))
    raise EnvironmentError_(
        f"unknown environment {str(name_or_path)!r}: not a shipped one ({', '.join(shipped)}) "
        "and not a folder holding environment.toml"
    )


def load(name_or_path: str | os.PathLike[str]) -> Environment:
    root = resolve(name_or_path)
    toml_path = root / "environment.toml"
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise EnvironmentError_(f"{toml_path}: not UTF-8 text (byte {exc.start}); an "
                                "environment.toml is a TOML text file — write one as the "
                                "shipped environments do") from None
    except OSError as exc:
        raise EnvironmentError_(f"{toml_path}: cannot be read ({exc.strerror}); check the "
                                "path and its permissions") from None
    except tomllib.TOMLDecodeError as exc:
        raise EnvironmentError_(f"{toml_path}: not valid TOML ({exc}); fix the syntax") from None
    return _validate(root, toml_path, data)


def _validate(root: Path, toml_path: Path, data: dict[str, Any]) -> Environment:
    def fail(field_name: str, problem: str) -> EnvironmentError_:
        return EnvironmentError_(f"{toml_path}: field {field_name!r} {problem}")

    def want(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
             default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                raise fail(where + key, "is missing")
            return default
        value = table[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            names = "/".join(k.__name__ for k in _as_tuple(kind))
            raise fail(where + key, f"must be {names}, got {type(value).__name__}")
        return value

    name = want(data, "name", str, "")
    description = want(data, "description", str, "", "")
    metric_t = want(data, "metric", dict, "")
    goal = want(metric_t, "goal", str, "metric.")
    if goal not in ("maximize", "minimize"):
        raise fail("metric.goal", f"must be \"maximize\" or \"minimize\", got {goal!r}")
    number = (int, float)
    metric = Metric(
        name=want(metric_t, "name", str, "metric."),
        goal=goal,  # type: ignore[arg-type]
        baseline=_float_or_none(want(metric_t, "baseline", number, "metric.", None)),
        suspicious_below=_float_or_none(want(metric_t, "suspicious_below", number, "metric.", None)),
        suspicious_above=_float_or_none(want(metric_t, "suspicious_above", number, "metric.", None)),
    )
    context = tuple(want(data, "context", list, ""))
    for rel in context:
        if not isinstance(rel, str) or not (root / rel).is_file():
            raise fail("context", f"names {rel!r}, which is not a file in {root}")
    protected = tuple(want(data, "protected", list, "", []))
    lines_t = want(data, "protected_lines", dict, "", {})
    protected_lines: dict[str, tuple[str, ...]] = {}
    for rel, lines in lines_t.items():
        if not (root / rel).is_file():
            raise fail(f"protected_lines.{rel}", f"names a file that is not in {root}")
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise fail(f"protected_lines.{rel}", "must be a list of strings")
        text_lines = {ln.strip() for ln in (root / rel).read_text(encoding="utf-8").splitlines()}
        for line in lines:
            if line.strip() not in text_lines:
                raise fail(f"protected_lines.{rel}",
                           f"holds {line.strip()[:60]!r}, which is not a line of {rel}")
        protected_lines[rel] = tuple(line.strip() for line in lines)
    rules = want(data, "rules", str, "", "")
    profiles_t = want(data, "profiles", dict, "")
    if not profiles_t:
        raise fail("profiles", "needs at least one profile (e.g. [profiles.smoke])")
    profiles: dict[str, Profile] = {}
    for pname, p in profiles_t.items():
        where = f"profiles.{pname}."
        if not isinstance(p, dict):
            raise fail(f"profiles.{pname}", "must be a table")
        gpus = want(p, "gpus", int, where, 0)
        timeout = want(p, "timeout", number, where)
        if gpus < 0 or timeout <= 0:
            raise fail(where + ("gpus" if gpus < 0 else "timeout"), "must be positive")
        seconds = {key: _float_or_none(want(p, key, number, where, None))
                   for key in ("time_limit", "time_slack", "evaluate_timeout")}
        for key, value in seconds.items():
            if value is not None and (value < 0 or (value == 0 and key != "time_slack")):
                raise fail(where + key, "must be a positive number of seconds")
        baseline_runs = want(p, "baseline_runs", int, where, 3)
        if baseline_runs < 1:
            raise fail(where + "baseline_runs", "must be at least 1 (the baseline is measured "
                       "at least once)")
        noise = _float_or_none(want(p, "noise", number, where, None))
        if noise is not None and noise <= 0:
            raise fail(where + "noise", "must be a positive standard deviation in the metric's "
                       "units (leave it out when unknown)")
        profiles[pname] = Profile(
            name=pname,
            command=want(p, "command", str, where),
            gpus=gpus,
            timeout=float(timeout),
            setup=want(p, "setup", str, where, None),
            baseline=_float_or_none(want(p, "baseline", number, where, None)),
            time_limit=seconds["time_limit"],
            time_slack=seconds["time_slack"] or 0.0,
            evaluate_timeout=seconds["evaluate_timeout"],
            baseline_runs=baseline_runs,
            noise=noise,
        )
    ship = _ship_patterns(data.get("ship", []), lambda problem: fail("ship", problem))
    regions_t = want(data, "protected_regions", dict, "", {})
    protected_regions: dict[str, tuple[str, ...]] = {}
    for rel, names in regions_t.items():
        if not (root / rel).is_file():
            raise fail(f"protected_regions.{rel}", f"names a file that is not in {root}")
        if not isinstance(names, list) or not all(isinstance(x, str) and x for x in names):
            raise fail(f"protected_regions.{rel}", "must be a list of definitions, e.g. "
                       "[\"def validate\", \"class Config\", \"TIME_LIMIT_S\"]")
        text = (root / rel).read_text(encoding="utf-8")
        for spec in names:
            try:
                problem = missing_region(rel, text, spec)
            except ValueError as exc:
                problem = str(exc)
            if problem:
                raise fail(f"protected_regions.{rel}", problem)
        protected_regions[rel] = tuple(names)
    preflight = want(data, "preflight", str, "", None)
    if preflight is not None and preflight not in profiles:
        raise fail("preflight", f"names no profile of this environment ({preflight!r}); give "
                   f"one of: {', '.join(sorted(profiles))}, e.g. the CPU smoke profile")
    if preflight is not None and profiles[preflight].gpus:
        raise fail("preflight", f"profile {preflight!r} wants {profiles[preflight].gpus} GPUs: "
                   "a pre-flight check must run without one (CPU, seconds)")
    env = Environment(
        root=root, name=name, description=description, metric=metric, context=context,
        protected=protected, protected_lines=protected_lines, rules=rules, profiles=profiles,
        raw=data, ship=ship, protected_regions=protected_regions, preflight=preflight,
    )
    if "evaluate" not in data:
        return env
    ev = want(data, "evaluate", dict, "")
    files = want(ev, "files", list, "evaluate.")
    held_out = want(ev, "held_out", list, "evaluate.", [])
    for key, globs in (("files", files), ("held_out", held_out)):
        if not all(isinstance(g, str) and g for g in globs) or (key == "files" and not globs):
            raise fail(f"evaluate.{key}", "must be a list of non-empty glob strings")
        if any(g.startswith("/") or ".." in g.split("/") for g in globs):
            raise fail(f"evaluate.{key}", "holds an absolute path or '..': globs are relative")
    ev_timeout = want(ev, "timeout", number, "evaluate.")
    if ev_timeout <= 0:
        raise fail("evaluate.timeout", "must be a positive number of seconds")
    env = replace(env, evaluation=Evaluation(
        command=want(ev, "command", str, "evaluate."), files=tuple(files),
        timeout=float(ev_timeout), held_out=tuple(held_out)))
    shipped = env.shipped_files()[0]
    for glob in files:
        matched = _matching(shipped, (glob,))
        if not matched:
            raise fail("evaluate.files", f"holds {glob!r}, which matches no file in {root}")
    size = sum((root / rel).stat().st_size for rel in _matching(shipped, tuple(files)))
    if size > EVALUATOR_MAX_BYTES:
        raise fail("evaluate.files", f"matches {size // 1024} KB; the evaluator's files travel "
                   f"with every job (at most {EVALUATOR_MAX_BYTES // 2**20} MB): list code "
                   "only, and keep data under the data dir")
    return env


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
