"""``viewserver`` as the target of ``restart`` and ``resume`` on a view service replicated on
etcd (walk-through review): it named the leader, so the guide's ``kill viewserver`` then
``restart viewserver`` restarted the healthy new leader and left the killed member dead, and
``resume viewserver`` continued the leader while the paused member stayed paused."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbkv.cluster.processes import process_state
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.cluster.targets import ClusterError, resolve_stopped

SLEEP = ("sleep", "60")


def _member(name: str, port: int, pid: int) -> ProcessRecord:
    return ProcessRecord(
        name=name,
        kind="viewserver",
        role_at_start="viewserver",
        address=f"127.0.0.1:{port}",
        pid=pid,
        admin_port=0,
        metrics_port=0,
        log_file=f"{name}.log",
        argv=SLEEP,
        started_at=1.0,
    )


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [subprocess.Popen(SLEEP) for _ in range(3)]
    yield started
    for process in started:
        process.kill()
        process.wait()


def test_restart_and_resume_name_the_member_that_is_down(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    killed, paused, leader = sleepers
    killed.kill()
    killed.wait()
    paused.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 5.0
    while process_state(paused.pid, SLEEP) != "paused" and time.monotonic() < deadline:
        time.sleep(0.01)
    # closed ports: a leader lookup fails at once, with one line
    members = [
        _member("viewserver", 1, killed.pid),
        _member("viewserver2", 2, paused.pid),
        _member("viewserver3", 3, leader.pid),
    ]
    state = ClusterState(
        tmp_path, "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 0.1, 5, 0, 1.0, tuple(members)
    )
    assert resolve_stopped(state, "viewserver", "dead").name == "viewserver"
    assert resolve_stopped(state, "vs", "paused").name == "viewserver2"
    assert resolve_stopped(state, "viewserver3", "dead").name == "viewserver3"  # a name as is
    paused.send_signal(signal.SIGCONT)
    with pytest.raises(ClusterError, match="no view service member leads now"):
        resolve_stopped(state, "viewserver", "paused")  # none is paused: the leader, as ever
