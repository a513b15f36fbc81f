"""Real sshd instances on 127.0.0.1 for the SSH executor's tests.

Each `SshdHost` is a private sshd (its own config, host key, port, PID file) whose sessions get
a fake `nvidia-smi` first on PATH, reporting as many GPUs as the test asks for. Keys are
generated once per session with ssh-keygen. Every process started here is ended by its pid.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

FAKE_SMI = '''#!{python}
"""A fake nvidia-smi: GPUs and busy GPUs from gpus.json beside it."""
import json, os, sys
cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpus.json")))
args = " ".join(sys.argv[1:])
if "--query-gpu" in args:
    for i in range(cfg["count"]):
        used = 30000 if i in cfg.get("busy", []) else 0
        print(f"{{i}}, GPU-fake-{{cfg['name']}}-{{i}}, NVIDIA Fake H100, 81559, {{used}}")
elif "--query-compute-apps" in args:
    for i in cfg.get("busy", []):
        print(f"GPU-fake-{{cfg['name']}}-{{i}}, 1")  # pid 1: a process ideaforge did not start
else:
    print("fake nvidia-smi")
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ideaforge-test",
                    "-f", str(path)], check=True)


class SshdHost:
    def __init__(self, root: Path, name: str, user_pub: Path, host_key: Path, gpus: int
                 ) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.workdir = self.dir / "work"
        self.port = _free_port()
        self.host_key = host_key
        self.fakebin = self.dir / "fakebin"
        self.fakebin.mkdir()
        smi = self.fakebin / "nvidia-smi"
        smi.write_text(FAKE_SMI.format(python=sys.executable))
        smi.chmod(smi.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.set_gpus(gpus)
        shutil.copy(user_pub, self.dir / "authorized_keys")
        self.proc: subprocess.Popen[bytes] | None = None

    def set_gpus(self, count: int, busy: tuple[int, ...] = ()) -> None:
        (self.fakebin / "gpus.json").write_text(json.dumps({"count": count, "busy": list(busy),
                                                            "name": self.name}))

    def config(self) -> Path:
        path = self.dir / "sshd_config"
        path.write_text(textwrap.dedent(f"""\
            Port {self.port}
            ListenAddress 127.0.0.1
            HostKey {self.host_key}
            PidFile {self.dir / "sshd.pid"}
            AuthorizedKeysFile {self.dir / "authorized_keys"}
            StrictModes no
            UsePAM no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PubkeyAuthentication yes
            PermitRootLogin prohibit-password
            AllowTcpForwarding yes
            AllowAgentForwarding no
            X11Forwarding no
            MaxSessions 100
            MaxStartups 100
            LogLevel ERROR
            SetEnv PATH={self.fakebin}:/usr/local/bin:/usr/bin:/bin
            """))
        return path

    def start(self) -> None:
        with open(self.dir / "sshd.log", "ab") as err:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config())],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
            time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        """Stop the listener and every session it forked (the host drops off the network)."""
        if self.proc is None:
            return
        children = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

    def replace_host_key(self, key: Path) -> None:
        self.stop()
        self.host_key = key
        self.start()


def _children(pid: int) -> list[int]:
    """The sshd session processes forked by the listener `pid` (never a job: a job runs in
    its own session, and only processes named sshd are taken)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    head, rest = fh.read().rsplit(")", 1)
            except OSError:
                continue
            if int(rest.split()[1]) == parent and head.split("(", 1)[1] == "sshd":
                found.append(int(entry))
                frontier.append(int(entry))
    return found


class Lab:
    """Keys, sshd hosts and hosts.toml files of one test."""

    def __init__(self, root: Path, keys: Path) -> None:
        self.root = root
        self.keys = keys
        self.hosts: dict[str, SshdHost] = {}
        self.known_hosts = root / "known_hosts"
        self.engines: list[subprocess.Popen[str]] = []

    def track(self, engine: subprocess.Popen[str]) -> subprocess.Popen[str]:
        """An engine this test started: killed at the end if the test left it running."""
        self.engines.append(engine)
        return engine

    def host(self, name: str, gpus: int = 4, *, known: bool = True) -> SshdHost:
        h = SshdHost(self.root / "hosts", name, self.keys / "user.pub", self.keys / "host_a",
                     gpus)
        h.start()
        self.hosts[name] = h
        if known:
            pub = (self.keys / "host_a.pub").read_text().split()
            with open(self.known_hosts, "a") as fh:
                fh.write(f"[127.0.0.1]:{h.port} {pub[0]} {pub[1]}\n")
        return h

    def hosts_toml(self, *, sleep: float = 0.1, extra_host: str = "", scheduling: str = "",
                   **fields: object) -> Path:
        """hosts.toml for every host; `sleep`: the toy job's run time (jobs get their
        environment from the host and hosts.toml, never from the engine's)."""
        lines = []
        if scheduling:
            lines += ["[scheduling]", scheduling, ""]
        for h in self.hosts.values():
            lines += ["[[hosts]]", f'name = "{h.name}"', 'address = "127.0.0.1"',
                      f"port = {h.port}", f'user = "{getpass.getuser()}"',
                      f'identity_file = "{self.keys / "user"}"',
                      f'known_hosts = "{self.known_hosts}"', f'workdir = "{h.workdir}"',
                      f'python = "{sys.executable}"', "poll_interval = 0.5",
                      "unreachable_after = 2", f'env = {{ TOY_SLEEP_S = "{sleep}" }}']
            lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
            lines += [extra_host, ""]
        path = self.root / "hosts.toml"
        path.write_text("\n".join(lines))
        return path

    def close(self) -> None:
        for engine in self.engines:
            if engine.poll() is None:
                engine.kill()
                engine.wait()
        for h in self.hosts.values():
            h.stop()


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(SSHD).exists() or not shutil.which("ssh-keygen"):
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    keys = tmp_path_factory.mktemp("keys")
    for name in ("user", "host_a", "host_b"):
        _keygen(keys / name)
    return keys


@pytest.fixture
def lab(tmp_path: Path, ssh_keys: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, ssh_keys)
    try:
        yield lab
    finally:
        lab.close()


# ---------------------------------------------------------------------------------------------
# the toy environment with GPU profiles, and reading the workspace database

#: Prints where and on which GPUs the job really ran, and when (host clock), around the toy run.
TRACED = ('echo \\"ran on $IDEAFORGE_HOST gpus=$CUDA_VISIBLE_DEVICES from $(date +%s.%N)\\"; '
          'python train.py; code=$?; echo \\"until $(date +%s.%N)\\"; exit $code')

EXTRA_PROFILES = f'''
[profiles.gpu1]
command = "{TRACED}"
gpus = 1
timeout = 60
setup = "echo \\"$(pwd)\\" >> \\"$IDEAFORGE_DATA_DIR/setup-runs\\""

[profiles.badsetup]
command = "python train.py"
gpus = 1
timeout = 60
setup = "echo 'cannot fetch the data' >&2; exit 7"

[profiles.gpu4]
command = "{TRACED}"
gpus = 4
timeout = 60

[profiles.short]
command = "python train.py"
gpus = 1
timeout = 3

[profiles.group]
command = "sleep 600 & python train.py"
gpus = 1
timeout = 60

[profiles.group_known]
command = "sleep 600 & python train.py"
gpus = 1
timeout = 60
baseline = 5.0

[profiles.short_known]
command = "python train.py"
gpus = 1
timeout = 3
baseline = 5.0
'''


@pytest.fixture
def gpu_toy(tmp_path: Path) -> Path:
    from tests.conftest import TOY

    dest = tmp_path / "toyenv"
    shutil.copytree(TOY, dest)
    with open(dest / "environment.toml", "a") as fh:
        fh.write(EXTRA_PROFILES)
    return dest


def db_rows(ws: Path, sql: str, *params: object) -> list[tuple]:
    import sqlite3

    if not (ws / "ideaforge.db").exists():
        return []
    con = sqlite3.connect(ws / "ideaforge.db", timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def jobs(ws: Path) -> list[dict]:
    cols = ["id", "search_id", "idea_id", "attempt", "host", "gpus", "state", "reason",
            "job_dir", "exit_code", "log_tail", "metrics_offset", "log_offset", "started_at",
            "finished_at"]
    return [dict(zip(cols, r, strict=True))
            for r in db_rows(ws, f"SELECT {', '.join(cols)} FROM job ORDER BY id")]


# ---------------------------------------------------------------------------------------------
# a host whose logins have a HOME of their own (a test may give it shell start-up files)


class HomeSshdHost(SshdHost):
    """An sshd host whose sessions get `home` as HOME, so a test can write its ~/.bashrc
    without touching the real user's."""

    def __init__(self, root: Path, name: str, user_pub: Path, host_key: Path, gpus: int
                 ) -> None:
        super().__init__(root, name, user_pub, host_key, gpus)
        self.home = self.dir / "home"
        self.home.mkdir()

    def config(self) -> Path:
        path = super().config()
        text = path.read_text().replace("SetEnv PATH=", f"SetEnv HOME={self.home} PATH=", 1)
        path.write_text(text)
        return path


def home_host(lab: Lab, name: str, gpus: int = 4) -> HomeSshdHost:
    """Like `lab.host`, with a HOME of its own (`host.home`)."""
    h = HomeSshdHost(lab.root / "hosts", name, lab.keys / "user.pub", lab.keys / "host_a", gpus)
    h.start()
    lab.hosts[name] = h
    pub = (lab.keys / "host_a.pub").read_text().split()
    with open(lab.known_hosts, "a") as fh:
        fh.write(f"[127.0.0.1]:{h.port} {pub[0]} {pub[1]}\n")
    return h


def finish(engine: subprocess.Popen[str], timeout: float = 90) -> str:
    """The engine's output once it has exited 0 (its output in the failure otherwise)."""
    try:
        out, _ = engine.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        engine.kill()
        out, _ = engine.communicate()
        raise AssertionError(f"the engine did not finish in {timeout} s:\n{out}") from None
    assert engine.returncode == 0, out
    return out


def remote_dir(lab: Lab, job: dict) -> Path:
    """A job's attempt directory on its (test) host."""
    return lab.hosts[job["host"]].workdir / job["job_dir"]
