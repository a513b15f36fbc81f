"""The console's part of `~/.config/ideaforge/config.toml` (or `$IDEAFORGE_CONFIG`): `[keys]`.

    [keys]
    approve = "A"          # a command id from `console.commands.REGISTRY` = a key
    reject = "R,ctrl+r"    # several keys, comma separated
    "mode.jobs" = "j"

Unknown ids and unreadable files never stop the console: they come back as problems that the
console shows once as a notification.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from console.commands import BY_ID

DEFAULT_PATH = "~/.config/ideaforge/config.toml"


def config_path() -> Path:
    return Path(os.environ.get("IDEAFORGE_CONFIG") or DEFAULT_PATH).expanduser()


@dataclass(frozen=True)
class ConsoleConfig:
    keys: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def load(path: Path | None = None) -> ConsoleConfig:
    path = path or config_path()
    if not path.exists():
        return ConsoleConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return ConsoleConfig(problems=(f"{path}: not read ({exc}); default keys in use",))
    raw = data.get("keys") or {}
    if not isinstance(raw, dict):
        return ConsoleConfig(problems=(f"{path}: [keys] must be a table of id = \"key\"",))
    keys: dict[str, str] = {}
    problems: list[str] = []
    for command_id, key in raw.items():
        if command_id not in BY_ID:
            problems.append(f"{path}: [keys] {command_id!r} is not a command id (see ? help)")
        elif not isinstance(key, str) or not key.strip():
            problems.append(f"{path}: [keys] {command_id} must be a key name like \"A\"")
        else:
            keys[command_id] = ",".join(k.strip() for k in key.split(","))
    return ConsoleConfig(keys=keys, problems=tuple(problems))
