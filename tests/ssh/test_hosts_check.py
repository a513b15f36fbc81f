"""`ideaforge hosts check` against real sshd: host keys verified, never accepted silently."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, cli
from tests.ssh.conftest import Lab


def check(hosts: Path, ws: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("hosts", "check", "--hosts", str(hosts), *extra, workspace=ws, timeout=120)


def test_check_reports_gpus_disk_python_and_foreign_busy_gpus(lab: Lab, tmp_path: Path
                                                              ) -> None:
    host = lab.host("a", 4)
    host.set_gpus(4, busy=(2,))
    hosts = lab.hosts_toml(gpus=[0, 1, 2])
    proc = check(hosts, tmp_path / "ws", "--json")
    assert proc.returncode == 0, proc.stderr
    (a,) = json.loads(proc.stdout)["hosts"]
    assert a["ok"] and a["host_key"].startswith("ssh-ed25519 SHA256:")
    assert [g["index"] for g in a["gpus"]] == [0, 1, 2, 3] and a["usable_gpus"] == [0, 1, 2]
    assert a["foreign_busy"] == [2]
    assert a["disk_free_bytes"] > 0 and a["pythons"]["host"]["version"].startswith("3.")
    text = check(hosts, tmp_path / "ws").stdout
    assert "GPUs: 4 × NVIDIA Fake H100 (80 GiB); usable 0,1,2; busy with other processes: 2" \
        in text


def test_unknown_key_is_refused_until_accepted_and_a_changed_key_always(lab: Lab,
                                                                        tmp_path: Path) -> None:
    host = lab.host("a", 4, known=False)
    hosts = lab.hosts_toml()
    ws = tmp_path / "ws"
    refused = check(hosts, ws)
    assert refused.returncode == 1
    assert "is not in" in refused.stdout and "--accept-new" in refused.stdout
    assert not lab.known_hosts.exists()  # nothing was recorded on the way
    accepted = check(hosts, ws, "--accept-new")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    recorded = lab.known_hosts.read_text()
    assert f"[127.0.0.1]:{host.port} ssh-ed25519 " in recorded
    assert check(hosts, ws).returncode == 0  # known now, without --accept-new
    host.replace_host_key(lab.keys / "host_b")
    for extra in ((), ("--accept-new",)):
        changed = check(hosts, ws, *extra)
        assert changed.returncode == 1
        assert "HOST KEY CHANGED" in changed.stdout and "refusing to connect" in changed.stdout
    assert lab.known_hosts.read_text() == recorded


def test_a_host_behind_a_jump_host(lab: Lab, tmp_path: Path) -> None:
    jump = lab.host("bastion", 0)
    target = lab.host("inner", 2)
    del lab.hosts["bastion"]  # it is a jump host, not a GPU host
    hosts = lab.hosts_toml(jump="bastion")
    text = hosts.read_text()
    hosts.write_text(text + f"""
[jump_hosts.bastion]
address = "127.0.0.1"
port = {jump.port}
identity_file = "{lab.keys / 'user'}"
known_hosts = "{lab.known_hosts}"
""")
    lab.hosts["bastion"] = jump
    proc = check(hosts, tmp_path / "ws", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(proc.stdout)["hosts"]
    assert row["name"] == "inner" and row["via"] == "bastion"
    assert row["address"] == f"127.0.0.1:{target.port}" and row["usable_gpus"] == [0, 1]


@pytest.mark.parametrize("body, needles", [
    ('[[hosts]]\nname = "a"\n', ["host 'a'", "'address'", "is missing"]),
    ('[[hosts]]\nname = "a"\naddress = "h"\nport = 70000\n', ["host 'a'", "'port'", "65535"]),
    ('[[hosts]]\nname = "a"\naddres = "h"\n', ["host 'a'", "'addres'", "did you mean 'address'"]),
    ('[[hosts]]\nname = "a"\naddress = "h"\ngpus = "some"\n', ["host 'a'", "'gpus'"]),
    ('[[hosts]]\nname = "a"\naddress = "h"\nidentity_file = "/nope/key"\n',
     ["host 'a'", "'identity_file'", "/nope/key"]),
    ('[[hosts]]\nname = "a"\naddress = "h"\njump = "gw"\n', ["host 'a'", "'jump'", "'gw'"]),
    ('[[hosts]]\nname = "a"\naddress = "h"\nenv = { WANDB_API_KEY = "x" }\n',
     ["host 'a'", "'env.WANDB_API_KEY'", "secret"]),
    ('[[hosts]]\nname = "a"\naddress = "h"\n[[hosts]]\nname = "a"\naddress = "g"\n',
     ["host 'a'", "'name'", "unique"]),
    ('[[hosts]]\nname = "a"\naddress = "h"\nworkdir = "relative/dir"\n',
     ["host 'a'", "'workdir'"]),
    ('[scheduling]\nmax_attempts = 0\n[[hosts]]\nname = "a"\naddress = "h"\n',
     ["[scheduling]", "'max_attempts'"]),
    (('[[hosts]]\nname = "a"\naddress = "h"\n[hosts.environments.toy]\npython = "/p/python"\n'
      'venv = "/v"\n'), ["host 'a'", "'environments.toy.venv'", "only one"]),
    ("[[hosts]\n", ["not valid TOML"]),
])
def test_bad_hosts_file_names_file_host_and_field(body: str, needles: list[str],
                                                  tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(body)
    proc = check(path, tmp_path / "ws")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(path) in proc.stderr
    for needle in needles:
        assert needle in proc.stderr


def test_the_example_hosts_file_is_valid() -> None:
    from engine.executors.hosts import load

    hosts = load(REPO / "hosts.toml.example", check_files=False)
    assert len(hosts.hosts) >= 2 and any(h.jump for h in hosts.hosts)
    assert any(h.environments for h in hosts.hosts)


def test_check_lists_what_an_environment_holds_back(lab: Lab, tmp_path: Path) -> None:
    import shutil

    from tests.conftest import TOY

    env_dir = tmp_path / "toy"
    shutil.copytree(TOY, env_dir)
    for rel in (".envrc", "kaggle.json", "tokenizer.py"):
        (env_dir / rel).write_text("x\n")
    lab.host("a", 1)
    hosts = lab.hosts_toml()
    proc = check(hosts, tmp_path / "ws", "--env", str(env_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "held back (they look like credentials; list them under `ship`" in proc.stdout
    assert ".envrc, kaggle.json" in proc.stdout and "tokenizer.py" not in proc.stdout
    (env,) = json.loads(check(hosts, tmp_path / "ws", "--env", str(env_dir), "--json")
                        .stdout)["environments"]
    assert env["held_back"] == [".envrc", "kaggle.json"] and env["shipped"] == 4 + 8
    missing = check(hosts, tmp_path / "ws", "--env", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "unknown environment" in missing.stderr
