"""The job runner: started detached in an attempt directory, on this machine or a GPU host.

Stand-alone on purpose (standard library only, Python >= 3.8): it is copied to hosts (beside
attempt_dir.py) and must keep enforcing the time limits while the engine is down. Usage:
`python runner.py JOB_DIR`.

The attempt directory is the truth (ARCHITECTURE.md, "Executors"):
- creates `started` exclusively (a second runner for the same directory exits at once)
- reads `spec.json`: {"command", "cwd", "env", "timeout", "grace", "heartbeat", "clean_env",
  "secret", "evaluate", "prefix"}; the job gets this process's environment plus `env`, or only `env`
  when `clean_env` is true. `secret` is removed from spec.json before the job starts: it signs
  `exit`, so a record the job forges is told apart from this runner's; so is the evaluation's
  `seed` (IDEAFORGE_EVAL_SEED: held-out data drawn from it stays unknown to the training)
- writes `pid` (runner pid, its start time, boot id, the job's process group), keeps `hb`
  touched, sends the job's stdout and stderr to `output.log`
- enforces `timeout` (seconds): TERM to the job's whole process group, KILL after `grace`
- a file `cancel` in the directory asks for the same, as does TERM sent to the runner
  (USR1: the same as its own time limit: Slurm's warning before the allocation's limit)
- is the subreaper of everything the job starts: when a stage ends, every process it left
  (its group, whatever double-forked out of it, whatever carries IDEAFORGE_JOB_DIR) is killed
- with `evaluate` (environments/CONTRACT.md, "The evaluation stage"): stops training at
  `time_limit + time_slack`, then writes the evaluator's files (their bytes came in the spec,
  read before training began; SHA-256 checked) into a fresh folder and runs the evaluation
  there; its score lines go into `exit`
- writes `exit` ({"code", "time", "timed_out", "cancelled", "train", "evaluation", "mac"})
  last; every file via rename
"""

import base64
import ctypes
import fnmatch
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import time

if __package__:  # imported by the engine (tests, the local executor's helpers)
    from engine.executors import attempt_dir as ad
else:  # run as a script: attempt_dir.py lies beside this file, locally and on hosts
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import attempt_dir as ad  # type: ignore[no-redef]

PR_SET_CHILD_SUBREAPER = 36
#: The most of the evaluation's metrics file that is read into `exit`.
SCORE_BYTES = 1 << 20
#: What the evaluation stage must not inherit from the training stage's environment.
EVAL_DROPPED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONINSPECT",
                "BASH_ENV", "ENV", "LD_PRELOAD", "LD_LIBRARY_PATH_PREPEND")


#: Write a file under a temporary name, then rename it (attempt_dir's rule, shared).
_write = ad.write_file


def proc_start_time(pid):
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat); None
    when it is gone or a zombie (it has exited; only its parent has not read its status)."""
    fields = ad.stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def boot_id():
    return ad.boot_id()


def sign(record, secret):
    """HMAC-SHA256 of an exit record (without its `mac`), as the engine checks it."""
    body = json.dumps({k: v for k, v in record.items() if k != "mac"}, sort_keys=True)
    return hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()


def manifest_id(files):
    """SHA-256 of the `sha256sum`-style manifest of {relative path: sha256} (the engine's
    engine.environments.manifest_id)."""
    text = "".join(f"{files[rel]}  {rel}\n" for rel in sorted(files))
    return hashlib.sha256(text.encode()).hexdigest()


class Runner:
    def __init__(self, job_dir, spec):
        self.dir = job_dir
        self.spec = spec
        self.grace = float(spec.get("grace", 10))
        self.beat = float(spec.get("heartbeat", 2))
        self.log = open(os.path.join(job_dir, "output.log"), "ab", buffering=0)  # noqa: SIM115
        self.stop = None  # why the job is being stopped: cancelled | timed_out | over_time
        self.last_beat = 0.0
        self.me = os.getpid()

    def say(self, text):
        self.log.write((f"[ideaforge runner] {text}\n").encode())

    def start(self, command, cwd, env, prefix=()):
        return subprocess.Popen([*prefix, "bash", "-c", command], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=self.log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def watch(self, child, timeout, deadline=None):
        """Wait for a stage's command: heartbeat, cancel, `timeout` (timed_out) and `deadline`
        (seconds after its start: over_time). Returns (exit code, why it was stopped)."""
        started = time.monotonic()
        cancel_path = os.path.join(self.dir, "cancel")
        killed_at = None
        why = None
        while True:
            code = child.poll()
            if code is not None:
                # (a TERM that reached the job too, as Slurm's scancel sends it, ended it
                # before this loop saw the request: it still ended for that reason)
                return code, why or self.stop
            self.reap_adopted(child.pid)
            t = time.monotonic()
            if t - self.last_beat >= self.beat:
                _write(os.path.join(self.dir, "hb"), f"{time.time():.3f}\n")
                self.last_beat = t
            if killed_at is None:
                if os.path.exists(cancel_path) or self.stop == "cancelled":
                    why = "cancelled"
                elif timeout and t - started > timeout or self.stop == "timed_out":
                    why = "timed_out"
                elif deadline and t - started > deadline:
                    why = "over_time"
                if why:
                    self.say(f"{why}: sending TERM to the job")
                    _signal_group(child.pid, signal.SIGTERM)
                    killed_at = t
            elif t - killed_at > self.grace:
                self.say("still running after TERM: sending KILL")
                _signal_group(child.pid, signal.SIGKILL)
                killed_at = float("inf")  # KILL once
            time.sleep(0.2)

    def reap_adopted(self, keep):
        """Collect the exit status of processes that were reparented to us (we are their
        subreaper), but never the stage's own child: Popen reads that one."""
        for pid in _children(self.me):
            fields = ad.stat_fields(pid)
            if pid != keep and fields and fields[0] == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def end_everything(self, group):
        """Kill every process the job left: its group, our adopted descendants (double forks
        that left the group and session) and any process that carries the job's marker.
        Repeated until none is left (a fork bomb's last forks), within a bounded time."""
        info = {"pgid": group, "start": proc_start_time(self.me) or 0}
        for _ in range(50):
            _signal_group(group, signal.SIGKILL)
            pids = set(_descendants(self.me)) | set(ad.job_processes(self.dir, info))
            pids.discard(self.me)
            live = [p for p in pids if (ad.stat_fields(p) or ["X"])[0] not in ("Z", "X")]
            for pid in live:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.reap_adopted(-1)
            if not live:
                return
            time.sleep(0.1)
        self.say(f"processes of the job still alive after cleanup: {sorted(live)[:20]}")


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan the parents
        out = []
        for name in os.listdir("/proc"):
            fields = ad.stat_fields(name) if name.isdigit() else None
            if fields and int(fields[1]) == pid:
                out.append(int(name))
        return out


def _descendants(pid):
    out, todo = [], _children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _subreaper():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: job_processes still finds what carries the marker


def _training_data_view(real, held_out, view):
    """A folder that holds everything under `real` except the `held_out` globs (relative to
    `real`). Files are hard links where the file system allows (a symlink would name the real
    folder, held-out files and all, to anyone who resolves it); folders with nothing held out
    under them are symlinked whole. Returns (view, how many files had to be symlinked)."""
    shutil.rmtree(view, ignore_errors=True)
    symlinked = [0]

    def link(path, dest):
        if os.path.isfile(path):
            try:
                os.link(path, dest)
                return
            except OSError:  # another file system, or links not allowed there
                symlinked[0] += 1
        os.symlink(path, dest)

    def could_hold(rel):
        parts = rel.split("/")
        return any(len(g.split("/")) > len(parts) and all(
            fnmatch.fnmatchcase(p, q) for p, q in zip(parts, g.split("/"))) for g in held_out)

    def fill(src, dest, rel):
        os.makedirs(dest, exist_ok=True)
        for name in sorted(os.listdir(src)):
            sub = name if not rel else rel + "/" + name
            if any(fnmatch.fnmatchcase(sub, g.rstrip("/")) for g in held_out):
                continue
            path = os.path.join(src, name)
            if os.path.isdir(path) and could_hold(sub):
                fill(path, os.path.join(dest, name), sub)
            else:
                link(path, os.path.join(dest, name))

    fill(real, view, "")
    return view, symlinked[0]


def _read_score(path):
    points, size = [], 0
    try:
        with open(path, "rb") as fh:
            data = fh.read(SCORE_BYTES)
            size = len(data)
    except OSError:
        return points, size
    for raw in data.splitlines():
        try:
            obj = json.loads(raw)
            float(obj["value"])
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            points.append(obj)
    return points, size


def _remove(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _snapshot(folder):
    """The bytes and modes of a folder's files (the job's `bin` wrappers), to restore them
    before the evaluation: the training stage may have rewritten them."""
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[path] = (fh.read(), os.stat(path).st_mode & 0o777)
    return out


def _restore(folder, snapshot):
    if os.path.lexists(folder):
        _remove(folder)
    for path, (data, mode) in snapshot.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        os.chmod(path, mode)


def evaluate(runner, ev, env, train_seconds, seed=None):
    """The evaluation stage; what `exit` says of it."""
    root = os.path.join(runner.dir, "evaluation")
    if os.path.lexists(root):
        _remove(root)  # whatever the training stage put there is not ours
    code_dir = os.path.join(root, "code")
    os.makedirs(code_dir)
    files = dict(ev.get("files") or {})
    content = ev.get("content") or {}
    out = {"evaluator": manifest_id(files), "code": None, "seconds": 0.0}
    for rel, digest in sorted(files.items()):
        # The bytes came with the spec, read before training began; none is read from disk.
        data = base64.b64decode(content.get(rel) or "")
        if hashlib.sha256(data).hexdigest() != digest or ".." in rel.split("/") \
                or rel.startswith("/"):
            out["error"] = f"evaluator file {rel} differs from the engine's (damaged spec)"
            return out
        dest = os.path.join(code_dir, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as fh:
            fh.write(data)
    score_path = os.path.join(root, "score.jsonl")
    open(score_path, "a").close()
    env = {k: v for k, v in env.items() if k not in EVAL_DROPPED}
    env.update(IDEAFORGE_METRICS=score_path, IDEAFORGE_TRAIN_SECONDS=f"{train_seconds:.3f}",
               PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    if ev.get("data_dir"):
        env["IDEAFORGE_DATA_DIR"] = ev["data_dir"]
    if seed is not None:
        env["IDEAFORGE_EVAL_SEED"] = str(seed)
    runner.say(f"training ended after {train_seconds:.1f} s; evaluating in a fresh process: "
               f"{ev['command']}")
    t0 = time.monotonic()
    child = runner.start(ev["command"], code_dir, env)
    code, why = runner.watch(child, float(ev.get("timeout") or 0))
    runner.end_everything(child.pid)
    points, size = _read_score(score_path)
    out.update(code=code, seconds=round(time.monotonic() - t0, 3), points=points,
               score_bytes=size, timed_out=why == "timed_out", cancelled=why == "cancelled")
    return out


def main(job_dir):
    # Exactly once: whoever creates `started` runs the job; a second runner (an engine that
    # restarted while this one was starting) leaves at once.
    try:
        os.close(os.open(os.path.join(job_dir, "started"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    spec_path = os.path.join(job_dir, "spec.json")
    with open(spec_path) as fh:
        spec = json.load(fh)
    secret = spec.pop("secret", None)
    ev = spec.get("evaluate")
    eval_seed = ev.pop("seed", None) if ev else None
    if secret or eval_seed is not None:
        _write(spec_path, json.dumps(spec, indent=1))  # gone before the job can read them
    _subreaper()
    # A spec that says `clean_env` (the SSH hosts' agent writes such specs) holds the job's
    # whole environment: nothing of the login that started this runner (SSH_CLIENT, which
    # makes bash read ~/.bashrc, BASH_ENV, shims on PATH) may reach the job.
    env = {} if spec.get("clean_env") else dict(os.environ)
    env.update({k: str(v) for k, v in (spec.get("env") or {}).items()})
    bin_dir = os.path.join(job_dir, "bin")
    trusted_bin = _snapshot(bin_dir) if ev and os.path.isdir(bin_dir) else None
    if ev:
        artifacts = os.path.join(job_dir, "artifacts")
        if os.path.lexists(artifacts):
            _remove(artifacts)
        os.makedirs(artifacts)
        env["IDEAFORGE_ARTIFACTS"] = artifacts
        real = env.get("IDEAFORGE_DATA_DIR") or ""
        ev["data_dir"] = real
        view_symlinks = 0
        if ev.get("held_out") and real and os.path.isdir(real):
            env["IDEAFORGE_DATA_DIR"], view_symlinks = _training_data_view(
                real, ev["held_out"], os.path.join(job_dir, "train-data"))
    runner = Runner(job_dir, spec)
    if ev and view_symlinks:
        runner.say(f"{view_symlinks} data file(s) are symlinked into the training's data view "
                   "(the data dir is on another file system than the job): resolving a link "
                   "names the real folder, held-out files included")
    # `prefix` (hosts.toml's job_prefix) wraps the training only: a container, another user.
    child = runner.start(spec["command"], spec.get("cwd") or job_dir, env,
                         [str(w) for w in spec.get("prefix") or ()])
    t0 = time.monotonic()
    me = os.getpid()
    _write(os.path.join(job_dir, "pid"), json.dumps({
        "pid": me, "start": proc_start_time(me), "boot_id": boot_id(), "pgid": child.pid,
        "child_pid": child.pid, "started": time.time(),
    }))

    def on_term(signum, _frame):
        runner.stop = "cancelled"

    def on_usr1(signum, _frame):  # Slurm's --signal=B:USR1: its time limit is near
        runner.stop = runner.stop or "timed_out"

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    deadline = None
    if ev and ev.get("time_limit"):
        deadline = float(ev["time_limit"]) + float(ev.get("time_slack") or 0)
    code, why = runner.watch(child, float(spec.get("timeout") or 0), deadline)
    train_seconds = time.monotonic() - t0
    # Whatever the job left goes too, so no orphan keeps a GPU busy or writes a score later.
    runner.end_everything(child.pid)
    record = {"code": code, "time": None, "timed_out": why == "timed_out",
              "cancelled": why == "cancelled"}
    if why == "over_time":
        runner.say(f"training ran past its time limit ({ev.get('time_limit')} s + "
                   f"{ev.get('time_slack')} s slack): stopped, void")
    if ev:
        record["train"] = {"code": code, "seconds": round(train_seconds, 3),
                           "over_time": why == "over_time",
                           "time_limit": ev.get("time_limit"), "time_slack": ev.get("time_slack")}
        if code == 0 and why is None and runner.stop is None:
            if trusted_bin is not None:
                _restore(bin_dir, trusted_bin)
            result = evaluate(runner, ev, env, train_seconds, eval_seed)
            if result.get("error"):
                runner.say("not evaluated: " + result["error"])
            record["evaluation"] = result
            record["cancelled"] = bool(result.get("cancelled"))
            if result.get("code") is not None:
                record["code"] = result["code"]
    runner.log.close()
    record["time"] = time.time()
    if secret:
        record["mac"] = sign(record, secret)
    _write(os.path.join(job_dir, "exit"), json.dumps(record))


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    main(sys.argv[1])
