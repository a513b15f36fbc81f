"""The SSH executor: jobs on the GPU hosts of hosts.toml, one worker thread per host.

The engine's loop never waits on the network. It hands each host's worker what to launch,
cancel and watch, and reads back the worker's latest results; the worker does the SSH calls
(`engine.executors.ssh`) at its own pace:

- once per connection: install the runner and agent (content-hashed names, so an upgrade
  installs new copies beside the old);
- once per environment version: upload the pristine copy (tar.gz over an exec channel) and
  start the setup, detached like a job, in its own recorded attempt directory;
- per job: one `launch` call carrying the spec and the patch (a few KB);
- every `poll_interval`: ONE batched `poll` for all of the host's watched jobs, which returns
  their state and the new bytes of metrics and log from the offsets the database holds. It
  goes to one long-lived agent per connection (a JSON line each way on one exec channel), so
  a poll costs neither a login shell nor a Python start on the host.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import tarfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.environments import Environment, Profile
from engine.executors.base import (
    JobStatus,
    LaunchSpec,
    evaluate_spec,
    evaluator_payload,
    launch_key,
)
from engine.executors.fleet import (
    HostView,
    JobReport,
    LaunchOutcome,
    WatchItem,
    parse_remote_output,
)
from engine.executors.hosts import HostConfig, HostsFile
from engine.executors.ssh import HostKeyError, RemoteHost, SshError, connect
from engine.patching import apply_diff, touched_paths
from engine.patching.text import read_text
from engine.store import Store
from engine.store import hosts_queries as hq

log = logging.getLogger(__name__)

MAX_POLL_BYTES = 256 * 1024  # per file per poll: a chatty log cannot stall a poll
GPU_REFRESH_S = 30.0
INVENTORY_REFRESH_S = 30.0  # an unchanged inventory is rewritten this often (its seen_at)


def env_archive(env: Environment) -> tuple[bytes, list[str]]:
    """The environment version as a deterministic tar.gz; (data, files held back as
    credential-like: `Environment.shipped_files` is the rule)."""
    buf = io.BytesIO()
    shipped, held_back = env.shipped_files()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in shipped:
            path = env.root / rel
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isfile():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return buf.getvalue(), held_back




def expected_hashes(env: Environment, diff: str | None) -> dict[str, str | None]:
    """SHA-256 of every file the diff touches, as the engine's own application leaves it."""
    if not diff:
        return {}
    rels = list(dict.fromkeys(touched_paths(diff)))
    files = {rel: read_text(env.root / rel) for rel in rels if (env.root / rel).is_file()}
    patched = apply_diff(files, diff)
    return {rel: hashlib.sha256(patched[rel].encode("utf-8")).hexdigest() if rel in patched
            else None for rel in rels}


@dataclass
class _Prep:
    state: str = "pending"  # pending | setup | ready | failed
    error: str | None = None
    setup_dir: str | None = None  # relative to the workdir
    retried: bool = False  # a failed setup left by an earlier engine is retried once


@dataclass
class _Poll:
    seq: int
    host_now: float
    local_now: float
    jobs: dict[int, tuple[WatchItem, dict[str, Any]]] = field(default_factory=dict)


class HostWorker(threading.Thread):
    """Owns one host's connection; everything it shares with the engine is under `lock`."""

    def __init__(self, cfg: HostConfig, fleet: SshFleet) -> None:
        super().__init__(name=f"ssh-{cfg.name}", daemon=True)
        self.cfg = cfg
        self.fleet = fleet
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.remote: RemoteHost | None = None
        self.watching: dict[int, WatchItem] = {}
        self.launches: dict[int, dict[str, Any]] = {}
        self.outcomes: dict[int, LaunchOutcome] = {}
        self.cancels: list[str] = []
        self.poll: _Poll | None = None
        self.consumed = 0
        self.reachable = False
        self.down_since: float | None = None
        self.error: str | None = None
        self.gpus: tuple[int, ...] | None = None
        self.foreign: frozenset[int] = frozenset()
        self.gpu_error: str | None = None
        self.prep = _Prep()
        self._seq = 0
        self._last_poll = 0.0
        self._gpu_at = 0.0
        self._seen_at: float | None = None  # when the host last answered a GPU query
        self._gpu_info: tuple[hq.GpuInfo, ...] = ()
        self._inventory: tuple[Any, ...] | None = None  # as last written to the store
        self._inventory_at = 0.0

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        backoff = 1.0
        cap = min(30.0, max(2.0, self.cfg.unreachable_after))
        while not self.stopping.is_set():
            wait = self.cfg.poll_interval
            try:
                if self.remote is None or not self.remote.conn.alive:
                    self._connect()
                self._cycle()
                backoff = 1.0
                wait = max(0.05, self._last_poll + self.cfg.poll_interval - time.monotonic())
            except HostKeyError as exc:
                self._failed(str(exc))
                wait = 60.0  # only a person can fix this (hosts check --accept-new)
            except SshError as exc:
                self._failed(str(exc))
                wait, backoff = backoff, min(backoff * 2, cap)
            except Exception as exc:  # a bug must not silently stop a host
                log.exception("host %s: worker error", self.cfg.name)
                self._failed(f"internal error: {type(exc).__name__}: {exc}")
                wait = backoff
            self.wake.wait(wait)
            self.wake.clear()
        self._drop()

    def _connect(self) -> None:
        self._drop()
        remote = connect(self.cfg)
        with self.lock:
            self.remote = remote
            self.reachable = True
            self.error = None
            back = self.down_since
            self.down_since = None
        self._gpu_at = float("-inf")  # read the GPUs again at once: it may have rebooted
        if back is not None:
            log.info("host %s answers again (down %.0f s)", self.cfg.name, time.time() - back)
        else:
            log.info("host %s connected (%s)", self.cfg.name, remote.conn.host_key)

    def _drop(self) -> None:
        if self.remote is not None:
            self.remote.conn.close()
            self.remote = None

    def _failed(self, message: str) -> None:
        self._drop()
        with self.lock:
            self.reachable = False
            self.error = message
            first = self.down_since is None
            if first:
                self.down_since = time.time()
        if first:
            log.warning("%s", message)
            self.fleet.host_failed(self.cfg.name, message)
        self._record_inventory()

    def _abs(self, rel: str) -> str:
        assert self.remote is not None
        return self.remote.path(rel)

    def _cycle(self) -> None:
        remote = self.remote
        assert remote is not None
        with self.lock:
            cancels, self.cancels = self.cancels, []
        for rel in cancels:
            reply = remote.call("cancel", {"dir": self._abs(rel)})
            log.info("host %s: cancel %s: %s", self.cfg.name, rel, reply.get("result"))
        self._prepare()
        with self.lock:
            pending = [(jid, req) for jid, req in self.launches.items()]
        for jid, req in pending:
            outcome = self._launch(req)
            if outcome is None:
                continue
            with self.lock:
                self.outcomes[jid] = outcome
                self.launches.pop(jid, None)
        due = time.monotonic() - self._last_poll >= self.cfg.poll_interval * 0.95
        if due or pending:
            self._poll()

    # -- environment -----------------------------------------------------------------------
    def _prepare(self) -> None:
        env, profile = self.fleet.env, self.fleet.profile
        if env is None or profile is None or self.prep.state in ("ready", "failed", "setup"):
            return
        remote = self.remote
        assert remote is not None
        version = self.fleet.version
        host_env = self.cfg.env_for(env.name)
        command = host_env.setup if host_env.setup is not None else profile.setup
        pristine = remote.path("envs", f"{env.name}-{version}")
        req: dict[str, Any] = {"pristine": pristine, "retry_failed": not self.prep.retried,
                               "runner": remote.runner,
                               "python": host_env.python or self.cfg.python,
                               "venv": host_env.venv}
        if command:
            key = hashlib.sha256(repr((command, host_env.python, host_env.venv,
                                       host_env.data_dir)).encode()).hexdigest()[:10]
            self.prep.setup_dir = f"setup/{env.name}-{version}-{key}"
            req["setup_dir"] = remote.path(self.prep.setup_dir)
            req["spec"] = {"command": command, "timeout": host_env.setup_timeout,
                           "grace": self.fleet.policy.kill_grace_s, "heartbeat": 5,
                           "env": self.fleet.job_env(self.cfg, env, remote)}
        reply = remote.call("prepare", req)
        if not reply.get("pristine"):
            data = self.fleet.archive()
            started = time.monotonic()
            got = remote.call("unpack", stdin=data, args=(pristine,), timeout=600)
            if got.get("result") == "failed":
                self._prep_failed(f"upload of {env.name} {version} failed: {got.get('error')}")
                return
            log.info("host %s: %s version %s uploaded (%d KB in %.1f s)", self.cfg.name,
                     env.name, version, len(data) // 1024, time.monotonic() - started)
            reply = remote.call("prepare", req)
        self.prep.retried = True
        self._setup_state(reply.get("setup"))

    def _setup_state(self, setup: dict[str, Any] | None) -> None:
        if setup is None:
            self.prep.state = "ready"
            return
        state = setup.get("state")
        code = (setup.get("exit") or {}).get("code")
        if state == "finished" and code == 0:
            if self.prep.state != "ready":
                log.info("host %s: setup done (%s)", self.cfg.name, self.prep.setup_dir)
            self.prep.state = "ready"
        elif state in ("finished", "lost"):
            tail = str(setup.get("tail") or "").strip().splitlines()[-3:]
            self._prep_failed(f"setup on {self.cfg.name} failed (exit {code}): "
                              + " | ".join(tail)[-300:])
        else:
            self.prep.state = "setup"

    def _prep_failed(self, message: str) -> None:
        with self.lock:
            self.prep.state = "failed"
            self.prep.error = message
        log.error("%s", message)
        self.fleet.host_failed(self.cfg.name, message)

    # -- jobs ------------------------------------------------------------------------------
    def _launch(self, req: dict[str, Any]) -> LaunchOutcome | None:
        if self.prep.state == "failed":
            return LaunchOutcome(error=self.prep.error or "setup failed", host_fault=True)
        if self.prep.state != "ready" or self.fleet.env is None:
            return None  # waits for the environment; the engine placed it a moment early
        remote = self.remote
        assert remote is not None
        full = dict(req)
        full.update(dir=self._abs(req["dir"]), runner=remote.runner,
                    pristine=remote.path("envs", f"{self.fleet.env.name}-{self.fleet.version}"))
        full["spec"] = dict(req["spec"], env={**self.fleet.job_env(self.cfg, self.fleet.env,
                                                                   remote),
                                              **req["spec"]["env"]})
        started = time.monotonic()
        reply = remote.call("launch", full, timeout=120)
        result = reply.get("result")
        if result == "conflict":
            return LaunchOutcome(error=f"launch on {self.cfg.name} refused: "
                                 f"{reply.get('error')}", conflict=True)
        if result in ("started", "exists"):
            log.info("host %s: job dir %s %s (%.2f s)", self.cfg.name, req["dir"],
                     "started" if result == "started" else "exists already: adopted",
                     time.monotonic() - started)
            return LaunchOutcome()
        return LaunchOutcome(error=f"launch on {self.cfg.name} failed: {reply.get('error')}",
                             host_fault=True)

    def _poll(self) -> None:
        remote = self.remote
        assert remote is not None
        with self.lock:
            items = list(self.watching.values())
        want_gpus = self.gpus is None or time.monotonic() - self._gpu_at > GPU_REFRESH_S
        setups = [self._abs(self.prep.setup_dir)] if self.prep.state == "setup" \
            and self.prep.setup_dir else []
        req = {"jobs": [{"dir": self._abs(i.job_dir), "metrics": i.metrics_offset,
                         "log": i.log_offset} for i in items],
               "setups": setups, "gpus": want_gpus, "workdir": remote.workdir,
               "max_bytes": MAX_POLL_BYTES}
        self._last_poll = time.monotonic()
        if not items and not setups and not want_gpus:
            return
        # A host that stays silent this long is down for us: its jobs turn unreachable soon.
        reply = remote.poll(req, timeout=max(15.0, self.cfg.unreachable_after))
        local_now = time.time()
        if "gpus" in reply:
            self._gpu_at = time.monotonic()
            self._set_gpus(reply["gpus"])
        for d in setups:
            self._setup_state(reply.get("setups", {}).get(d))
        jobs = reply.get("jobs", {})
        with self.lock:
            self._seq += 1
            self.poll = _Poll(self._seq, float(reply.get("now", local_now)), local_now,
                              {i.job_id: (i, jobs.get(self._abs(i.job_dir), {"state": "missing"}))
                               for i in items})

    def _set_gpus(self, info: dict[str, Any]) -> None:
        found = {int(g["index"]): g for g in info.get("list", [])}
        wanted = self.cfg.gpus
        usable = tuple(sorted(g for g in found if wanted is None or g in wanted))
        if wanted is not None and set(wanted) - set(found):
            missing = sorted(set(wanted) - set(found))
            log.warning("host %s: configured GPUs %s are not present", self.cfg.name, missing)
        with self.lock:
            self.gpus = usable
            self.foreign = frozenset(g for g in usable if found[g].get("foreign_procs"))
            self.gpu_error = info.get("error")
        self._seen_at = time.time()
        self._gpu_info = tuple(hq.GpuInfo(g, found[g].get("name"), found[g].get("memory_total_mib"))
                               for g in usable)
        self._record_inventory()

    def _record_inventory(self) -> None:
        """Keep the host's row in `host_inventory` current for the console's hosts panel:
        written when something in it changes, else at most every INVENTORY_REFRESH_S."""
        with self.lock:
            state = (self.gpus, self._gpu_info, tuple(sorted(self.foreign)), self.reachable,
                     self.gpu_error if self.reachable else self.error)
        if state == self._inventory and \
                time.monotonic() - self._inventory_at < INVENTORY_REFRESH_S:
            return
        gpus, gpu_info, foreign, reachable, error = state
        if self.fleet.record_inventory(self.cfg.name, gpus=gpus, gpu_info=gpu_info,
                                       foreign=foreign, reachable=reachable, error=error,
                                       seen_at=self._seen_at):
            self._inventory, self._inventory_at = state, time.monotonic()


class SshFleet:
    """The executor for `ideaforge run --hosts FILE`."""

    name = "ssh"
    host = "ssh"

    def __init__(self, hosts: HostsFile, store: Store) -> None:
        self.hosts_file = hosts
        self.policy = hosts.policy
        self.store = store
        self.tag = store.workspace_id()
        self.workers = {h.name: HostWorker(h, self) for h in hosts.hosts}
        self.env: Environment | None = None
        self.profile: Profile | None = None
        self.version = ""
        self.evaluator_payload: tuple[dict[str, str], dict[str, str]] = ({}, {})
        self._archive: bytes | None = None
        self._archive_lock = threading.Lock()
        self._states: tuple[float, dict[str, hq.HostStateView]] = (0.0, {})

    # -- lifecycle -------------------------------------------------------------------------
    def prepare(self, env: Environment, profile: Profile) -> None:
        """Remember what to ship and start the hosts' workers; returns at once."""
        self.env, self.profile, self.version = env, profile, env.version()
        self.evaluator_payload = evaluator_payload(env)
        for w in self.workers.values():
            if not w.is_alive():
                w.start()
            w.wake.set()

    def close(self) -> None:
        for w in self.workers.values():
            w.stopping.set()
            w.wake.set()

    def archive(self) -> bytes:
        with self._archive_lock:
            if self._archive is None:
                assert self.env is not None
                self._archive, held_back = env_archive(self.env)
                if held_back:
                    log.warning("held back from the hosts (they look like credentials; list "
                                "them under `ship` in %s/environment.toml to send them): %s",
                                self.env.root, ", ".join(held_back))
            return self._archive

    def job_env(self, cfg: HostConfig, env: Environment, remote: RemoteHost) -> dict[str, str]:
        host_env = cfg.env_for(env.name)
        data_dir = host_env.data_dir or remote.path("data", env.name)
        return {**cfg.env_vars, "IDEAFORGE_DATA_DIR": data_dir, "PYTHONUNBUFFERED": "1",
                "IDEAFORGE_HOST": cfg.name}

    def host_failed(self, host: str, message: str) -> None:
        """An infrastructure failure (outage, failed setup): counts towards quarantine."""
        try:
            if hq.record_host_failure(self.store, host, message,
                                      threshold=self.policy.quarantine_after,
                                      quarantine_s=self.policy.quarantine_minutes * 60):
                log.error("host %s quarantined for %.0f min: %s", host,
                          self.policy.quarantine_minutes, message)
        except Exception:  # bookkeeping must not kill a worker
            log.exception("could not record the failure of host %s", host)

    def record_inventory(self, host: str, **fields: Any) -> bool:
        """What a host's worker learnt of it (GPUs, reachability), for the hosts panel."""
        try:
            hq.record_inventory(self.store, host, **fields)
            return True
        except Exception:  # bookkeeping must not kill a worker
            log.exception("could not record the inventory of host %s", host)
            return False

    # -- what the engine calls -------------------------------------------------------------
    def host_views(self) -> list[HostView]:
        stamp, states = self._states
        if time.monotonic() - stamp > 2.0:
            states = hq.host_states(self.store)
            self._states = (time.monotonic(), states)
        views = []
        for name, w in self.workers.items():
            cfg = w.cfg
            with w.lock:
                reachable, down, error = w.reachable, w.down_since, w.error
                gpus, foreign, prep = w.gpus, w.foreign, w.prep.state
                prep_error = w.prep.error
            st = states.get(name)
            quarantined = bool(st and st.quarantined())
            problem = None
            if not reachable:
                problem = error or "not connected yet"
            elif prep == "failed":
                problem = prep_error
            elif prep != "ready":
                problem = "copying the environment" if prep == "pending" else "setup running"
            elif quarantined and st:
                problem = f"quarantined: {st.last_error}"
            views.append(HostView(
                name=name, gpus=gpus, foreign_busy=foreign, cpu_slots=cfg.cpu_slots,
                max_jobs=cfg.max_jobs, labels=cfg.labels, reachable=reachable,
                down_since=down, unreachable_after=cfg.unreachable_after,
                ready=problem is None, problem=problem, setup_failed=prep == "failed"))
        return views

    def job_dir(self, host: str, search_id: int, job_id: int) -> str:
        return f"jobs/{self.tag}/search-{search_id}/job-{job_id}"

    def launch(self, host: str, spec: LaunchSpec, job_dir: str) -> LaunchOutcome | None:
        """Hand the launch to the host's worker; the outcome comes back on a later call."""
        w = self.workers.get(host)
        if w is None:
            return LaunchOutcome(error=f"host {host} is not in {self.hosts_file.path}",
                                 host_fault=True)
        with w.lock:
            if spec.job_id in w.outcomes:
                return w.outcomes.pop(spec.job_id)
            if spec.job_id in w.launches:
                return None
        try:
            expect = expected_hashes(spec.env, spec.diff)
        except Exception as exc:  # noqa: BLE001 - any patch problem fails this job only
            return LaunchOutcome(error=f"the patch does not apply: {exc}")
        host_env = w.cfg.env_for(spec.env.name)
        req = {
            "dir": job_dir, "patch": spec.diff or "", "expect": expect,
            "key": launch_key(spec, self.version),
            "python": host_env.python or w.cfg.python, "venv": host_env.venv,
            "port_hint": spec.job_id,
            "spec": {"command": spec.profile.command, "timeout": spec.profile.timeout,
                     "grace": self.policy.kill_grace_s, "heartbeat": 2,
                     "job_id": spec.job_id,
                     "idea_id": spec.idea_id, "secret": spec.secret,
                     "prefix": list(w.cfg.job_prefix),
                     "env": {"CUDA_VISIBLE_DEVICES": ",".join(map(str, spec.gpus)),
                             "OMP_NUM_THREADS": "4" if spec.gpus else "2",
                             "IDEAFORGE_PROFILE": spec.profile.name, **spec.seed_env()}},
        }
        if spec.env.evaluation is not None:
            req["spec"]["evaluate"] = evaluate_spec(spec.env, spec.profile,
                                                    self.evaluator_payload, spec.eval_seed)
        with w.lock:
            w.launches[spec.job_id] = req
        w.wake.set()
        return None

    def watch(self, host: str, items: Sequence[WatchItem]) -> dict[int, JobReport] | None:
        """Set what the host's next poll reads; the reports of a poll not yet handed out."""
        w = self.workers.get(host)
        if w is None:
            return None
        with w.lock:
            w.watching = {i.job_id: i for i in items}
            poll = w.poll
            if poll is None or poll.seq <= w.consumed:
                return None
            w.consumed = poll.seq
        return {jid: self._report(item, rep, poll) for jid, (item, rep) in poll.jobs.items()}

    def cancel(self, host: str, job_dir: str) -> None:
        w = self.workers.get(host)
        if w is not None:
            with w.lock:
                w.cancels.append(job_dir)
            w.wake.set()

    def log_copy(self, host: str, search_id: int, job_id: int) -> Path | None:
        return self.store.workspace / "jobs" / "ssh" / host / f"search-{search_id}" / \
            f"job-{job_id}" / "output.log"

    @staticmethod
    def _report(item: WatchItem, rep: dict[str, Any], poll: _Poll) -> JobReport:
        state = rep.get("state")
        skew = poll.local_now - poll.host_now
        hb = rep.get("hb")
        beat = float(hb) + skew if hb else None  # the host's clock, moved onto ours for display
        if state == "finished":
            ex = rep.get("exit") or {}
            status = JobStatus("finished", exit_code=ex.get("code"),
                               timed_out=bool(ex.get("timed_out")),
                               cancelled=bool(ex.get("cancelled")), heartbeat_at=beat,
                               record=ex)
        elif state in ("running", "starting"):
            status = JobStatus(str(state), heartbeat_at=beat, pid=rep.get("pid"))
        else:  # lost, or the directory is gone
            status = JobStatus("lost", heartbeat_at=beat, pid=rep.get("pid"),
                               orphans=int(rep.get("orphans") or 0))
        mdata = base64.b64decode(rep.get("metrics") or "")
        msize = int(rep.get("metrics_size") or 0)
        ldata = base64.b64decode(rep.get("log") or "")
        points, mto, bad = parse_remote_output(mdata, item.metrics_offset, msize,
                                               state == "finished")
        complete = (item.metrics_offset + len(mdata) >= msize
                    and item.log_offset + len(ldata) >= int(rep.get("log_size") or 0))
        return JobReport(status, item.metrics_offset, mto, points, bad, item.log_offset, ldata,
                         None, complete, rep.get("launch_error"))
