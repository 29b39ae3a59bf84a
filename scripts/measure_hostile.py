"""Figures for docs/performance.md "Under hostile load" (issue #9): one attack per scenario.

Each scenario starts a fresh local cluster (view service, primary, backup: default flags, so the
documented default bounds), runs an honest client (one ``pbkv.Client``, a put then a get, over
and over) while the attack lasts, and reports: the peak RSS (``VmHWM``) of the primary and the
backup, their RSS before the attack, the honest client's p50/p99/max latency and failed
operations, the view number before and after, and whether the primary kept its role (it is
still the primary; with the backup paused the view changes by design: the backup is replaced).
Loopback only; every loop is bounded; each scenario lasts at most ``--seconds`` of attack
(default 30).

Scenarios (``--only NAME`` runs one):

* ``baseline``: no attack, for comparison (the machine's own noise).
* ``client_ids``: 100,000 distinct client ids, one put each, pipelined on 4 connections.
* ``partial_frames``: 32 connections each send 16 MiB - 1 of one 16 MiB frame and stop.
* ``long_client_ids``: 300 puts, each from a client id of the longest allowed length.
* ``backup_paused``: the backup is SIGSTOPped for the attack while 8 writers put.
* ``idle_and_slowloris``: 2,000 idle connections plus 500 sending one byte per second.
* ``pipeline_no_read``: one connection pipelines Gets and never reads a reply.

Usage::

    .venv/bin/python scripts/measure_hostile.py [--only NAME] [--seconds 30] [--json]
        [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import pbkv
from pbkv.bench.local_cluster import LocalCluster, Node, viewservice_status
from pbkv.core.kv_store import Limits
from pbkv.core.messages import Get, Put, Request
from pbkv.runtime.config import parse_address
from pbkv.wire import FRAME_BYTES_MAX_DEFAULT, FRAME_HEADER, MESSAGES

HONEST_TIMEOUT_S: Final = 10.0
SLOWLORIS_S: Final = 36.0
MIB: Final = 1024 * 1024


def client_id_bytes_max() -> int:
    return Limits().client_id_bytes_max


def memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak) of ``pid`` in MiB."""
    figures: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                figures[name] = int(value.split()[0]) / 1024.0
    return figures


@dataclass
class Result:
    scenario: str
    attack_s: float
    primary_rss_before_mb: float
    primary_peak_mb: float
    backup_rss_before_mb: float
    backup_peak_mb: float
    honest_ops: int
    honest_failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    view_before: int
    view_after: int
    primary_kept_role: bool
    note: str = ""


class Honest:
    """One honest client putting and getting in a thread until stopped."""

    def __init__(self, viewserver: str) -> None:
        self.viewserver = viewserver
        self.latencies: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Honest:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(HONEST_TIMEOUT_S * 3)

    def _run(self) -> None:
        with pbkv.Client(self.viewserver, timeout=HONEST_TIMEOUT_S) as kv:
            index = 0
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    kv.put("honest", str(index))
                    kv.get("honest")
                except pbkv.PbkvError:
                    self.failed += 1
                self.latencies.append(time.monotonic() - started)
                index += 1
                time.sleep(0.01)


def roles(cluster: LocalCluster) -> tuple[int, Node, Node | None]:
    """The view number, the primary's and the backup's processes (the backup may be gone)."""
    status = viewservice_status(cluster.viewserver)
    assert status is not None and status.view.primary is not None
    by_address = {node.address: node for node in cluster.nodes}
    backup = status.view.backup
    return status.view.number, by_address[status.view.primary], by_address.get(backup or "")


def connect(address: str, receive_buffer_bytes: int | None = None) -> socket.socket:
    host, port = parse_address(address)
    sock = socket.socket()
    if receive_buffer_bytes is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    sock.connect((host, port))
    return sock


# --- attacks: each runs for at most ``seconds`` against the primary's address -------------------


def attack_none(address: str, seconds: float) -> str:
    del address
    time.sleep(seconds)
    return "no attack: the honest client alone, for the machine's noise"


def attack_client_ids(address: str, seconds: float) -> str:
    """100,000 puts from distinct client ids over 4 pipelined connections, replies read."""
    replies = asyncio.run(_distinct_clients(address, 100_000, 4, seconds))
    return f"100000 distinct client ids sent, {replies} replies"


async def _distinct_clients(address: str, total: int, connections: int, seconds: float) -> int:
    host, port = parse_address(address)
    per_connection = total // connections

    async def one(index: int) -> int:
        reader, writer = await asyncio.open_connection(host, port)

        async def send() -> None:
            for start in range(0, per_connection, 1000):
                batch = [
                    Request(f"attacker-{index}-{start + i:06d}", 0, 0, Put("k", "v"))
                    for i in range(min(1000, per_connection - start))
                ]
                writer.write(b"".join(MESSAGES.frame(request) for request in batch))
                await writer.drain()

        async def receive() -> int:
            count = 0
            while count < per_connection:
                header = await reader.readexactly(FRAME_HEADER.size)
                await reader.readexactly(FRAME_HEADER.unpack(header)[0])
                count += 1
            return count

        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(seconds):
                return await receive()
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            return 0
        finally:
            sender.cancel()
            writer.close()

    return sum(await asyncio.gather(*(one(index) for index in range(connections))))


def attack_partial_frames(address: str, seconds: float) -> str:
    socks: list[socket.socket] = []
    closed = 0
    try:
        for _ in range(32):
            sock = connect(address)
            socks.append(sock)
            try:
                sock.sendall(FRAME_HEADER.pack(FRAME_BYTES_MAX_DEFAULT) + b"x" * (16 * MIB - 1))
            except OSError:
                closed += 1
        time.sleep(min(seconds, 10.0))
    finally:
        for sock in socks:
            sock.close()
    return f"32 connections x 16 MiB - 1; {closed} refused while sending"


def attack_long_client_ids(address: str, seconds: float) -> str:
    length = client_id_bytes_max()
    deadline = time.monotonic() + seconds
    done = 0
    with connect(address) as sock:
        for index in range(300):
            if time.monotonic() > deadline:
                break
            client_id = f"{index:04d}".ljust(length, "x")
            sock.sendall(MESSAGES.frame(Request(client_id, 0, 0, Put(f"k{index}", "v"))))
            header = _read_exactly(sock, FRAME_HEADER.size)
            _read_exactly(sock, FRAME_HEADER.unpack(header)[0])
            done += 1
    return f"{done} puts with {length}-byte client ids"


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def attack_idle_and_slowloris(address: str, seconds: float) -> str:
    idle: list[socket.socket] = []
    slow: list[socket.socket] = []
    try:
        for _ in range(2000):
            with contextlib.suppress(OSError):
                idle.append(connect(address))
        for _ in range(500):
            with contextlib.suppress(OSError):
                sock = connect(address)
                sock.sendall(FRAME_HEADER.pack(1000))
                slow.append(sock)
        # Past the default --frame-timeout-s (30 s), so the slowloris closes show.
        deadline = time.monotonic() + max(seconds, SLOWLORIS_S)
        while time.monotonic() < deadline:
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(b"x")
            time.sleep(1.0)
        closed = sum(_closed(sock) for sock in slow)
        return f"{len(idle)} idle + {len(slow)} slowloris; {closed} slowloris closed by the server"
    finally:
        for sock in idle + slow:
            sock.close()


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def attack_pipeline_no_read(address: str, seconds: float) -> str:
    sent = 0
    deadline = time.monotonic() + seconds
    with connect(address, receive_buffer_bytes=4096) as sock:
        sock.setblocking(False)
        pending = b""
        while time.monotonic() < deadline:
            if not pending:
                requests = [Request("piper", sent + i, sent + i, Get("k")) for i in range(500)]
                pending = b"".join(MESSAGES.frame(request) for request in requests)
                sent += 500
            try:
                pending = pending[sock.send(pending) :]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
    return f"about {sent} Gets pipelined, no reply read"


def attack_backup_paused(viewserver: str, backup: Node) -> Callable[[str, float], str]:
    def attack(address: str, seconds: float) -> str:
        del address
        os.kill(backup.pid, signal.SIGSTOP)
        try:
            writes = asyncio.run(_writers(viewserver, seconds))
        finally:
            os.kill(backup.pid, signal.SIGCONT)
        return f"backup SIGSTOPped while 8 writers put 1 kB values ({writes} puts)"

    return attack


async def _writers(viewserver: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds

    async def writer(index: int) -> int:
        count = 0
        async with pbkv.AsyncClient(viewserver, timeout=HONEST_TIMEOUT_S) as kv:
            while time.monotonic() < deadline:
                with contextlib.suppress(pbkv.PbkvError):
                    await kv.put(f"w{index}-{count % 100}", "x" * 1000)
                count += 1
        return count

    return sum(await asyncio.gather(*(writer(index) for index in range(8))))


SCENARIOS: Final = (
    "baseline",
    "client_ids",
    "partial_frames",
    "long_client_ids",
    "backup_paused",
    "idle_and_slowloris",
    "pipeline_no_read",
)


def attack_for(name: str, viewserver: str, backup: Node) -> Callable[[str, float], str]:
    attacks: dict[str, Callable[[str, float], str]] = {
        "baseline": attack_none,
        "client_ids": attack_client_ids,
        "partial_frames": attack_partial_frames,
        "long_client_ids": attack_long_client_ids,
        "backup_paused": attack_backup_paused(viewserver, backup),
        "idle_and_slowloris": attack_idle_and_slowloris,
        "pipeline_no_read": attack_pipeline_no_read,
    }
    return attacks[name]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000.0


def run_scenario(name: str, seconds: float, keep_logs: Path | None = None) -> Result:
    with LocalCluster(servers=2) as cluster:  # started by ``with``
        view_before, primary, backup = roles(cluster)
        assert backup is not None
        before = {node.name: memory_mb(node.pid)["VmRSS"] for node in (primary, backup)}
        started = time.monotonic()
        with Honest(cluster.viewserver) as honest:
            note = attack_for(name, cluster.viewserver, backup)(primary.address, seconds)
            time.sleep(1.0)
        attack_s = time.monotonic() - started
        view_after, primary_after, _ = roles(cluster)
        peaks = {node.name: memory_mb(node.pid)["VmHWM"] for node in (primary, backup)}
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for node in cluster.nodes:
                shutil.copy(node.log_file, keep_logs / f"{name}-{node.name}.log")
    latencies = honest.latencies
    return Result(
        scenario=name,
        attack_s=round(attack_s, 1),
        primary_rss_before_mb=round(before[primary.name], 1),
        primary_peak_mb=round(peaks[primary.name], 1),
        backup_rss_before_mb=round(before[backup.name], 1),
        backup_peak_mb=round(peaks[backup.name], 1),
        honest_ops=len(latencies),
        honest_failed=honest.failed,
        p50_ms=round(statistics.median(latencies) * 1000.0, 1) if latencies else float("nan"),
        p99_ms=round(percentile(latencies, 0.99), 1),
        max_ms=round(max(latencies) * 1000.0, 1) if latencies else float("nan"),
        view_before=view_before,
        view_after=view_after,
        primary_kept_role=primary_after.name == primary.name,
        note=note,
    )


@contextlib.contextmanager
def many_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=SCENARIOS, action="append")
    parser.add_argument("--seconds", type=float, default=30.0, help="attack length (<= 40)")
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario")
    parser.add_argument("--keep-logs", type=Path, help="copy the nodes' logs into this directory")
    args = parser.parse_args(argv)
    seconds = min(args.seconds, 40.0)
    results = []
    with many_files():
        for name in args.only or SCENARIOS:
            result = run_scenario(name, seconds, args.keep_logs)
            results.append(result)
            if args.json:
                print(json.dumps(asdict(result)), flush=True)
            else:
                print(
                    f"{name}: primary {result.primary_rss_before_mb} -> peak "
                    f"{result.primary_peak_mb} MiB, backup {result.backup_rss_before_mb} -> peak "
                    f"{result.backup_peak_mb} MiB; honest p50 {result.p50_ms} ms p99 "
                    f"{result.p99_ms} ms max {result.max_ms} ms over {result.honest_ops} ops "
                    f"({result.honest_failed} failed); view {result.view_before} -> "
                    f"{result.view_after}, primary kept role: {result.primary_kept_role}; "
                    f"{result.note}",
                    flush=True,
                )
    return 0 if all(r.primary_kept_role for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
