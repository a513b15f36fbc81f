"""A tiny research model for the console's end-to-end tests, served by the test OpenAI server:
it proposes ideas about the toy environment's knobs and implements an idea by setting the knob
to the value its (possibly edited) text names — so what the engine runs shows which text it used.
"""

from __future__ import annotations

import difflib
import re
import threading

from tests.support.openai_server import Reply

PROPOSALS = (("A", "1.0"), ("B", "0.5"), ("C", "-1.0"))


def diff_setting(train: str, knob: str, value: str) -> str:
    new = train.replace(f"BONUS_{knob} = 0.0", f"BONUS_{knob} = {value}")
    lines = difflib.unified_diff(train.splitlines(True), new.splitlines(True), "a/train.py",
                                 "b/train.py")
    return "```diff\n" + "".join(lines) + "```\n"


class KnobModel:
    def __init__(self, train: str) -> None:
        self.train = train
        self.lock = threading.Lock()
        self.ideator_prompts: list[str] = []
        self.implemented: list[str] = []  # idea texts the coder was asked to implement

    def __call__(self, req: dict) -> str | Reply:
        prompt = req["messages"][-1]["content"]
        if "# Idea to implement" in prompt:
            idea = prompt.split("# Idea to implement", 1)[1]
            with self.lock:
                self.implemented.append(idea)
            found = re.search(r"BONUS_([ABC])\s*(?:to|=)\s*(-?[0-9.]+)", idea)
            if found is None:
                return "I cannot tell which knob this idea changes."
            return diff_setting(self.train, found.group(1), found.group(2).rstrip("."))
        with self.lock:
            self.ideator_prompts.append(prompt)
        return "\n\n".join(f"[Experiment] Set BONUS_{k} to {v} to move the score.\n"
                           f"[Code Changes] In train.py set BONUS_{k} = {v}.\n[End]"
                           for k, v in PROPOSALS)
