"""SSH to GPU hosts: the only module that uses paramiko.

- `Connection`: one verified SSH connection (optionally through a jump host) that runs
  commands over exec channels. Host keys are always checked against the host's known_hosts
  file (RejectPolicy); `accept_new=True` (only `ideaforge hosts check --accept-new`) records a
  key that is *unknown*, never one that *changed*. No agent forwarding is ever requested.
- `RemoteHost`: ideaforge's files on one host (the shipped runner and host agent, under the
  host's workdir) and calls to the agent: JSON in on stdin, JSON out on stdout, nothing secret
  on a command line.
- `executor_from_hosts(path, store)`: the SSH executor for `ideaforge run --hosts FILE`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import select
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from engine.executors import attempt_dir, hostagent, runner
from engine.executors.hosts import Endpoint, HostConfig, load

log = logging.getLogger(__name__)
logging.getLogger("paramiko").setLevel(logging.WARNING)

KEEPALIVE_S = 15


class SshError(RuntimeError):
    """A host cannot be reached or a remote call failed; the message is one line."""


class HostKeyError(SshError):
    """A host's key is unknown or changed: never retried, never accepted silently."""


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"host {self.ep.name}: the key of {hostname} ({key.get_name()} {fingerprint(key)}) "
            f"is not in {self.ep.known_hosts_path()}; check that fingerprint on the host "
            "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then record it with "
            "`ideaforge hosts check --accept-new`")


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Record an unknown key (the researcher asked for it); a changed key still fails."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        path = self.ep.known_hosts_path()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line)
        log.warning("host %s: recorded new host key %s %s for %s in %s", self.ep.name,
                    key.get_name(), fingerprint(key), hostname, path)


@dataclass
class Traffic:
    """Bytes that crossed a connection's exec channels (for the benchmark and `hosts check`)."""

    sent: int = 0
    received: int = 0
    calls: int = 0


class Connection:
    def __init__(self, ep: Endpoint, *, accept_new: bool = False) -> None:
        self.ep = ep
        self.accept_new = accept_new
        self.client: paramiko.SSHClient | None = None
        self.jump: Connection | None = None
        self.host_key: str | None = None
        self.traffic = Traffic()
        self._lock = threading.Lock()

    # -- connecting ------------------------------------------------------------------------
    def open(self, via: Endpoint | None = None) -> Connection:
        ep = self.ep
        sock: Any = None
        if via is not None:
            self.jump = Connection(via, accept_new=self.accept_new).open()
            transport = self.jump.client.get_transport() if self.jump.client else None
            if transport is None:
                raise SshError(f"host {ep.name}: jump host {via.name} closed the connection")
            try:
                sock = transport.open_channel("direct-tcpip", (ep.address, ep.port),
                                              ("127.0.0.1", 0), timeout=ep.connect_timeout)
            except (paramiko.SSHException, OSError) as exc:
                self.close()
                raise SshError(f"host {ep.name}: jump host {via.name} cannot reach "
                               f"{ep.address}:{ep.port}: {exc}") from None
        client = paramiko.SSHClient()
        kh = ep.known_hosts_path()
        if kh.is_file():
            try:
                client.load_host_keys(str(kh))
            except (OSError, paramiko.SSHException) as exc:
                raise SshError(f"host {ep.name}: cannot read known_hosts {kh}: {exc}") from None
        client.set_missing_host_key_policy(_AcceptNew(ep) if self.accept_new
                                           else _RejectUnknown(ep))
        identity = ep.identity_path()
        try:
            client.connect(
                ep.address, port=ep.port, username=ep.login_user(),
                key_filename=str(identity) if identity else None,
                allow_agent=identity is None, look_for_keys=False,
                timeout=ep.connect_timeout, banner_timeout=ep.connect_timeout,
                auth_timeout=ep.connect_timeout, sock=sock,
            )
        except HostKeyError:
            self.close()
            raise
        except paramiko.BadHostKeyException as exc:
            self.close()
            raise HostKeyError(
                f"host {ep.name}: HOST KEY CHANGED for {known_hosts_name(ep.address, ep.port)}: "
                f"it offered {exc.key.get_name()} {fingerprint(exc.key)}, {kh} holds "
                f"{fingerprint(exc.expected_key)}; refusing to connect. If the host was "
                f"reinstalled, remove the old line (ssh-keygen -R "
                f"'{known_hosts_name(ep.address, ep.port)}' -f {kh}) and check again") from None
        except paramiko.PasswordRequiredException:
            self.close()
            raise SshError(f"host {ep.name}: identity_file {identity} is encrypted; load it "
                           "into ssh-agent and leave identity_file out") from None
        except paramiko.AuthenticationException as exc:
            self.close()
            raise SshError(f"host {ep.name}: authentication as {ep.login_user()!r} failed "
                           f"({exc}); check user and identity_file") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise SshError(f"host {ep.name}: cannot connect to {ep.address}:{ep.port}: "
                           f"{exc or type(exc).__name__}") from None
        transport = client.get_transport()
        if transport is None:
            raise SshError(f"host {ep.name}: connection closed during login")
        transport.set_keepalive(KEEPALIVE_S)
        key = transport.get_remote_server_key()
        self.host_key = f"{key.get_name()} {fingerprint(key)}"
        self.client = client
        return self

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport() if self.client else None
        return bool(transport and transport.is_active())

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.jump is not None:
            self.jump.close()
            self.jump = None

    # -- running ---------------------------------------------------------------------------
    def run(self, command: str, stdin: bytes = b"", timeout: float = 60.0
            ) -> tuple[int, bytes, bytes]:
        """Run `command` on the host; (exit status, stdout, stderr). Raises SshError."""
        transport = self.client.get_transport() if self.client else None
        if transport is None or not transport.is_active():
            raise SshError(f"host {self.ep.name}: not connected")
        try:
            chan = transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"host {self.ep.name}: cannot open a channel: {exc}") from None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                done = chan.exit_status_ready() and chan.eof_received
                if done and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not done:
                    # The connection died under us (sshd killed, host rebooted): the output
                    # may be cut short and no status may come, so do not wait out the timeout.
                    raise SshError(f"host {self.ep.name}: connection closed during a call")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SshError(f"host {self.ep.name}: no answer within {timeout:.0f} s")
                if chan.eof_received:
                    chan.status_event.wait(min(left, 1.0))  # output done; the status follows
                else:
                    select.select([chan], [], [], min(left, 1.0))
            code = chan.recv_exit_status()
        except (TimeoutError, paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"host {self.ep.name}: connection broke: "
                           f"{exc or type(exc).__name__}") from None
        finally:
            chan.close()
        with self._lock:
            self.traffic.calls += 1
            self.traffic.sent += len(command) + len(stdin)
            self.traffic.received += len(out) + len(err)
        return code, bytes(out), bytes(err)


# ---------------------------------------------------------------------------------------------
# ideaforge's files and calls on one host


def _source(module: Any) -> bytes:
    return Path(module.__file__).read_bytes()


AGENT_SRC = _source(hostagent)
RUNNER_SRC = _source(runner)
#: What is installed on each host, by file name: the agent imports attempt_dir from its folder.
HOST_FILES = {"agent.py": AGENT_SRC, "attempt_dir.py": _source(attempt_dir),
              "runner.py": RUNNER_SRC}
#: One folder per version of them (content hash), so an upgrade installs beside the old.
HOST_BIN = "bin/" + hashlib.sha256(b"".join(
    name.encode() + b"\0" + data for name, data in sorted(HOST_FILES.items()))).hexdigest()[:12]


class RemoteHost:
    """Calls to one host's agent over an open connection."""

    def __init__(self, cfg: HostConfig, conn: Connection) -> None:
        self.cfg = cfg
        self.conn = conn
        self.workdir = cfg.workdir
        self.home = ""
        #: action → [calls, bytes sent, bytes received, most bytes sent by one call]
        self.stats: dict[str, list[int]] = {}
        self.poller = PollChannel(self)

    @property
    def agent(self) -> str:
        return f"{self.workdir}/{HOST_BIN}/agent.py"

    @property
    def runner(self) -> str:
        return f"{self.workdir}/{HOST_BIN}/runner.py"

    def path(self, *parts: str) -> str:
        return "/".join([self.workdir, *parts])

    def bootstrap(self) -> None:
        """Resolve the workdir and install the agent and runner (once per version of them)."""
        code, out, err = self.conn.run('printf "%s" "$HOME"', timeout=30)
        if code != 0:
            raise SshError(f"host {self.cfg.name}: a plain command failed (exit {code}): "
                           f"{err.decode('utf-8', 'replace')[:200]}")
        self.home = out.decode().strip()
        if self.cfg.workdir.startswith("~/"):
            self.workdir = self.home.rstrip("/") + self.cfg.workdir[1:]
        q = shlex.quote
        folder = self.path(HOST_BIN)
        present = " && ".join(f"test -f {q(folder + '/' + name)}" for name in HOST_FILES)
        code, out, _ = self.conn.run(f"{present} && echo present", timeout=30)
        if out.strip() == b"present":
            return
        # The agent last: its presence with the others' is what "installed" means above.
        for name, data in sorted(HOST_FILES.items(), key=lambda kv: kv[0] == "agent.py"):
            final = f"{folder}/{name}"
            tmp = f"{final}.tmp{os.getpid()}"
            code, _, err = self.conn.run(
                f"mkdir -p {q(folder)} && cat > {q(tmp)} && mv -f {q(tmp)} {q(final)}",
                stdin=data, timeout=60)
            if code != 0:
                raise SshError(f"host {self.cfg.name}: cannot install {name} under "
                               f"{self.workdir}: {err.decode('utf-8', 'replace')[:200]}")
        log.info("host %s: installed the runner and agent under %s", self.cfg.name,
                 self.workdir)

    def poll(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A batched poll over the connection's long-lived agent (see `PollChannel`)."""
        return self.poller.call(request, timeout)

    def call(self, action: str, request: dict[str, Any] | None = None, *,
             stdin: bytes | None = None, args: tuple[str, ...] = (), timeout: float = 60.0
             ) -> dict[str, Any]:
        q = shlex.quote
        command = " ".join([q(self.cfg.python), "-S", q(self.agent), action,
                            *(q(a) for a in args)])
        data = stdin if stdin is not None else json.dumps(request or {}).encode()
        code, out, err = self.conn.run(command, stdin=data, timeout=timeout)
        st = self.stats.setdefault(action, [0, 0, 0, 0])
        sent = len(command) + len(data)
        st[0] += 1
        st[1] += sent
        st[2] += len(out) + len(err)
        st[3] = max(st[3], sent)
        if code != 0:
            raise SshError(f"host {self.cfg.name}: agent {action} failed (exit {code}): "
                           f"{err.decode('utf-8', 'replace').strip()[-300:]}")
        try:
            reply = json.loads(out)
        except ValueError:
            raise SshError(f"host {self.cfg.name}: agent {action} answered something that is "
                           f"not JSON: {out[:120]!r}") from None
        if not isinstance(reply, dict):
            raise SshError(f"host {self.cfg.name}: agent {action} answered {type(reply)}")
        return reply


class PollChannel:
    """One long-lived `agent serve` per connection: a poll is a JSON line each way on it."""

    def __init__(self, remote: RemoteHost) -> None:
        self.remote = remote
        self.chan: paramiko.Channel | None = None
        self.buffer = bytearray()

    def _open(self) -> paramiko.Channel:
        transport = self.remote.conn.client.get_transport() if self.remote.conn.client else None
        if transport is None or not transport.is_active():
            raise SshError(f"host {self.remote.cfg.name}: not connected")
        q = shlex.quote
        try:
            chan = transport.open_session(timeout=30)
            chan.exec_command(f"{q(self.remote.cfg.python)} -S {q(self.remote.agent)} serve")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"host {self.remote.cfg.name}: cannot start the agent: {exc}"
                           ) from None
        self.buffer.clear()
        return chan

    def call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        name = self.remote.cfg.name
        if self.chan is None or self.chan.closed:
            self.chan = self._open()
        chan = self.chan
        line = (json.dumps(request) + "\n").encode()
        deadline = time.monotonic() + timeout
        try:
            chan.sendall(line)
            while b"\n" not in self.buffer:
                if chan.recv_ready():
                    self.buffer += chan.recv(1 << 16)
                    continue
                if chan.closed or chan.exit_status_ready() or chan.eof_received:
                    err = chan.recv_stderr(4096) if chan.recv_stderr_ready() else b""
                    raise SshError(f"host {name}: the agent stopped: "
                                   f"{err.decode('utf-8', 'replace').strip()[-300:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SshError(f"host {name}: no answer to a poll within {timeout:.0f} s")
                select.select([chan], [], [], min(left, 1.0))
        except (TimeoutError, paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise SshError(f"host {name}: connection broke: {exc or type(exc).__name__}"
                           ) from None
        except SshError:
            self.close()
            raise
        end = self.buffer.index(b"\n")
        raw = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        st = self.remote.stats.setdefault("poll", [0, 0, 0, 0])
        st[0] += 1
        st[1] += len(line)
        st[2] += len(raw) + 1
        st[3] = max(st[3], len(line))
        try:
            reply = json.loads(raw)
        except ValueError:
            self.close()
            raise SshError(f"host {name}: the agent answered something that is not JSON: "
                           f"{raw[:120]!r}") from None
        if not isinstance(reply, dict) or "error" in reply:
            raise SshError(f"host {name}: poll failed: {reply}")
        return reply

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()
            self.chan = None


def connect(cfg: HostConfig, *, accept_new: bool = False) -> RemoteHost:
    """Open a verified connection to a host and make its agent ready."""
    conn = Connection(cfg, accept_new=accept_new).open(via=cfg.jump)
    remote = RemoteHost(cfg, conn)
    try:
        remote.bootstrap()
    except SshError:
        conn.close()
        raise
    return remote


def executor_from_hosts(path: Path, store: Any) -> Any:
    """The SSH executor over every host of `path` (hosts.toml); the Slurm executor when the
    file has a `[slurm]` table instead."""
    hosts = load(path)
    if hosts.slurm is not None:
        from engine.executors.slurm import executor_from_config

        return executor_from_config(hosts, store)
    from engine.executors.sshfleet import SshFleet  # it imports this module: import it late

    return SshFleet(hosts, store)
