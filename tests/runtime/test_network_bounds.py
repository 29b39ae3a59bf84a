"""The transport's bounds, in-process (docs/protocol.md §11): a peer that never reads costs at
most its send budget, is not read meanwhile, and is closed when its sends stay stalled; on the
receive side, the request window, the messages per turn, the connection cap, the frame timeout
and the receive budget each hold at their limit, and a closed connection gives back what it
held."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import socket
from collections.abc import Callable

import pytest

from pbkv.core.messages import (
    AnyMessage,
    ErrorReply,
    Get,
    GetView,
    Put,
    Reply,
    Request,
    StateTransfer,
    View,
)
from pbkv.runtime.config import NetworkLimits
from pbkv.runtime.connection import Connection
from pbkv.runtime.host import Network
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.security import Security
from pbkv.wire import FRAME_HEADER, MESSAGES, ProtocolError

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


# --- the receive side and the connection table (a mutation audit: none of these failed when
# --- its limit was broken) ---------------------------------------------------------------------

Received = list[tuple[str, list[AnyMessage]]]


async def serving(
    limits: NetworkLimits, security: Security | None = None
) -> tuple[Network, int, Received, io.StringIO]:
    """A listening ``Network`` that records every batch it hands to the core (never answers)."""
    log = io.StringIO()
    network = Network(limits, EventLogger("server", "s", lambda: 0, stream=log), security=security)
    batches: Received = []
    network.receive = lambda source, messages: batches.append((source, list(messages)))
    port = await network.listen("127.0.0.1", 0)
    await network.start_serving()
    return network, port, batches, log


def count(batches: Received) -> int:
    return sum(len(messages) for _, messages in batches)


async def until(predicate: Callable[[], object], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def requests(seqs: range) -> bytes:
    return b"".join(MESSAGES.frame(Request("c", seq, 0, Get("k"))) for seq in seqs)


def test_a_full_request_window_is_not_read_until_half_of_it_is_answered() -> None:
    """``connection_requests_in_flight_max``: an inbound connection with that many unanswered
    requests is not read (exactly at the window, not one later) until half are answered (not
    as soon as one is)."""
    limits = dataclasses.replace(SMALL, connection_requests_in_flight_max=4)

    async def main() -> tuple[bool, int, int, int]:
        network, port, batches, _ = await serving(limits)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(requests(range(4)))
        await until(lambda: count(batches) == 4)
        source = batches[0][0]
        paused = network.inbound[source].reading_paused
        writer.write(requests(range(4, 10)))
        await asyncio.sleep(0.2)
        at_window = count(batches)
        network.send(source, Reply("c", 0, "ok", "v"))  # 3 unanswered: more than half
        await asyncio.sleep(0.2)
        above_half = count(batches)
        network.send(source, Reply("c", 1, "ok", "v"))  # 2: half, read again
        await until(lambda: count(batches) == 10)
        writer.close()
        await network.close()
        return paused, at_window, above_half, count(batches)

    assert asyncio.run(main()) == (True, 4, 4, 10)


def test_a_window_never_answered_is_read_again_after_in_flight_stall_s() -> None:
    """``in_flight_stall_s``: a request the core answers only once (a retransmitted duplicate)
    never gets its own reply, so a full window reopens after that long without answers."""
    limits = dataclasses.replace(
        SMALL,
        connection_requests_in_flight_max=2,
        in_flight_stall_s=0.3,
        housekeeping_interval_s=0.05,
    )

    async def main() -> tuple[int, int]:
        network, port, batches, _ = await serving(limits)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(requests(range(2)))
        await until(lambda: count(batches) == 2)
        writer.write(requests(range(2, 3)))
        await asyncio.sleep(0.1)
        held = count(batches)
        await until(lambda: count(batches) == 3)
        writer.close()
        await network.close()
        return held, count(batches)

    assert asyncio.run(main()) == (2, 3)


def test_a_connection_hands_at_most_messages_per_turn_max_to_the_core_at_once() -> None:
    """``messages_per_turn_max``: ten frames in one segment reach the core in batches of at most
    three, so one busy connection cannot hold the loop."""
    limits = dataclasses.replace(SMALL, messages_per_turn_max=3)

    async def main() -> list[int]:
        network, port, batches, _ = await serving(limits)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(MESSAGES.frame(GetView()) * 10)
        await until(lambda: count(batches) == 10)
        writer.close()
        await network.close()
        return [len(messages) for _, messages in batches]

    sizes = asyncio.run(main())
    assert max(sizes) == 3 and sum(sizes) == 10


@pytest.mark.parametrize(("quiet_min_s", "outcome"), [(60.0, "refused"), (0.0, "evicted")])
def test_at_the_connection_cap_the_quiet_oldest_makes_room_else_the_newcomer_is_refused(
    quiet_min_s: float, outcome: str
) -> None:
    """``inbound_connections_max`` and ``evict_quiet_min_s``: a third connection at a cap of two
    closes the least recently active one if it was quiet that long, else it is refused and
    closed itself; never are three held."""
    limits = dataclasses.replace(SMALL, inbound_connections_max=2, evict_quiet_min_s=quiet_min_s)

    async def main() -> tuple[int, dict[str, int], list[bool]]:
        network, port, _, _ = await serving(limits)
        streams = []
        for _ in range(3):
            streams.append(await asyncio.open_connection("127.0.0.1", port))
            await until(
                lambda: sum(network.counters.values()) + len(network.inbound) >= len(streams)
            )
        ends = [await ended(reader) for reader, _ in streams]
        held = len(network.inbound)
        for _, writer in streams:
            writer.close()
        await network.close()
        return held, network.counters, ends

    held, counters, ends = asyncio.run(main())
    assert held == 2
    evicted, refused = (
        counters.get("connections_evicted", 0),
        counters.get("connections_refused", 0),
    )
    if outcome == "refused":
        assert (evicted, refused) == (0, 1) and ends == [False, False, True]
    else:
        assert (evicted, refused) == (1, 0) and ends == [True, False, False]


def test_the_frame_timeout_counts_from_the_start_of_each_frame() -> None:
    """``frame_timeout_s`` (slowloris): a connection whose frames each arrive within the timeout
    stays open, however long ago its first partial frame began."""
    limits = dataclasses.replace(SMALL, frame_timeout_s=0.5, housekeeping_interval_s=0.05)
    frame = MESSAGES.frame(GetView())

    async def main() -> tuple[bool, int]:
        network, port, batches, _ = await serving(limits)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame[:2])
        await asyncio.sleep(0.3)
        writer.write(frame[2:] + frame[:2])  # a whole frame, and the next one begins
        await asyncio.sleep(0.3)
        writer.write(frame[2:])  # 0.6 s after the first byte, 0.3 s after this frame's
        await until(lambda: count(batches) == 2 or not network.inbound)
        writer.close()
        await network.close()
        return not network.counters, count(batches)

    assert asyncio.run(main()) == (True, 2)


def test_over_the_receive_budget_the_largest_partial_frame_is_closed() -> None:
    """``receive_buffers_bytes_max``: the connection holding the largest partial frame is
    closed, not the one whose bytes crossed the budget, nor the smallest."""
    limits = SMALL  # frames of 64 KiB, 128 KiB of partial frames in all
    sizes = (60 * KIB, 30 * KIB, 40 * KIB)  # 130 KiB: the third crosses the budget

    async def main() -> tuple[list[bool], dict[str, int]]:
        network, port, _, _ = await serving(limits)
        streams = []
        held = 0
        for size in sizes:
            stream = await asyncio.open_connection("127.0.0.1", port)
            stream[1].write(FRAME_HEADER.pack(64 * KIB - 4) + b"x" * size)
            streams.append(stream)
            held += FRAME_HEADER.size + size
            await until(functools.partial(holds_or_closed, network, held))
        await until(lambda: network.receive_bytes == (30 + 40) * KIB + 2 * FRAME_HEADER.size)
        closed = [await ended(reader) for reader, _ in streams]
        for _, writer in streams:
            writer.close()
        await network.close()
        return closed, network.counters

    closed, counters = asyncio.run(main())
    assert closed == [True, False, False]
    assert counters["connections_closed_receive_budget"] == 1


def paused_reading(connection: Connection[AnyMessage]) -> bool:
    return connection.reading_paused


def holds_or_closed(network: Network, held: int) -> bool:
    return network.receive_bytes >= held or bool(network.counters)


async def ended(reader: asyncio.StreamReader, wait_s: float = 0.2) -> bool:
    """Whether the other side closed the stream (within ``wait_s``)."""
    try:
        return await asyncio.wait_for(reader.read(), wait_s) == b""
    except TimeoutError:
        return False


def test_a_backpressured_connection_is_read_again_once_its_peer_reads_its_replies() -> None:
    """``send_high_water_bytes``: the transport pauses at that mark (not its own default), the
    connection is not read meanwhile, and is read again once its replies drained."""
    limits = SMALL

    async def main() -> tuple[tuple[int, int], bool, bool, int]:
        network, peer, source, _ = await network_with_a_peer_that_never_reads(limits)
        batches: Received = []
        network.receive = lambda source, messages: batches.append((source, list(messages)))
        connection = network.inbound[source]
        assert connection.transport is not None
        marks = connection.transport.get_write_buffer_limits()
        for _ in range(200):
            network.send(source, ErrorReply("x" * (16 * KIB)))
            network.flush()
            await asyncio.sleep(0)
        paused = connection.reading_paused
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5.0):
            while paused_reading(connection):
                await asyncio.wait_for(loop.sock_recv(peer, 256 * KIB), 1.0)
        await loop.sock_sendall(peer, MESSAGES.frame(GetView()))
        await until(lambda: count(batches) == 1)
        peer.close()
        await network.close()
        return marks, paused, connection.reading_paused, count(batches)

    marks, paused, still_paused, read = asyncio.run(main())
    assert marks == (limits.send_high_water_bytes // 4, limits.send_high_water_bytes)
    assert (paused, still_paused, read) == (True, False, 1)


def test_a_closed_connection_gives_back_its_budgets_and_its_place_under_the_cap() -> None:
    """``receive_buffers_bytes_max``, ``send_buffers_bytes_max``, ``inbound_connections_max``:
    the partial frame and the unsent bytes a connection held, and its place in the inbound
    table, are released when it closes (else closed peers fill every budget in time)."""
    limits = SMALL

    async def main() -> tuple[int, int, int, int, bool]:
        network, peer, source, _ = await network_with_a_peer_that_never_reads(limits)
        connection = network.inbound[source]
        assert connection.transport is not None  # a small kernel buffer: the process holds it
        connection.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * KIB
        )
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(peer, FRAME_HEADER.pack(1000) + b"x" * 100)
        await until(lambda: network.receive_bytes > 0)
        for _ in range(8):
            network.send(source, ErrorReply("x" * (16 * KIB)))
        network.flush()
        held = network.receive_bytes, network.send_bytes
        peer.close()  # unread replies: a reset
        await until(lambda: connection.closed and source not in network.inbound)
        released = network.receive_bytes, network.send_bytes, source in network.inbound
        await network.close()
        return *held, *released

    received, sent, received_after, sent_after, listed = asyncio.run(main())
    assert received > 0 and sent > 0
    assert (received_after, sent_after, listed) == (0, 0, False)


def test_closed_connections_are_logged_once_per_second_per_remote_address() -> None:
    """§11 rate-limited events: ``connection_closed`` is written once per second per remote IP
    (not per connection: every connection has its own port), every close counted."""

    async def main() -> tuple[int, int]:
        network, port, _, log = await serving(SMALL)
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\0\0\0\x03abc")  # not MessagePack: the frame is rejected
            await asyncio.wait_for(reader.read(), 2.0)
            writer.close()
        await until(lambda: network.counters.get("connections_closed_on_error") == 3)
        await network.close()
        lines = [line for line in log.getvalue().splitlines() if " connection_closed " in line]
        return network.counters["connections_closed_on_error"], len(lines)

    assert asyncio.run(main()) == (3, 1)


def test_a_close_at_a_limit_is_counted_under_that_limit_alone() -> None:
    """§11: each closure is counted once, under its cause: an idle connection closed by
    ``idle_timeout_s`` under ``connections_closed_idle`` (not also as an error), a rejected
    frame under ``connections_closed_on_error``; both are logged."""
    limits = dataclasses.replace(SMALL, idle_timeout_s=0.2, housekeeping_interval_s=0.05)

    async def main() -> tuple[dict[str, int], list[str]]:
        network, port, _, log = await serving(limits)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(reader.read(), 2.0)  # closed by the idle timer
        writer.close()
        await until(lambda: network.counters.get("connections_closed_idle") == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\0\0\0\x03abc")  # not MessagePack: the frame is rejected
        await asyncio.wait_for(reader.read(), 2.0)
        writer.close()
        await until(lambda: network.counters.get("connections_closed_on_error") == 1)
        await asyncio.sleep(0.1)
        counters = dict(network.counters)
        await network.close()
        lines = [line for line in log.getvalue().splitlines() if " connection_closed " in line]
        return counters, lines

    counters, lines = asyncio.run(main())
    assert counters.get("connections_closed_idle") == 1
    assert counters.get("connections_closed_on_error") == 1
    assert any('reason="idle for 0.2 s"' in line for line in lines), lines


def test_frames_that_fill_a_connection_send_buffer_exactly_are_queued() -> None:
    """``send_buffer_bytes_max``: the bound is inclusive; only a frame past it is dropped."""
    reply = ErrorReply("x" * 1000)
    size = len(MESSAGES.frame(reply))
    limits = dataclasses.replace(SMALL, send_buffer_bytes_max=2 * size)

    async def main() -> tuple[int, int]:
        network, peer, source, _ = await network_with_a_peer_that_never_reads(limits)
        for _ in range(3):  # within one loop iteration: nothing has left yet
            network.send(source, reply)
        queued = network.send_bytes
        peer.close()
        await network.close()
        return queued, network.counters.get("sends_dropped_buffer_full", 0)

    assert asyncio.run(main()) == (2 * size, 1)
