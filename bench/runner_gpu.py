"""One job of a shipped environment through the real runner, both stages, on this machine's
GPU 0 (the device check of the evaluation stage): python bench/runner_gpu.py ENV PROFILE OUT.

The spec is what the local executor writes (engine.executors.base.evaluate_spec with the
evaluator's bytes); the job runs in OUT/job from an unpatched copy of the environment. Prints
the runner's exit record (the evaluation's score lines, both stages' seconds) and the tail of
the job's log. Extra environment variables for the job: KEY=VALUE arguments after OUT.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.environments import load  # noqa: E402
from engine.executors import runner  # noqa: E402
from engine.executors.base import evaluate_spec, evaluator_payload  # noqa: E402


def main() -> int:
    env_name, profile_name, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]).resolve()
    extra = dict(a.split("=", 1) for a in sys.argv[4:])
    env = load(env_name)
    profile = env.profile(profile_name)
    job = out / "job"
    shutil.rmtree(job, ignore_errors=True)
    shutil.copytree(env.root, job / "env", ignore=shutil.ignore_patterns("__pycache__"))
    (job / "metrics.jsonl").touch()
    spec = {"command": profile.command, "cwd": str(job / "env"), "timeout": profile.timeout,
            "grace": 10, "heartbeat": 2, "secret": "bench",
            "env": {"IDEAFORGE_METRICS": str(job / "metrics.jsonl"), "IDEAFORGE_JOB_DIR": str(job),
                    "CUDA_VISIBLE_DEVICES": "0", "IDEAFORGE_PROFILE": profile.name,
                    "PYTHONUNBUFFERED": "1", **extra},
            "evaluate": evaluate_spec(env, profile, evaluator_payload(env), seed=1)}
    (job / "spec.json").write_text(json.dumps(spec))
    started = time.monotonic()
    subprocess.run([sys.executable, runner.__file__, str(job)], check=True)
    record = json.loads((job / "exit").read_text())
    record["signed"] = runner.sign(record, "bench") == record.get("mac")
    record["wall_s"] = round(time.monotonic() - started, 2)
    print(json.dumps(record, indent=1))
    print((job / "output.log").read_text()[-3000:])
    (out / "exit.json").write_text(json.dumps(record, indent=1))
    shutil.copyfile(job / "output.log", out / "output.log")
    return 0 if record.get("code") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
