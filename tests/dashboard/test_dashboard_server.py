"""The dashboard's server without a browser: routes, the event stream, the action endpoint's
refusals, and the throughput arithmetic."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pbkv.dashboard.server import Dashboard, DashboardLimits, _Request
from pbkv.dashboard.source import Rates, Timeline, _Scrape, parse_metrics, percentile_ms


class FakeSource:
    actions = True

    def __init__(self) -> None:
        self.timeline = Timeline()
        self.polls = 0

    def snapshot(self) -> dict[str, Any]:
        self.polls += 1
        return {"view": {"number": self.polls}, "nodes": [], "error": None}


def _fetch(url: str, data: bytes | None = None, content_type: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, bytes(error.read())


def test_routes_stream_and_action_refusals(tmp_path: Path) -> None:
    async def main() -> None:
        source = FakeSource()
        dashboard = Dashboard(source, tmp_path, DashboardLimits(poll_interval_s=0.05))
        port = await dashboard.listen("127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"

        def checks() -> None:
            status, page = _fetch(base + "/")
            assert status == 200 and b'id="view-number"' in page
            assert _fetch(base + "/static/app.js")[0] == 200
            assert _fetch(base + "/static/../server.py")[0] == 404
            assert _fetch(base + "/nope")[0] == 404
            status, body = _fetch(base + "/api/snapshot")
            assert status == 200 and json.loads(body)["view"]["number"] >= 1
            body = json.dumps({"action": "kill", "target": "primary"}).encode()
            assert _fetch(base + "/api/action", body)[0] == 415  # not JSON: no cross-site form
            assert _fetch(base + "/api/action", b"{", "application/json")[0] == 400
            # no cluster in tmp_path: the cluster layer refuses, and the page is told why
            status, answer = _fetch(base + "/api/action", body, "application/json")
            assert status == 409 and "no cluster" in json.loads(answer)["error"]
            big = b"x" * 5000
            assert _fetch(base + "/api/action", big, "application/json")[0] == 413

        await asyncio.to_thread(checks)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"text/event-stream" in head
        numbers = []
        for _ in range(3):
            line = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
            numbers.append(json.loads(line[len(b"data: ") :])["view"]["number"])
        assert numbers == sorted(numbers) and numbers[-1] > numbers[0]  # live, in order
        writer.close()
        await dashboard.close()

    asyncio.run(main())


def test_faults_only_from_loopback_and_only_for_a_local_cluster(tmp_path: Path) -> None:
    async def main() -> None:
        body = json.dumps({"action": "heal"}).encode()
        headers = {"content-type": "application/json"}
        local = Dashboard(FakeSource(), tmp_path)
        remote = _Request("POST", "/api/action", headers, body, "10.0.0.7")
        assert (await local._action(remote)).startswith(b"HTTP/1.1 403")
        watcher = FakeSource()
        watcher.actions = False
        viewserver_only = Dashboard(watcher, tmp_path)
        here = _Request("POST", "/api/action", headers, body, "127.0.0.1")
        assert (await viewserver_only._action(here)).startswith(b"HTTP/1.1 409")

    asyncio.run(main())


METRICS = """\
pbkv_operations_total{type="put",outcome="ok"} %d
pbkv_operation_latency_seconds_bucket{type="put",le="0.001"} %d
pbkv_operation_latency_seconds_bucket{type="put",le="0.01"} %d
pbkv_operation_latency_seconds_bucket{type="put",le="+Inf"} %d
"""


def test_rates_and_percentiles_from_successive_scrapes() -> None:
    rates = Rates()
    rates.add(10.0, {"s1": parse_metrics(METRICS % (100, 90, 100, 100))})
    assert not rates.samples  # one scrape is no rate yet
    rates.add(12.0, {"s1": parse_metrics(METRICS % (300, 190, 298, 300))})
    sample = rates.samples[-1]
    assert sample["ops_per_s"] == 100.0  # 200 operations in 2 s
    assert sample["p50_ms"] == 1.0 and sample["p99_ms"] == 10.0
    rates.add(13.0, {"s1": _Scrape(5.0, {})})  # restarted: counts from zero, never negative
    assert rates.samples[-1]["ops_per_s"] == 5.0
    assert percentile_ms({}, 0.5) is None


@pytest.mark.parametrize(("value", "expiry"), [("1.8e+09", 1.8e9), ("NaN", None), ("", None)])
def test_the_certificate_expiry_is_read_from_a_scrape_and_nan_is_not_known(
    value: str, expiry: float | None
) -> None:
    gauge = f"pbkv_tls_certificate_expiry_timestamp_seconds {value}\n" if value else ""
    assert parse_metrics(METRICS % (1, 1, 1, 1) + gauge).certificate_expiry == expiry


@pytest.mark.parametrize(("previous", "failover"), [("-", False), ("a", False), ("b", True)])
def test_timeline_marks_a_failover_only_when_the_primary_changes(
    previous: str, failover: bool
) -> None:
    timeline = Timeline()
    timeline.add_view(1.0, 2, "a", "c", previous)
    timeline.add_view(0.5, 2, "x", "y", "z")  # already known: ignored
    assert [v["failover"] for v in timeline.views] == [failover]


def test_view_one_after_later_views_begins_a_new_history() -> None:
    """A view service restarted without its state numbers from 1 again: its views replace the
    old history instead of waiting until their numbers pass the old ones."""
    timeline = Timeline()
    for number, primary in ((1, "a"), (2, "a"), (3, "b")):
        timeline.add_view(float(number), number, primary, "-", "-")
    timeline.add_view(4.0, 1, "c", "-", "-")
    timeline.add_view(5.0, 2, "c", "d", "c")
    assert [(v["number"], v["primary"]) for v in timeline.views] == [(1, "c"), (2, "c")]
    timeline.add_view(6.0, 1, "c", "-", "-")  # the same view 1 again: known, ignored
    timeline.add_view(7.0, 1, "e", "-", "-")  # another view 1 with one view: a new history
    assert [(v["number"], v["primary"]) for v in timeline.views] == [(1, "e")]


VIEW_LINE = (
    "2026-01-01T00:00:0%d.000Z viewserver=v view=%d view_change primary=%s backup=- "
    "previous_primary=-"
)


def test_a_new_cluster_in_the_same_directory_gets_a_timeline_of_its_own(tmp_path: Path) -> None:
    from dataclasses import replace

    from pbkv.cluster.state import ClusterState, ProcessRecord
    from pbkv.dashboard.source import ClusterSource

    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "viewserver.log"
    log.write_text("".join(VIEW_LINE % (n, n, "a") + "\n" for n in (1, 2, 3, 4)))
    record = ProcessRecord(
        "viewserver", "viewserver", "viewserver", "127.0.0.1:7000", 1, 0, 0, str(log), (), 1.0
    )
    state = ClusterState(tmp_path, "127.0.0.1:7000", 0.1, 5, 0, 1.0, (record,))
    source = ClusterSource(tmp_path)
    source._read_timeline(state)
    assert [v["number"] for v in source.timeline.views] == [1, 2, 3, 4]
    # `down`, then `up` again: a new created_at and a new log, already longer than the old
    # one when the dashboard looks (its size cannot tell that it was replaced)
    chatter = "2026-01-01T00:00:05.500Z viewserver=v view=1 ping_seen server=a\n" * 20
    log.unlink()
    log.write_text(VIEW_LINE % (5, 1, "a") + "\n" + chatter + VIEW_LINE % (6, 2, "a") + "\n")
    source._read_timeline(replace(state, created_at=2.0))
    assert [v["number"] for v in source.timeline.views] == [1, 2]
    with log.open("a") as file:
        file.write(VIEW_LINE % (7, 3, "b") + "\n")
    source._read_timeline(replace(state, created_at=2.0))
    assert [v["number"] for v in source.timeline.views] == [1, 2, 3]


def test_a_view_service_alone_is_enough_to_watch_a_cluster() -> None:
    from pbkv.dashboard.source import ViewServerSource
    from tests.runtime.inprocess import STEADY, local_cluster

    async def main() -> dict[str, Any]:
        async with local_cluster(servers=2, timing=STEADY) as cluster:
            return await asyncio.to_thread(ViewServerSource(cluster.address).snapshot)

    snapshot = asyncio.run(main())
    assert snapshot["view"]["number"] == 2 and snapshot["view"]["acknowledged"]
    assert re.fullmatch("[0-9a-f]{16}", snapshot["view"]["cluster"])  # V16: the header shows it
    assert [node["role"] for node in snapshot["nodes"]] == ["viewserver", "primary", "backup"]
    assert [node["phase"] for node in snapshot["nodes"][1:]] == ["serving", "synced"]
    assert all(node["certificate_expires"] is None for node in snapshot["nodes"])  # no TLS
    assert snapshot["actions"] is False and snapshot["error"] is None
    assert [view["number"] for view in snapshot["timeline"]["views"]] == [2]
    stopped = ViewServerSource("127.0.0.1:1").snapshot()  # nothing listens there
    assert stopped["view"] is None and "127.0.0.1:1" in stopped["error"]


def test_before_view_1_the_header_says_no_view_yet_and_draws_no_view_0() -> None:
    """Seen during `pbkv cluster up`: the page's header read "view 0", a primary of no server,
    "backup none · not yet acknowledged", and the timeline drew a bar "v0". The words are
    ``pbkv cluster status``'s; ``number`` stays an int."""
    from pbkv.cluster.status import no_view_summary
    from pbkv.core.messages import ServerStatus, View, ViewServiceStatus
    from pbkv.dashboard.source import Timeline, view_json

    pinged = (ServerStatus("127.0.0.1:7001", 1, 0, 0, True),)
    service = ViewServiceStatus(View(0), False, False, pinged, 0, 0, 3)
    header = view_json(service.view, service, "127.0.0.1:7000")
    assert header is not None and header["number"] == 0
    assert header["note"] == no_view_summary("127.0.0.1:7000", service)
    assert header["note"].startswith("no view yet: the view service (127.0.0.1:7000) forms")
    formed = ViewServiceStatus(View(1, "127.0.0.1:7001"), False, False, pinged, 1, 0, 3)
    header = view_json(formed.view, formed, "127.0.0.1:7000")
    assert header is not None and header["number"] == 1 and header["note"] == ""
    timeline = Timeline()
    timeline.observe(1.0, service.view)
    timeline.observe(2.0, formed.view)
    assert [view["number"] for view in timeline.views] == [1]
