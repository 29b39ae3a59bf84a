"""Waiting for the processes of a local cluster to start, and saying why one did not.

Theory of operation: a process counts as started when it shows it itself, never because its
address looks alive. A view service answers; a server's ping reached the view service after the
process started (the view service measures a ping's age in ticks: a previous incarnation's pings
still count as alive for a dead interval, so they must not count here); a restarted process
also logged its own ``listening pid=N`` line first (its disk recovered, its port bound). A
process that dies while we wait, or does not make it in time, is one line: what went wrong, its
last log line (usually its own one-line error) and where its log is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, NoReturn

from pbkv.cluster import processes
from pbkv.cluster.etcd import cluster_tls, wait_records_healthy
from pbkv.cluster.logs import logged
from pbkv.cluster.rpc import NoAnswer, get_view, viewserver_status
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.cluster.targets import ClusterError, ClusterFailed
from pbkv.errors import PbkvError
from pbkv.runtime.config import TICK_INTERVAL_S

POLL_S: Final = 0.02
PING_AGE_MARGIN_S: Final = 0.05
"""How much younger than the time since a start a ping's age must be to count as the new
incarnation's (the view service measures it in whole ticks)."""
PORT_TAKEN_TEXT: Final = "already in use"


class PortTaken(ClusterError):
    """A process could not bind a port that was free when it was chosen (another program took
    it in between); with free ports, ``up`` picks others and tries again."""

    def __init__(self, message: str, record: ProcessRecord) -> None:
        super().__init__(message)
        self.record = record


def wait_etcd(state: ClusterState, deadline: float) -> None:
    records = [p for p in state.processes if p.kind == "etcd"]
    try:
        tls = cluster_tls(state.directory)
        wait_records_healthy(records, max(1.0, deadline - time.monotonic()), tls)
    except PbkvError as error:
        raise ClusterFailed(f"etcd did not start: {error}") from None


def wait_started(state: ClusterState, record: ProcessRecord, deadline: float) -> None:
    """Wait until the view service answers, or until the server pinged it."""
    if record.kind == "etcd":
        return
    if record.kind == "viewserver":
        wait(lambda: answers(state.viewserver), deadline, record, "answer")
    else:
        wait(lambda: has_pinged(state, record), deadline, record, "ping the view service")


def answers(viewserver: str) -> bool:
    try:
        get_view(viewserver, timeout_s=0.5)
    except NoAnswer:
        return False
    return True


def has_pinged(state: ClusterState, record: ProcessRecord) -> bool:
    """The view service heard a ping that ``record``'s incarnation sent: one younger than the
    time since it started (a previous incarnation's pings still count as alive for a while)."""
    try:
        status = viewserver_status(state.viewserver, timeout_s=0.5)
    except NoAnswer:
        return False
    since_start_s = time.time() - record.started_at - PING_AGE_MARGIN_S
    return any(
        s.name == record.address
        and s.alive
        and s.last_ping_age_ticks * TICK_INTERVAL_S < since_start_s
        for s in status.servers
    )


def serving(state: ClusterState, want_backup: bool) -> bool:
    try:
        status = viewserver_status(state.viewserver, timeout_s=0.5)
    except NoAnswer:
        return False
    view = status.view
    if view.primary is None or (want_backup and view.backup is None):
        return False
    return status.acknowledged


def wait(
    ready: Callable[[], bool],
    deadline: float,
    record: ProcessRecord,
    what: str,
    log_offset: int = 0,
) -> None:
    """Poll ``ready`` until it holds; ``ClusterFailed`` (one line with the process's last log
    line after ``log_offset``) when the process dies first or the deadline passes."""
    while not ready():
        if processes.process_state(record.pid) == "dead":
            raise_exited(record, log_offset)
        if time.monotonic() >= deadline:
            lines = processes.tail(Path(record.log_file), offset=log_offset)
            raise ClusterFailed(start_failure(record, f"did not {what} in time", lines))
        time.sleep(POLL_S)


def raise_exited(record: ProcessRecord, log_offset: int) -> NoReturn:
    lines = processes.tail(Path(record.log_file), offset=log_offset)
    message = start_failure(record, "exited during start-up", lines)
    if any(PORT_TAKEN_TEXT in line for line in lines):
        raise PortTaken(message, record)
    raise ClusterFailed(message)


def start_failure(record: ProcessRecord, what: str, lines: list[str]) -> str:
    """One line: what went wrong, the process's last log line (usually its own one-line
    error) and where its log is."""
    last = lines[-1].strip().removeprefix("pbkv: error: ") if lines else "its log is empty"
    return f"{record.name} {what}: {last} (log: {record.log_file})"


def wait_restarted(
    state: ClusterState, record: ProcessRecord, log_offset: int, deadline: float
) -> None:
    """Wait until the new incarnation itself runs: it logged that it listens (with its pid:
    its disk was recovered, its port bound), it answers or pinged since it started, and it is
    still alive then. ``ClusterFailed`` with its last log line otherwise."""
    if record.kind == "etcd":
        return

    def listening() -> bool:
        return logged(Path(record.log_file), log_offset, "listening", pid=record.pid)

    wait(listening, deadline, record, "start", log_offset)
    wait_started(state, record, deadline)
    if processes.process_state(record.pid) == "dead":
        raise_exited(record, log_offset)


def log_size(record: ProcessRecord) -> int:
    try:
        return Path(record.log_file).stat().st_size
    except OSError:
        return 0
