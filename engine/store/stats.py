"""Execution analytics (issue 14): what became of the ideas a coder was asked to implement.

Per search and per coder model, then summed per environment and per model across a workspace.
The baseline idea is never counted. The definitions (README "Execution statistics"):

- **implemented_first** — the idea's first attempt (number 1) gave a usable diff.
- **implemented_after_repair** — it has an ok attempt, but not number 1: a re-ask after a diff
  that did not apply, or an answer to a crash, gave the diff.
- **never_implemented** — it has attempts, none ok, and it has ended (implement_failed, or
  rejected/skipped while none was ok); an idea still being implemented is in neither column.
- **ran** — at least one of its jobs (a run or a pre-flight) started.
- **crashed** — at least one of its jobs (any kind) failed with reason "crashed: …" (a training
  crash; a void, a time-limit kill or an evaluation that crashed is not one);
  **crashed_in_preflight** — the same, counting pre-flight jobs only.
- **fixed** — crashed, then scored, and the coder answered a crash with an ok repair attempt.
- **scored** — its status is scored. **unscored** — it ended without a score: status failed,
  implement_failed, rejected, skipped or superseded. Ideas still in flight are neither.
- **coder_calls / coder_cost_usd** — model calls whose purpose is `implement:idea<N>` or
  `repair:idea<N>` (every call, retries and errors included), counted on idea N.
- **gpu_hours** — leased GPUs × wall time of the idea's jobs (the measure of --max-gpu-hours;
  CPU jobs use none); **job_seconds** — the wall time of its jobs of any kind, so a CPU-only
  search has a number too. Running jobs count up to now.
- **wasted_*** — the calls, cost, GPU hours and job seconds of the *unscored* ideas above.

Grouping by model: an idea belongs to the model of the attempt that implemented it (its first
ok attempt), else of its last attempt. Ideas no coder answered yet (proposed, rejected before
implementation…) count in a search's total only, not under any model.

Standard library only, like `verification`: the SQL runs through an `Execute` callable, so
`ideaforge stats` reads with plain `sqlite3` (`first_frame.reader`) and the console through its
read-only SQLAlchemy session. One grouped query per call, whatever the number of ideas.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.store.verification import Execute

#: Statuses of an idea that has ended without a score (what "wasted" spending is spent on).
UNSCORED = ("failed", "implement_failed", "rejected", "skipped", "superseded")
#: The coder's model-call purposes that belong to one idea (`<prefix><idea id>`).
CALL_PREFIXES = ("implement:idea", "repair:idea")


@dataclass(frozen=True)
class Counts:
    ideas: int = 0
    attempted: int = 0  # ideas with at least one attempt
    implemented_first: int = 0
    implemented_after_repair: int = 0
    never_implemented: int = 0
    ran: int = 0
    crashed: int = 0
    crashed_in_preflight: int = 0
    fixed: int = 0
    scored: int = 0
    unscored: int = 0
    coder_calls: int = 0
    coder_cost_usd: float = 0.0
    gpu_hours: float = 0.0
    job_seconds: float = 0.0
    wasted_calls: int = 0
    wasted_cost_usd: float = 0.0
    wasted_gpu_hours: float = 0.0
    wasted_job_seconds: float = 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                         for f in fields(self)})

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def total(counts: Iterable[Counts]) -> Counts:
    return sum(counts, Counts())


@dataclass(frozen=True)
class SearchStats:
    search_id: int
    name: str
    environment: str
    models: dict[str, Counts]  # coder model → its ideas, most ideas first
    total: Counts  # every idea of the search but the baseline (also those without attempts)

    def to_dict(self) -> dict[str, Any]:
        return {"search": self.name, "id": self.search_id, "environment": self.environment,
                "models": {m: c.to_dict() for m, c in self.models.items()},
                "total": self.total.to_dict()}


@dataclass(frozen=True)
class Group:
    """Several searches summed: one environment's, or the whole workspace's."""

    searches: tuple[str, ...]
    models: dict[str, Counts]
    total: Counts

    def to_dict(self) -> dict[str, Any]:
        return {"searches": list(self.searches),
                "models": {m: c.to_dict() for m, c in self.models.items()},
                "total": self.total.to_dict()}


@dataclass(frozen=True)
class Overview:
    searches: tuple[SearchStats, ...]
    environments: dict[str, Group] = field(default_factory=dict)
    workspace: Group = field(default_factory=lambda: Group((), {}, Counts()))

    def to_dict(self) -> dict[str, Any]:
        return {"searches": [s.to_dict() for s in self.searches],
                "environments": {e: g.to_dict() for e, g in self.environments.items()},
                "models": {m: c.to_dict() for m, c in self.workspace.models.items()},
                "total": self.workspace.total.to_dict()}


def _query(search_ids: Sequence[int] | None, now: float) -> str:
    """The one grouped query: a row per (search, coder model; NULL for ideas without attempts).

    Its only inputs are integers and a float, written into the text as literals (`int()` and
    `repr()` of them), so it needs no parameters and the same text runs on either driver.
    """
    only = "" if search_ids is None else \
        f" IN ({', '.join(str(int(i)) for i in search_ids) or 'NULL'})"
    unscored = ", ".join(f"'{s}'" for s in UNSCORED)
    calls = " OR ".join(f"purpose LIKE '{p}%'" for p in CALL_PREFIXES)
    # A job's GPU-seconds as console_queries._gpu_seconds reckons them (a test holds the two
    # equal): its span times the GPUs it leased (indices in `gpus`); NULL until it starts.
    span = f"MAX(COALESCE(j.finished_at, {float(now)!r}) - j.started_at, 0.0)"
    leased = ("CASE WHEN j.gpus = '' THEN 0 ELSE "
              "LENGTH(j.gpus) - LENGTH(REPLACE(j.gpus, ',', '')) + 1 END")

    def where(column: str, joined: str = "WHERE") -> str:
        return "" if search_ids is None else f"{joined} {column}{only}"

    def wasted(value: str) -> str:
        return f"SUM(CASE WHEN i.status IN ({unscored}) THEN COALESCE({value}, 0) ELSE 0 END)"

    return f"""
WITH tries AS (
  SELECT a.idea_id AS idea_id,
         MIN(CASE WHEN a.outcome = 'ok' THEN a.number END) AS first_ok,
         MAX(a.number) AS last_number,
         MAX(a.kind = 'repair' AND a.outcome = 'ok') AS repaired
  FROM patch_attempt a JOIN idea ON idea.id = a.idea_id {where("idea.search_id")}
  GROUP BY a.idea_id
), runs AS (
  SELECT j.idea_id AS idea_id,
         MAX(j.started_at IS NOT NULL) AS ran,
         MAX(COALESCE(j.reason, '') LIKE 'crashed:%') AS crashed,
         MAX(j.kind = 'preflight' AND COALESCE(j.reason, '') LIKE 'crashed:%') AS pre_crashed,
         SUM({span} * {leased}) AS gpu_s,
         SUM({span}) AS job_s
  FROM job j {where("j.search_id")}
  GROUP BY j.idea_id
), calls AS (
  SELECT CAST(SUBSTR(purpose, INSTR(purpose, ':idea') + 5) AS INTEGER) AS idea_id,
         COUNT(*) AS n, SUM(COALESCE(cost_usd, 0)) AS cost
  FROM llm_call WHERE ({calls}) {where("search_id", "AND")}
  GROUP BY 1
)
SELECT i.search_id, a.model,
       COUNT(*), COUNT(t.idea_id),
       SUM(t.first_ok = 1), SUM(t.first_ok > 1),
       SUM(t.idea_id IS NOT NULL AND t.first_ok IS NULL AND i.status IN ({unscored})),
       SUM(COALESCE(r.ran, 0)), SUM(COALESCE(r.crashed, 0)), SUM(COALESCE(r.pre_crashed, 0)),
       SUM(COALESCE(r.crashed, 0) AND i.status = 'scored' AND COALESCE(t.repaired, 0)),
       SUM(i.status = 'scored'), SUM(i.status IN ({unscored})),
       SUM(COALESCE(c.n, 0)), SUM(COALESCE(c.cost, 0)),
       SUM(COALESCE(r.gpu_s, 0)), SUM(COALESCE(r.job_s, 0)),
       {wasted("c.n")}, {wasted("c.cost")}, {wasted("r.gpu_s")}, {wasted("r.job_s")}
FROM idea i
LEFT JOIN tries t ON t.idea_id = i.id
LEFT JOIN patch_attempt a ON a.idea_id = t.idea_id
                         AND a.number = COALESCE(t.first_ok, t.last_number)
LEFT JOIN runs r ON r.idea_id = i.id
LEFT JOIN calls c ON c.idea_id = i.id
WHERE i.origin != 'baseline' {where("i.search_id", "AND")}
GROUP BY i.search_id, a.model
"""


def _counts(row: Sequence[Any]) -> Counts:
    """A query row's numbers (after search_id and model) as Counts; seconds become hours."""
    n = [v or 0 for v in row[2:]]
    (ideas, attempted, first, after, never, ran, crashed, pre, fixed, scored, unscored,
     calls, cost, gpu_s, job_s, w_calls, w_cost, w_gpu_s, w_job_s) = n
    return Counts(int(ideas), int(attempted), int(first), int(after), int(never), int(ran),
                  int(crashed), int(pre), int(fixed), int(scored), int(unscored), int(calls),
                  float(cost), float(gpu_s) / 3600, float(job_s), int(w_calls), float(w_cost),
                  float(w_gpu_s) / 3600, float(w_job_s))


def _by_ideas(models: dict[str, Counts]) -> dict[str, Counts]:
    return dict(sorted(models.items(), key=lambda kv: (-kv[1].ideas, kv[0])))


def overview(execute: Execute, search_ids: Sequence[int] | None = None,
             now: float | None = None) -> Overview:
    """The statistics of some searches (None: every search of the workspace), each with its
    models, then summed per environment and over all of them."""
    now = time.time() if now is None else now
    where = "" if search_ids is None else \
        f" WHERE id IN ({', '.join(str(int(i)) for i in search_ids) or 'NULL'})"
    names = {int(r[0]): (str(r[1]), str(r[2])) for r in
             execute(f"SELECT id, name, env_name FROM search{where} ORDER BY id", [])}
    per: dict[int, dict[str | None, Counts]] = {sid: {} for sid in names}
    for row in execute(_query(search_ids, now), []):
        per.setdefault(int(row[0]), {})[row[1]] = _counts(row)
    searches = []
    for sid, (name, env) in names.items():
        rows = per.get(sid, {})
        searches.append(SearchStats(sid, name, env,
                                    _by_ideas({m: c for m, c in rows.items() if m is not None}),
                                    total(rows.values())))
    envs: dict[str, list[SearchStats]] = {}
    for s in searches:
        envs.setdefault(s.environment, []).append(s)
    return Overview(tuple(searches), {e: _group(ss) for e, ss in sorted(envs.items())},
                    _group(searches))


def _group(searches: Sequence[SearchStats]) -> Group:
    models: dict[str, Counts] = {}
    for s in searches:
        for m, c in s.models.items():
            models[m] = models.get(m, Counts()) + c
    return Group(tuple(s.name for s in searches), _by_ideas(models),
                 total(s.total for s in searches))



def find_search(execute: Execute, ref: str | int) -> int | None:
    """A search's id by name, or by id (digits that name no search)."""
    rows = list(execute("SELECT id FROM search WHERE name = ?", [str(ref)]))
    if not rows and str(ref).isdigit():
        rows = list(execute("SELECT id FROM search WHERE id = ?", [int(ref)]))
    return int(rows[0][0]) if rows else None


def search_names(execute: Execute) -> list[str]:
    return [str(r[0]) for r in execute("SELECT name FROM search ORDER BY id", [])]


@contextmanager
def store_reader(store: Any) -> Iterator[Execute]:
    """The store's read-only session as an `Execute` (the console's reads)."""
    from engine.store.console_queries import _driver, read_session

    with read_session(store) as s:
        yield _driver(s)


@contextmanager
def workspace_reader(workspace: str | Path) -> Iterator[Execute]:
    """Plain sqlite3 as an `Execute`, SQLAlchemy never imported (`ideaforge stats`). Raises
    `first_frame.Unavailable` where it cannot answer (no database, a schema older than this
    code): then use `store_reader`, whose Store says what is wrong or upgrades the database."""
    from engine.store.first_frame import reader

    with reader(workspace) as conn:
        yield lambda sql, params: conn.execute(sql, tuple(params)).fetchall()
