"""The job runner: started detached in an attempt directory, on this machine or a GPU host.

Stand-alone on purpose (standard library only, Python ≥ 3.8): it is copied to hosts and must
keep enforcing the time limit while the engine is down. Usage: `python runner.py JOB_DIR`.

The attempt directory is the truth (ARCHITECTURE.md, "Executors"):
- creates `started` exclusively (a second runner for the same directory exits at once)
- reads `spec.json`: {"command", "cwd", "env", "timeout", "grace", "heartbeat", "clean_env"};
  the job gets this process's environment plus `env`, or only `env` when `clean_env` is true
- writes `pid` (runner pid, its start time, boot id, the job's process group), keeps `hb`
  touched, sends the job's stdout and stderr to `output.log`
- enforces `timeout` (seconds): TERM to the job's whole process group, KILL after `grace`
- a file `cancel` in the directory asks for the same, as does TERM sent to the runner
- writes `exit` ({"code", "time", "timed_out", "cancelled"}) last; every file via rename
"""

import json
import os
import signal
import subprocess
import sys
import time


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def proc_start_time(pid):
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie has exited; only its parent has not read the exit status yet
    return int(fields[19])


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def main(job_dir):
    # Exactly once: whoever creates `started` runs the job; a second runner (an engine that
    # restarted while this one was starting) leaves at once.
    try:
        os.close(os.open(os.path.join(job_dir, "started"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    with open(os.path.join(job_dir, "spec.json")) as fh:
        spec = json.load(fh)
    timeout = float(spec.get("timeout") or 0)
    grace = float(spec.get("grace", 10))
    beat = float(spec.get("heartbeat", 2))
    # A spec that says `clean_env` (the SSH hosts' agent writes such specs) holds the job's
    # whole environment: nothing of the login that started this runner (SSH_CLIENT, which
    # makes bash read ~/.bashrc, BASH_ENV, shims on PATH) may reach the job.
    env = {} if spec.get("clean_env") else dict(os.environ)
    env.update({k: str(v) for k, v in (spec.get("env") or {}).items()})
    log = open(os.path.join(job_dir, "output.log"), "ab", buffering=0)  # noqa: SIM115
    child = subprocess.Popen(
        ["bash", "-c", spec["command"]], cwd=spec.get("cwd") or job_dir, env=env,
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    me = os.getpid()
    _write(os.path.join(job_dir, "pid"), json.dumps({
        "pid": me, "start": proc_start_time(me), "boot_id": boot_id(), "pgid": child.pid,
        "child_pid": child.pid, "started": time.time(),
    }))
    stop = {"why": None}

    def on_term(signum, _frame):
        stop["why"] = "cancelled"

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = time.monotonic()
    hb_path = os.path.join(job_dir, "hb")
    cancel_path = os.path.join(job_dir, "cancel")
    last_beat = 0.0
    killed_at = None
    timed_out = cancelled = False
    while True:
        code = child.poll()
        if code is not None:
            break
        t = time.monotonic()
        if t - last_beat >= beat:
            _write(hb_path, f"{time.time():.3f}\n")
            last_beat = t
        if killed_at is None:
            if os.path.exists(cancel_path):
                stop["why"] = "cancelled"
            if timeout and t - started > timeout:
                stop["why"] = "timed_out"
            if stop["why"]:
                timed_out = stop["why"] == "timed_out"
                cancelled = stop["why"] == "cancelled"
                log.write((f"\n[ideaforge runner] {stop['why']}: sending TERM to the job\n")
                          .encode())
                _signal_group(child.pid, signal.SIGTERM)
                killed_at = t
        elif t - killed_at > grace:
            log.write(b"[ideaforge runner] still running after TERM: sending KILL\n")
            _signal_group(child.pid, signal.SIGKILL)
            killed_at = float("inf")  # KILL once
        time.sleep(0.2)
    # Whatever the job left in its group goes too, so no orphan keeps a GPU busy.
    _signal_group(child.pid, signal.SIGKILL)
    log.close()
    _write(os.path.join(job_dir, "exit"), json.dumps({
        "code": code, "time": time.time(), "timed_out": timed_out, "cancelled": cancelled,
    }))


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    main(sys.argv[1])
