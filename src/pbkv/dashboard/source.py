"""What the dashboard shows, read from what ``pbkv status`` and the cluster layer expose.

Theory of operation: a ``Source`` is polled (in a worker thread: every read here blocks on a
socket with a short timeout) and returns one JSON-ready snapshot: the view service's current
view, every node's role, phase, liveness, last ping and restarts (incarnations are not
published), the timeline of views, and throughput and latency over the last minutes.
Nothing here decides anything about the protocol.

Two sources: ``ClusterSource`` for a local cluster (``pbkv cluster`` directory: it knows every
process, its pid, its metrics port and its log) and ``ViewServerSource`` for any running view
service (it knows only what the view service and the servers answer). The timeline of a local
cluster comes from the view service's own ``view_change`` log lines (exact times, also for views
made before the dashboard started); otherwise from view numbers seen changing between polls.
A new history replaces the old one: a new cluster in the directory (``up`` again: another
``created_at``) is read from its logs' start, and view 1 after later views (a view service
restarted without its state numbers from 1) begins the timeline anew.
Every log is followed: a poll reads only what it gained since the previous one (the failovers
too, ``pbkv.cluster.status.FailoverCounter``), and of the view service's log parses only the
``view_change`` lines.

Throughput and latency come from the servers' Prometheus metrics: each poll reads
``pbkv_operations_total`` and the latency histogram buckets of every server, and the difference
from the previous poll gives operations per second and the p50/p99 of the operations completed
in between (bucket upper bounds: a percentile is reported as the bucket it falls in). A
restarted server's counters start again from zero: a negative difference counts from zero.
The same poll reads every live process's ``pbkv_tls_certificate_expiry_timestamp_seconds``
(a local cluster started with ``--tls``), which the page shows as each node's certificate
expiry, so a certificate about to expire is seen where the cluster is watched.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from prometheus_client.parser import text_string_to_metric_families

from pbkv.cluster.logs import CLUSTER_LOG_NAME, CLUSTER_SOURCE, LogFollower
from pbkv.cluster.rpc import NoAnswer, dump_header_and_certificate, viewserver_status
from pbkv.cluster.state import ClusterState, load_state, logs_dir
from pbkv.cluster.status import (
    FailoverCounter,
    NodeStatus,
    collect,
    view_note,
    view_summary_note,
)
from pbkv.core.messages import (
    NO_CLUSTER,
    NO_VIEW_NUMBER,
    DumpReply,
    View,
    ViewServiceStatus,
    cluster_label,
)
from pbkv.errors import PbkvError
from pbkv.runtime.config import TICK_INTERVAL_S
from pbkv.runtime.metrics import CERTIFICATE_EXPIRY_METRIC
from pbkv.runtime.rpc import presented_certificate_expiry, tool_security

SCRAPE_TIMEOUT_S: Final = 0.4
CERTIFICATE_PROBE_INTERVAL_S: Final = 60.0
STATUS_TIMEOUT_S: Final = 0.5
RATE_SAMPLES_MAX: Final = 600
"""Throughput samples kept (at the default 0.5 s poll: the last 5 minutes)."""
TIMELINE_VIEWS_MAX: Final = 200
TIMELINE_EVENTS: Final = ("view_change",)
"""The view service's events the timeline is drawn from."""
FAULTS_KEPT_MAX: Final = 200


class Source(Protocol):
    """Something the dashboard can poll."""

    actions: bool

    def snapshot(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class _Scrape:
    ops: float
    buckets: dict[float, float]
    certificate_expiry: float | None = None
    """When the TLS certificate the process presents expires (Unix time; None: no TLS, or
    not known)."""


@dataclass(slots=True)
class Rates:
    """Operations per second and latency percentiles from successive metric scrapes."""

    samples: deque[dict[str, float | None]] = field(
        default_factory=lambda: deque(maxlen=RATE_SAMPLES_MAX)
    )
    previous: dict[str, _Scrape] = field(default_factory=dict)
    previous_ts: float = 0.0

    def add(self, now: float, scrapes: dict[str, _Scrape]) -> None:
        """Record one sample from this poll's scrapes (by node name)."""
        if self.previous_ts and now > self.previous_ts:
            ops = 0.0
            buckets: dict[float, float] = {}
            for name, scrape in scrapes.items():
                before = self.previous.get(name, _Scrape(0.0, {}))
                reset = scrape.ops < before.ops
                ops += scrape.ops if reset else scrape.ops - before.ops
                for bound, count in scrape.buckets.items():
                    old = 0.0 if reset else before.buckets.get(bound, 0.0)
                    buckets[bound] = buckets.get(bound, 0.0) + max(0.0, count - old)
            elapsed = now - self.previous_ts
            self.samples.append(
                {
                    "ts": round(now, 3),
                    "ops_per_s": round(ops / elapsed, 1),
                    "p50_ms": percentile_ms(buckets, 0.50),
                    "p99_ms": percentile_ms(buckets, 0.99),
                }
            )
        self.previous = dict(scrapes)
        self.previous_ts = now


def percentile_ms(buckets: dict[float, float], quantile: float) -> float | None:
    """The upper bound (ms) of the cumulative bucket holding ``quantile``; None if empty."""
    ordered = sorted(buckets.items())
    total = ordered[-1][1] if ordered else 0.0
    if total <= 0:
        return None
    for bound, count in ordered:
        if count >= quantile * total:
            return None if bound == float("inf") else round(bound * 1000.0, 3)
    return None


def parse_metrics(text: str) -> _Scrape:
    """Answered operations, the summed latency buckets (cumulative) and the certificate's
    expiry of one scrape."""
    ops = 0.0
    buckets: dict[float, float] = {}
    expiry: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pbkv_operations_total":
                ops += sample.value
            elif sample.name == "pbkv_operation_latency_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == CERTIFICATE_EXPIRY_METRIC and math.isfinite(sample.value):
                expiry = sample.value  # NaN: the process could not read its certificate
    return _Scrape(ops, buckets, expiry)


def scrape(port: int, host: str = "127.0.0.1") -> _Scrape | None:
    """One server's metrics, or None if it does not answer in time."""
    try:
        url = f"http://{host}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
            return parse_metrics(response.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None


def view_json(
    view: View | None, status: ViewServiceStatus | None, viewserver: str
) -> dict[str, Any] | None:
    """The page's header: the view (None when the service did not answer); ``number`` stays
    an int (0: no view formed yet) and ``note`` says that in ``pbkv cluster status``'s words."""
    if view is None:
        return None
    return {
        "number": view.number,
        "note": view_summary_note(view, viewserver, status),
        "primary": view.primary,
        "backups": list(view.backups),
        "acknowledged": bool(status and status.acknowledged),
        "backup_synced": bool(status and status.backup_synced),
        "waiting": status.waiting if status is not None else "",
        "cluster": cluster_label(status.cluster_id if status is not None else NO_CLUSTER),
    }


class Timeline:
    """Views in the order they were made, each with its time and whether it was a failover."""

    def __init__(self) -> None:
        self.views: deque[dict[str, Any]] = deque(maxlen=TIMELINE_VIEWS_MAX)
        self.faults: deque[dict[str, Any]] = deque(maxlen=FAULTS_KEPT_MAX)

    def add_view(self, ts: float, number: int, primary: str, backup: str, previous: str) -> None:
        """Append a view newer than the last one. View 1 after a later view (or after another
        view 1) begins a new history: a view service restarted without its state, or a new
        cluster in the same directory, numbers from 1 again; its views replace the old ones."""
        if self.views:
            last = self.views[-1]
            if number == 1 and (last["number"] > 1 or last["primary"] != primary):
                self.views.clear()
            elif last["number"] >= number:
                return
        failover = previous not in ("", "-", "None") and previous != primary
        self.views.append(
            {
                "ts": round(ts, 3),
                "number": number,
                "primary": primary,
                "backup": backup,
                "failover": failover,
            }
        )

    def observe(self, ts: float, view: View | None) -> None:
        """A view seen by polling (when no log tells us when it was made)."""
        if view is None or view.number == NO_VIEW_NUMBER:
            return  # no view formed yet: nothing to draw
        if self.views and self.views[-1]["number"] >= view.number:
            return
        previous = self.views[-1]["primary"] if self.views else "-"
        backups = ",".join(view.backups) or "-"
        self.add_view(ts, view.number, view.primary or "-", backups, previous)

    def add_fault(self, ts: float, action: str, target: str, result: str) -> None:
        self.faults.append(
            {"ts": round(ts, 3), "action": action, "target": target, "result": result}
        )

    def to_json(self) -> dict[str, Any]:
        return {"views": list(self.views), "faults": list(self.faults)}


def _node_json(node: NodeStatus, certificate_expires: float | None = None) -> dict[str, Any]:
    record = node.record
    return {
        "name": record.name,
        "address": record.address,
        "kind": record.kind,
        "state": node.state,
        "role": node.role,
        "own_role": node.own_role,
        "phase": node.phase,
        "own_view": node.own_view,
        "own_view_note": node.own_view_note,
        "keys": node.keys,
        "last_ping_age_s": node.last_ping_age_s,
        "restarts": record.restarts,
        "health": node.health,
        "certificate_expires": certificate_expires,
    }


class ClusterSource:
    """A local cluster in a ``pbkv cluster`` directory: status, metrics, log timeline, faults."""

    actions = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.timeline = Timeline()
        self.rates = Rates()
        self.views: LogFollower | None = None
        self.faults: LogFollower | None = None
        self.failovers = FailoverCounter()
        self.created_at: float | None = None

    def state(self) -> ClusterState:
        return load_state(self.directory)

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        try:
            state = self.state()
        except PbkvError as error:
            return {"mode": "cluster", "now": now, "error": str(error), "nodes": [], "view": None}
        self._read_timeline(state)
        status = collect(state, self.failovers)
        self.timeline.observe(now, status.view)
        expiries = self._read_metrics(now, state, status.nodes)
        return {
            "mode": "cluster",
            "now": now,
            "directory": str(self.directory),
            "viewserver": state.viewserver,
            "view": view_json(status.view, status.service, state.viewserver),
            "nodes": [_node_json(node, expiries.get(node.record.name)) for node in status.nodes],
            "failovers": status.failovers,
            "timeline": self.timeline.to_json(),
            "rates": list(self.rates.samples),
            "notes": [status.rotation] if status.rotation else [],
            "actions": True,
            "error": None if status.view is not None else "the view service does not answer",
        }

    def _read_timeline(self, state: ClusterState) -> None:
        if not state.processes:
            return
        if state.created_at != self.created_at:  # a new cluster: `up` started its logs anew
            self.timeline, self.views, self.faults = Timeline(), None, None
            self.created_at = state.created_at
        if self.views is None or self.faults is None:
            log = Path(state.processes[0].log_file)
            self.views = LogFollower({"viewserver": log}, events=TIMELINE_EVENTS)
            faults = logs_dir(state.directory) / CLUSTER_LOG_NAME
            self.faults = LogFollower({CLUSTER_SOURCE: faults})
        for event in self.faults.catch_up():
            action = event.event.removeprefix("cluster_")
            target = str(event.fields.get("target", event.fields.get("a", "")))
            self.timeline.add_fault(event.ts, action, target, "")
        for event in self.views.catch_up():
            if event.event == "view_change":
                fields = event.fields
                self.timeline.add_view(
                    event.ts,
                    event.view,
                    str(fields.get("primary", "-")),
                    str(fields.get("backup", "-")),
                    str(fields.get("previous_primary", "-")),
                )

    def _read_metrics(
        self, now: float, state: ClusterState, nodes: tuple[NodeStatus, ...]
    ) -> dict[str, float]:
        """Scrape every live process: the servers' counters make the rates; each process's
        certificate expiry (by name) is returned."""
        alive = {n.record.name: n.record.metrics_port for n in nodes if n.state == "alive"}
        scrapes: dict[str, _Scrape] = {}
        if alive:
            with ThreadPoolExecutor(max_workers=len(alive)) as pool:
                results = pool.map(scrape, alive.values())
                for name, result in zip(alive, results, strict=True):
                    if result is not None:
                        scrapes[name] = result
        servers = {record.name for record in state.servers()}
        self.rates.add(now, {name: got for name, got in scrapes.items() if name in servers})
        return {
            name: got.certificate_expiry
            for name, got in scrapes.items()
            if got.certificate_expiry is not None
        }


class ViewServerSource:
    """Any running view service: its status and each server's own answer. No faults."""

    actions = False

    def __init__(self, viewserver: str) -> None:
        self.viewserver = viewserver
        self.timeline = Timeline()
        self.viewserver_certificate: tuple[float, float | None] | None = None
        """(when read, expiry) of the view service's certificate, read again every minute."""

    def viewserver_certificate_expiry(self, now: float) -> float | None:
        """With TLS, when the view service's certificate expires, from a handshake at most
        once a ``CERTIFICATE_PROBE_INTERVAL_S`` (the servers' come with their dumps)."""
        if tool_security().client_tls is None or "," in self.viewserver:
            return None
        known = self.viewserver_certificate
        if known is None or now - known[0] >= CERTIFICATE_PROBE_INTERVAL_S:
            expiry = presented_certificate_expiry(self.viewserver, STATUS_TIMEOUT_S)
            known = self.viewserver_certificate = (now, expiry)
        return known[1]

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        try:
            status = viewserver_status(self.viewserver, STATUS_TIMEOUT_S)
        except NoAnswer as error:
            return {
                "mode": "viewserver",
                "now": now,
                "error": str(error),
                "nodes": [],
                "view": None,
            }
        self.timeline.observe(now, status.view)
        names = [server.name for server in status.servers]
        dumps: dict[str, tuple[DumpReply | None, float | None]] = {}
        if names:
            with ThreadPoolExecutor(max_workers=len(names)) as pool:
                dumps = dict(zip(names, pool.map(_dump, names), strict=True))
        nodes = [_viewserver_node(self.viewserver, self.viewserver_certificate_expiry(now))]
        for server in status.servers:
            dump, expiry = dumps.get(server.name, (None, None))
            nodes.append(_server_node(server.name, status, dump) | {"certificate_expires": expiry})
        return {
            "mode": "viewserver",
            "now": now,
            "viewserver": self.viewserver,
            "view": view_json(status.view, status, self.viewserver),
            "nodes": nodes,
            "failovers": sum(1 for v in self.timeline.views if v["failover"]),
            "timeline": self.timeline.to_json(),
            "rates": [],
            "actions": False,
            "error": None,
        }


def _dump(address: str) -> tuple[DumpReply | None, float | None]:
    """A server's answer about itself and, with TLS, its certificate's expiry (None, None when
    it does not answer)."""
    try:
        return dump_header_and_certificate(address, timeout_s=STATUS_TIMEOUT_S)
    except NoAnswer:
        return None, None


def _viewserver_node(address: str, certificate_expires: float | None = None) -> dict[str, Any]:
    return {"name": "viewserver", "address": address, "kind": "viewserver", "state": "alive",
            "role": "viewserver", "own_role": None, "phase": None, "own_view": None,
            "own_view_note": "", "keys": None, "last_ping_age_s": None, "restarts": None,
            "health": "", "certificate_expires": certificate_expires}  # fmt: skip


def _server_node(name: str, status: ViewServiceStatus, dump: DumpReply | None) -> dict[str, Any]:
    view = status.view
    role = "primary" if name == view.primary else "backup" if name in view.backups else "idle"
    server = next(s for s in status.servers if s.name == name)
    own_view = dump.view.number if dump else None
    return {
        "name": name,
        "address": name,
        "kind": "server",
        "state": "alive" if server.alive else "dead",
        "role": role,
        "own_role": dump.role if dump else None,
        "phase": dump.phase if dump else None,
        "own_view": own_view,
        "own_view_note": view_note(own_view, "server", None, server.health),
        "keys": dump.total_keys if dump else None,
        "last_ping_age_s": round(server.last_ping_age_ticks * TICK_INTERVAL_S, 2),
        "restarts": None,
        "health": server.health,
    }
