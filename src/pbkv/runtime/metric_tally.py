"""Per-operation metrics kept in plain Python and exported only when scraped.

A ``prometheus_client`` ``Counter`` or ``Histogram`` resolves its labels and takes a lock on
every update. On a server that updates several of them per client operation, that was about
30 % of a primary's CPU at 64 clients (py-spy; docs/metrics.md, "What metrics cost"). The
tallies here are a dict of ints and a list of bucket counts, updated on the event loop's thread;
``HotCollector`` turns them into metric families when the registry is collected, which happens
on the same loop (``MetricsHttp`` serves from it), so nothing is shared between threads and no
lock is needed. The exposition is the one the ``prometheus_client`` classes would give: the
same names, labels, buckets (``le`` as Go formats it) and ``_sum``/``_count``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, cast

from prometheus_client import utils
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from pbkv.core.messages import Append, Delete, Forward, ForwardReply, Get, Put, Reply, Request

GO_FLOAT: Final = cast(Callable[[float], str], utils.floatToGoString)
"""How Prometheus clients spell a bucket bound (``0.0002``, ``1.0``, ``+Inf``); untyped there."""


class CountTally:
    """A counter by label values: ``counts[labels] += n``."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], float] = {}

    def add(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0.0) + amount


class HistogramTally:
    """A histogram by label values over fixed upper bounds (``le``, inclusive)."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        # labels -> [count per bucket (the last is +Inf) ..., sum]
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, value)] += 1.0
        row[-1] += value

    def cumulative(self, labels: tuple[str, ...]) -> tuple[list[tuple[str, float]], float]:
        """The buckets as Prometheus gives them (cumulative, ``+Inf`` last) and the sum."""
        row = self.series.get(labels) or [0.0] * (len(self.bounds) + 2)  # none observed yet
        buckets: list[tuple[str, float]] = []
        running = 0.0
        for bound, count in zip((*self.bounds, float("inf")), row[:-1], strict=True):
            running += count
            buckets.append((GO_FLOAT(bound), running))
        return buckets, row[-1]


REQUESTS_TRACKED_MAX: Final = 100_000
FORWARDS_TRACKED_MAX: Final = 1_024
OPERATION_NAMES: Final[dict[type, str]] = {
    Get: "get",
    Put: "put",
    Append: "append",
    Delete: "delete",
}


class HotCollector:
    """Exports tallies as metric families: counters (``NAME_total``), histograms, and gauges
    read by a function, each with its help text and label names. It has ``collect`` and no
    ``describe``, which is all a registry asks of a collector (``as_collector``); it does not
    inherit ``prometheus_client``'s class so that the compiled build can compile it."""

    def __init__(self) -> None:
        self._counters: list[tuple[str, str, Sequence[str], CountTally]] = []
        self._histograms: list[tuple[str, str, Sequence[str], HistogramTally]] = []
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []

    def counter(self, name: str, text: str, labels: Sequence[str] = ()) -> CountTally:
        tally = CountTally()
        self._counters.append((name, text, labels, tally))
        return tally

    def histogram(
        self, name: str, text: str, bounds: Sequence[float], labels: Sequence[str] = ()
    ) -> HistogramTally:
        tally = HistogramTally(bounds)
        self._histograms.append((name, text, labels, tally))
        return tally

    def gauge(self, name: str, text: str, read: Callable[[], float]) -> None:
        self._gauges.append((name, text, read))

    def as_collector(self) -> Collector:
        return cast(Collector, self)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily | GaugeMetricFamily]:
        for name, text, labels, counts in self._counters:
            counter = CounterMetricFamily(name, text, labels=labels)
            if not labels:  # an unlabelled counter exists from the start, at 0
                counter.add_metric([], counts.counts.get((), 0.0))
            else:
                for values, count in sorted(counts.counts.items()):
                    counter.add_metric(list(values), count)
            yield counter
        for name, text, labels, histogram in self._histograms:
            family = HistogramMetricFamily(name, text, labels=labels)
            # An unlabelled histogram exists from the start, at 0.
            rows = sorted(histogram.series) or ([] if labels else [()])
            for values in rows:
                buckets, total = histogram.cumulative(values)
                family.add_metric(list(values), buckets, total)
            yield family
        for name, text, read in self._gauges:
            yield GaugeMetricFamily(name, text, value=read())


class ServerObservations:
    """What a server's host reports as it runs: requests received, replies and forwards sent,
    forward replies received. Latency runs from a request's first arrival (a retry does not
    restart it) to its ``ok`` reply; requests that one read brought share one arrival time."""

    def __init__(self, hot: HotCollector, latency_bounds: Sequence[float]) -> None:
        self.started: dict[tuple[str, int], tuple[float, str]] = {}
        self.forwards_out: dict[int, float] = {}
        self.operations = hot.counter(
            "pbkv_operations", "Client operations answered", ("type", "outcome")
        )
        self.latency = hot.histogram(
            "pbkv_operation_latency_seconds",
            "From a request's first arrival to its ok reply",
            latency_bounds,
            ("type",),
        )
        hot.gauge(
            "pbkv_operations_in_flight",
            "Requests received, not yet answered",
            lambda: float(len(self.started)),
        )
        self.forwards = hot.counter("pbkv_forwards", "Forward batches sent")
        self.forwarded = hot.counter("pbkv_forwarded_requests", "Requests sent in forwards")
        self.round_trip = hot.histogram(
            "pbkv_replication_round_trip_seconds",
            "From a forward sent by the primary to the backup's reply covering it",
            latency_bounds,
        )

    def received(self, messages: list[Any]) -> None:
        """Every message of one read (cheap type checks; most messages are ignored)."""
        now = 0.0
        for message in messages:
            kind = type(message)
            if kind is Request:
                if not now:
                    now = time.monotonic()
                self.request_received(message, now)
            elif kind is ForwardReply:
                self.forward_reply_received(message)

    def request_received(self, request: Request, now: float) -> None:
        started = self.started
        key = (request.client_id, request.seq)
        if key in started:
            return  # a retry: latency counts from the first arrival
        if len(started) >= REQUESTS_TRACKED_MAX:
            started.clear()  # requests never answered (abandoned): forget them all
        op = type(request.op)
        kind = OPERATION_NAMES.get(op) or op.__name__.lower()
        started[key] = (now, kind)

    def reply_sent(self, reply: Reply) -> None:
        started = self.started.pop((reply.client_id, reply.seq), None)
        kind = "unknown" if started is None else started[1]
        status = reply.status
        self.operations.add((kind, status))
        if started is not None and status == "ok":
            self.latency.observe((kind,), time.monotonic() - started[0])

    def forward_sent(self, forward: Forward) -> None:
        count = len(forward.requests)
        self.forwards.add(())
        self.forwarded.add((), count)
        if len(self.forwards_out) >= FORWARDS_TRACKED_MAX:
            self.forwards_out.clear()
        self.forwards_out.setdefault(forward.start_index + count, time.monotonic())

    def forward_reply_received(self, reply: ForwardReply) -> None:
        """Observe the round trip of every forward the reply covers (all below next_index)."""
        if not reply.accepted:
            return
        now = time.monotonic()
        covered = [end for end in self.forwards_out if end <= reply.next_index]
        for end in covered:
            self.round_trip.observe((), now - self.forwards_out.pop(end))
