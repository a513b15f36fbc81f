"""What a job on an SSH host runs with: the interpreter `hosts check` reports (a real venv),
and a defined environment that the login's shell start-up files cannot change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import base_env, cli, start_cli
from tests.ssh.conftest import Lab, home_host, jobs

PROBE = '''\
import json, os, sys
try:
    import ideaforge_venv_marker
    marker = ideaforge_venv_marker.WHERE
except ImportError as exc:
    marker = "missing: %s" % exc
print("PROBE " + json.dumps({"executable": sys.executable, "prefix": sys.prefix,
                             "marker": marker, "environ": dict(os.environ)}))
'''

PROFILE = '''
[profiles.probe]
command = 'echo "which=$(command -v python)"; python probe.py && python train.py'
gpus = 1
timeout = 60
'''


@pytest.fixture
def probe_toy(gpu_toy: Path) -> Path:
    (gpu_toy / "probe.py").write_text(PROBE)
    with open(gpu_toy / "environment.toml", "a") as fh:
        fh.write(PROFILE)
    return gpu_toy


def make_venv(where: Path) -> Path:
    """A real venv (from the system's python, not the one running the tests) holding a
    marker module that only its own interpreter can import."""
    base = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    (site,) = where.glob("lib/python3*/site-packages")
    (site / "ideaforge_venv_marker.py").write_text(f"WHERE = {str(where)!r}\n")
    return where


def run_search(lab: Lab, toy: Path, hosts: Path, ws: Path) -> tuple[list[dict], str]:
    engine = lab.track(start_cli("run", str(toy), "--name", "probe", "--hosts", str(hosts),
                                 "--auto", "--confirm", "off", "--profile", "probe", "--epochs", "1",
                                 "--ideas-per-epoch", "1", workspace=ws, env=base_env()))
    try:
        out, _ = engine.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        engine.kill()
        out, _ = engine.communicate()
        raise AssertionError(f"the engine did not finish:\n{out}") from None
    rows = jobs(ws)
    assert rows, out
    return rows, out


def probes(lab: Lab, rows: list[dict]) -> list[tuple[str, dict]]:
    """(`which python` line, the probe's report) of every job, from its log on the host."""
    found = []
    for r in rows:
        text = (lab.hosts[r["host"]].workdir / r["job_dir"] / "output.log").read_text()
        which = next((ln for ln in text.splitlines() if ln.startswith("which=")), "")
        report = next((ln for ln in text.splitlines() if ln.startswith("PROBE ")), None)
        assert report, f"job {r['id']} printed no probe:\n{text}"
        found.append((which, json.loads(report[6:])))
    return found


@pytest.mark.parametrize("how", ["venv", "python"])
def test_a_venv_in_hosts_toml_is_what_jobs_run_and_what_hosts_check_reports(
        how: str, lab: Lab, probe_toy: Path, tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venvs" / "toy")
    lab.host("a", 2)
    line = f'venv = "{venv}"' if how == "venv" else f'python = "{venv}/bin/python"'
    hosts = lab.hosts_toml(extra_host=f"[hosts.environments.toy]\n{line}")
    ws = tmp_path / "ws"
    check = cli("hosts", "check", "--hosts", str(hosts), "--json", workspace=ws, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    reported = json.loads(check.stdout)["hosts"][0]["pythons"]["environment toy"]
    rows, _ = run_search(lab, probe_toy, hosts, ws)
    assert len(rows) == 2 and all(r["exit_code"] == 0 for r in rows), rows
    for which, report in probes(lab, rows):
        assert report["marker"] == str(venv)  # the venv's own packages are importable
        assert report["prefix"] == str(venv)
        # `hosts check` showed exactly the interpreter the jobs ran
        assert reported["python"] == report["executable"]
        assert reported["prefix"] == report["prefix"]
        assert which.startswith("which=") and which != "which="


def test_the_logins_bashrc_does_not_reach_jobs(lab: Lab, probe_toy: Path, tmp_path: Path
                                               ) -> None:
    host = home_host(lab, "a", 2)
    shims = tmp_path / "shims"
    shims.mkdir()
    shim = shims / "python"
    shim.write_text("#!/bin/sh\necho 'a pyenv-like shim ran instead of the job python'\n"
                    "exit 42\n")
    shim.chmod(0o755)
    (host.home / ".bashrc").write_text(f'export PATH="{shims}:$PATH"\n'
                                       "export IDEAFORGE_RC_MARKER=sourced\n"
                                       f'export BASH_ENV="{host.home}/.bashrc"\n')
    hosts = lab.hosts_toml(sleep=0.2)
    rows, _ = run_search(lab, probe_toy, hosts, tmp_path / "ws")
    assert len(rows) == 2 and all(r["exit_code"] == 0 for r in rows), rows
    for which, report in probes(lab, rows):
        env = report["environ"]
        assert "IDEAFORGE_RC_MARKER" not in env and "BASH_ENV" not in env
        assert not [k for k in env if k.startswith("SSH_")]
        assert str(shims) not in env["PATH"] and str(shims) not in which
        assert report["executable"] == sys.executable  # hosts.toml's python, not the shim
        assert env["TOY_SLEEP_S"] == "0.2"  # hosts.toml's `env` does reach the job
        assert env["HOME"] == str(host.home) and env["IDEAFORGE_METRICS"]


def test_credential_files_stay_on_this_machine_and_the_log_says_so(
        lab: Lab, probe_toy: Path, tmp_path: Path) -> None:
    secret = "hf_ideaforge_test_credential_0123456789"
    for rel in (".envrc", ".huggingface/token", "api_keys.txt", "kaggle.json"):
        (probe_toy / rel).parent.mkdir(parents=True, exist_ok=True)
        (probe_toy / rel).write_text(f"{secret}\n")
    host = lab.host("a", 2)
    rows, out = run_search(lab, probe_toy, lab.hosts_toml(), tmp_path / "ws")
    assert len(rows) == 2 and all(r["exit_code"] == 0 for r in rows), rows
    assert "held back from the hosts" in out
    for rel in (".envrc", ".huggingface/token", "api_keys.txt", "kaggle.json"):
        assert rel in out
    assert not [p for p in host.dir.rglob("*") if p.is_file()
                and secret.encode() in p.read_bytes()]
