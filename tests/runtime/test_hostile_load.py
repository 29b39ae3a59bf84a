"""Issue #9 against real processes: no client behaviour takes a server past its byte budgets,
stops its pings, or locks an honest client out, and every such event is counted and logged.

Attack sizes are scaled down through the node flags (``--frame-bytes-max``,
``--buffers-bytes-max``, ``--connections-max``, ``--idle-timeout-s``, ``--frame-timeout-s``) so
each test takes seconds; ``scripts/measure_hostile.py`` runs them at full size.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pbkv.core.messages import Forward, Get, Ping, Request
from pbkv.runtime.admin import AdminStatus, AdminStatusReply, send_admin
from pbkv.wire import FRAME_HEADER, MESSAGES
from tests import authed
from tests.conftest import Cluster, NodeProcess, free_port

MIB = 1024 * 1024
Factory = Callable[..., Cluster]


def counters(node: NodeProcess) -> dict[str, int]:
    assert node.admin is not None
    reply = send_admin(node.admin, AdminStatus())
    assert isinstance(reply, AdminStatusReply)
    return dict(reply.counters)


def connect(address: str) -> socket.socket:
    return authed.connect(address)


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer closed ``sock`` (EOF or reset); never blocks."""
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@contextlib.contextmanager
def sockets(address: str, count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):
                opened.append(connect(address))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def honest_ops(cluster: Cluster, count: int = 20, key: str = "honest") -> None:
    """An honest client's puts and gets all complete."""
    client = cluster.client(timeout=10.0)
    for index in range(count):
        client.put(key, str(index))
        assert client.get(key) == str(index)


@pytest.fixture
def many_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_partial_frames_of_many_connections_stay_within_the_receive_budget(
    cluster_factory: Factory,
) -> None:
    flags = ("--frame-bytes-max", str(MIB), "--buffers-bytes-max", str(8 * MIB))
    values = ("--value-bytes-max", str(256 * 1024))  # a maximal request must fit a frame
    cluster = cluster_factory(admin=True, node_args=flags, server_args=values)
    view = cluster.view()
    primary = cluster.primary()
    # 16 connections each send all but the last byte of a maximal frame: 16 MiB in all, while
    # the receive budget is half of --buffers-bytes-max (4 MiB).
    with sockets(primary.address, 16) as attackers:
        for sock in attackers:
            with contextlib.suppress(OSError):
                sock.sendall(FRAME_HEADER.pack(MIB) + b"x" * (MIB - 1))
        time.sleep(0.5)
        closed = sum(closed_by_peer(sock) for sock in attackers)
        assert closed >= 12, closed  # at most 4 MiB of partial frames are held
        assert counters(primary).get("connections_closed_receive_budget", 0) >= 12
        honest_ops(cluster)
    assert cluster.view() == view


def test_slowloris_connections_are_closed_after_the_frame_timeout(
    cluster_factory: Factory,
) -> None:
    cluster = cluster_factory(admin=True, node_args=("--frame-timeout-s", "1"))
    primary = cluster.primary()
    with sockets(primary.address, 30) as attackers:
        started = time.monotonic()
        for sock in attackers:
            sock.sendall(FRAME_HEADER.pack(100))
        while time.monotonic() - started < 3.0:  # one byte per connection every 0.2 s
            for sock in attackers:
                with contextlib.suppress(OSError):
                    sock.send(b"x")
            time.sleep(0.2)
        assert all(closed_by_peer(sock) for sock in attackers)
    assert counters(primary).get("connections_closed_frame_timeout", 0) >= 30
    assert "frame incomplete after 1 s" in primary.log_text()
    honest_ops(cluster)


@pytest.mark.parametrize("durable", [False, True], ids=["in-memory", "durable"])
def test_idle_connections_at_the_cap_do_not_stop_a_new_client(
    cluster_factory: Factory, many_files: None, durable: bool
) -> None:
    """2,000 connections at a cap of 100; also with servers on disk (``--fsync always``)."""
    flags = ("--connections-max", "100", "--idle-timeout-s", "3")
    cluster = cluster_factory(admin=True, node_args=flags, durable_servers=durable)
    view = cluster.view()
    primary = cluster.primary()
    with sockets(primary.address, 2000) as attackers:
        time.sleep(1.2)  # the attackers are now quiet longer than a newcomer's grace
        honest_ops(cluster)
        stats = counters(primary)
        assert stats.get("connections_refused", 0) + stats.get("connections_evicted", 0) >= 1900
        wait_until(lambda: all(closed_by_peer(sock) for sock in attackers), 10.0, "idle closes")
    assert counters(primary).get("connections_closed_idle", 0) >= 1
    assert "connection_refused" in primary.log_text()
    assert cluster.view() == view


def _pipeline_without_reading(address: str, stop: threading.Event) -> None:
    """Pipeline new ``Get``s as fast as the socket takes them and never read a reply."""
    seq = 0
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies back up sooner
        authed.connect(address, sock=sock)
        sock.setblocking(False)
        pending = b""
        while not stop.is_set():
            if not pending:
                requests = [Request("attacker", seq + i, seq + i, Get("k")) for i in range(500)]
                pending = b"".join(MESSAGES.frame(request) for request in requests)
                seq += 500
            try:
                pending = pending[sock.send(pending) :]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return


def test_a_connection_that_never_reads_its_replies_does_not_cost_the_primary_its_role(
    cluster_factory: Factory,
) -> None:
    cluster = cluster_factory(admin=True, ping_interval=0.1)  # the default dead time: 0.5 s
    view = cluster.view()
    primary = cluster.primary()
    stop = threading.Event()
    attacker = threading.Thread(target=_pipeline_without_reading, args=(primary.address, stop))
    attacker.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 10.0:
            honest_ops(cluster, count=5)
            assert cluster.view() == view
    finally:
        stop.set()
        attacker.join()
    assert counters(primary).get("connections_backpressured", 0) >= 1
    assert cluster.view() == view


def test_a_flood_of_ignored_messages_writes_rate_limited_lines_with_a_count(
    cluster: Cluster,
) -> None:
    flood = MESSAGES.frame(Forward(1, "nobody:1", 0, ())) * 5000
    with connect(cluster.address) as sock:
        sock.sendall(flood)
        time.sleep(1.5)  # the housekeeping reports what it held back
    text = cluster.viewserver.log_text()
    lines = [line for line in text.splitlines() if "message_ignored" in line]
    assert 1 <= len(lines) <= 60, len(lines)
    assert "log_suppressed event=message_ignored suppressed=" in text


def test_a_status_over_the_frame_limit_says_so(tmp_path: Path) -> None:
    port = free_port()
    args = ["--listen", "127.0.0.1:{port}", "--no-data-dir", "--frame-bytes-max", "4096"]
    viewserver = NodeProcess("viewserver", args, port, tmp_path / "viewserver.log").start()
    try:
        for index in range(60):
            with connect(viewserver.address) as sock:
                sock.sendall(MESSAGES.frame(Ping(f"127.0.0.1:{10000 + index}" + "x" * 90, 0, 1)))
        command = [sys.executable, "-m", "pbkv", "status", "--viewserver", viewserver.address]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert "status too large: 60 servers" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    finally:
        viewserver.kill()
