"""Real Slurm accounting for the test cluster (tests/slurm/cluster.py): a private MariaDB
server and `slurmdbd` on it, so `sacct` answers as on a cluster whose accounting works.

MariaDB runs from its own data directory in the cluster's folder (made by
`mariadb-install-db`), listening on 127.0.0.1 at a free port and on its own socket, with no
defaults file read: nothing of a system MariaDB is used or touched. slurmdbd (Debian's
`slurmdbd`, 22.05) runs in the foreground as root, storing into it with
`accounting_storage/mysql`; slurmctld then sends its job records to slurmdbd
(`accounting_storage/slurmdbd`), and the cluster is registered with `sacctmgr`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import IO

Wait = Callable[[Callable[[], bool], float, str], None]

NEEDED = ("mariadbd", "mariadb-install-db", "mariadb", "slurmdbd", "sacctmgr", "sacct")
DATABASE = "slurm_acct_db"
USER, PASSWORD = "slurm", "ideaforge-test"


def missing() -> str | None:
    """Why accounting cannot be started here; None when it can."""
    lacking = [c for c in NEEDED if shutil.which(c) is None and not Path("/usr/sbin", c).exists()]
    if lacking:
        return (f"Slurm accounting needs {', '.join(lacking)}: `apt-get install -y "
                "mariadb-server slurmdbd` (.ci/run does)")
    return None


def exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Accounting:
    """MariaDB and slurmdbd for the cluster in `root` (its `etc/` holds slurmdbd.conf, next to
    slurm.conf, where slurmdbd looks for it)."""

    def __init__(self, root: Path, node: str) -> None:
        self.root, self.node = root, node
        self.db_port, self.dbd_port = free_port(), free_port()
        self.db = root / "mariadb"

    @property
    def socket(self) -> Path:
        return self.db / "mariadb.sock"

    def slurm_conf_lines(self) -> str:
        """What slurm.conf needs for slurmctld to send its records to this slurmdbd."""
        return ("AccountingStorageType=accounting_storage/slurmdbd\n"
                f"AccountingStorageHost=127.0.0.1\nAccountingStoragePort={self.dbd_port}\n"
                # (for slurmdbd, the munge socket that signs what is sent to it)
                f"AccountingStoragePass={self.root}/munge/munge.sock\n")

    def write_config(self) -> None:
        r = self.root
        conf = r / "etc" / "slurmdbd.conf"
        conf.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.sock
DbdHost={self.node}
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
PidFile={r}/slurmdbd.pid
LogFile={r}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser={USER}
StoragePass={PASSWORD}
StorageLoc={DATABASE}
""")
        conf.chmod(0o600)  # slurmdbd refuses a readable one: it holds the password

    #: Small and unsynced: a test database, thrown away at the end (slurmdbd logs that the
    #: buffer pool and log are below what it recommends; harmless here).
    INNODB = ("--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
              "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
              "--innodb-flush-method=nosync", "--innodb-lock-wait-timeout=900")

    def _server_args(self) -> list[str]:
        d = self.db
        return [exe("mariadbd"), "--no-defaults", "--user=root", f"--datadir={d}/data",
                f"--socket={self.socket}", f"--port={self.db_port}", "--bind-address=127.0.0.1",
                f"--pid-file={d}/mariadbd.pid", f"--log-error={d}/mariadbd.err",
                "--skip-name-resolve", "--skip-log-bin", *self.INNODB]

    def start_database(self, log: IO[bytes], procs: list[subprocess.Popen[bytes]],
                       wait: Wait) -> None:
        """A fresh data directory, the server on it, and slurmdbd's user."""
        self.db.mkdir(parents=True, exist_ok=True)
        subprocess.run([exe("mariadb-install-db"), "--no-defaults", "--user=root",
                        f"--datadir={self.db}/data", "--auth-root-authentication-method=normal",
                        "--skip-test-db", *self.INNODB], stdout=log, stderr=log,
                       check=True, timeout=120)
        procs.append(subprocess.Popen(self._server_args(), stdout=log, stderr=log,
                                      stdin=subprocess.DEVNULL))
        wait(lambda: self.sql("SELECT 1", check=False), 60, "MariaDB did not start")
        self.sql(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
                 f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'127.0.0.1'")

    def sql(self, statement: str, check: bool = True) -> bool:
        """One statement as MariaDB's root, on the private socket."""
        proc = subprocess.run([exe("mariadb"), "--no-defaults", f"--socket={self.socket}",
                               "--user=root", "-e", statement], capture_output=True, text=True,
                              check=False, timeout=30)
        if check and proc.returncode != 0:
            raise RuntimeError(f"mariadb: {statement}: {proc.stderr.strip()}")
        return proc.returncode == 0

    def start_slurmdbd(self, env: dict[str, str], log: IO[bytes],
                       procs: list[subprocess.Popen[bytes]], wait: Wait,
                       cluster: str) -> None:
        """slurmdbd (it makes its tables on first start), then the cluster registered."""
        procs.append(subprocess.Popen([exe("slurmdbd"), "-D"], env=env, stdout=log,
                                      stderr=log, stdin=subprocess.DEVNULL))

        def registered() -> bool:
            got = subprocess.run([exe("sacctmgr"), "-i", "-n", "-P", "add", "cluster", cluster],
                                 env=env, capture_output=True, text=True, check=False,
                                 timeout=30)
            said = got.stdout + got.stderr
            return got.returncode == 0 or "already exists" in said \
                or "Nothing new added" in said
        wait(registered, 60, "slurmdbd did not answer sacctmgr")

    def remove_data(self) -> None:
        """The database's files (tens of MB), once the server has stopped."""
        shutil.rmtree(self.db / "data", ignore_errors=True)

    def logs(self) -> list[str]:
        out = []
        for p in (self.root / "log" / "slurmdbd.log", self.db / "mariadbd.err"):
            if p.exists():
                out.append(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:])
        return out
