"""Prometheus metrics of one process, served over HTTP by the process's own asyncio loop.

Only built when ``--metrics-port`` (or ``--metrics-listen HOST:PORT``) is given, so the data path
pays nothing otherwise. Every name and meaning is listed in docs/metrics.md.

Theory of operation. Observations come from what the host already sees: requests received and
replies sent (operations by type and outcome, latency from first arrival to reply, operations in
flight), forwards sent and their replies (replication round trip), and the core's ``Log`` events
(state transfers and their sizes, servers declared dead, views installed, failovers). Gauges
(view number, role, keys, acknowledged view, connections) are read from the host when scraped.

The per-operation series (operations, their latency, forwards, the replication round trip) are
kept in plain Python (``CountTally``, ``HistogramTally``) and turned into metric families only
when scraped (``HotCollector``): a ``prometheus_client`` counter or histogram resolves its labels
and takes a lock on every update, which cost a primary about 30 % of its CPU at 64 clients
(py-spy, docs/metrics.md "What metrics cost"). Updates and scrapes run on the same loop, so no
lock is needed.

A process exports only what applies to it: a server counts client operations, replication and
transfers; the view service counts views, failovers and declared-dead servers. A failover is
counted by the view service alone (a ``view_change`` whose new primary differs from the previous
one), so summing ``pbkv_failovers_total`` over the cluster counts each failover once.

Serving. ``MetricsHttp`` binds its socket synchronously (so ``serve`` can return the port) and
serves it from the running asyncio loop: one task per connection, never a thread, at most
``connections_max`` connections at once (more are closed at once and counted), each with a
bounded request (``request_bytes_max``) and a deadline (``request_timeout_s``). One request per
connection (``Connection: close``); ``GET /metrics`` (or ``/``) answers the exposition text.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client import (
    GCCollector as _GCCollector,
)
from prometheus_client import (
    PlatformCollector as _PlatformCollector,
)
from prometheus_client import (
    ProcessCollector as _ProcessCollector,
)

from pbkv import __version__
from pbkv.core.effects import Log
from pbkv.runtime.config import ADMIN_HOST
from pbkv.runtime.metric_tally import HotCollector, ServerObservations

LATENCY_BUCKETS_S: Final = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
SERVER_ROLES: Final = ("primary", "backup", "idle")
VIEWSERVICE_ROLE: Final = "viewservice"

CERTIFICATE_EXPIRY_METRIC: Final = "pbkv_tls_certificate_expiry_timestamp_seconds"


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds of the metrics endpoint.

    Attributes:
        connections_max: connections served at once; more are closed on accept.
        request_bytes_max: largest request head read (request line and headers).
        request_timeout_s: time a client has to send its request and read the answer.
    """

    connections_max: int = 64
    request_bytes_max: int = 8_192
    request_timeout_s: float = 5.0


class MetricsHttp:
    """A minimal HTTP/1.1 endpoint on the running asyncio loop (no thread per connection)."""

    def __init__(self, render: Callable[[], bytes], limits: HttpLimits | None = None) -> None:
        self.render = render
        self.limits = limits or HttpLimits()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.refused = 0
        self.served = 0
        self.port = 0
        self._start: asyncio.Task[asyncio.Server] | None = None

    def listen(self, host: str, port: int) -> int:
        """Bind ``host:port`` now and start serving on the running loop; returns the port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._start = asyncio.get_running_loop().create_task(
            asyncio.start_server(self._handle, sock=sock, limit=self.limits.request_bytes_max)
        )
        self._start.add_done_callback(self._started)
        self.port = int(sock.getsockname()[1])
        return self.port

    def _started(self, task: asyncio.Task[asyncio.Server]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.server = task.result()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.writers) >= self.limits.connections_max:
            self.refused += 1
            writer.close()
            return
        self.writers.add(writer)
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(self._respond(head.split(b"\r\n", 1)[0]))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a slow, truncated or oversized request: the connection just closes
        finally:
            self.writers.discard(writer)
            writer.close()

    def _respond(self, request_line: bytes) -> bytes:
        parts = request_line.split()
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            return _response(405, b"text/plain", b"only GET /metrics\n")
        path = parts[1].split(b"?", 1)[0]
        if path not in (b"/metrics", b"/"):
            return _response(404, b"text/plain", b"not found: try /metrics\n")
        self.served += 1
        body = self.render()
        return _response(200, b"text/plain; version=0.0.4; charset=utf-8", body, parts[0])

    def close(self) -> None:
        if self._start is not None and not self._start.done():
            self._start.cancel()
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()


_REASONS: Final = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed"}


def _response(status: int, content_type: bytes, body: bytes, method: bytes = b"GET") -> bytes:
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, _REASONS[status], content_type, len(body))
    )
    return head if method == b"HEAD" else head + body


class MetricsSource(Protocol):
    """What the metrics read from their host when scraped (``NodeHost`` satisfies it)."""

    kind: str

    def role(self) -> str: ...

    def metrics_gauges(self) -> dict[str, float]: ...


def _is_role(role: Callable[[], str], name: str) -> Callable[[], float]:
    return lambda: float(role() == name)


class Metrics:
    """The process's collectors in a private registry.

    Args:
        view_number: the view this process holds, read when scraped.
        role: its role (``primary``, ``backup``, ``idle`` or ``viewservice``).
        gauges: optional extra readings when scraped (``keys``, ``connections``,
            ``acknowledged``, ``backup_synced``); missing ones read as 0.
    """

    def __init__(
        self,
        view_number: Callable[[], int],
        role: Callable[[], str],
        gauges: Callable[[], dict[str, float]] | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        registry = self.registry = CollectorRegistry()
        self.server = role() != VIEWSERVICE_ROLE
        self.observed: ServerObservations | None = None
        """The per-operation observations (servers only); the host feeds them directly."""
        self.limits = limits
        self._gauges = gauges or dict
        _PlatformCollector(registry=registry)
        _ProcessCollector(registry=registry)
        _GCCollector(registry=registry)  # python_gc_*: collections and their objects
        Info("pbkv_build", "pbkv version and process kind", registry=registry).info(
            {"version": __version__, "kind": "server" if self.server else "viewserver"}
        )
        Gauge("pbkv_view_number", "View this process holds", registry=registry).set_function(
            lambda: float(view_number())
        )
        role_gauge = Gauge(
            "pbkv_role", "1 for the role this process has", ["role"], registry=registry
        )
        for name in SERVER_ROLES if self.server else (VIEWSERVICE_ROLE,):
            role_gauge.labels(name).set_function(_is_role(role, name))
        self._gauge("pbkv_connections", "Inbound connections open now", "connections")
        self.view_changes = Counter(
            "pbkv_view_changes",
            "Views installed (view service) or learned (server)",
            registry=registry,
        )
        if self.server:
            self._server_metrics(registry)
        else:
            self._viewservice_metrics(registry)
        self.http: MetricsHttp | None = None

    def _gauge(self, name: str, text: str, key: str) -> None:
        Gauge(name, text, registry=self.registry).set_function(
            lambda: float(self._gauges().get(key, 0.0))
        )

    def certificate_gauge(self, expires_s: Callable[[], float]) -> None:
        """The TLS certificate's expiry (processes with ``--tls-cert``; follows reloads)."""
        Gauge(
            CERTIFICATE_EXPIRY_METRIC,
            "Unix time when the TLS certificate this process presents expires",
            registry=self.registry,
        ).set_function(expires_s)

    def _server_metrics(self, registry: CollectorRegistry) -> None:
        hot = HotCollector()
        self.observed = ServerObservations(hot, LATENCY_BUCKETS_S)
        registry.register(hot.as_collector())
        self._gauge("pbkv_keys", "Keys this server holds", "keys")
        self.disk_syncs = Histogram(
            "pbkv_disk_sync_seconds",
            "Time of each fsync the server waited for (--data-dir; N6: keep well below the "
            "dead interval)",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.transfers = Counter(
            "pbkv_state_transfers", "State transfers completed", ["side"], registry=registry
        )
        self.transfer_bytes = Counter(
            "pbkv_state_transfer_bytes",
            "Key and value bytes of completed state transfers (the same count on both sides)",
            ["side"],
            registry=registry,
        )

    def _viewservice_metrics(self, registry: CollectorRegistry) -> None:
        self.declared_dead = Counter(
            "pbkv_servers_declared_dead", "Servers declared dead", registry=registry
        )
        self.failovers = Counter(
            "pbkv_failovers", "Views whose primary replaced the previous one", registry=registry
        )
        self._gauge("pbkv_view_acknowledged", "1 when the primary acknowledged the view", "ack")
        self._gauge(
            "pbkv_backup_synced", "1 when the backup of the view reported it is in sync", "synced"
        )

    def serve(self, port: int, host: str = ADMIN_HOST) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: any free port) from the running loop;
        returns the port."""
        self.http = MetricsHttp(lambda: bytes(generate_latest(self.registry)), self.limits)
        return self.http.listen(host, port)

    def close(self) -> None:
        if self.http is not None:
            self.http.close()

    def on_log(self, log: Log) -> None:
        fields = log.fields
        match log.event:
            case "state_transfer_done" if self.server:
                self.transfers.labels("sent").inc()
                self.transfer_bytes.labels("sent").inc(int(fields.get("bytes", 0)))
            case "state_transfer_received" if self.server:
                self.transfers.labels("received").inc()
                self.transfer_bytes.labels("received").inc(int(fields.get("bytes", 0)))
            case "view_learned" if self.server:
                self.view_changes.inc()
            case "server_declared_dead" if not self.server:
                self.declared_dead.inc()
            case "view_change" if not self.server:
                self.view_changes.inc()
                previous = fields.get("previous_primary", "-")
                if previous not in ("-", "", None) and previous != fields.get("primary"):
                    self.failovers.inc()
            case _:
                pass
