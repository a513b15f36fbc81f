"""How the Slurm executor reaches its cluster: Slurm's commands and the shared workdir.

One small interface, two ways:
- `LocalAccess`: ideaforge runs on a login node; commands are subprocesses and the workdir
  is this machine's filesystem.
- `SshAccess`: `[slurm] login = "user@host"`; ONE SSH connection (engine/executors/ssh.py:
  keys, known_hosts checks, jump hosts) runs the commands over exec channels and reads and
  writes the workdir over SFTP on that same connection, reconnecting when it drops.

Every method takes a path on the cluster (a str). A command that fails raises `SlurmError`
with Slurm's words; a cluster that cannot be reached raises `SlurmError(unreachable=True)`,
for files too (the engine then concludes nothing and asks again later).
"""

from __future__ import annotations

import getpass
import json
import os
import posixpath
import shlex
import shutil
import stat
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.executors.slurm_cli import UNREACHABLE_WORDS, SlurmError

if TYPE_CHECKING:
    from engine.executors.hosts import Endpoint


def _failed(args: Sequence[str], code: int, out: str, err: str) -> SlurmError:
    said = " ".join((err or out).split())[:400] or "no message"
    return SlurmError(f"{args[0]} failed (exit {code}): {said}",
                      unreachable=any(w in said.lower() for w in UNREACHABLE_WORDS))


class ClusterAccess:
    """Slurm's commands and the cluster's files; see the module's docstring."""

    where = "here"  # said in messages: "here" or "on LOGIN"

    def run(self, args: Sequence[str], env: dict[str, str] | None = None,
            timeout: float = 30.0) -> str:
        raise NotImplementedError

    def which(self, command: str) -> bool:
        raise NotImplementedError

    def user(self) -> str:
        """The cluster user whose jobs squeue lists."""
        return os.environ.get("USER") or getpass.getuser()

    def expand(self, path: str) -> str:
        """`~/x` → the cluster user's home; other paths as they are."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def mtime(self, path: str) -> float | None:
        raise NotImplementedError

    def read_bytes(self, path: str, offset: int = 0, tail: int | None = None) -> bytes:
        """From `offset` on, or only the last `tail` bytes; b"" for a missing file."""
        raise NotImplementedError

    def write_text(self, path: str, text: str) -> None:
        """Atomically (a temporary file renamed), its folder made first."""
        raise NotImplementedError

    def touch(self, path: str) -> None:
        raise NotImplementedError

    def unlink(self, path: str) -> None:
        raise NotImplementedError

    def makedirs(self, path: str) -> None:
        raise NotImplementedError

    def put_tree(self, local: Path, remote: str, last: str = "") -> None:
        """Copy the folder `local` to `remote` (the same place where they are one), the file
        `last` written last (the runner trusts a folder only once it is there)."""
        raise NotImplementedError

    def read_text(self, path: str) -> str:
        """The file's text; FileNotFoundError when it is missing."""
        if not self.exists(path):
            raise FileNotFoundError(path)
        return self.read_bytes(path).decode("utf-8", "replace")

    def close(self) -> None:
        pass


class LocalAccess(ClusterAccess):
    """ideaforge on a login node: subprocesses and this machine's files."""

    def run(self, args: Sequence[str], env: dict[str, str] | None = None,
            timeout: float = 30.0) -> str:
        try:
            proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                                  env=env, check=False, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise SlurmError(f"{args[0]} is not installed here (not on PATH): run ideaforge "
                             "on a login node of the cluster, or set [slurm] login",
                             unreachable=True) from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{args[0]} did not answer within {timeout:.0f} s",
                             unreachable=True) from None
        if proc.returncode != 0:
            raise _failed(args, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def which(self, command: str) -> bool:
        return shutil.which(command) is not None

    def expand(self, path: str) -> str:
        return os.path.expanduser(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def mtime(self, path: str) -> float | None:
        try:
            return os.stat(path).st_mtime
        except OSError:
            return None

    def read_bytes(self, path: str, offset: int = 0, tail: int | None = None) -> bytes:
        try:
            with open(path, "rb") as fh:
                if tail is not None:
                    fh.seek(max(0, os.fstat(fh.fileno()).st_size - tail))
                else:
                    fh.seek(offset)
                return fh.read()
        except FileNotFoundError:
            return b""

    def write_text(self, path: str, text: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    def touch(self, path: str) -> None:
        Path(path).touch()

    def unlink(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def put_tree(self, local: Path, remote: str, last: str = "") -> None:
        if os.path.realpath(local) != os.path.realpath(remote):
            shutil.copytree(local, remote, dirs_exist_ok=True, symlinks=True)


class SshAccess(ClusterAccess):
    """`[slurm] login`: one SSH connection to the login node for commands and files."""

    def __init__(self, login: Endpoint, jump: Endpoint | None = None, *,
                 accept_new: bool = False) -> None:
        self.login, self.jump, self.accept_new = login, jump, accept_new
        self.where = f"on {login.login_user()}@{login.address}"
        self._conn: Any = None
        self._sftp: Any = None
        self._home: str | None = None
        self._lock = threading.RLock()  # the poller's squeue and the engine's files share it
        self.host_key: str | None = None

    def user(self) -> str:
        return self.login.login_user()

    # -- the connection ------------------------------------------------------------------
    def _connection(self) -> Any:
        from engine.executors.ssh import Connection, SshError

        if self._conn is not None and self._conn.alive:
            return self._conn
        self.close()
        try:
            self._conn = Connection(self.login, accept_new=self.accept_new).open(via=self.jump)
        except SshError as exc:  # (a host key problem included: its message says the fix)
            raise SlurmError(f"login node {self.login.address}: {exc}", unreachable=True
                             ) from None
        self.host_key = self._conn.host_key
        return self._conn

    def _files(self) -> Any:
        if self._sftp is None or self._conn is None or not self._conn.alive:
            conn = self._connection()
            try:
                self._sftp = conn.client.open_sftp()
            except Exception as exc:  # noqa: BLE001 - paramiko's SSHException, EOFError, OSError
                self.close()
                raise SlurmError(f"login node {self.login.address}: SFTP does not open: {exc}",
                                 unreachable=True) from None
        return self._sftp

    def _sftp_call(self, what: str, fn: Any) -> Any:
        """fn(sftp); FileNotFoundError passes; a broken connection is unreachable."""
        with self._lock:
            sftp = self._files()
            try:
                return fn(sftp)
            except FileNotFoundError:
                raise
            except OSError as exc:
                if isinstance(exc, PermissionError):
                    raise
                self.close()
                raise SlurmError(f"login node {self.login.address}: {what}: {exc}",
                                 unreachable=True) from None
            except Exception as exc:  # noqa: BLE001 - paramiko's SSHException, EOFError
                self.close()
                raise SlurmError(f"login node {self.login.address}: {what}: "
                                 f"{exc or type(exc).__name__}", unreachable=True) from None

    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:  # noqa: BLE001, S110 - closing a channel that may be dead
                    pass
                self._sftp = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- commands ------------------------------------------------------------------------
    def run(self, args: Sequence[str], env: dict[str, str] | None = None,
            timeout: float = 30.0) -> str:
        """The command through the login user's shell (Slurm's commands must be on the PATH
        a non-interactive ssh session gets). `env` is not sent: the job inherits the login
        node's environment."""
        from engine.executors.ssh import SshError

        line = " ".join(shlex.quote(a) for a in args)
        with self._lock:
            conn = self._connection()
        try:
            code, out, err = conn.run(line, timeout=timeout)
        except SshError as exc:
            self.close()
            raise SlurmError(f"login node {self.login.address}: {args[0]}: {exc}",
                             unreachable=True) from None
        text_out, text_err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        if code == 127:
            raise SlurmError(f"{args[0]} is not installed {self.where} (not on its PATH): "
                             "load Slurm's module in that user's ~/.bash_profile",
                             unreachable=True)
        if code != 0:
            raise _failed(args, code, text_out, text_err)
        return text_out

    def which(self, command: str) -> bool:
        try:
            self.run(["sh", "-c", f"command -v {shlex.quote(command)}"])
        except SlurmError as exc:
            if "not installed" in str(exc) or not exc.unreachable:
                return False
            raise
        return True

    # -- files ---------------------------------------------------------------------------
    def expand(self, path: str) -> str:
        if not path.startswith("~"):
            return path
        if self._home is None:
            self._home = self._sftp_call("home", lambda s: s.normalize("."))
        return posixpath.join(self._home, path[2:]) if path.startswith("~/") else self._home

    def exists(self, path: str) -> bool:
        return self.mtime(path) is not None

    def mtime(self, path: str) -> float | None:
        try:
            return float(self._sftp_call(f"stat {path}", lambda s: s.stat(path).st_mtime))
        except FileNotFoundError:
            return None

    def read_bytes(self, path: str, offset: int = 0, tail: int | None = None) -> bytes:
        def read(sftp: Any) -> bytes:
            with sftp.open(path, "rb") as fh:
                if tail is not None:
                    fh.seek(max(0, fh.stat().st_size - tail))
                else:
                    fh.seek(offset)
                fh.prefetch()
                return bytes(fh.read())
        try:
            return bytes(self._sftp_call(f"read {path}", read))
        except FileNotFoundError:
            return b""

    def write_text(self, path: str, text: str) -> None:
        self.makedirs(posixpath.dirname(path))
        tmp = f"{path}.tmp-{os.getpid()}"

        def write(sftp: Any) -> None:
            with sftp.open(tmp, "wb") as fh:
                fh.write(text.encode())
            sftp.posix_rename(tmp, path)
        self._sftp_call(f"write {path}", write)

    def touch(self, path: str) -> None:
        def touch(sftp: Any) -> None:
            with sftp.open(path, "ab"):
                pass
        self._sftp_call(f"touch {path}", touch)

    def unlink(self, path: str) -> None:
        try:
            self._sftp_call(f"remove {path}", lambda s: s.remove(path))
        except FileNotFoundError:
            pass

    def makedirs(self, path: str) -> None:
        def make(sftp: Any) -> None:
            missing = []
            p = path
            while p not in ("", "/"):
                try:
                    if stat.S_ISDIR(sftp.stat(p).st_mode):
                        break
                except FileNotFoundError:
                    missing.append(p)
                p = posixpath.dirname(p)
            for folder in reversed(missing):
                try:
                    sftp.mkdir(folder)
                except OSError:
                    if not stat.S_ISDIR(sftp.stat(folder).st_mode):
                        raise
        self._sftp_call(f"mkdir {path}", make)

    def put_tree(self, local: Path, remote: str, last: str = "") -> None:
        self.makedirs(remote)
        later = []
        for folder, dirs, names in os.walk(local):
            rel = os.path.relpath(folder, local)
            target = remote if rel == "." else posixpath.join(remote, *Path(rel).parts)
            if rel != ".":
                self.makedirs(target)
            for name in names:
                src, dst = os.path.join(folder, name), posixpath.join(target, name)
                if rel == "." and name == last:
                    later.append((src, dst))
                    continue
                self._put(src, dst)
        for src, dst in later:
            self._put(src, dst)

    def _put(self, src: str, dst: str) -> None:
        mode = os.stat(src).st_mode

        def put(sftp: Any) -> None:
            sftp.put(src, dst)
            sftp.chmod(dst, stat.S_IMODE(mode))
        if os.path.islink(src):
            return  # (an environment's links are not the job's to follow)
        self._sftp_call(f"copy {dst}", put)


def access_for(cfg: Any, *, accept_new: bool = False) -> ClusterAccess:
    """The access a `[slurm]` table asks for: SSH to `login`, else this machine."""
    if getattr(cfg, "login", None) is not None:
        return SshAccess(cfg.login, cfg.jump, accept_new=accept_new)
    return LocalAccess()


class ClusterPath:
    """A path on the cluster, read and written through its access: the little of pathlib's
    Path that the Slurm executor uses, the same code for both ways."""

    def __init__(self, access: ClusterAccess, path: str) -> None:
        self.access, self.path = access, path

    def __truediv__(self, name: str) -> ClusterPath:
        return ClusterPath(self.access, posixpath.join(self.path, name))

    def __str__(self) -> str:
        return self.path

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def exists(self) -> bool:
        return self.access.exists(self.path)

    def mtime(self) -> float:
        """FileNotFoundError when it is missing."""
        found = self.access.mtime(self.path)
        if found is None:
            raise FileNotFoundError(self.path)
        return found

    def read_text(self) -> str:
        return self.access.read_text(self.path)

    def write_text(self, text: str) -> None:
        self.access.write_text(self.path, text)

    def touch(self) -> None:
        self.access.touch(self.path)

    def read_json(self) -> dict[str, Any] | None:
        """The file's JSON object; None when it is missing or not (yet) whole."""
        try:
            value = json.loads(self.read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None
