"""The metric protocol: one JSON object per line appended to $IDEAFORGE_METRICS, and stdout.

Protected (environment.toml): the score reaches ideaforge through this file. W&B is optional
(`--wandb`); ideaforge never needs it to learn a result.
"""

from __future__ import annotations

import json
import math
import os
import time


class Reporter:
    def __init__(self, run_start: float, path: str | None = None, wandb_config: dict | None = None):
        self.run_start = run_start
        path = path if path is not None else os.environ.get("IDEAFORGE_METRICS")
        # held open for the whole run (closed in close()), one flushed line per metric
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._wandb = None
        if wandb_config is not None:
            import wandb  # optional dependency, imported only when asked for

            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "ideaforge-grpo"), config=wandb_config
            )

    def emit(self, name: str, value: float, step: int, **extra: object) -> None:
        value = float(value)
        if not math.isfinite(value):  # JSON has no NaN: say so on stdout, keep the file valid
            print(f"[step {step}] {name} is not finite ({value})", flush=True)
            return
        record = {
            "name": name,
            "value": value,
            "step": step,
            "time_s": round(time.monotonic() - self.run_start, 3),
            **extra,
        }
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._wandb is not None:
            self._wandb.log({name: value, "step": step})

    def emit_many(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.emit(name, value, step)
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        print(f"[step {step}] {shown}", flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
