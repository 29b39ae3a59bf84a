"""The floor server (scripts/measure_floor.py's Python baseline): it must keep the promise it is
measured on, a write's ``WAIT`` answered only after the replica holds it, in both flush
modes, and with two replicas after both hold it, fanned out or chained, and a confirmed read
only after the replica acknowledged a later forward, or its figures mean nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from pbkv.bench.backends import open_redis
from pbkv.bench.resp import RespConnection
from pbkv.cluster.processes import ProcessGroup, free_port
from pbkv.runtime.loop import run

MODULE = [sys.executable, "-m", "pbkv.bench.floor_server"]


async def until_listening(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


async def start_replicas(
    group: ProcessGroup, module: list[str], logs: Path, topology: str
) -> tuple[list[str], int]:
    """The replicas of ``topology`` ("one", "fan-out" to two, "chain" of two); returns the
    addresses the primary forwards to and the pid of the replica to freeze (the last one a
    write must reach: the second of the fan-out, the chain's tail)."""
    tail_port = free_port()
    tail = group.spawn([*module, "replica", str(tail_port)], logs / "tail.log")
    await until_listening(tail_port)
    if topology == "one":
        return [f"127.0.0.1:{tail_port}"], tail.pid
    head_port = free_port()
    argv = [*module, "replica", str(head_port)]
    if topology == "chain":
        argv += ["--next", f"127.0.0.1:{tail_port}"]
    group.spawn(argv, logs / "head.log")
    await until_listening(head_port)
    if topology == "chain":
        return [f"127.0.0.1:{head_port}"], tail.pid
    return [f"127.0.0.1:{head_port}", f"127.0.0.1:{tail_port}"], tail.pid


async def start_floor(
    group: ProcessGroup, module: list[str], logs: Path, topology: str, options: list[str]
) -> tuple[int, int]:
    """A floor primary with ``options`` over the replicas of ``topology``: its port and the
    pid of the replica to freeze."""
    replicas, frozen = await start_replicas(group, module, logs, topology)
    primary_port = free_port()
    argv = [*module, "primary", str(primary_port)]
    for address in replicas:
        argv += ["--replica", address]
    group.spawn([*argv, *options], logs / "primary.log")
    await until_listening(primary_port)
    return primary_port, frozen


async def held_until_the_replica_runs(
    flush: str, logs: Path, busy_poll_us: int = 0, topology: str = "one"
) -> None:
    group = ProcessGroup("pbkv-floor-test-")
    module = [*MODULE, "--busy-poll-us", str(busy_poll_us)]
    try:
        primary_port, frozen = await start_floor(group, module, logs, topology, ["--flush", flush])
        backend = await open_redis(f"127.0.0.1:{primary_port}")
        await backend.write("k", "one")  # SET + WAIT 1 0, checked by the backend
        os.kill(frozen, signal.SIGSTOP)
        try:
            pending = asyncio.ensure_future(backend.write("k", "two"))
            done, _ = await asyncio.wait([pending], timeout=0.3)
            assert not done, "WAIT answered while the replica could not have applied the write"
        finally:
            os.kill(frozen, signal.SIGCONT)
        await asyncio.wait_for(pending, 5)
        reader = await RespConnection.open("127.0.0.1", primary_port)
        assert await reader.execute("GET", "k") in ("two", b"two")
        assert await reader.execute("GET", "missing") is None
        await reader.close()
        await backend.close()
    finally:
        group.stop()


@pytest.mark.parametrize("flush", ["batched", "immediate"])
def test_a_write_is_answered_only_after_the_replica_applied_it(flush: str, tmp_path: Path) -> None:
    run(held_until_the_replica_runs(flush, tmp_path))


def test_busy_polling_keeps_the_promise(tmp_path: Path) -> None:
    """As pbkv's servers can in the comparison: polling changes when input is read, not what
    is answered."""
    run(held_until_the_replica_runs("batched", tmp_path, busy_poll_us=1000))


@pytest.mark.parametrize("topology", ["fan-out", "chain"])
def test_with_two_replicas_a_write_is_answered_only_once_both_hold_it(
    topology: str, tmp_path: Path
) -> None:
    """Fan-out: the primary waits for the slower replica, not the first to answer; chain: the
    head acknowledges only what the tail acknowledged (docs/performance.md, "Fan-out or
    chain")."""
    run(held_until_the_replica_runs("batched", tmp_path, topology=topology))


async def a_read_while_the_replica_is_frozen(reads: str, flush: str, logs: Path) -> None:
    """A ``GET`` sent while the replica is stopped: answered at once when leased; when
    confirmed, only after the replica runs again, with the value it had when it arrived."""
    group = ProcessGroup("pbkv-floor-test-")
    try:
        port, frozen = await start_floor(
            group, MODULE, logs, "one", ["--flush", flush, "--reads", reads]
        )
        writer = await open_redis(f"127.0.0.1:{port}")
        await writer.write("k", "one")
        reader = await RespConnection.open("127.0.0.1", port)
        os.kill(frozen, signal.SIGSTOP)
        try:
            pending = asyncio.ensure_future(reader.execute("GET", "k"))
            done, _ = await asyncio.wait([pending], timeout=0.3)
            assert bool(done) == (reads == "leased"), f"{reads} read answered: {bool(done)}"
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert await asyncio.wait_for(pending, 5) in ("one", b"one")
        assert await reader.execute("GET", "missing") is None
        await reader.close()
        await writer.close()
    finally:
        group.stop()


@pytest.mark.parametrize(
    ("reads", "flush"),
    [("leased", "batched"), ("confirmed", "batched"), ("confirmed", "immediate")],
)
def test_a_confirmed_read_waits_for_the_replica_and_a_leased_one_does_not(
    reads: str, flush: str, tmp_path: Path
) -> None:
    """The floor's two read modes keep the promises they are compared on (pbkv's read round
    without leases, its leased read with them)."""
    run(a_read_while_the_replica_is_frozen(reads, flush, tmp_path))


@pytest.mark.parametrize("window", ["-1", "1000001", "soon"])
def test_a_busy_poll_window_out_of_range_is_a_usage_error(window: str) -> None:
    from pbkv.bench.floor_server import parse_arguments

    with pytest.raises(SystemExit) as raised:
        parse_arguments(["replica", "1234", "--busy-poll-us", window])
    assert raised.value.code == 2


def test_a_primary_without_a_replica_is_a_usage_error() -> None:
    from pbkv.bench.floor_server import parse_arguments

    with pytest.raises(SystemExit) as raised:
        parse_arguments(["primary", "1234"])
    assert raised.value.code == 2


@pytest.mark.parametrize(
    "argv", [["replica", "1234", "--replica", "x:1"], ["primary", "1234", "--next", "x:1"]]
)
def test_a_role_given_the_other_roles_option_is_a_usage_error(argv: list[str]) -> None:
    from pbkv.bench.floor_server import parse_arguments

    with pytest.raises(SystemExit) as raised:
        parse_arguments([*argv, "--replica", "x:2"] if argv[0] == "primary" else argv)
    assert raised.value.code == 2
