"""The view service replicated on etcd under fire: ``make etcd-audit`` (docs/performance.md).

Starts a real 3-member etcd, three ``pbkv viewserver --etcd`` and three servers on loopback,
runs appends from ``--workers`` clients, and every ``--kill-every-s`` seconds kill -9s the
leader view service; after every kill it measures how long until another member answers as
leader, and (every other kill) kill -9s the primary right after and measures how long until
the new leader installed a view without it. Killed processes are restarted. At the end it
checks that every acknowledged append is present exactly once and audits etcd's revision
history of the view against every process's log (``pbkv.check.etcd_audit``). Exit status 0
when nothing was lost and the audit is clean, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pbkv
from pbkv.check.etcd_audit import audit, view_history
from pbkv.cluster.etcd import EtcdCluster
from pbkv.cluster.processes import free_ports
from pbkv.core.messages import StatusRequest, ViewServiceStatus
from pbkv.errors import PbkvError
from pbkv.runtime.group import call_view_service_blocking
from pbkv.wire import MESSAGES

PREFIX = "/pbkv/audit"
PING_INTERVAL_S = "0.05"
DEAD_PINGS = "5"


class Node:
    def __init__(self, kind: str, port: int, args: list[str], log: Path) -> None:
        self.kind, self.address, self.args, self.log = kind, f"127.0.0.1:{port}", args, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "pbkv", self.kind, "--listen", self.address, *self.args]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def status(members: tuple[str, ...]) -> tuple[str, ViewServiceStatus] | None:
    try:
        member, reply = call_view_service_blocking(members, StatusRequest(), MESSAGES, 0.5)
    except OSError:
        return None
    return (member, reply) if isinstance(reply, ViewServiceStatus) else None


def wait(predicate: object, timeout_s: float = 30.0) -> float:
    """Seconds until ``predicate()`` is true (polled every 10 ms); raises on timeout."""
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > timeout_s:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)
    return time.monotonic() - started


class Load:
    def __init__(self, address: str, workers: int) -> None:
        self.address = address
        self.acknowledged: dict[int, list[int]] = {w: [] for w in range(workers)}
        self.stopping = threading.Event()
        self.failures = 0
        self.threads = [threading.Thread(target=self.run, args=(w,)) for w in range(workers)]

    def run(self, worker: int) -> None:
        with pbkv.Client(self.address, timeout=10.0) as kv:
            index = 0
            while not self.stopping.is_set():
                try:
                    kv.append(f"audit{worker}", f"{index};")
                    self.acknowledged[worker].append(index)
                except PbkvError:
                    self.failures += 1
                index += 1

    def lost(self) -> int:
        lost = 0
        with pbkv.Client(self.address, timeout=30.0) as kv:
            for worker, acknowledged in self.acknowledged.items():
                present = [int(x) for x in (kv.get(f"audit{worker}") or "").split(";") if x]
                if len(present) != len(set(present)):
                    print(f"worker {worker}: an append applied twice")
                    lost += 1
                lost += len(set(acknowledged) - set(present))
        return lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every-s", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=4)
    options = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="pbkv-etcd-audit-"))
    etcd = EtcdCluster(directory / "etcd").start()
    ports = free_ports("127.0.0.1", 6)
    common = ["--ping-interval", PING_INTERVAL_S]
    etcd_args = ["--etcd", etcd.endpoints, "--etcd-prefix", PREFIX, "--dead-pings", DEAD_PINGS]
    viewservers = [
        Node("viewserver", port, [*common, *etcd_args], directory / f"vs{i}.log")
        for i, port in enumerate(ports[:3])
    ]
    members = tuple(node.address for node in viewservers)
    servers = [
        Node("server", port, [*common, "--viewserver", ",".join(members)], directory / f"s{i}.log")
        for i, port in enumerate(ports[3:])
    ]
    nodes = [*viewservers, *servers]
    try:
        for node in nodes:
            node.start()
        wait(lambda: (s := status(members)) is not None and s[1].acknowledged)
        return run(options, directory, etcd, viewservers, servers, members)
    finally:
        for node in nodes:
            node.kill()
        etcd.close()
        print(f"logs in {directory}")


def run(
    options: argparse.Namespace,
    directory: Path,
    etcd: EtcdCluster,
    viewservers: list[Node],
    servers: list[Node],
    members: tuple[str, ...],
) -> int:
    load = Load(",".join(members), options.workers)
    for thread in load.threads:
        thread.start()
    leader_s: list[float] = []
    failover_s: list[float] = []
    deadline = time.monotonic() + options.minutes * 60.0
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(options.kill_every_s)
        found = status(members)
        if found is None:
            print("no leader before a kill: skipped")
            continue
        leader, before = found
        victim = next(node for node in viewservers if node.address == leader)
        victim.kill()
        took = wait(functools.partial(moved, members, leader))
        leader_s.append(took)
        line = f"kill {kills + 1}: new leader after {took:.3f} s"
        if kills % 2 == 0 and before.view.primary is not None:
            line += failover(servers, members, before, took, failover_s)
        print(line, flush=True)
        victim.start()
        kills += 1
    load.stopping.set()
    for thread in load.threads:
        thread.join(60)
    return report(load, etcd, directory, leader_s, failover_s)


def moved(members: tuple[str, ...], leader: str) -> bool:
    found = status(members)
    return found is not None and found[0] != leader


def failover(
    servers: list[Node],
    members: tuple[str, ...],
    before: ViewServiceStatus,
    leader_s: float,
    failover_s: list[float],
) -> str:
    primary = next(node for node in servers if node.address == before.view.primary)
    primary.kill()

    def replaced() -> bool:
        found = status(members)
        return found is not None and found[1].view.primary not in (None, primary.address)

    took = wait(replaced)
    failover_s.append(leader_s + took)
    primary.start()
    return f"; primary killed right after: new primary after {took:.3f} s more"


def report(
    load: Load,
    etcd: EtcdCluster,
    directory: Path,
    leader_s: list[float],
    failover_s: list[float],
) -> int:
    lost = load.lost()
    acknowledged = sum(len(a) for a in load.acknowledged.values())
    logs = sorted(directory.glob("*.log"))
    lines = [line for log in logs for line in log.read_text().splitlines()]
    history = asyncio.run(view_history(etcd.endpoints, PREFIX))  # after the logs: a superset
    result = audit(history, lines)
    if leader_s:
        print(
            f"leader kill -9 -> new leader answers: median {statistics.median(leader_s):.3f} s, "
            f"max {max(leader_s):.3f} s over {len(leader_s)} kills"
        )
    if failover_s:
        print(
            f"leader then primary killed -> new primary: median "
            f"{statistics.median(failover_s):.3f} s, max {max(failover_s):.3f} s "
            f"over {len(failover_s)} (from the leader kill)"
        )
    print(
        f"appends acknowledged {acknowledged}, lost {lost}, failed (timed out) {load.failures}; "
        f"audit: {result.writes} view writes in etcd, {result.numbers} view numbers, "
        f"{result.log_views} views in logs, {len(result.problems)} problems"
    )
    for problem in result.problems[:20]:
        print("  " + problem)
    return 0 if lost == 0 and result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
