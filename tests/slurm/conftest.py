"""A real one-node Slurm cluster (tests/slurm/cluster.py), started once for these tests, with
real accounting (a private MariaDB and slurmdbd: tests/slurm/accounting.py).

Skipped, with the reason, where Slurm is not installed or the tests do not run as root; where
MariaDB or slurmdbd is not, the cluster runs without accounting and only the tests that need
`sacct` are skipped. .ci/run installs `slurm-wlm`, `munge`, `mariadb-server` and `slurmdbd`,
so CI runs them all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm import accounting
from tests.slurm.cluster import Cluster, missing


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    why = missing()
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="ideaforge-slurm-"))
    cluster = Cluster(root, accounting=accounting.missing() is None)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # the executor's and the CLI's sbatch, squeue
    try:
        try:
            cluster.write_config()
        except PermissionError as exc:  # a container without CAP_MKNOD
            pytest.skip(f"cannot make the fake GPU devices Slurm needs (mknod: {exc})")
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


@pytest.fixture
def slurm(slurm_cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, its queue emptied after each test."""
    yield slurm_cluster
    slurm_cluster.cancel_all()


@pytest.fixture
def slurm_accounting(slurm: Cluster) -> Cluster:
    """The cluster, where its accounting runs (`sacct` answers)."""
    why = accounting.missing()
    if why:
        pytest.skip(why)
    return slurm
