"""What leaves this machine: credential-like files stay out of hosts' copies and job copies,
unless environment.toml's `ship` names them; legitimate files (tokenizer.py) always go."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from engine.environments import EnvironmentError_, load
from engine.executors.sshfleet import env_archive
from engine.patching import apply_to_copy
from tests.conftest import TOY

#: What a researcher's environment folder may hold besides its code (issue 11's report).
CREDENTIALS = [".envrc", ".huggingface/token", "api_keys.txt", "kaggle.json", ".env.local",
               ".netrc", ".pypirc", ".aws/credentials", ".azure/config", ".kube/config",
               ".docker/config.json", ".ssh/id_ed25519", "keys/deploy.pem", "tls/server.key",
               ".config/gcloud/application_default_credentials.json", "hf_token",
               "github-token.txt", "token.json", "db_secret.yaml", "openai_apikey"]
#: Files that resemble them but are code or data an environment needs.
LEGIT = ["tokenizer.py", "tokenizer.json", "tokenization_utils.py", "special_tokens.py",
         "catalog/token_level_loss.diff", "keyboard.py", "environment_notes.md",
         ".config/settings.toml"]


def names(archive: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return set(tar.getnames())


@pytest.fixture
def cluttered(tmp_path: Path) -> Path:
    env_dir = tmp_path / "toy"
    shutil.copytree(TOY, env_dir)
    for rel in CREDENTIALS + LEGIT:
        path = env_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"contents of {rel}\n")
    return env_dir


def test_credential_like_files_reach_neither_hosts_nor_job_copies(cluttered: Path,
                                                                   tmp_path: Path) -> None:
    env = load(cluttered)
    archive, held_back = env_archive(env)
    shipped = names(archive)
    assert sorted(held_back) == sorted(CREDENTIALS)
    assert not shipped & set(CREDENTIALS)
    assert set(LEGIT) | {"train.py", "evaluate.py", "environment.toml"} <= shipped
    copy = tmp_path / "job" / "env"
    apply_to_copy(cluttered, None, copy)  # the local executor's job copy
    copied = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()}
    assert copied == shipped


def test_ship_lets_named_files_through(cluttered: Path, tmp_path: Path) -> None:
    with open(cluttered / "environment.toml", "r+") as fh:
        text = fh.read()
        fh.seek(0)
        fh.write('ship = ["keys/deploy.pem", ".kube"]\n' + text)
    archive, held_back = env_archive(load(cluttered))
    assert {"keys/deploy.pem", ".kube/config"} <= names(archive)
    assert "keys/deploy.pem" not in held_back and ".envrc" in held_back
    copy = tmp_path / "copy"
    apply_to_copy(cluttered, None, copy)
    assert (copy / "keys" / "deploy.pem").is_file() and (copy / ".kube" / "config").is_file()
    assert not (copy / ".envrc").exists()


def test_held_back_files_do_not_change_the_version(cluttered: Path) -> None:
    before = load(cluttered).version()
    (cluttered / ".envrc").write_text("export WANDB_API_KEY=rotated\n")
    (cluttered / "aws_secret.txt").write_text("new\n")
    assert load(cluttered).version() == before
    (cluttered / "tokenizer.py").write_text("changed = True\n")
    assert load(cluttered).version() != before


@pytest.mark.parametrize("value, needle", [
    ('"kaggle.json"', "must be a list"),
    ('["../outside"]', "no '..'"),
    ('["/etc/passwd"]', "no leading '/'"),
])
def test_a_bad_ship_field_names_the_field_and_the_fix(value: str, needle: str,
                                                      tmp_path: Path) -> None:
    env_dir = tmp_path / "toy"
    shutil.copytree(TOY, env_dir)
    toml = env_dir / "environment.toml"
    toml.write_text(f"ship = {value}\n" + toml.read_text())
    with pytest.raises(EnvironmentError_) as err:
        load(env_dir)
    assert "'ship'" in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize("name", ["nanogpt", "grpo"])
def test_the_shipped_environments_ship_every_file(name: str) -> None:
    env = load(name)
    archive, held_back = env_archive(env)
    assert held_back == []
    assert names(archive) == set(env.files())
    for profile in env.profiles.values():  # what their commands run is on the host
        for word in profile.command.split() + (profile.setup or "").split():
            if word.endswith((".py", ".sh")):
                assert word in names(archive), (profile.name, word)
