"""Maps the paths a model writes onto environment files, and refuses the unsafe ones.

Safety first: absolute paths, `..`, anything reached through a symbolic link and ignored
folders (.git, data, caches) are refused before any guessing. Then the guessing: git's a/ b/
prefixes, `environments/<name>/` prefixes, and a wrong directory or bare file name that ends
exactly one environment file's path.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path

from engine.environments import IGNORED_NAMES, IGNORED_SUFFIXES, walk_files

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f\"\\]")
ALWAYS_PROTECTED = ("environment.toml",)


class PathProblem(Exception):
    """A path that cannot be patched; the message is written for the model."""


def is_protected(rel: str, patterns: Sequence[str]) -> bool:
    """environment.toml, a glob match, or a file under a protected folder."""
    if rel in ALWAYS_PROTECTED:
        return True
    for pattern in patterns:
        pattern = pattern.strip()
        pattern = pattern.removeprefix("./")
        folder = pattern.rstrip("/")
        if fnmatch.fnmatch(rel, pattern) or (folder and rel.startswith(folder + "/")):
            return True
    return False


def check_parts(raw: str) -> list[str]:
    """The components of a relative, inside-the-environment path; raises PathProblem."""
    path = raw.strip()
    # messages quote the path without git's a/ b/ so the model sees the part that is wrong
    shown = path[2:] if path.startswith(("a/", "b/")) else path
    if not path:
        raise PathProblem("a file header names no file; write '--- a/<file>' and "
                          "'+++ b/<file>' with paths relative to the environment directory")
    if path.startswith(("/", "~")) or _DRIVE.match(path):
        raise PathProblem(f"'{shown}' is an absolute path; use paths relative to the environment "
                          "directory (e.g. 'train.py'), and only for files inside it")
    if _UNSAFE_CHARS.search(path):
        raise PathProblem(f"'{shown}' holds quotes, backslashes or control characters; use a "
                          "plain relative path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathProblem(f"'{shown}' points outside the environment directory ('..'); only "
                          "files inside it may change")
    if not parts:
        raise PathProblem(f"'{shown}' names no file")
    return parts


class EnvTree:
    """The files of one environment directory, for resolving the model's paths."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.real_root = self.root.resolve()
        self.files = walk_files(self.root)
        self._set = set(self.files)

    def exists(self, rel: str) -> bool:
        return rel in self._set

    def _variants(self, parts: list[str]) -> list[tuple[list[str], str | None]]:
        """Candidate paths in order of trust, each with the repair it would be."""
        out: list[tuple[list[str], str | None]] = []
        if len(parts) > 1 and parts[0] in ("a", "b"):
            out.append((parts[1:], None))
        out.append((parts, None))
        for base, _ in list(out):
            if len(base) > 2 and base[0] == "environments":
                out.append((base[2:], f"removed '{'/'.join(base[:2])}/' from the path"))
            if len(base) > 1 and base[0] == self.root.name:
                out.append((base[1:], f"removed '{base[0]}/' from the path"))
        return out

    def existing(self, raw: str) -> tuple[str, str | None] | None:
        """The environment file `raw` means, with the repair needed, or None if none matches.

        Raises PathProblem for unsafe paths or a name that fits several files.
        """
        parts = check_parts(raw)
        for candidate, repair in self._variants(parts):
            rel = "/".join(candidate)
            if rel in self._set:
                self.check_target(rel)
                return rel, repair
        base = parts[1:] if len(parts) > 1 and parts[0] in ("a", "b") else parts
        for k in range(len(base), 0, -1):
            tail = "/".join(base[-k:])
            hits = [f for f in self.files if f == tail or f.endswith("/" + tail)]
            if len(hits) == 1:
                self.check_target(hits[0])
                note = (f"mapped '{'/'.join(base)}' to '{hits[0]}' (the only environment file "
                        "that fits)")
                return hits[0], note
            if len(hits) > 1:
                shown = ", ".join(hits[:8])
                raise PathProblem(f"'{'/'.join(base)}' could mean several environment files "
                                  f"({shown}); give the path relative to the environment "
                                  "directory")
        return None

    def new(self, raw: str) -> tuple[str, str | None]:
        """The relative path for a file the patch creates, with the repair needed."""
        parts = check_parts(raw)
        candidate = parts[1:] if len(parts) > 1 and parts[0] in ("a", "b") else parts
        repair = None
        # a new file has nothing to match against, so the usual prefixes are simply removed
        if len(candidate) > 2 and candidate[0] == "environments":
            repair = f"removed '{'/'.join(candidate[:2])}/' from the path"
            candidate = candidate[2:]
        elif len(candidate) > 1 and candidate[0] == self.root.name:
            repair = f"removed '{candidate[0]}/' from the path"
            candidate = candidate[1:]
        rel = "/".join(candidate)
        if any(c.isspace() for c in rel):
            raise PathProblem(f"'{rel}': new file names may not contain spaces")
        self.check_target(rel)
        return rel, repair

    def check_target(self, rel: str) -> None:
        """Refuse ignored folders and anything a symbolic link could redirect."""
        parts = rel.split("/")
        if any(p in IGNORED_NAMES for p in parts) or rel.endswith(IGNORED_SUFFIXES):
            raise PathProblem(f"'{rel}' is not part of the environment's code (caches, data, "
                              "checkpoints and .git are excluded); change source files only")
        path = self.root
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise PathProblem(
                    f"'{rel}' goes through a symbolic link in the environment "
                    f"('{path.relative_to(self.root).as_posix()}'); patches may not change "
                    "symlinks or files reached through them. Change a regular file instead")
        resolved = (self.root / rel).resolve()
        if not resolved.is_relative_to(self.real_root):
            raise PathProblem(f"'{rel}' resolves outside the environment directory")
