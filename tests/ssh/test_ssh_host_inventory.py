"""The SSH fleet records every host's GPUs as it polls them — idle hosts and hosts that do not
answer included — so the console's hosts panel can list them (real sshd, fake nvidia-smi)."""

from __future__ import annotations

from pathlib import Path

from engine import environments
from engine.executors.hosts import load
from engine.executors.sshfleet import SshFleet
from engine.store import Store
from engine.store import console_queries as cq
from engine.store import hosts_queries as hq
from tests.conftest import TOY, wait_for
from tests.ssh.conftest import Lab


def test_an_idle_host_and_a_silent_one_reach_the_store_once_polled(lab: Lab, tmp_path: Path
                                                                     ) -> None:
    idle = lab.host("idle", 4)
    idle.set_gpus(4, busy=(3,))  # GPU 3 runs a process ideaforge did not start
    lab.host("silent", 2).stop()  # in hosts.toml, but nothing listens on its port
    store = Store(tmp_path / "ws")
    fleet = SshFleet(load(lab.hosts_toml()), store)
    env = environments.load(TOY)
    fleet.prepare(env, env.profile("smoke"))  # no job at all: the hosts stay idle
    try:
        inv = wait_for(lambda: (i := hq.inventory(store)).get("idle") and
                       i["idle"].gpus is not None and "silent" in i and i,
                       timeout=15, what="both hosts in the inventory")
        assert inv["idle"].gpus == (0, 1, 2, 3) and inv["idle"].foreign == (3,)
        assert inv["idle"].reachable and inv["idle"].seen_at is not None
        assert not inv["silent"].reachable and inv["silent"].error
        assert inv["silent"].gpus is None and inv["silent"].seen_at is None

        # the fleet keeps polling, but an unchanged inventory is not written again each time
        worker = fleet.workers["idle"]
        for _ in range(2):
            polled = worker._last_poll
            wait_for(lambda p=polled: worker._last_poll > p, timeout=5, what="another poll")
        assert hq.inventory(store)["idle"].updated_at == inv["idle"].updated_at
    finally:
        fleet.close()
        for w in fleet.workers.values():
            w.join(10)

    rows = {r.host: r for r in cq.hosts_overview(store)}
    assert rows["idle"].free == (0, 1, 2) and rows["idle"].foreign == (3,)
    assert rows["idle"].running == 0 and not rows["idle"].leases
    assert rows["idle"].gpu_model == "NVIDIA Fake H100 (80 GiB)"
    assert rows["silent"].reachable is False and rows["silent"].error == inv["silent"].error
