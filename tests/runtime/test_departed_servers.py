"""A dead server that holds no role leaves the view service's table (and ``pbkv status``)
after ``--forget-after-s``, with a ``server_forgotten`` line; a dead member stays."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from pbkv.bench.local_cluster import LocalCluster, viewservice_status

FORGET_AFTER_S = 2.0
DEADLINE_S = 15.0


def listed(cluster: LocalCluster) -> set[str]:
    status = viewservice_status(cluster.viewserver)
    assert status is not None
    return {server.name for server in status.servers}


def wait_until(condition: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


def test_a_killed_spare_is_declared_dead_then_forgotten_and_the_view_is_kept() -> None:
    with LocalCluster(
        servers=3, extra_viewserver_args=("--forget-after-s", str(FORGET_AFTER_S))
    ) as cluster:
        view = cluster.view()
        assert view is not None
        spare = next(node for node in cluster.nodes[1:] if node.address not in view.members())
        wait_until(lambda: spare.address in listed(cluster), "the spare never pinged")
        os.kill(spare.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: spare.address not in listed(cluster), "the spare was never forgotten")
        # Silent since its last ping, up to a ping interval (0.1 s) before the kill.
        assert time.monotonic() - killed >= FORGET_AFTER_S - 0.2
        assert listed(cluster) == set(view.members())
        assert cluster.view() == view  # a spare's death changes no view
        log = cluster.nodes[0].log_file.read_text()
        dead = log.index(f"server_declared_dead server={spare.address}")
        forgotten = log.index(f"server_forgotten server={spare.address} silent_ticks=")
        assert dead < forgotten
