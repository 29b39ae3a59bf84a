"""Load and checks shared by the etcd tests: appends that record what was acknowledged, and
the audit of views against etcd's history."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import pbkv
from pbkv.check.etcd_audit import AuditReport, audit, view_history
from pbkv.errors import PbkvError
from tests.etcd.conftest import EtcdViewCluster


@dataclass
class AppendLoad:
    """``workers`` threads appending ``"<worker>.<i>;"`` to their own key until stopped;
    ``acknowledged[w]`` lists the appends that returned."""

    address: str
    workers: int = 3
    acknowledged: dict[int, list[int]] = field(default_factory=dict)
    failures: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> AppendLoad:
        for worker in range(self.workers):
            self.acknowledged[worker] = []
            thread = threading.Thread(target=self.run, args=(worker,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def run(self, worker: int) -> None:
        with pbkv.Client(self.address, timeout=10.0) as kv:
            index = 0
            while not self.stopping.is_set():
                try:
                    kv.append(f"load{worker}", f"{worker}.{index};")
                    self.acknowledged[worker].append(index)
                except PbkvError:
                    self.failures += 1
                index += 1
                time.sleep(0.005)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)

    def check(self, address: str) -> int:
        """Every acknowledged append is present exactly once, in order; returns how many."""
        total = 0
        with pbkv.Client(address, timeout=15.0) as kv:
            for worker, acknowledged in self.acknowledged.items():
                value = kv.get(f"load{worker}") or ""
                present = [int(item.split(".")[1]) for item in value.split(";") if item]
                assert len(present) == len(set(present)), f"an append applied twice: {value}"
                assert present == sorted(present), f"appends out of order: {value}"
                missing = set(acknowledged) - set(present)
                assert not missing, f"acknowledged appends lost: {sorted(missing)[:10]}"
                total += len(acknowledged)
        return total


def audit_cluster(cluster: EtcdViewCluster) -> AuditReport:
    """The logs first, then etcd's history: a view changed in between is then in the history
    (written before anyone logged it), not a false "never written"."""
    lines = [
        line
        for node in [*cluster.viewservers, *cluster.servers]
        for line in node.log_text().splitlines()
    ]
    history = asyncio.run(view_history(cluster.endpoints, cluster.prefix))
    report = audit(history, lines)
    assert report.ok, "\n".join(report.problems)
    return report


def log_time(line: str) -> float:
    """Seconds since the epoch of a log line's ISO timestamp."""
    from datetime import datetime

    stamp = line.split(" ", 1)[0].rstrip("Z")
    return datetime.fromisoformat(stamp + "+00:00").timestamp()


def first_line(text: str, event: str) -> str | None:
    return next((line for line in text.splitlines() if f" {event} " in f"{line} "), None)
