"""The plain-Python tallies export exactly what prometheus_client's own classes would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from pbkv.core.messages import Forward, ForwardReply, Get, Put, Reply, Request
from pbkv.runtime.metric_tally import HotCollector
from pbkv.runtime.metrics import LATENCY_BUCKETS_S, Metrics

OBSERVATIONS = (0.0001, 0.0002, 0.00020001, 0.003, 0.003, 4.9, 5.0, 7.5, 0.0)
"""Below, on and just above bucket bounds (``le`` is inclusive), beyond the last, and zero."""


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def _reference() -> list[str]:
    registry = CollectorRegistry()
    counter = Counter("t_ops", "ops", ["type", "outcome"], registry=registry)
    plain = Counter("t_forwards", "forwards", registry=registry)
    histogram = Histogram(
        "t_latency", "latency", ["type"], buckets=LATENCY_BUCKETS_S, registry=registry
    )
    unlabelled = Histogram("t_rtt", "rtt", buckets=LATENCY_BUCKETS_S, registry=registry)
    for value in OBSERVATIONS:
        counter.labels("put", "ok").inc()
        histogram.labels("put").observe(value)
    counter.labels("get", "busy").inc(3)
    histogram.labels("get").observe(0.5)
    plain.inc(2)
    unlabelled.observe(0.001)
    return _without_created(generate_latest(registry))


def _tallied() -> list[str]:
    registry = CollectorRegistry()
    hot = HotCollector()
    counter = hot.counter("t_ops", "ops", ("type", "outcome"))
    plain = hot.counter("t_forwards", "forwards")
    histogram = hot.histogram("t_latency", "latency", LATENCY_BUCKETS_S, ("type",))
    unlabelled = hot.histogram("t_rtt", "rtt", LATENCY_BUCKETS_S)
    registry.register(hot.as_collector())
    for value in OBSERVATIONS:
        counter.add(("put", "ok"))
        histogram.observe(("put",), value)
    counter.add(("get", "busy"), 3)
    histogram.observe(("get",), 0.5)
    plain.add((), 2)
    unlabelled.observe((), 0.001)
    return _without_created(generate_latest(registry))


def test_tallies_export_the_same_series_as_prometheus_client() -> None:
    assert sorted(_tallied()) == sorted(_reference())


def test_unlabelled_series_exist_at_zero_before_any_observation() -> None:
    registry = CollectorRegistry()
    hot = HotCollector()
    hot.counter("t_forwards", "forwards")
    hot.histogram("t_rtt", "rtt", (0.1, 1.0))
    registry.register(hot.as_collector())
    text = generate_latest(registry).decode()
    assert "t_forwards_total 0.0" in text
    assert 't_rtt_bucket{le="+Inf"} 0.0' in text and "t_rtt_count 0.0" in text


def test_a_server_counts_operations_latency_and_forwards_from_what_it_sees() -> None:
    metrics = Metrics(lambda: 3, lambda: "primary")
    observed = metrics.observed
    assert observed is not None and Metrics(lambda: 3, lambda: "viewservice").observed is None
    put = Request("c1", 1, 0, Put("k", "v"))
    get = Request("c1", 2, 0, Get("k"))
    observed.received([put, get, put])  # the retry of seq 1 keeps its first arrival
    assert len(observed.started) == 2
    observed.forward_sent(Forward(view_number=3, primary="p", start_index=0, requests=(put, get)))
    observed.received([ForwardReply(view_number=3, next_index=2, accepted=True)])
    observed.reply_sent(Reply("c1", 1, "ok"))
    observed.reply_sent(Reply("c1", 2, "ok", value="v"))
    observed.reply_sent(Reply("c9", 7, "wrong_server"))
    text = generate_latest(metrics.registry).decode()
    assert 'pbkv_operations_total{outcome="ok",type="put"} 1.0' in text
    assert 'pbkv_operations_total{outcome="wrong_server",type="unknown"} 1.0' in text
    assert 'pbkv_operation_latency_seconds_count{type="get"} 1.0' in text
    assert "pbkv_forwards_total 1.0" in text and "pbkv_forwarded_requests_total 2.0" in text
    assert "pbkv_replication_round_trip_seconds_count 1.0" in text
    assert "pbkv_operations_in_flight 0.0" in text
