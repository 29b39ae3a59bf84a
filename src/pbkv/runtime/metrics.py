"""Prometheus metrics of one process, served on 127.0.0.1 with ``--metrics-port``.

Only built when the flag is given, so the data path pays nothing otherwise. Observations come
from what the host already sees: requests received and replies sent (operations by type and
outcome, latency from first arrival to reply), forwards sent, and the core's ``Log`` events
(state transfers and their sizes, servers declared dead, view changes, failovers). The view
number and role are read from the core when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pbkv.core.effects import Log
from pbkv.core.messages import Forward, Reply, Request
from pbkv.runtime.config import ADMIN_HOST

LATENCY_BUCKETS_S: Final = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
REQUESTS_TRACKED_MAX: Final = 100_000
ROLES: Final = ("primary", "backup", "idle", "viewservice")


def _is_role(role: Callable[[], str], name: str) -> Callable[[], float]:
    return lambda: float(role() == name)


class Metrics:
    """The process's collectors in a private registry."""

    def __init__(self, view_number: Callable[[], int], role: Callable[[], str]) -> None:
        registry = self.registry = CollectorRegistry()
        self.operations = Counter(
            "pbkv_operations", "Client operations answered", ["type", "outcome"], registry=registry
        )
        self.latency = Histogram(
            "pbkv_operation_latency_seconds",
            "From a request's first arrival to its reply",
            ["type"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        Gauge("pbkv_view_number", "View this process holds", registry=registry).set_function(
            lambda: float(view_number())
        )
        role_gauge = Gauge(
            "pbkv_role", "1 for the role this process has", ["role"], registry=registry
        )
        for name in ROLES:
            role_gauge.labels(name).set_function(_is_role(role, name))
        self.forwards = Counter("pbkv_forwards", "Forward batches sent", registry=registry)
        self.forwarded = Counter(
            "pbkv_forwarded_requests", "Requests sent in forwards", registry=registry
        )
        self.transfers = Counter(
            "pbkv_state_transfers", "State transfers completed", ["side"], registry=registry
        )
        self.transfer_bytes = Counter(
            "pbkv_state_transfer_bytes", "Bytes of completed state transfers", ["side"],
            registry=registry,
        )  # fmt: skip
        self.declared_dead = Counter(
            "pbkv_servers_declared_dead", "Servers declared dead", registry=registry
        )
        self.view_changes = Counter("pbkv_view_changes", "Views installed", registry=registry)
        self.failovers = Counter("pbkv_failovers", "Backups promoted to primary", registry=registry)
        self.started: dict[tuple[str, int], tuple[float, str]] = {}
        self.http: Any = None

    def serve(self, port: int) -> int:
        """Serve ``/metrics`` on 127.0.0.1:``port`` (0: any free port); returns the port."""
        self.http, _ = start_http_server(port, addr=ADMIN_HOST, registry=self.registry)
        return int(self.http.server_port)

    def close(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()

    def request_received(self, request: Request) -> None:
        key = (request.client_id, request.seq)
        if key in self.started:
            return  # a retry: latency counts from the first arrival
        if len(self.started) >= REQUESTS_TRACKED_MAX:
            self.started.clear()  # requests never answered (abandoned): forget them all
        self.started[key] = (time.monotonic(), type(request.op).__name__.lower())

    def reply_sent(self, reply: Reply) -> None:
        started = self.started.pop((reply.client_id, reply.seq), None)
        kind = "unknown" if started is None else started[1]
        self.operations.labels(kind, reply.status).inc()
        if started is not None and reply.status == "ok":
            self.latency.labels(kind).observe(time.monotonic() - started[0])

    def forward_sent(self, forward: Forward) -> None:
        self.forwards.inc()
        self.forwarded.inc(len(forward.requests))

    def on_log(self, log: Log) -> None:
        fields = log.fields
        match log.event:
            case "state_transfer_done":
                self.transfers.labels("sent").inc()
                self.transfer_bytes.labels("sent").inc(int(fields.get("bytes", 0)))
            case "state_transfer_received":
                self.transfers.labels("received").inc()
                self.transfer_bytes.labels("received").inc(int(fields.get("bytes", 0)))
            case "server_declared_dead":
                self.declared_dead.inc()
            case "view_change":
                self.view_changes.inc()
                previous = fields.get("previous_primary", "-")
                if previous != "-" and previous != fields.get("primary"):
                    self.failovers.inc()
            case "role_change" if fields.get("previous") == "backup":
                if fields.get("role") == "primary":
                    self.failovers.inc()
            case _:
                pass
