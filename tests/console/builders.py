"""A small, fully deterministic workspace for the console's Pilot and snapshot tests.

Built through the store's own operations (as the engine would write it), then every timestamp
is pinned so that ages, run times and the activity feed render the same on every run. The
console's clock (`console.fmt.clock`) is pinned to `NOW` by the tests that need it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from engine.store import Store, job_ops, ops
from engine.store.console_queries import ImportedIdea, import_search

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC

#: The toy search's evaluator (the SHA-256 the engine records), and a flag the engine writes.
EVALUATOR = hashlib.sha256(b"toy evaluator").hexdigest()
TRAINING_SCORE_FLAG = ("the training process wrote its own 'score' or 'void' lines: ignored "
                       "(only the evaluation stage scores)")

DIFF_A = """--- a/train.py
+++ b/train.py
@@ -11,7 +11,7 @@
 # Knob A: a good idea.
 # (kept apart from the other knobs so that two ideas' diffs combine cleanly)
 
-BONUS_A = 0.0
+BONUS_A = 1.0
 
 # Knob B: another good idea.
 #
"""

DIFF_B = """--- a/train.py
+++ b/train.py
@@ -16,7 +16,7 @@
 # Knob B: another good idea.
 #
 
-BONUS_B = 0.0
+BONUS_B = 0.5
 
 # Knob C: a bad idea.
 #
"""


@dataclass
class Built:
    store: Store
    search_id: int
    ideas: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    imported_id: int = 0


def _idea(store: Store, search_id: int, epoch: int, key: str, text: str, origin: str,
          built: Built, parents: tuple[int, ...] = (), status: str = "proposed") -> int:
    idea_id = ops.add_idea(store, search_id, epoch, ops.NewIdea(
        text=text, origin=origin, parents=parents, status=status))
    built.ideas[key] = idea_id
    return idea_id


def _run_job(store: Store, built: Built, key: str, idea_id: int, *, score: float | None,
             curve: list[float], state: str = "finished", job_dir: Path | None = None,
             exit_code: int = 0, reason: str | None = None, quarantine: str | None = None,
             idea_status: str = "scored", host: str = "local",
             evaluator: str | None = EVALUATOR, flags: tuple[str, ...] = ()) -> int:
    ops.transition_idea(store, idea_id, {"implemented", "approved"}, "implemented")
    job_id = job_ops.enqueue_job(store, idea_id, profile="smoke", gpus_wanted=0)
    assert job_id is not None
    built.jobs[key] = job_id
    job_ops.update_job(store, job_id, state="running", host=host,
                       job_dir=str(job_dir) if job_dir else None)
    ops.transition_idea(store, idea_id, "queued", "running")
    points = [{"name": "train_loss", "value": v, "step": i + 1} for i, v in enumerate(curve)]
    if score is not None:
        points.append({"name": "score", "value": score, "step": len(curve)})
    job_ops.ingest_metrics(store, job_id, 0, 100, points)
    if state != "running":
        job_ops.finish_job(store, job_id, state=state, exit_code=exit_code, reason=reason,
                           log_tail=f"toy run done: score {score}\n", idea_status=idea_status,
                           score=score, quarantine=quarantine, idea_reason=reason,
                           message=f"job {job_id} done", evaluator=evaluator, flags=flags)
    return job_id


def build(ws: Path) -> Built:
    """A search at its idea gate in epoch 2, with history, jobs, lineage and an import.
    Its results are verified by its evaluator, except the crash's (no evaluator: it never got
    that far) and the cross's (measured by the training process itself, as before the
    evaluation stage: unverified); b's is flagged (its training wrote a score line)."""
    store = Store(ws)
    s = ops.create_search(
        store, name="toy-1", env_name="toy", env_path="/envs/toy", env_version="abc123",
        profile="smoke", model="openai/gpt-test", epochs=3, ideas_per_epoch=4,
        metric_name="score", goal="minimize", baseline=5.0, status="running", epoch=1,
        phase="review_ideas", engine_pid=4242, engine_host="box", engine_heartbeat=NOW - 2,
        evaluator=EVALUATOR)
    built = Built(store=store, search_id=s.id)
    sid = s.id
    base = _idea(store, sid, 0, "baseline", "[Experiment] Baseline: the unmodified "
                 "environment.", "baseline", built, status="implemented")
    logs = ws / "jobs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "output.log").write_text("".join(f"step {i}: loss {6 - i * 0.1:.2f}\n"
                                             for i in range(12)))
    _run_job(store, built, "baseline", base, score=5.0, curve=[6.0, 5.6, 5.3, 5.1])
    a = _idea(store, sid, 0, "a", "[Experiment] Raise bonus A to 1.0. It should lower the "
              "score by one.\n[Code Changes] Set BONUS_A = 1.0 in train.py.", "seed", built)
    b = _idea(store, sid, 0, "b", "[Experiment] Raise bonus B to 0.5.\n[Code Changes] Set "
              "BONUS_B = 0.5.", "seed", built)
    crash = _idea(store, sid, 0, "crash", "[Experiment] A change that crashes the run.\n"
                  "[Code Changes] Exit with code 3.", "explore", built)
    broken = _idea(store, sid, 0, "broken", "[Experiment] Rewrite the evaluation.\n[Code "
                   "Changes] Change evaluate.py.", "explore", built)
    rejected = _idea(store, sid, 0, "rejected", "[Experiment] Set bonus C negative.\n"
                     "[Code Changes] BONUS_C = -1.", "seed", built)
    for idea_id in (a, b, crash, broken):
        ops.transition_idea(store, idea_id, "proposed", "approved")
    ops.transition_idea(store, rejected, "proposed", "rejected",
                        reason="negative bonuses never help")
    for idea_id, diff in ((a, DIFF_A), (b, DIFF_B), (crash, DIFF_A)):
        ops.transition_idea(store, idea_id, "approved", "implementing")
        if idea_id == a:
            ops.add_attempt(store, idea_id, model="openai/gpt-test", answer="```diff\n"
                            "--- a/evaluate.py\n+++ b/evaluate.py\n```", diff=None,
                            outcome="failed", error="evaluate.py is protected")
        ops.add_attempt(store, idea_id, model="openai/gpt-test", answer=diff, diff=diff,
                        outcome="ok", error=None, repairs=["hunk counts recomputed"])
        ops.transition_idea(store, idea_id, "implementing", "implemented", diff=diff)
    ops.transition_idea(store, broken, "approved", "implementing")
    for n in range(2):
        ops.add_attempt(store, broken, model="openai/gpt-test", answer="no diff here",
                        diff=None, outcome="failed", error=f"no diff found in the answer ({n})")
    ops.transition_idea(store, broken, "implementing", "implement_failed",
                        reason="no usable diff after 2 attempts")
    _run_job(store, built, "a", a, score=4.0, curve=[6.0, 5.2, 4.6, 4.2],
             job_dir=logs)
    _run_job(store, built, "b", b, score=4.5, curve=[6.0, 5.5, 4.9, 4.6],
             flags=(TRAINING_SCORE_FLAG,))
    _run_job(store, built, "crash", crash, score=None, curve=[6.0], state="failed",
             exit_code=3, reason="crashed: exit code 3", idea_status="failed", evaluator=None)
    # epoch 1: a cross of the two winners (suspiciously good), one running, and the gate
    cross = _idea(store, sid, 1, "cross", "[Experiment] Combine two winning ideas: #2 and "
                  "#3.\n[Code Changes] Apply both.", "exploit", built, parents=(a, b))
    ops.transition_idea(store, cross, "proposed", "implemented", diff=DIFF_A + DIFF_B)
    _run_job(store, built, "cross", cross, score=0.2, curve=[6.0, 3.0, 1.0],
             quarantine="pending", evaluator=None)
    run = _idea(store, sid, 1, "running", "[Experiment] Warm up the bonus.\n[Code Changes] "
                "Ramp BONUS_A.", "exploit", built, parents=(a,))
    ops.transition_idea(store, run, "proposed", "implemented", diff=DIFF_A)
    job = _run_job(store, built, "running", run, score=None, curve=[6.0, 5.0], state="running",
                   host="gpu-1")
    job_ops.take_gpus(store, "gpu-1", [0, 1], job)
    job_ops.update_job(store, job, heartbeat_at=NOW - 4)
    for key, text, origin in (
            ("p1", "[Experiment] Halve bonus B.\n[Code Changes] BONUS_B = 0.25.", "explore"),
            ("p2", "[Experiment] Sleep less.\n[Code Changes] SLEEP_S = 0.05.", "explore"),
            ("p3", "[Experiment] Combine #2 with the warm-up.\n[Code Changes] Both.",
             "exploit")):
        _idea(store, sid, 1, key, text, origin, built,
              parents=(a, run) if origin == "exploit" else ())
    ops.add_decision(store, sid, "approve", built.ideas["p1"], source="console")
    ops.add_llm_call(store, sid, role="ideator", purpose="propose", model="openai/gpt-test",
                     prompt_tokens=1000, completion_tokens=500, cost_usd=0.42)
    imported = import_search(store, {
        "name": "legacy-grpo", "env_name": "grpo", "env_path": "/runs/grpo",
        "env_version": "legacy",
        "profile": "full", "model": "reference run", "epochs": 1, "ideas_per_epoch": 2,
        "metric_name": "best_eval_accuracy", "goal": "maximize", "baseline": 0.49, "phase": "done",
        "config_json": json.dumps({})}, [
        ImportedIdea(epoch=0, text="[Experiment] Lower the learning rate.", title="Lower the "
                     "learning rate", score=0.52, status="scored"),
        ImportedIdea(epoch=0, text="[Experiment] Group size 4.", title="Group size 4",
                     score=None, status="failed", reason="no result")], "imported in a test")
    built.imported_id = imported.id
    _pin_times(store.path)
    return built


def _pin_times(db: Path) -> None:
    """Every timestamp relative to NOW, by row id, so renders do not depend on the clock."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE event SET created_at = ? + id", (NOW - 3600,))
        conn.execute("UPDATE idea SET created_at = ? + id, updated_at = ? + id",
                     (NOW - 7200, NOW - 7200))
        conn.execute("UPDATE job SET queued_at = ? + id * 60, started_at = ? + id * 60 + 5, "
                     "finished_at = CASE WHEN finished_at IS NULL THEN NULL "
                     "ELSE ? + id * 60 + 35 END", (NOW - 3600, NOW - 3600, NOW - 3600))
        conn.execute("UPDATE job SET heartbeat_at = ? WHERE state = 'running'", (NOW - 4,))
        conn.execute("UPDATE search SET created_at = ?, updated_at = ?", (NOW - 7200, NOW))
        conn.execute("UPDATE search SET engine_heartbeat = ? WHERE engine_pid IS NOT NULL",
                     (NOW - 2,))
        conn.execute("UPDATE decision SET created_at = ? + id", (NOW - 60,))
        conn.execute("UPDATE patch_attempt SET created_at = ? + id", (NOW - 5000,))


def add_many_ideas(store: Store, search_id: int, n: int, epoch: int = 0) -> None:
    """Bulk rows straight into the idea table (a fixture, not how the engine writes)."""
    from engine.store.models import Idea

    with store.session() as s:
        s.add_all([Idea(search_id=search_id, epoch=epoch, origin="explore",
                        text=f"[Experiment] Bulk idea {i}.", title=f"Bulk idea {i}",
                        status="scored", score=4.0 + (i % 100) / 100) for i in range(n)])
