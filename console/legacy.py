"""Importing the reference research code's output as a read-only search (`import-legacy DIR`).

What the reference writes, per run:

- `ideas_<run>/ideas_epoch<N>.json` (or `<run>/ideas/ideas_epoch<N>.json`): a JSON list of the
  idea strings proposed in epoch N (`[Experiment] … [Code Changes] …`);
- `database.json`: the ranked ideas that produced a result, as objects with `epoch`, `idea_id`,
  `idea` and the metric — `best_eval_accuracy` (GRPO, higher is better) or `lowest_val_loss`
  (nanoGPT, lower is better).

Each proposed idea becomes an idea of the imported search: scored with its database entry when
there is one (matched by epoch and text, else by epoch and index), otherwise failed ("no
result"). Database entries whose text no epoch file holds are kept too. The search's status is
"imported": the console shows it and the engine refuses to run it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.store import Store, StoreError
from engine.store.console_queries import ImportedIdea, import_search
from engine.store.views import SearchView

#: metric key → (goal, environment, baseline the reference gave its search; FIELD_NOTES.md)
METRICS: dict[str, tuple[str, str, float | None]] = {
    "best_eval_accuracy": ("maximize", "grpo", 0.49),
    "lowest_val_loss": ("minimize", "nanogpt", 3.255),
}
EPOCH_FILE = re.compile(r"^ideas_epoch(\d+)\.json$")
NO_RESULT = "no result in database.json (not implemented, failed, or never run)"


def _title(text: str) -> str:
    body = text.replace("[Experiment]", "").strip()
    first = body.split("\n", 1)[0].split(". ", 1)[0].strip()
    return first[:80]


def _norm(text: str) -> str:
    return " ".join(text.split())


def _epoch_files(directory: Path) -> dict[Path, dict[int, Path]]:
    """Run folders under `directory` → {epoch: file}."""
    runs: dict[Path, dict[int, Path]] = {}
    for path in sorted(directory.rglob("ideas_epoch*.json")):
        match = EPOCH_FILE.match(path.name)
        if match:
            runs.setdefault(path.parent, {})[int(match.group(1))] = path
    return runs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: not readable JSON ({exc})") from None


def _index(idea_id: Any) -> int | None:
    if isinstance(idea_id, int):
        return idea_id
    found = re.search(r"(\d+)$", str(idea_id or ""))
    return int(found.group(1)) if found else None


def _score(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(score) or math.isinf(score) else score


def read_legacy(directory: Path) -> tuple[dict[str, Any], list[ImportedIdea], str]:
    """Parse a reference run: (search fields, ideas, a one-line summary)."""
    directory = directory.expanduser().resolve()
    if not directory.is_dir():
        raise StoreError(f"{directory} is not a folder")
    runs = _epoch_files(directory)
    if len(runs) > 1:
        listed = ", ".join(str(r.relative_to(directory)) for r in runs)
        raise StoreError(f"{directory} holds several runs ({listed}); import one run's folder")
    run_dir, epochs = next(iter(runs.items())) if runs else (directory, {})
    databases = [p for p in (run_dir / "database.json", run_dir.parent / "database.json",
                             directory / "database.json") if p.is_file()]
    if not databases:
        databases = sorted(directory.rglob("database.json"))
    if not epochs and not databases:
        raise StoreError(f"{directory}: no ideas_epoch<N>.json and no database.json — not the "
                         "reference code's output")
    entries = _read_json(databases[0]) if databases else []
    if not isinstance(entries, list):
        raise StoreError(f"{databases[0]}: expected a list of ranked ideas")
    entries = [e for e in entries if isinstance(e, dict)]
    metric = next((k for k in METRICS if any(k in e for e in entries)), "best_eval_accuracy")
    goal, env_name, baseline = METRICS[metric]

    proposed: dict[int, list[str]] = {}
    for epoch, path in sorted(epochs.items()):
        texts = _read_json(path)
        if not isinstance(texts, list):
            raise StoreError(f"{path}: expected a list of idea strings")
        proposed[epoch] = [t if isinstance(t, str) else json.dumps(t) for t in texts]

    by_text = {(int(e.get("epoch", -1)), _norm(str(e.get("idea", "")))): e for e in entries}
    used: set[int] = set()
    ideas: list[ImportedIdea] = []
    for epoch, texts in proposed.items():
        for index, text in enumerate(texts):
            entry = by_text.get((epoch, _norm(text)))
            if entry is None:
                entry = next((e for e in entries if int(e.get("epoch", -1)) == epoch
                              and _index(e.get("idea_id")) == index and id(e) not in used
                              and not str(e.get("idea", "")).strip()), None)
            ideas.append(_imported(epoch, text, entry, metric))
            if entry is not None:
                used.add(id(entry))
    for entry in entries:  # results whose idea no epoch file lists
        if id(entry) not in used:
            ideas.append(_imported(int(entry.get("epoch", 0) or 0),
                                   str(entry.get("idea", "")), entry, metric))
    if not ideas:
        raise StoreError(f"{directory}: the files hold no ideas")
    last_epoch = max(i.epoch for i in ideas)
    per_epoch = max(sum(1 for i in ideas if i.epoch == e) for e in {i.epoch for i in ideas})
    run_name = run_dir.name.removeprefix("ideas_") if run_dir != directory else directory.name
    source = {"legacy": str(directory), "run": run_name,
              "database": str(databases[0]) if databases else None}
    fields = {"env_name": env_name, "env_path": str(directory), "env_version": "legacy",
              "profile": "full", "model": "reference run", "epochs": last_epoch + 1,
              "ideas_per_epoch": per_epoch, "auto": True, "metric_name": metric, "goal": goal,
              "baseline": baseline, "epoch": last_epoch, "phase": "done",
              "message": f"imported from {directory}", "config_json": json.dumps(source)}
    scored = sum(i.status == "scored" for i in ideas)
    note = (f"imported {len(ideas)} ideas of {last_epoch + 1} epoch(s) from {directory} "
            f"({scored} with a {metric})")
    return {"run": run_name, **fields}, ideas, note


def _imported(epoch: int, text: str, entry: dict[str, Any] | None, metric: str
              ) -> ImportedIdea:
    score = _score(entry, metric) if entry is not None else None
    return ImportedIdea(epoch=epoch, text=text, title=_title(text), score=score,
                        status="scored" if score is not None else "failed",
                        reason=None if score is not None else NO_RESULT)


def _free_name(base: str, taken: Iterable[str]) -> str:
    names = set(taken)
    if base not in names:
        return base
    n = 2
    while f"{base}-{n}" in names:
        n += 1
    return f"{base}-{n}"


def import_legacy(store: Store, directory: Path, name: str | None) -> SearchView:
    """Import a reference run as a read-only search named `name` (default: legacy-<run>)."""
    from engine.store import ops

    fields, ideas, note = read_legacy(Path(directory))
    run = fields.pop("run")
    if name is None:
        name = _free_name(f"legacy-{run}", (s.name for s in ops.list_searches(store)))
    return import_search(store, {"name": name, **fields}, ideas, note)
