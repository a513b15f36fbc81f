"""What is shipped to a host, and what the host agent accepts (no sshd needed)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from engine.environments import load
from engine.executors import hostagent
from engine.executors.sshfleet import env_archive, expected_hashes
from tests.conftest import TOY


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
