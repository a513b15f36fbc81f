"""The host side of the SSH executor: copied to each GPU host with attempt_dir.py (what an
attempt directory says, which it imports) and runner.py, and run there.

Stand-alone on purpose (standard library only, Python >= 3.8): GPU hosts need nothing of
ideaforge installed. The engine runs `python agent.py ACTION` over an SSH exec channel, sends a
JSON request on stdin and reads one JSON object from stdout; no secret is ever on the command
line. Actions:

- `launch`   create the attempt directory (mkdir is the lock: a second launch adopts it), copy
             the pristine environment into it, apply the job's patch with `patch -p1` (or
             `git apply`), check every patched file's SHA-256 against the engine's, then start
             the runner detached in its own session (the `setsid -f` pattern), so the SSH call
             returns at once and the job outlives the connection.
- `poll`     one batched report for many attempt directories: state, heartbeat, and the bytes
             of metrics.jsonl and output.log from the offsets the engine already holds. Times
             are the host's clock.
- `serve`    answers `poll` requests as JSON lines on one long-lived exec channel.
- `prepare`  whether an environment version's pristine copy exists; start its setup once.
- `unpack`   receive a pristine copy as tar.gz on stdin (path checks, then an atomic rename).
- `cancel`   ask the runner to stop (TERM then KILL to the job's process group); if the runner
             is gone, kill what is left of the group.
- `info`     GPUs (and whether processes we did not start use them), free disk, interpreters.
"""

import base64
import glob
import hashlib
import io
import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import time

if __package__:  # inside the engine
    from engine.executors import attempt_dir as ad
else:  # on a host, installed beside this file (however this file was started)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import attempt_dir as ad  # type: ignore[no-redef]

#: Never copied from the pristine copy into a job; linked instead when present (setup outputs).
LINKED_NAMES = ("data", ".venv", "venv")
SKIPPED_NAMES = ("__pycache__", ".pytest_cache", ".ruff_cache", "wandb", ".git")
#: What a job keeps of the login's environment (everything else is defined by us).
KEPT_VARIABLES = ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def act_poll(req):
    now = time.time()
    limit = int(req.get("max_bytes", 262144))
    jobs = {}
    for item in req.get("jobs", []):
        d = item["dir"]
        rep = ad.dir_state(d, now)
        if rep["state"] != "missing":
            m, msize = ad.read_from(os.path.join(d, "metrics.jsonl"), int(item.get("metrics", 0)),
                                  limit)
            lg, lsize = ad.read_from(os.path.join(d, "output.log"), int(item.get("log", 0)), limit)
            rep.update(metrics=base64.b64encode(m).decode(), metrics_size=msize,
                       log=base64.b64encode(lg).decode(), log_size=lsize)
            if rep["state"] in ("finished", "lost"):
                rep["launch_error"] = ad.launch_error(d)
        jobs[d] = rep
    setups = {}
    for d in req.get("setups", []):
        rep = ad.dir_state(d, now)
        if rep["state"] in ("finished", "lost"):
            rep["tail"] = ad.tail(os.path.join(d, "output.log"), 2000)
        setups[d] = rep
    out = {"now": now, "boot_id": ad.boot_id(), "jobs": jobs, "setups": setups}
    if req.get("gpus"):
        out["gpus"] = gpu_info(req.get("workdir"))
    return out


def _copy_env(src, dest):
    def ignore(folder, names):
        if os.path.abspath(folder) == os.path.abspath(src):
            return [n for n in names if n in LINKED_NAMES or n in SKIPPED_NAMES]
        return [n for n in names if n in SKIPPED_NAMES]

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    for name in LINKED_NAMES:
        if os.path.exists(os.path.join(src, name)):
            os.symlink(os.path.join(src, name), os.path.join(dest, name))


def _apply_patch(work, patch_path):
    if shutil.which("patch"):
        cmd = ["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "--silent",
               "-i", patch_path]
    elif shutil.which("git"):
        cmd = ["git", "apply", "--whitespace=nowarn", patch_path]
    else:
        raise RuntimeError("neither `patch` nor `git` is installed on this host")
    env = dict(os.environ)
    # Keep `git apply` from treating an enclosing repository as the patch root.
    env["GIT_CEILING_DIRECTORIES"] = os.path.dirname(work)
    proc = subprocess.run(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        said = proc.stdout.decode("utf-8", "replace")[-800:]
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}): {said}")


def _check_hashes(work, expect):
    for rel, digest in sorted(expect.items()):
        path = os.path.join(work, rel)
        if digest is None:
            if os.path.lexists(path):
                raise RuntimeError(f"{rel} should have been deleted by the patch")
            continue
        try:
            with open(path, "rb") as fh:
                got = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            got = None
        if got != digest:
            raise RuntimeError(f"{rel} differs from the engine's patched copy after applying "
                               "the patch (the pristine copy on this host may be damaged)")


def _resolve_python(python):
    # Never realpath: a venv's bin/python is a symlink, and Python finds the venv (its
    # pyvenv.cfg) only when started under the venv's own path.
    found = python if os.path.isabs(python) else shutil.which(python)
    if not found or not os.access(found, os.X_OK):
        raise RuntimeError(f"python {python!r} not found on this host")
    return os.path.abspath(found)


def _interpreter(req):
    """The interpreter that setups and jobs run as `python`, and that `info` probes: the
    venv's own bin/python when hosts.toml names a venv, else the configured python."""
    venv = req.get("venv")
    return _resolve_python(os.path.join(venv, "bin", "python") if venv
                           else req.get("python") or "python3")


def _python_commands(bindir, exe):
    """`python` and `python3` in `bindir`, as scripts that exec `exe` by its own path.

    Not symlinks: Python looks for a venv's pyvenv.cfg beside the path it was started by, so
    a link in the job's bin/ would hide the venv (its packages) from the job.
    """
    os.mkdir(bindir)
    for name in ("python", "python3"):
        path = os.path.join(bindir, name)
        with open(path, "w") as fh:
            fh.write(f"#!/bin/sh\nexec {shlex.quote(exe)} \"$@\"\n")
        os.chmod(path, 0o755)


def _login_defaults():
    home, user = os.environ.get("HOME"), os.environ.get("USER")
    if not home or not user:
        try:
            entry = pwd.getpwuid(os.getuid())
            home, user = home or entry.pw_dir, user or entry.pw_name
        except KeyError:
            pass
    return {"HOME": home or "/", "USER": user or "", "LOGNAME": user or ""}


def _clean_env(req, extra, bindir, exe):
    """The whole environment of a setup, a job or `info`'s probe; the runner adds nothing.

    A defined set, never the login's: the SSH session's variables (SSH_CLIENT makes bash read
    ~/.bashrc), BASH_ENV and whatever the shell start-up files exported (shims on PATH) stay
    out. Kept from the login: HOME, USER, LOGNAME, LANG, LC_ALL, TZ, TMPDIR. Then `extra`
    (hosts.toml's `env` and the engine's variables). PATH is built here: the job's bin/ (its
    `python`), the venv's bin/ or the interpreter's own directory, then hosts.toml's PATH if it
    sets one, else the system directories.
    """
    env = _login_defaults()
    env.update({k: os.environ[k] for k in KEPT_VARIABLES if os.environ.get(k)})
    env.update({k: str(v) for k, v in extra.items()})
    venv = req.get("venv")
    path = [bindir] if bindir else []
    path.append(os.path.join(venv, "bin") if venv else os.path.dirname(exe))
    path.append(str(extra.get("PATH") or SYSTEM_PATH))
    env["PATH"] = os.pathsep.join(p for i, p in enumerate(path) if p and p not in path[:i])
    if venv:
        env["VIRTUAL_ENV"] = venv
    return env


def _free_port(start):
    for port in list(range(start, 30000)) + list(range(29500, start)):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    return 0


def _start_runner(d, runner):
    with open(os.path.join(d, "runner.err"), "ab") as err:
        # A new session and no descriptor shared with the SSH channel: the call returns at
        # once and the runner lives on after the connection closes (the `setsid -f` pattern).
        subprocess.Popen([sys.executable, runner, d], cwd=d, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                         close_fds=True)


def act_launch(req):
    d = req["dir"]
    os.makedirs(os.path.dirname(d), exist_ok=True)
    try:
        os.mkdir(d)
        if req.get("key"):
            ad.write_file(os.path.join(d, "launch_key"), req["key"])  # first: what this dir is for
    except FileExistsError:
        other = ad.other_job(d, req)
        if other:
            # Someone else's job (a workspace made again at this path, a copied workspace):
            # its results must never be taken for this job's.
            return {"result": "conflict", "error": other}
        # An earlier launch made it. If that launcher stopped after writing spec.json (its
        # last step) but before the runner took `started`, start the runner now: the runner
        # itself creates `started` exclusively, so the job still runs exactly once.
        if os.path.exists(os.path.join(d, "spec.json")) and not any(
                os.path.exists(os.path.join(d, name)) for name in ("started", "pid", "exit")):
            _start_runner(d, req["runner"])
            return {"result": "exists", "runner": "started"}
        return {"result": "exists"}
    try:
        work = os.path.join(d, "env")
        _copy_env(req["pristine"], work)
        if req.get("patch"):
            patch_path = os.path.join(d, "patch.diff")
            with open(patch_path, "w") as fh:
                fh.write(req["patch"])
            _apply_patch(work, patch_path)
            _check_hashes(work, req.get("expect") or {})
        bindir = os.path.join(d, "bin")
        exe = _interpreter(req)
        _python_commands(bindir, exe)
        spec = dict(req["spec"])
        extra = dict(spec.get("env") or {})
        port = _free_port(29510 + int(req.get("port_hint", 0)) % 400)
        extra["MASTER_PORT"] = extra["IDEAFORGE_RDZV_PORT"] = str(port)
        extra.update(IDEAFORGE_JOB_DIR=d, IDEAFORGE_METRICS=os.path.join(d, "metrics.jsonl"),
                     WANDB_DIR=d, WANDB_CACHE_DIR=os.path.join(d, ".wandb-cache"))
        env = _clean_env(req, extra, bindir, exe)
        if env.get("IDEAFORGE_DATA_DIR"):
            os.makedirs(env["IDEAFORGE_DATA_DIR"], exist_ok=True)
        spec.update(cwd=work, env=env, clean_env=True)
        open(os.path.join(d, "metrics.jsonl"), "a").close()
        open(os.path.join(d, "output.log"), "a").close()
        ad.write_file(os.path.join(d, "spec.json"), json.dumps(spec, indent=1))  # last: it is ready
    except (OSError, RuntimeError, ValueError, KeyError, shutil.Error) as exc:
        # The directory stays: it is the record of this attempt.
        message = f"{type(exc).__name__}: {exc}"
        ad.write_file(os.path.join(d, "launch_error"), message)
        ad.write_file(os.path.join(d, "exit"), json.dumps({"code": None, "time": time.time(),
                                                    "launch_error": message}))
        return {"result": "failed", "error": message}
    _start_runner(d, req["runner"])
    return {"result": "started", "port": port}


def act_prepare(req):
    pristine = req["pristine"]
    out = {"pristine": os.path.isfile(os.path.join(pristine, ".ideaforge-complete"))}
    d = req.get("setup_dir")
    if not d or not out["pristine"]:
        return out
    now = time.time()
    state = ad.dir_state(d, now)
    failed = state["state"] == "lost" or (state["state"] == "finished"
                                          and (state.get("exit") or {}).get("code") != 0)
    if failed and req.get("retry_failed"):
        os.rename(d, f"{d}.failed-{int(now)}")
        state = {"state": "missing"}
    if state["state"] == "missing":
        os.makedirs(os.path.dirname(d), exist_ok=True)
        try:
            os.mkdir(d)
        except FileExistsError:
            return dict(out, setup=ad.dir_state(d, now))
        spec = dict(req["spec"])
        bindir = os.path.join(d, "bin")
        try:
            exe = _interpreter(req)
        except RuntimeError as exc:
            ad.write_file(os.path.join(d, "exit"), json.dumps({"code": None, "time": now,
                                                        "launch_error": str(exc)}))
            return dict(out, setup={"state": "finished", "exit": {"code": None},
                                    "tail": str(exc)})
        _python_commands(bindir, exe)
        env = _clean_env(req, dict(spec.get("env") or {}), bindir, exe)
        if env.get("IDEAFORGE_DATA_DIR"):
            os.makedirs(env["IDEAFORGE_DATA_DIR"], exist_ok=True)
        spec.update(cwd=pristine, env=env, clean_env=True)
        ad.write_file(os.path.join(d, "spec.json"), json.dumps(spec, indent=1))
        _start_runner(d, req["runner"])
        state = {"state": "starting"}
    if state["state"] in ("finished", "lost"):
        state["tail"] = ad.tail(os.path.join(d, "output.log"), 2000)
    out["setup"] = state
    return out


COMPLETE = ".ideaforge-complete"


class _Refused(Exception):
    """An upload this agent will not unpack; the message says why."""


def _member_problem(m):
    """Why a tar member may not be unpacked into a pristine copy; None for a plain file or
    folder inside it.

    The engine's archives hold nothing else, so every link, device and path that could leave
    the copy is refused outright, on every Python: nothing here relies on tarfile's
    extraction filters (absent before 3.8.17/3.11.4, e.g. in Debian 12's 3.11.2).
    """
    name = m.name
    if not name or "\0" in name:
        return "an empty or NUL-holding name"
    if name.startswith("/"):
        return "an absolute path"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "a path with '..'"
    if not parts:
        return "the copy's own folder"
    if m.issym():
        return "a symbolic link"
    if m.islnk():
        return "a hard link"
    if m.ischr() or m.isblk() or m.isfifo():
        return "a device or pipe"
    if not (m.isfile() or m.isdir()):
        return "not a plain file or folder"
    if parts[0] == COMPLETE:
        return "the agent's own completion marker"
    return None


def _extract(tar, members, root):
    """Write the (checked) members under `root`, which this agent just made empty.

    No link is ever created, so no path under `root` can lead out of it; files are created
    exclusively and without following links all the same. Modes: owner read/write always,
    the archive's execute and read bits, nothing else.
    """
    real_root = os.path.realpath(root)
    for m in members:
        parts = [p for p in m.name.split("/") if p not in ("", ".")]
        target = os.path.join(real_root, *parts)
        parent = os.path.dirname(target) if m.isfile() else target
        os.makedirs(parent, mode=0o700, exist_ok=True)
        if os.path.realpath(parent) != parent:
            raise _Refused(f"{m.name!r} would be written outside the copy")
        if m.isdir():
            os.chmod(target, (m.mode & 0o755) | 0o700)
            continue
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise _Refused(f"{m.name!r} appears twice in the archive") from None
        with os.fdopen(fd, "wb") as out:
            src = tar.extractfile(m)
            if src is not None:
                shutil.copyfileobj(src, out, 1 << 20)
            os.fchmod(out.fileno(), (m.mode & 0o755) | 0o600)


def act_unpack(dest):
    """Receive a pristine copy (tar.gz on stdin) into `dest`; on any failure nothing is left
    behind and the reply says why (never a traceback)."""
    data = sys.stdin.buffer.read()
    if os.path.isfile(os.path.join(dest, COMPLETE)):
        return {"result": "exists"}
    tmp = f"{dest}.tmp-{os.getpid()}"
    try:
        os.makedirs(tmp)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            bad = [(m.name, why) for m in members for why in [_member_problem(m)] if why]
            if bad:
                listed = ", ".join(f"{name!r} ({why})" for name, why in bad[:5])
                more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
                raise _Refused(f"unsafe entries in the archive: {listed}{more}; an environment "
                               "copy holds only plain files and folders")
            _extract(tar, members, tmp)
        ad.write_file(os.path.join(tmp, COMPLETE), json.dumps({"time": time.time()}))
    except _Refused as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return {"result": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a bad upload is an answer, not a crash
        shutil.rmtree(tmp, ignore_errors=True)
        return {"result": "failed", "error": f"cannot unpack the archive into {dest}: "
                f"{type(exc).__name__}: {exc}"}
    try:
        os.rename(tmp, dest)
    except OSError:
        # Another upload of the same version won the rename: same content, keep theirs.
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isfile(os.path.join(dest, COMPLETE)):
            shutil.rmtree(dest, ignore_errors=True)
            return {"result": "failed", "error": "a broken copy was in the way; removed it"}
        return {"result": "exists"}
    return {"result": "unpacked", "bytes": len(data)}


def _smi(args):
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None, "nvidia-smi not found"
    try:
        proc = subprocess.run([exe, *args], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"nvidia-smi failed: {exc}"
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace")[:200]
        return None, f"nvidia-smi exit {proc.returncode}: {said}"
    return proc.stdout.decode("utf-8", "replace"), None


def gpu_info(workdir):
    out, err = _smi(["--query-gpu=index,uuid,name,memory.total,memory.used",
                     "--format=csv,noheader,nounits"])
    if out is None:
        return {"error": err, "list": []}
    gpus = []
    by_uuid = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        g = {"index": int(parts[0]), "uuid": parts[1], "name": parts[2],
             "memory_total_mib": _num(parts[3]), "memory_used_mib": _num(parts[4]),
             "procs": 0, "foreign_procs": 0}
        gpus.append(g)
        by_uuid[parts[1]] = g
    apps, _ = _smi(["--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader,nounits"])
    ours = ad.live_sessions(workdir)
    for line in (apps or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or parts[0] not in by_uuid or not parts[1].isdigit():
            continue
        g = by_uuid[parts[0]]
        g["procs"] += 1
        fields = ad.stat_fields(int(parts[1]))
        if not fields or int(fields[3]) not in ours:
            g["foreign_procs"] += 1
    return {"error": None, "list": gpus}


def _num(text):
    try:
        return float(text)
    except ValueError:
        return None


def act_info(req):
    workdir = req.get("workdir")
    out = {"hostname": socket.gethostname(), "now": time.time(), "boot_id": ad.boot_id(),
           "agent_python": sys.version.split()[0], "gpus": gpu_info(workdir)}
    try:
        os.makedirs(workdir, exist_ok=True)
        st = os.statvfs(workdir)
        out["disk_free_bytes"] = st.f_bavail * st.f_frsize
    except OSError as exc:
        out["disk_error"] = str(exc)
    pythons = {}
    # Asked of the interpreter exactly as setups and jobs start it (same choice of python,
    # same environment), so what `hosts check` shows is what they run.
    probe = ("import json, sys\ntry:\n import torch\n t=(torch.__version__, "
             "bool(torch.cuda.is_available()))\nexcept Exception:\n t=(None, None)\n"
             "print(json.dumps({'version': sys.version.split()[0], 'executable': "
             "sys.executable, 'prefix': sys.prefix, 'torch': t[0], 'cuda': t[1]}))")
    for label, spec in sorted((req.get("pythons") or {}).items()):
        python = os.path.join(spec["venv"], "bin", "python") if spec.get("venv") \
            else spec.get("python") or "python3"
        try:
            exe = _interpreter(spec)
            proc = subprocess.run([exe, "-c", probe], capture_output=True, timeout=120,
                                  check=False, stdin=subprocess.DEVNULL,
                                  env=_clean_env(spec, spec.get("env") or {}, None, exe))
            said = proc.stdout.decode("utf-8", "replace").strip().splitlines()
            try:
                got = json.loads(said[-1])
            except (IndexError, ValueError):
                raise RuntimeError(f"{exe} does not run (exit {proc.returncode}): "
                                   + proc.stderr.decode("utf-8", "replace")[-200:]) from None
            pythons[label] = {"python": got["executable"], "prefix": got["prefix"],
                              "version": got["version"], "torch": got["torch"],
                              "cuda": got["cuda"]}
        except (RuntimeError, OSError, subprocess.SubprocessError, KeyError) as exc:
            pythons[label] = {"python": python, "error": str(exc)}
    out["pythons"] = pythons
    setups = []
    for d in sorted(glob.glob(os.path.join(workdir or "", "setup", "*"))):
        if os.path.isdir(d) and ".failed-" not in d:
            st = ad.dir_state(d, time.time())
            setups.append({"name": os.path.basename(d), "state": st["state"],
                           "code": (st.get("exit") or {}).get("code")})
    out["setups"] = setups
    out["pristine"] = sorted(os.path.basename(p) for p in
                             glob.glob(os.path.join(workdir or "", "envs", "*"))
                             if os.path.isfile(os.path.join(p, ".ideaforge-complete")))
    out["now"] = time.time()  # last, after the slow probes: the clock comparison stays fair
    return out


def serve():
    """Answer `poll` requests, one JSON line in and one out, until stdin closes.

    One agent per SSH connection: a poll then costs neither a login shell nor a Python start.
    """
    for line in sys.stdin:
        try:
            reply = act_poll(json.loads(line))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


def main(argv):
    action = argv[1] if len(argv) > 1 else ""
    if action == "unpack":
        reply = act_unpack(argv[2])
    elif action == "serve":
        return serve()
    else:
        req = json.loads(sys.stdin.read() or "{}")
        handler = {"poll": act_poll, "launch": act_launch, "prepare": act_prepare,
                   "cancel": ad.cancel, "info": act_info}.get(action)
        if handler is None:
            sys.stderr.write(f"unknown action {action!r}\n")
            return 2
        reply = handler(req)
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
