"""The metrics endpoint runs on the process's asyncio loop: no thread per connection, a cap on
connections, bounded requests, and only what applies to each kind of process."""

from __future__ import annotations

import asyncio
import threading

from pbkv.runtime.metrics import HttpLimits, Metrics, MetricsHttp


async def _get(port: int, request: bytes = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    return data


def test_many_connections_need_no_thread_and_the_cap_refuses_the_rest() -> None:
    async def main() -> None:
        http = MetricsHttp(lambda: b"body\n", HttpLimits(connections_max=8, request_timeout_s=1))
        port = http.listen("127.0.0.1", 0)
        threads = threading.active_count()
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        async with asyncio.timeout(30):  # a loaded machine accepts them slowly: wait, not sleep
            while http.refused < 192:
                await asyncio.sleep(0.01)
        assert threading.active_count() == threads  # 200 connections, not one more thread
        assert len(http.writers) == 8 and http.refused == 192
        for _, writer in idle:
            writer.close()
        for _ in range(100):  # the idle ones give up their slot when closed
            if not http.writers:
                break
            await asyncio.sleep(0.02)
        answer = await _get(port)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"\r\n\r\nbody\n")
        http.close()

    asyncio.run(main())


def test_bad_requests_get_an_answer_or_a_closed_connection_and_serving_goes_on() -> None:
    async def main() -> None:
        limits = HttpLimits(request_bytes_max=256, request_timeout_s=0.3)
        http = MetricsHttp(lambda: b"ok\n", limits)
        port = http.listen("127.0.0.1", 0)
        assert (await _get(port, b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert await _get(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 1000) == b""
        assert await _get(port, b"GET /metr") == b""  # never finished: closed at the deadline
        head = await _get(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.endswith(b"\r\n\r\n") and b"Content-Length: 3" in head
        assert (await _get(port)).endswith(b"ok\n")
        assert http.served == 2
        http.close()

    asyncio.run(main())


def _names(metrics: Metrics) -> set[str]:
    return {family.name for family in metrics.registry.collect()}


def test_a_view_service_and_a_server_export_only_what_applies_to_them() -> None:
    server = _names(Metrics(lambda: 1, lambda: "primary", lambda: {"keys": 3.0}))
    viewservice = _names(Metrics(lambda: 1, lambda: "viewservice"))
    common = {"pbkv_build", "pbkv_view_number", "pbkv_role", "pbkv_connections"}
    assert common <= server and common <= viewservice
    assert {"process_cpu_seconds", "python_info"} <= server & viewservice
    only_server = {
        "pbkv_operations",
        "pbkv_operation_latency_seconds",
        "pbkv_operations_in_flight",
        "pbkv_keys",
        "pbkv_replication_round_trip_seconds",
        "pbkv_state_transfers",
    }
    only_viewservice = {
        "pbkv_failovers",
        "pbkv_servers_declared_dead",
        "pbkv_backup_synced",
        "pbkv_view_acknowledged",
    }
    assert only_server <= server and not only_server & viewservice
    assert only_viewservice <= viewservice and not only_viewservice & server
