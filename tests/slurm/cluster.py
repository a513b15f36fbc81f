"""A real one-node Slurm cluster on this machine, for the Slurm executor's tests.

Debian's `slurm-wlm` (22.05) and `munge`, started as root in a private folder: munged on its
own socket, slurmctld and slurmd in the foreground (so they are stopped by their pids), a
`slurm.conf` whose one node is this machine with 8 CPUs (more than it has: `config_overrides`)
and four fake GPUs (character devices made with mknod; Slurm refuses plain files). With
`accounting`, a private MariaDB and slurmdbd too (tests/slurm/accounting.py), so the real
`sacct` answers; without, `sacct` fails, as on a cluster without slurmdbd. FIELD_NOTES.md,
"Slurm on this machine", has what was checked.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.slurm.accounting import Accounting

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
GPUS = 4


def missing() -> str | None:
    """Why a cluster cannot be started here; None when it can."""
    if os.geteuid() != 0:
        return "the Slurm tests start slurmctld, slurmd and munged as root; run them as root"
    lacking = [c for c in DAEMONS + CLIENTS if shutil.which(c) is None
               and not Path("/usr/sbin", c).exists()]
    if lacking:
        return (f"Slurm is not installed ({', '.join(lacking)} missing): "
                "`apt-get install -y slurm-wlm munge` (.ci/run does)")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class Cluster:
    root: Path
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    accounting: bool = False
    acct: Accounting | None = None

    def __post_init__(self) -> None:
        if self.accounting:
            self.acct = Accounting(self.root, self.node)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        etc, dev = self.root / "etc", self.root / "dev"
        for d in (etc, dev, self.root / "state", self.root / "spool", self.root / "munge",
                  self.root / "log"):
            d.mkdir(parents=True, exist_ok=True)
        for i in range(GPUS):
            node = dev / f"nvidia{i}"
            if not node.exists():
                os.mknod(node, 0o666 | 0o020000, os.makedev(195, i))
        r = self.root
        accounting = self.acct.slurm_conf_lines() if self.acct else \
            "AccountingStorageType=accounting_storage/none\n"
        etc.joinpath("slurm.conf").write_text(f"""\
ClusterName=ideaforge
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
{accounting}\
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=300
MessageTimeout=3
KillWait=5
InactiveLimit=0
NodeName={self.node} NodeAddr=127.0.0.1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 \
ThreadsPerCore=1 RealMemory=4000 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        etc.joinpath("gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.node} Name=gpu File={dev}/nvidia[0-{GPUS - 1}]\n")
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        if self.acct:
            self.acct.write_config()

    def without_accounting(self) -> Path:
        """A copy of slurm.conf that says the cluster keeps no accounting: `sacct` run with it
        (SLURM_CONF) fails as on a cluster without slurmdbd; squeue still reads this one."""
        path = self.root / "etc" / "no-accounting" / "slurm.conf"
        path.parent.mkdir(exist_ok=True)
        text = "".join(line for line in self.conf.read_text().splitlines(keepends=True)
                       if not line.startswith("AccountingStorage"))
        path.write_text(text + "AccountingStorageType=accounting_storage/none\n")
        path.parent.joinpath("gres.conf").write_text(self.conf.with_name("gres.conf").read_text())
        return path

    def start(self, timeout: float = 60.0) -> None:
        self.write_config()
        m = self.root / "munge"
        m.chmod(0o700)
        log = open(self.root / "log" / "daemons.out", "ab")  # noqa: SIM115
        self.procs.append(subprocess.Popen(
            [_exe("munged"), "-F", "--force", f"--socket={m}/munge.sock",
             f"--key-file={m}/munge.key", f"--pid-file={m}/munged.pid",
             f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL))
        _wait(lambda: (m / "munge.sock").exists(), 15, "munged did not start", self)
        env = self.env()
        if self.acct:
            def wait(ok: Callable[[], bool], timeout: float, what: str) -> None:
                _wait(ok, timeout, what, self)
            self.acct.start_database(log, self.procs, wait)
            self.acct.start_slurmdbd(env, log, self.procs, wait, "ideaforge")
        self.procs.append(subprocess.Popen([_exe("slurmctld"), "-D", "-c", "-f", str(self.conf)],
                                           env=env, stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL))
        self.procs.append(subprocess.Popen([_exe("slurmd"), "-D", "-f", str(self.conf)],
                                           env=env, stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL))
        _wait(self.idle, timeout, "the Slurm node did not become idle", self)

    def stop_daemon(self, name: str) -> None:
        """slurmctld or slurmd goes away (the controller's state stays saved; running jobs
        keep running under their slurmstepd)."""
        proc = next(p for p in self.procs if str(p.args[0]).endswith(name))
        proc.terminate()
        proc.wait(timeout=15)
        self.procs.remove(proc)

    def start_daemon(self, name: str, timeout: float = 30.0, clear: bool = False) -> None:
        """The daemon again, recovering what it saved (`clear`: forgetting every job, as
        squeue does after MinJobAge)."""
        with open(self.root / "log" / "daemons.out", "ab") as log:
            self.procs.append(subprocess.Popen(
                [_exe(name), "-D", *(["-c"] if clear else []), "-f", str(self.conf)],
                env=self.env(), stdout=log,
                stderr=log, stdin=subprocess.DEVNULL))
        if name == "slurmctld":
            _wait(lambda: self.run_ok("squeue", "-h"), timeout, "slurmctld did not come back",
                  self)
        else:
            _wait(lambda: self.node_state() in ("idle", "mixed", "allocated"), timeout,
                  "slurmd did not come back", self)

    def node_state(self) -> str:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env(),
                              capture_output=True, text=True, check=False, timeout=10)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def run_ok(self, *args: str) -> bool:
        return subprocess.run(list(args), env=self.env(), capture_output=True, check=False,
                              timeout=30).returncode == 0

    def idle(self) -> bool:
        return self.node_state() == "idle"

    def run(self, *args: str) -> str:
        return subprocess.run(list(args), env=self.env(), capture_output=True, text=True,
                              check=True, timeout=30).stdout

    def cancel_all(self) -> None:
        subprocess.run(["scancel", "--user=root"], env=self.env(), capture_output=True,
                       check=False, timeout=30)

    def stop(self) -> None:
        self.cancel_all()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self.procs.clear()
        if self.acct:
            self.acct.remove_data()

    def logs(self) -> str:
        out = []
        for name in ("log/slurmctld.log", "log/slurmd.log", "log/daemons.out",
                     "munge/munged.log"):
            p = self.root / name
            if p.exists():
                out.append(f"--- {name}\n" + p.read_text(errors="replace")[-3000:])
        if self.acct:
            out.extend(self.acct.logs())
        return "\n".join(out)


def _wait(ok: object, timeout: float, what: str, cluster: Cluster) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok():  # type: ignore[operator]
            return
        for proc in cluster.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: {proc.args[0]} exited with {proc.returncode}\n"
                                   + cluster.logs())
        time.sleep(0.3)
    raise RuntimeError(f"{what} within {timeout:.0f} s\n" + cluster.logs())
