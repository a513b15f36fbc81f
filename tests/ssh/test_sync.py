"""What is shipped to a host, and what the host agent accepts (no sshd needed)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from engine.environments import load
from engine.executors import hostagent
from engine.executors.sshfleet import env_archive, expected_hashes
from tests.conftest import TOY
from tests.ssh.conftest import Lab


def names(archive: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return set(tar.getnames())


def test_the_archive_holds_the_environment_and_nothing_else(tmp_path: Path) -> None:
    env_dir = tmp_path / "toy"
    shutil.copytree(TOY, env_dir)
    for junk in (".git/config", "__pycache__/train.cpython-311.pyc", "data/shard0.bin",
                 ".env", "keys/id_ed25519", "secrets.json", "wandb/run.log"):
        (env_dir / junk).parent.mkdir(parents=True, exist_ok=True)
        (env_dir / junk).write_text("not for a GPU host\n")
    env = load(env_dir)
    archive, skipped = env_archive(env)
    assert names(archive) == {"environment.toml", "train.py", "evaluate.py"} | {
        f"catalog/{p.name}" for p in (TOY / "catalog").iterdir()}
    assert sorted(skipped) == [".env", "keys/id_ed25519", "secrets.json"]
    assert env_archive(env)[0] == archive  # deterministic: same version, same bytes


def test_expected_hashes_follow_the_engine_patch(tmp_path: Path) -> None:
    env = load(TOY)
    diff = (TOY / "catalog" / "bonus_a.diff").read_text()
    (digest,) = expected_hashes(env, diff).values()
    assert len(digest) == 64 and expected_hashes(env, None) == {}


def unpack(dest: Path, archive: bytes) -> dict:
    proc = subprocess.run([sys.executable, "-S", hostagent.__file__, "unpack", str(dest)],
                          input=archive, capture_output=True, check=True)
    return json.loads(proc.stdout)


def test_unpack_refuses_paths_that_leave_the_copy(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"evil\n"
        info = tarfile.TarInfo("../outside.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    reply = unpack(tmp_path / "envs" / "x-1", buf.getvalue())
    assert reply["result"] == "failed" and "unsafe" in reply["error"]
    assert not (tmp_path / "envs" / "outside.py").exists()
    assert not (tmp_path / "envs" / "x-1").exists()


def test_unpack_is_atomic_and_once(tmp_path: Path) -> None:
    archive, _ = env_archive(load(TOY))
    dest = tmp_path / "envs" / "toy-1"
    assert unpack(dest, archive)["result"] == "unpacked"
    assert (dest / "train.py").read_text() == (TOY / "train.py").read_text()
    assert unpack(dest, archive)["result"] == "exists"
    assert [p.name for p in dest.parent.iterdir()] == ["toy-1"]  # no temporary left behind


# -- crafted uploads: the agent refuses every link, device and escaping path, on any Python --

#: Runs the agent as a host whose Python has no tarfile.data_filter (before 3.8.17 / 3.11.4,
#: e.g. Debian 12's 3.11.2) would: the filter is removed before the agent starts.
WITHOUT_FILTER = ("import runpy, sys, tarfile\n"
                  "if hasattr(tarfile, 'data_filter'): del tarfile.data_filter\n"
                  "sys.argv = sys.argv[1:]\n"
                  "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def crafted(entries: list[tuple[str, str, str | bytes]]) -> bytes:
    """A tar.gz of (name, kind, link target or file content) entries, in that order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, arg in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = arg.encode() if isinstance(arg, str) else arg
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = str(arg)
            if kind == "chr":
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
    return buf.getvalue()


def symlink_chain() -> list[tuple[str, str, str | bytes]]:
    """Each link on its own looks inside the copy; followed one after the other they lead
    three folders above it (from envs/toy-1.tmp-PID to the test's own folder)."""
    return [("p/q/r/s", "dir", ""),
            ("p/q/r/s/l1", "sym", "../../.."),  # really: p
            ("p/q/r/s/l1/l2", "sym", "../../../.."),  # checked as p/q; really 3 above the copy
            ("p/q/r/s/l1/l2/pwned.txt", "file", "written outside\n")]


CRAFTED = {
    "symlink chain": symlink_chain(),
    "symlink inside": [("train.py", "file", "x = 1\n"), ("alias.py", "sym", "train.py")],
    "hard link out": [("victim", "hard", "{victim}"), ("victim", "file", "overwritten\n")],
    "device": [("zero", "chr", "")],
    "fifo": [("pipe", "fifo", "")],
    "absolute path": [("{victim}", "file", "overwritten\n")],
    "dot-dot path": [("ok/../../../pwned.txt", "file", "written outside\n")],
}


def run_agent(dest: Path, archive: bytes, *, data_filter: bool) -> subprocess.CompletedProcess:
    pre = [] if data_filter else ["-c", WITHOUT_FILTER]
    return subprocess.run([sys.executable, "-S", *pre, hostagent.__file__, "unpack", str(dest)],
                          input=archive, capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("data_filter", [True, False], ids=["with-filter", "no-filter"])
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_unpack_refuses_crafted_archives_and_leaves_nothing(case: str, data_filter: bool,
                                                            tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    entries = [(name.format(victim=victim), kind,
                arg.format(victim=victim) if isinstance(arg, str) else arg)
               for name, kind, arg in CRAFTED[case]]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    envs = tmp_path / "work" / "envs"
    dest = envs / "toy-1"
    proc = run_agent(dest, crafted(entries), data_filter=data_filter)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()  # no traceback
    reply = json.loads(proc.stdout)
    assert reply["result"] == "failed" and "unsafe" in reply["error"], reply
    assert entries[-1][0] in reply["error"] or entries[0][0] in reply["error"]
    assert victim.read_text() == "precious\n"
    assert list(envs.iterdir()) == []  # neither the copy nor a .tmp-* folder is left
    after = sorted(str(p) for p in tmp_path.rglob("*") if not str(p).startswith(str(envs)))
    assert after == before + [str(tmp_path / "work")]  # nothing written anywhere else


def test_unpack_of_a_broken_upload_answers_and_cleans_up(tmp_path: Path) -> None:
    good = crafted([("train.py", "file", "x = 1\n" * 1000)])
    dest = tmp_path / "envs" / "toy-1"
    for archive in (good[: len(good) // 2], b"not a tar at all"):
        proc = run_agent(dest, archive, data_filter=True)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()
        reply = json.loads(proc.stdout)
        assert reply["result"] == "failed" and "cannot unpack" in reply["error"]
        assert list(dest.parent.iterdir()) == []


def test_unpack_keeps_execute_bits_and_nested_folders(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, mode in (("run.sh", 0o755), ("pkg/sub/mod.py", 0o600)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 3, mode
            tar.addfile(info, io.BytesIO(b"ok\n"))
    dest = tmp_path / "envs" / "toy-1"
    assert unpack(dest, buf.getvalue())["result"] == "unpacked"
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "pkg" / "sub" / "mod.py").read_text() == "ok\n"
    assert (dest / "pkg" / "sub" / "mod.py").stat().st_mode & 0o777 == 0o600


def test_a_crafted_upload_over_ssh_is_refused_with_a_clear_error(lab: Lab) -> None:
    from engine.executors.hosts import load as load_hosts
    from engine.executors.ssh import connect

    host = lab.host("a", 1)
    remote = connect(load_hosts(lab.hosts_toml()).hosts[0])
    try:
        dest = remote.path("envs", "toy-1")
        reply = remote.call("unpack", stdin=crafted(symlink_chain()), args=(dest,))
    finally:
        remote.conn.close()
    assert reply["result"] == "failed" and "'p/q/r/s/l1' (a symbolic link)" in reply["error"]
    assert list((host.workdir / "envs").iterdir()) == []
    assert not list(lab.root.rglob("pwned.txt"))
