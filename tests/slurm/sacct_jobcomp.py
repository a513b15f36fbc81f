"""`sacct` for a cluster with accounting, as the Slurm executor calls it (`--jobs=A,B
--format=JobIDRaw,State --parsable2`), answered from the job completion log slurmctld writes
(jobcomp/filetxt, JobCompLoc in $SLURM_CONF): each ended job's final state, in Slurm's words.
tests/slurm/cluster.py; put `bin/sacct` (which runs this) first on PATH."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    with open(os.environ["SLURM_CONF"]) as fh:
        loc = re.search(r"^JobCompLoc=(.+)$", fh.read(), re.MULTILINE)
    wanted = next((a.split("=", 1)[1].split(",") for a in argv if a.startswith("--jobs=")), [])
    states = {}
    path = Path(loc.group(1).strip()) if loc else None
    lines = path.read_text().splitlines() if path and path.exists() else []
    for line in lines:  # the last record of a job id wins (a cleared controller reuses ids)
        job = re.search(r"\bJobId=(\d+)", line)
        state = re.search(r"\bJobState=(\S+)", line)
        if job and state:
            states[job.group(1)] = state.group(1)
    for job in wanted:
        if job in states:
            print(f"{job}|{states[job]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
