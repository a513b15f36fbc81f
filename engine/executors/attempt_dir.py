"""The attempt directory as the host sees it: what it says, and the processes of its job.

Shared by the host agent (shipped beside it to every GPU host) and the local executor, so the
same rules decide on every backend whether a job runs, finished or was lost, whether a folder
is another job's, and which processes a lost job left behind. Standard library only, Python
>= 3.8, like the agent.
"""

import glob
import json
import os
import signal

#: A folder without `pid` this long after it was made: its launcher died before the runner.
STARTING_GRACE_S = 60.0


def write_file(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def stat_fields(pid):
    """Fields after the command name of /proc/PID/stat (state is [0], pgrp [2], sid [3])."""
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None


def runner_alive(info):
    """The runner of a pid file still runs: same pid, start time and boot."""
    if not info or info.get("boot_id") != boot_id():
        return False
    fields = stat_fields(info.get("pid", -1))
    return bool(fields) and fields[0] != "Z" and int(fields[19]) == info.get("start")


def read_from(path, offset, limit):
    """(bytes from offset, at most limit; file size)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            offset = min(offset, size)
            fh.seek(offset)
            return fh.read(limit), size
    except OSError:
        return b"", 0


def tail(path, n=4000):
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def dir_state(d, now):
    """What an attempt directory says, without its output."""
    if not os.path.isdir(d):
        return {"state": "missing"}
    out = {}
    exit_info = read_json(os.path.join(d, "exit"))
    if exit_info is not None:
        out.update(state="finished", exit=exit_info)
        return out
    pid_info = read_json(os.path.join(d, "pid"))
    try:
        with open(os.path.join(d, "hb")) as fh:
            out["hb"] = float(fh.read().strip() or 0)
    except (OSError, ValueError):
        pass
    if pid_info is None:
        try:
            age = now - os.stat(d).st_mtime
        except OSError:
            age = 0.0
        # A launcher that died between mkdir and starting the runner leaves this behind.
        out["state"] = "starting" if age < STARTING_GRACE_S else "lost"
        out["age"] = age
        return out
    out["pid"] = pid_info.get("pid")
    if runner_alive(pid_info):
        out["state"] = "running"
        return out
    # The runner may have written `exit` between our two reads.
    exit_info = read_json(os.path.join(d, "exit"))
    if exit_info is not None:
        out.update(state="finished", exit=exit_info)
    else:
        # The runner died without writing `exit`: what it started may still run (and hold a
        # GPU, with no time limit any more). The engine keeps the lease until this is 0.
        out["state"] = "lost"
        out["orphans"] = len(job_processes(d, pid_info))
    return out


# ---------------------------------------------------------------------------------------------
# actions


def launch_error(d):
    try:
        with open(os.path.join(d, "launch_error")) as fh:
            return fh.read()
    except OSError:
        return None


def other_job(d, req):
    """Why the existing attempt directory `d` is not this launch's job; None when it is."""
    try:
        with open(os.path.join(d, "launch_key")) as fh:
            key = fh.read().strip()
    except OSError:
        key = None
    if key is not None:
        if req.get("key") and key != req["key"]:
            return (f"{d} holds another job (launch key {key[:12]}, expected "
                    f"{str(req['key'])[:12]}); it was not adopted")
        return None
    spec = read_json(os.path.join(d, "spec.json"))
    if spec is None:
        return None  # a launch of it is still being made, or died before its first step
    want = req.get("spec") or {}
    for field in ("command", "job_id", "idea_id"):
        if spec.get(field) != want.get(field):
            return f"{d} holds another job (its {field} differs); it was not adopted"
    return None


def cancel(req):
    d = req["dir"]
    if not os.path.isdir(d):
        return {"result": "missing"}
    if os.path.exists(os.path.join(d, "exit")):
        return {"result": "finished"}
    open(os.path.join(d, "cancel"), "a").close()
    info = read_json(os.path.join(d, "pid"))
    if info and not runner_alive(info):
        # No runner to do it: kill what the job left, and say how many were still there.
        return {"result": "killed_orphans", "killed": len(reap(d, info))}
    return {"result": "requested"}


def _environ_has(pid, entry):
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return entry in fh.read().split(b"\0")
    except OSError:
        return False


def job_processes(d, info):
    """Pids of live processes that belong to the job of attempt directory `d`.

    A process belongs to the job when it is in the job's session (the runner made the job a
    session leader; only processes started after the runner count, so a recycled id does not
    match) or when its environment names `d` as IDEAFORGE_JOB_DIR, which also finds children
    that left the session with setsid.
    """
    sid = int((info or {}).get("pgid") or 0)
    since = int((info or {}).get("start") or 0)
    entry = ("IDEAFORGE_JOB_DIR=" + d).encode()
    me = os.getpid()
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        fields = stat_fields(pid)
        if not fields or fields[0] in ("Z", "X"):
            continue
        in_session = sid > 0 and sid in (int(fields[2]), int(fields[3])) \
            and int(fields[19]) >= since
        if in_session or _environ_has(pid, entry):
            found.append(pid)
    return found


def reap(d, info):
    """SIGKILL every process of a job whose runner is gone; the pids that were signalled."""
    pids = job_processes(d, info)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


def live_sessions(workdir):
    """Session ids of jobs whose runner is alive: their GPU processes are not foreign."""
    sids = set()
    if not workdir:
        return sids
    for pid_path in glob.glob(os.path.join(workdir, "jobs", "*", "*", "*", "pid")) + \
            glob.glob(os.path.join(workdir, "setup", "*", "pid")):
        info = read_json(pid_path)
        if info and info.get("pgid") and runner_alive(info):
            sids.add(int(info["pgid"]))
    return sids
