"""The transport's send-side bounds, in-process: a peer that never reads costs at most its
send budget, is not read meanwhile, and is closed when its sends stay stalled."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import socket

import pytest

from pbkv.core.messages import (
    AnyMessage,
    ErrorReply,
    GetView,
    Put,
    Reply,
    Request,
    StateTransfer,
    View,
)
from pbkv.runtime.config import NetworkLimits
from pbkv.runtime.host import Network
from pbkv.runtime.logging import EventLogger
from pbkv.wire import MESSAGES, ProtocolError

KIB = 1024
SMALL = NetworkLimits(
    frame_bytes_max=64 * KIB,
    send_buffer_bytes_max=128 * KIB,
    receive_buffers_bytes_max=128 * KIB,
    send_buffers_bytes_max=512 * KIB,
    send_high_water_bytes=32 * KIB,
)
"""Budgets a few frames large, so a peer that never reads reaches them quickly."""
STALLING = dataclasses.replace(
    SMALL, send_buffer_bytes_max=256 * KIB, send_stall_timeout_s=0.5, housekeeping_interval_s=0.05
)
"""Small budgets and a short stall timer: a peer that never reads is closed within a second."""


async def network_with_a_peer_that_never_reads(
    limits: NetworkLimits,
) -> tuple[Network, socket.socket, str, io.StringIO]:
    log = io.StringIO()
    network = Network(limits, EventLogger("server", "s", lambda: 0, stream=log))
    received: list[AnyMessage] = []
    network.receive = lambda source, messages: received.extend(messages)
    port = await network.listen("127.0.0.1", 0)
    await network.start_serving()
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * KIB)
    peer.setblocking(False)
    await asyncio.get_running_loop().sock_connect(peer, ("127.0.0.1", port))
    async with asyncio.timeout(5.0):
        while not network.inbound:
            await asyncio.sleep(0.01)
    return network, peer, next(iter(network.inbound)), log


def test_a_peer_that_never_reads_is_bounded_paused_and_then_closed() -> None:
    limits = STALLING

    async def main() -> tuple[dict[str, int], int, str]:
        network, peer, source, log = await network_with_a_peer_that_never_reads(limits)
        connection = network.inbound[source]
        big = ErrorReply("x" * (16 * KIB))
        for _ in range(200):  # 3.2 MiB of replies to a peer that reads nothing
            network.send(source, big)
            network.flush()
            await asyncio.sleep(0)
        held = network.send_bytes
        assert connection.reading_paused  # backpressure: its requests wait in the kernel
        async with asyncio.timeout(5.0):
            while not connection.closed:
                await asyncio.sleep(0.05)
        peer.close()
        await network.close()
        return network.counters, held, log.getvalue()

    counters, held, log = asyncio.run(main())
    assert held <= limits.send_buffer_bytes_max
    assert counters["sends_dropped_buffer_full"] > 0
    assert counters["connections_backpressured"] >= 1
    assert counters["connections_closed_send_timeout"] == 1
    assert "sends stalled for 0.5 s" in log


def test_the_send_budget_of_all_connections_drops_what_does_not_fit() -> None:
    limits = dataclasses.replace(SMALL, send_buffers_bytes_max=160 * KIB)

    async def main() -> dict[str, int]:
        network, first, source, _ = await network_with_a_peer_that_never_reads(limits)
        second = socket.socket()
        await asyncio.get_running_loop().sock_connect(second, first.getpeername())
        async with asyncio.timeout(5.0):
            while len(network.inbound) < 2:
                await asyncio.sleep(0.01)
        other = next(target for target in network.inbound if target != source)
        for _ in range(6):  # queued within one loop iteration: 96 KiB for each peer
            network.send(source, ErrorReply("x" * (16 * KIB)))
            network.send(other, ErrorReply("x" * (16 * KIB)))
        assert network.send_bytes <= limits.send_buffers_bytes_max
        first.close()
        second.close()
        await network.close()
        return network.counters

    counters = asyncio.run(main())
    assert counters.get("sends_dropped_buffer_full", 0) == 0  # each peer is within its own
    assert counters["sends_dropped_send_budget"] >= 2  # but not both within the total


def test_a_large_reply_that_cannot_fit_is_dropped_before_it_is_encoded() -> None:
    """Review: 16 connections pipelining 2,000 reads of a 1 MB value each made the primary
    encode ~17,000 replies of 1 MB only to drop them at its send budget, stalling its loop into
    a failover. A reply's value is at least as many bytes as characters, so one that cannot fit
    is dropped unencoded. Shown without a clock: the value is over the frame limit, so encoding
    it would count ``frames_oversized_out``; dropped first, it counts a full buffer."""
    limits = SMALL

    async def main() -> tuple[dict[str, int], dict[str, int]]:
        network, peer, source, _ = await network_with_a_peer_that_never_reads(limits)
        for _ in range(3):  # 96 KiB queued in one loop iteration: 100 KiB more cannot fit
            network.send(source, ErrorReply("x" * (32 * KIB)))
        before = dict(network.counters)
        network.send(source, Reply("c", 1, "ok", "v" * (100 * KIB)))
        peer.close()
        await network.close()
        return before, network.counters

    before, after = asyncio.run(main())
    assert after.get("frames_oversized_out", 0) == 0
    assert after["sends_dropped_buffer_full"] == before.get("sends_dropped_buffer_full", 0) + 1


def test_a_client_token_connection_decodes_client_messages_only_refusing_by_tag() -> None:
    """What a client-token connection sends is decoded as client messages (review: a forged
    16 MiB StateTransfer of 3.3 M items took 0.4 s to decode before the role check refused
    it, and four at once stalled a primary into a failover). A peer's message is refused by its
    tag: the body after the tag is never read, shown here by a body that is not MessagePack."""

    async def network() -> Network:
        return Network(NetworkLimits(), EventLogger("server", "s", lambda: 0, stream=io.StringIO()))

    codecs = asyncio.run(network())
    request = Request("c", 1, 0, Put("k", "v"))
    assert codecs.client_codec.decode(MESSAGES.encode(request)) == request
    transfer_tag = MESSAGES.encode(StateTransfer(View(1, "p", ()), "p", 0, (), True))[:4]
    forged = transfer_tag + b"\xc1" * 64  # 0xc1 is never valid MessagePack
    with pytest.raises(ProtocolError, match="Invalid value"):
        codecs.client_codec.decode(forged)
    with pytest.raises(ProtocolError, match="malformed"):
        codecs.codec.decode(forged)  # the full union reads on, into the body


def test_a_full_outbound_pool_forgets_a_long_gone_peer_to_reach_a_new_one() -> None:
    """Review: the pool never forgot an address, so after ``outbound_peers_max`` distinct peers
    (backups a long-lived primary was told about, primaries a client followed) every new peer
    was refused for good. Now the oldest address with no connection makes room."""
    limits = NetworkLimits(outbound_peers_max=8)

    async def main() -> tuple[list[bytes], dict[str, int], int]:
        received: list[bytes] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.read(100))
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        network = Network(limits, EventLogger("server", "s", lambda: 0, stream=io.StringIO()))
        for _ in range(8):  # addresses where nobody listens any more
            network.send(f"127.0.0.1:{closed_port()}", GetView())
        await asyncio.sleep(0.3)  # every connect failed
        network.send(f"127.0.0.1:{port}", GetView())
        async with asyncio.timeout(5.0):
            while not received:
                await asyncio.sleep(0.02)
        await network.close()
        server.close()
        return received, network.counters, len(network.peers)

    received, counters, held = asyncio.run(main())
    assert received and held <= limits.outbound_peers_max
    assert counters["peers_forgotten"] == 1
    assert counters.get("sends_dropped_pool_full", 0) == 0


def closed_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_half_closed_client_that_never_reads_stays_counted_until_the_stall_timer() -> None:
    """A client half-closed with requests in flight gets its replies (617d2e5). Re-review: the
    connection was then closed gracefully, which released its budget and its place under the
    cap while the transport still held the replies: waves of such clients that never read grew
    a primary to gigabytes. Now it stays counted until its sends drain, and the stall timer
    aborts it like any connection whose peer does not read."""
    limits = STALLING

    async def main() -> tuple[int, bool, dict[str, int]]:
        network, peer, source, _ = await network_with_a_peer_that_never_reads(limits)
        connection = network.inbound[source]
        assert connection.transport is not None  # a small kernel buffer: the process holds it
        connection.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * KIB
        )
        connection.requests_in_flight = 6  # as if six requests had arrived
        peer.shutdown(socket.SHUT_WR)
        async with asyncio.timeout(5.0):
            while not connection.read_closed:
                await asyncio.sleep(0.01)
        for seq in range(6):  # the six replies: 120 KiB the peer never reads
            network.send(source, Reply("c", seq, "ok", "x" * (20 * KIB)))
            network.flush()
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)  # a few housekeeping rounds: the sends have not drained
        held, counted = network.send_bytes, source in network.inbound
        async with asyncio.timeout(5.0):
            while not connection.closed:
                await asyncio.sleep(0.05)
        peer.close()
        await network.close()
        return held, counted, network.counters

    held, counted, counters = asyncio.run(main())
    assert counted and held > 0  # still under the cap and the budget while it holds replies
    assert counters["connections_closed_send_timeout"] == 1
