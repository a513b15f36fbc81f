"""hosts.toml's [slurm] table: what is accepted, and a clear error (exit 2) for what is not.
No Slurm needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.executors.hosts import HostsError, load
from tests.conftest import REPO, cli


def test_the_documented_slurm_table_parses(tmp_path: Path) -> None:
    text = (REPO / "hosts.toml.example").read_text()
    block = text[text.index("# [slurm]"):].splitlines()
    toml = "\n".join(line[2:] for line in block if line.startswith("# ") and "=" in line
                     or line == "# [slurm]")
    path = tmp_path / "slurm.toml"
    path.write_text(toml + '\n[jump_hosts.bastion]\naddress = "bastion.example.edu"\n')
    cfg = load(path, check_files=False).slurm
    assert cfg is not None and cfg.partition == "gpu" and cfg.max_queued == 16
    assert cfg.login is not None and cfg.jump is not None and cfg.jump.name == "bastion"
    assert (cfg.login.login_user(), cfg.login.address, cfg.login.port) == (
        "alice", "login.cluster.example.edu", 22)
    assert cfg.sbatch_options() == ["--partition=gpu", "--account=my-lab", "--qos=normal",
                                    "--constraint=h100", "--mail-type=NONE", "--exclusive"]
    assert cfg.mem_per_gpu == "64G" and cfg.cpus_per_gpu == 8


@pytest.mark.parametrize(("body", "needle"), [
    ('[slurm]\nmax_queud = 3\n', ("field 'max_queud' is not a known field (did you mean "
                                 "'max_queued'?)")),
    ('[slurm]\nmax_queued = 0\n', "field 'max_queued' must be at least 1"),
    ('[slurm]\nextra_sbatch = ["--time=10"]\n', "sets --time, which ideaforge sets itself"),
    ('[slurm]\nmem_per_gpu = "lots"\n', "field 'mem_per_gpu' must be a Slurm size"),
    ('[slurm]\nworkdir = "shared"\n', "field 'workdir' must be an absolute path"),
    ('[slurm]\n[[hosts]]\nname = "a"\naddress = "b"\n', "[[hosts]] are both set"),
    ('[slurm]\nlogin = "a@"\nworkdir = "/w"\n', "field 'login' must be \"user@host\""),
    ('[slurm]\nlogin = "a@b"\n', "field 'workdir' must be an absolute path on the cluster"),
    ('[slurm]\nlogin = "a@b"\nworkdir = "~/w"\n', "run `echo ~`"),
    ('[slurm]\nport = 2222\n', "field 'port' only applies with login"),
    ('[slurm]\nlogin = "b"\nworkdir = "/w"\njump = "x"\n', "names 'x', which is not a"),
    ('[slurm]\nlogin = "b"\nworkdir = "/w"\nidentity_file = "/nope"\n',
     "identity_file' names /nope, which does not exist"),
])
def test_a_bad_slurm_table_is_refused_with_one_line(body: str, needle: str, tmp_path: Path,
                                                    toy_env: Path) -> None:
    path = tmp_path / "slurm.toml"
    path.write_text(body)
    with pytest.raises(HostsError) as err:
        load(path)
    assert needle in str(err.value) and str(path) in str(err.value)
    if "max_queud" in body:  # the CLI says it too, stores nothing and exits 2
        proc = cli("run", str(toy_env), "--profile", "gpu", "--hosts", str(path),
                   workspace=tmp_path / "ws")
        assert proc.returncode == 2 and needle in proc.stderr
        assert not (tmp_path / "ws").exists()
