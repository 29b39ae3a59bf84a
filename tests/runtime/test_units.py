"""Runtime pieces without a network: time conversion, ticker, persistence, logs, faults."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pbkv.core.effects import PersistView
from pbkv.core.messages import Forward, Get, Ping, PingReply, Request, StateTransfer, View
from pbkv.runtime.admin import ADMIN_CONNECTIONS_MAX
from pbkv.runtime.config import (
    ConfigError,
    NetworkLimits,
    Timing,
    format_address,
    parse_address,
    ticks,
)
from pbkv.runtime.etcd import Leadership
from pbkv.runtime.faults import Faults, sender_name
from pbkv.runtime.logging import EVENT_LINES_PER_S, EventLogger
from pbkv.runtime.loop import HeapFreezer, Ticker, due_ticks, new_event_loop
from pbkv.runtime.metrics import HttpLimits
from pbkv.runtime.persist import ViewStore


def test_seconds_become_ticks_with_defaults_of_the_issue() -> None:
    timing = Timing()
    assert timing.ping_interval_ticks == 10
    assert timing.view_service_config().dead_after_ticks == 50
    assert timing.client_config(30.0).timeout_ticks == 3000
    assert ticks(0.001) == 1  # never zero
    assert Timing(ping_interval_s=0.03, dead_pings=4).view_service_config().dead_after_ticks == 12


def test_the_view_service_forgets_silent_servers_after_a_minute_or_4_dead_intervals() -> None:
    assert Timing().view_service_config().forget_after_ticks == 6000
    # A dead interval of 100 s: declared dead first, forgotten 4 dead intervals after its last ping.
    slow = Timing(ping_interval_s=20.0, dead_pings=5).view_service_config()
    assert slow.forget_after_ticks == 4 * slow.dead_after_ticks == 40_000
    assert Timing(forget_after_s=2.0).view_service_config().forget_after_ticks == 200
    for too_short in (1.99, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="--forget-after-s must be finite and at least 4"):
            Timing(forget_after_s=too_short)


@pytest.mark.parametrize(
    ("ping_interval", "dead_pings"), [(0.001, 5), (0.1, 0), (-1.0, 5)], ids=str
)
def test_timing_refuses_impossible_values(ping_interval: float, dead_pings: int) -> None:
    with pytest.raises(ConfigError):
        Timing(ping_interval_s=ping_interval, dead_pings=dead_pings)


def test_addresses_parse_and_format_both_ways() -> None:
    assert parse_address("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_address("[::1]:7000") == ("::1", 7000)
    assert format_address("::1", 7000) == "[::1]:7000"
    for bad in ("nonsense", "host:", ":7000", "host:99999", "host:x"):
        with pytest.raises(ConfigError):
            parse_address(bad)


def test_ticker_catches_up_but_never_more_than_the_bound() -> None:
    assert due_ticks(now=1.0, deadline=1.0, interval_s=0.01, catch_up_max=10) == (1, 1.01)
    count, deadline = due_ticks(now=1.035, deadline=1.0, interval_s=0.01, catch_up_max=10)
    assert count == 4 and deadline == pytest.approx(1.04)
    count, deadline = due_ticks(now=9.0, deadline=1.0, interval_s=0.01, catch_up_max=10)
    assert count == 10 and deadline == pytest.approx(9.01)  # resynchronised, no burst


def test_ticker_does_not_drift() -> None:
    async def main() -> int:
        ticks_seen = 0

        def on_tick(count: int) -> None:
            nonlocal ticks_seen
            ticks_seen += count

        ticker = Ticker(asyncio.get_running_loop(), 0.005, on_tick, 10)
        ticker.start()
        await asyncio.sleep(0.5)
        ticker.stop()
        return ticks_seen

    assert 90 <= asyncio.run(main()) <= 101


def test_view_is_persisted_atomically_and_restored(tmp_path: Path) -> None:
    store = ViewStore(tmp_path / "data")
    assert store.load() is None
    store.save(PersistView(View(7, "127.0.0.1:1", ("127.0.0.1:2",)), True))
    latest = PersistView(View(8, "127.0.0.1:2"), False, (("127.0.0.1:2", 12345),))
    store.save(latest)
    store.close()
    assert ViewStore(tmp_path / "data").load() == latest
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["LOCK", "view.json"]


def test_a_corrupt_view_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "view.json").write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt view file"):
        ViewStore(tmp_path).load()


def test_human_log_line_carries_node_and_view() -> None:
    stream = io.StringIO()
    logger = EventLogger("server", "127.0.0.1:7001", lambda: 3, stream=stream)
    logger.event("view_change", primary="a", detail="two words")
    line = stream.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert ' server=127.0.0.1:7001 view=3 view_change primary=a detail="two words"' in line
    assert line[:4].isdigit() and "Z " in line


def test_json_log_line_has_the_documented_fields() -> None:
    stream = io.StringIO()
    logger = EventLogger("viewserver", "vs", lambda: 5, log_format="json", stream=stream)
    logger.event("server_declared_dead", view_number=4, server="s1")
    record = json.loads(stream.getvalue())
    assert record["node"] == "vs" and record["view"] == 4
    assert record["event"] == "server_declared_dead" and record["server"] == "s1"
    assert record["ts"].endswith("Z")


def test_rate_limited_events_count_what_they_suppressed() -> None:
    stream = io.StringIO()
    logger = EventLogger("server", "s", lambda: 0, stream=stream)
    for _ in range(5):
        logger.limited("key", 3600.0, "peer_unreachable", address="x")
    assert stream.getvalue().count("peer_unreachable") == 1
    logger._budgets["key"].start -= 7200.0
    logger.limited("key", 3600.0, "peer_unreachable", address="x")
    assert "suppressed=4" in stream.getvalue()


def test_messages_are_attributed_by_the_names_they_carry() -> None:
    view = View(1, "p")
    assert sender_name(Ping("s1", 0, 1), None) == "s1"
    assert sender_name(Forward(1, "p", 0, ()), None) == "p"
    assert sender_name(StateTransfer(view, "p", 0, (), True), None) == "p"
    assert sender_name(PingReply(view), "vs") == "vs"
    assert sender_name(Request("c", 0, 0, Get("k")), "vs") is None


def test_partitions_by_direction_and_heal() -> None:
    faults = Faults()
    faults.partition(("a",), "in")
    faults.partition(("b",), "out")
    assert faults.active
    assert faults.blocks_in("a") and not faults.blocks_in("b")
    assert faults.outgoing_delay("b") is None and faults.outgoing_delay("a") == 0.0
    faults.heal()
    assert (faults.active, faults.blocks_in("a")) == (False, False)


def test_unreliable_network_is_reproducible_from_its_seed() -> None:
    def draws() -> list[float | None]:
        faults = Faults()
        faults.unreliable(0.5, 10.0, seed=42)
        return [faults.outgoing_delay("x") for _ in range(50)]

    first = draws()
    assert first == draws()
    assert 5 < first.count(None) < 45
    assert all(d is None or 0.0 <= d <= 0.01 for d in first)
    with pytest.raises(ValueError):
        Faults().unreliable(1.5, 0.0, None)


def test_every_event_name_is_rate_limited_and_the_rest_is_counted() -> None:
    stream = io.StringIO()
    logger = EventLogger("server", "s", lambda: 0, stream=stream)
    for index in range(100):
        logger.event("message_ignored", type="Forward", index=index)
    logger.event("view_change", primary="p")
    lines = stream.getvalue().splitlines()
    assert sum("message_ignored" in line for line in lines) == EVENT_LINES_PER_S
    assert any("view_change" in line for line in lines)  # other events are not held back
    logger.report_suppressed()
    assert "log_suppressed" not in stream.getvalue()  # the second is not over yet
    logger._budgets["message_ignored"].start -= 1.0
    logger.report_suppressed()
    assert (
        stream.getvalue()
        .splitlines()[-1]
        .endswith(f"log_suppressed event=message_ignored suppressed={100 - EVENT_LINES_PER_S}")
    )


def test_the_heap_freezer_runs_on_uvloop_only() -> None:
    async def main() -> tuple[bool, int]:
        gc.unfreeze()
        freezer = HeapFreezer(asyncio.get_running_loop(), interval_s=0.01)
        started = freezer.start()
        await asyncio.sleep(0.05)
        freezer.stop()
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        return started, frozen

    assert asyncio.run(main()) == (False, 0)  # the default loop's transports form cycles
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        started, frozen = runner.run(main())
    assert started and frozen > 0


def test_the_connection_cap_leaves_room_for_the_admin_and_metrics_ports() -> None:
    """Review: under a low open-files limit, 64 admin and 64 metrics connections took the fds the
    inbound cap counted on, so the kernel refused clients (unlogged) before the cap could. The
    cap is lowered by a reserve that covers both ports' own caps."""
    command = [sys.executable, "-m", "pbkv", "server", "--listen", "127.0.0.1:0"]
    command += ["--viewserver", "127.0.0.1:9", "--admin-port", "0", "--metrics-port", "0"]
    server = subprocess.Popen(
        ["prlimit", "--nofile=400:400", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        while "connections_max_lowered" not in line and line:
            line = server.stdout.readline()
    finally:
        server.kill()
        server.wait()
    lowered = int(line.split("connections_max=")[1].split()[0])
    assert lowered + ADMIN_CONNECTIONS_MAX + HttpLimits().connections_max < 400 - 64


def test_network_limits_from_flags_split_the_budget_and_refuse_one_too_small() -> None:
    """§11: ``send_buffer_bytes_max`` is 2 x ``--frame-bytes-max``, ``--buffers-bytes-max`` is
    split in halves between receive and send, and must be at least 4 x ``--frame-bytes-max``
    (the receive half holds a whole frame, the send half one connection's buffer)."""
    frame = 1024 * 1024
    limits = NetworkLimits.from_flags(frame, 4 * frame, 50, 9.0, 1.5)
    assert (limits.frame_bytes_max, limits.send_buffer_bytes_max) == (frame, 2 * frame)
    assert (limits.receive_buffers_bytes_max, limits.send_buffers_bytes_max) == (2 * frame,) * 2
    assert (limits.inbound_connections_max, limits.idle_timeout_s) == (50, 9.0)
    assert limits.frame_timeout_s == 1.5
    with pytest.raises(ConfigError, match="room for one connection's send buffer"):
        NetworkLimits.from_flags(frame, 4 * frame - 2)
    NetworkLimits(frame_bytes_max=frame, receive_buffers_bytes_max=frame + 4)  # one whole frame
    with pytest.raises(ConfigError, match="room for a whole frame on receive"):
        NetworkLimits(frame_bytes_max=frame, receive_buffers_bytes_max=frame + 3)


def test_an_etcd_problem_held_back_by_the_rate_limit_is_logged_at_its_next_attempt() -> None:
    """A timeout and, within the second, etcd's real verdict: the verdict may not be written at
    once (one line a second), but it must be written when the next attempt meets it again,
    not stay hidden behind the timeout for as long as it lasts (a refused login did)."""
    stream = io.StringIO()
    leadership = Leadership.__new__(Leadership)  # note_problem needs no etcd, loop or options
    leadership.logger = EventLogger("viewserver", "vs", lambda: 0, stream=stream)
    leadership.problem, leadership.logged_problem = "not connected to etcd yet", ""
    leadership.note_problem("etcd unreachable: TimeoutError")
    leadership.note_problem("etcd unreachable: authentication failed")
    assert "authentication failed" not in stream.getvalue()  # within the second: held back
    assert leadership.problem == "etcd unreachable: authentication failed"  # status knows it
    leadership.logger._budgets["etcd_problem"].start -= 2.0  # the second has passed
    leadership.note_problem("etcd unreachable: authentication failed")
    assert 'reason="etcd unreachable: authentication failed" suppressed=1' in stream.getvalue()
    leadership.note_problem("etcd unreachable: authentication failed")
    assert stream.getvalue().count("authentication failed") == 1  # the same problem: once
    leadership.note_problem("")
    assert stream.getvalue().rstrip().endswith("etcd_reachable")
