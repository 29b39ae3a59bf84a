"""The floor of a primary-backup store in Python: what any Python implementation of pbkv's
design must at least do per operation, and nothing else.

A *primary* and a *replica*, each one process on uvloop with hiredis parsing RESP, so the same
load generator drives them as drives Redis (``SET`` + ``WAIT 1 0`` for a write, ``GET`` for a
read). The primary applies a ``SET``, forwards it to the replica, and answers the ``WAIT``
after the replica acknowledged it; a ``GET`` is answered from the primary's memory at once,
like a leased read (no confirmation round trip). There is no view service, no session table,
no retry, no validation, no bound and no metric: a write costs one parse, one dict store, one
forward and one acknowledgement, which is the least pbkv's design can do.

``scripts/measure_floor.py`` runs it beside Redis and pbkv: the ratio floor/Redis is the best
any Python implementation of the design can reach on this machine, and pbkv/floor is how close
pbkv comes to it (docs/performance.md, "The Python floor").

Several replicas, two ways (issue #11's choice between fan-out and a chain, measured on the
least code that does either): a primary given ``--replica`` more than once forwards each write
to every replica in parallel and answers the ``WAIT`` once all of them acknowledged it
(*fan-out*, pbkv's design); a replica given ``--next HOST:PORT`` applies what it receives,
relays it to the next replica and acknowledges upstream only what the next one acknowledged
(*chain*: primary -> head -> ... -> tail, the tail acknowledges). ``WAIT N 0`` is answered
``N`` once every replica there is holds the writes before it, so the generator's ``WAIT 2 0``
check passes against two replicas either way.

Reads two ways: ``--reads leased`` (the default) answers a ``GET`` from the primary's memory at
once, like pbkv's leased read; ``--reads confirmed`` answers it, with the value it had when the
read arrived, only once every replica acknowledged a forward sent after that: the read rides the
next forward batch, or a ``PING`` sent for it when the batch holds no write (pbkv's read round,
protocol.md P2/P3, without leases). That is the least a store must do to keep a replaced primary
from answering a read.

Forwards leave the primary either once per loop iteration, batched over every client read in
it (``--flush batched``, what pbkv does), or at the end of each client read (``--flush
immediate``: issue #11's "forward as soon as requests are read"). ``--busy-poll-us US`` polls
like ``pbkv server --busy-poll-us`` (``pbkv.runtime.busy_poll``), so the two compare alike.

Usage: ``python -m pbkv.bench.floor_server replica PORT [--next HOST:PORT]`` and
``python -m pbkv.bench.floor_server primary PORT --replica HOST:PORT [--replica HOST:PORT ...]
[--flush batched] [--reads confirmed]`` (both take ``--busy-poll-us US``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import hiredis

from pbkv.runtime.busy_poll import BUSY_POLL_US_MAX, BusyPoller
from pbkv.runtime.loop import new_event_loop

OK: Final = b"+OK\r\n"
ONE: Final = b":1\r\n"
NIL: Final = b"$-1\r\n"
FLUSH_MODES: Final = ("batched", "immediate")
READ_MODES: Final = ("leased", "confirmed")
READ_ROUND: Final = b"*1\r\n$4\r\nPING\r\n"
"""Forwarded for confirmed reads when the batch has no write; the replica acknowledges it."""


def bulk(value: bytes | None) -> bytes:
    return NIL if value is None else b"$%d\r\n%b\r\n" % (len(value), value)


def encode_set(key: bytes, value: bytes) -> bytes:
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(value), value)


class ReplicaProtocol(asyncio.Protocol):
    """Applies forwarded ``SET``s and acknowledges each with ``+OK``, one write per read; in a
    chain (``successor`` set), relays the bytes it read to the next replica instead, and the
    successor's acknowledgements travel back upstream (``ChainAckProtocol``)."""

    def __init__(
        self,
        store: dict[bytes, bytes],
        touch: Callable[[], None],
        successor: asyncio.Transport | None = None,
        upstream: list[asyncio.Transport] | None = None,
    ) -> None:
        self.store = store
        self.touch = touch
        self.successor = successor
        self.upstream = upstream
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.upstream is not None:
            self.upstream.append(self.transport)

    def data_received(self, data: bytes) -> None:
        self.touch()
        self.reader.feed(data)
        applied = 0
        while (command := self.reader.gets()) is not False:
            if command[0].upper() == b"SET":
                self.store[command[1]] = command[2]
            applied += 1
        if self.successor is not None:
            self.successor.write(data)  # acknowledged upstream once the successor has it
        elif applied and self.transport is not None:
            self.transport.write(OK * applied)


class ChainAckProtocol(asyncio.Protocol):
    """A chain member's connection to its successor: every ``+OK`` it reads goes upstream, to
    the predecessor (the primary, or the member before), which can count it only now that
    every member after this one holds the write."""

    def __init__(self, upstream: list[asyncio.Transport], touch: Callable[[], None]) -> None:
        self.upstream = upstream
        self.touch = touch

    def data_received(self, data: bytes) -> None:
        self.touch()
        if self.upstream:
            self.upstream[-1].write(data)  # the acknowledgements, byte for byte


class Primary:
    """The primary's shared state: its store, the forward stream and the acknowledged count."""

    def __init__(self, flush: str, touch: Callable[[], None], reads: str = "leased") -> None:
        self.touch = touch
        self.confirm_reads = reads == "confirmed"
        self.store: dict[bytes, bytes] = {}
        self.sent = 0
        self.acknowledged = 0
        self.forwards: list[bytes] = []
        self.replicas: list[asyncio.Transport] = []
        self.replica_acknowledged: list[int] = []
        self.waiting: dict[ClientProtocol, None] = {}
        self.immediate = flush == "immediate"
        self.flush_scheduled = False
        self.loop = asyncio.get_running_loop()

    def forward(self, frame: bytes) -> None:
        self.forwards.append(frame)
        self.sent += 1
        if not self.immediate and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def read_round(self) -> int:
        """The stream position a confirmed read arriving now must wait for: the next batch
        to leave (with a ``PING`` in it when it holds nothing else)."""
        if not self.forwards:
            self.forward(READ_ROUND)
        return self.sent

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.forwards and self.replicas:
            batch = b"".join(self.forwards)
            for replica in self.replicas:  # fan-out: every replica, in parallel
                replica.write(batch)
            self.forwards.clear()

    def on_acknowledged(self, replica: int, count: int) -> None:
        """``count`` more writes are on replica ``replica``; a write is acknowledged once it
        is on every replica."""
        self.replica_acknowledged[replica] += count
        acknowledged = min(self.replica_acknowledged)
        if acknowledged == self.acknowledged:
            return
        self.acknowledged = acknowledged
        released = [client for client in self.waiting if client.release()]
        for client in released:
            del self.waiting[client]


class AckProtocol(asyncio.Protocol):
    """The primary's connection to one replica (number ``index``): counts the ``+OK``s."""

    def __init__(self, primary: Primary, index: int) -> None:
        self.primary = primary
        self.index = index
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self.primary.touch()
        self.reader.feed(data)
        count = 0
        while self.reader.gets() is not False:
            count += 1
        self.primary.on_acknowledged(self.index, count)


class ClientProtocol(asyncio.Protocol):
    """One client connection. Replies leave in order: a ``WAIT`` the replica has not yet
    caught up with holds it and every reply after it."""

    def __init__(self, primary: Primary) -> None:
        self.primary = primary
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.held: deque[tuple[int, bytes]] = deque()  # (stream position needed, reply)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        primary, out = self.primary, []
        primary.touch()
        self.reader.feed(data)
        while (command := self.reader.gets()) is not False:
            reply, needed = self.execute(command)
            if needed > primary.acknowledged or self.held:
                self.held.append((needed, reply))
            else:
                out.append(reply)
        if primary.immediate:
            primary.flush()
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        if self.held:
            primary.waiting[self] = None

    def execute(self, command: list[bytes]) -> tuple[bytes, int]:
        """The reply to ``command`` and the stream position it must wait for (0: none)."""
        name = command[0].upper()
        primary = self.primary
        if name == b"GET":
            needed = primary.read_round() if primary.confirm_reads else 0
            return bulk(primary.store.get(command[1])), needed
        if name == b"SET":
            primary.store[command[1]] = command[2]
            primary.forward(encode_set(command[1], command[2]))
            return OK, 0
        if name == b"WAIT":  # answered once every replica holds the writes before it
            return (ONE if command[1] == b"1" else b":%b\r\n" % command[1]), primary.sent
        if name == b"PING":
            return b"+PONG\r\n", 0
        return b"-ERR unknown command\r\n", 0

    def release(self) -> bool:
        """Write the held replies the replica has caught up with; True when none is left."""
        held, out = self.held, []
        while held and held[0][0] <= self.primary.acknowledged:
            out.append(held.popleft()[1])
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        return not held


def no_input_mark() -> None:
    """``touch`` without busy polling."""


async def serve(arguments: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    touch = no_input_mark
    if arguments.busy_poll_us:
        touch = BusyPoller(loop, arguments.busy_poll_us / 1e6).touch
    if arguments.role == "replica":
        server = await serve_replica(arguments, touch)
    else:
        primary = Primary(arguments.flush, touch, arguments.reads)
        for index, address in enumerate(arguments.replica):
            transport = await connect(address, functools.partial(AckProtocol, primary, index))
            primary.replicas.append(transport)
            primary.replica_acknowledged.append(0)
        server = await loop.create_server(
            lambda: ClientProtocol(primary), "127.0.0.1", arguments.port
        )
    async with server:
        await server.serve_forever()


async def connect(address: str, protocol: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
    host, _, port = address.rpartition(":")
    transport, _ = await asyncio.get_running_loop().create_connection(protocol, host, int(port))
    return transport


async def serve_replica(arguments: argparse.Namespace, touch: Callable[[], None]) -> Any:
    """A replica; with ``--next``, a chain member that relays to its successor (connected
    first, so the chain is built from the tail up)."""
    store: dict[bytes, bytes] = {}
    successor: asyncio.Transport | None = None
    upstream: list[asyncio.Transport] | None = None
    if arguments.next:
        upstream = []
        successor = await connect(arguments.next, lambda: ChainAckProtocol(upstream, touch))
    return await asyncio.get_running_loop().create_server(
        lambda: ReplicaProtocol(store, touch, successor, upstream), "127.0.0.1", arguments.port
    )


def busy_poll_window_us(text: str) -> int:
    """``--busy-poll-us``: an integer 0..BUSY_POLL_US_MAX."""
    window_us = int(text)
    if not 0 <= window_us <= BUSY_POLL_US_MAX:
        raise ValueError(text)
    return window_us


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pbkv.bench.floor_server")
    parser.add_argument("role", choices=("primary", "replica"))
    parser.add_argument("port", type=int)
    parser.add_argument(
        "--replica",
        action="append",
        default=[],
        help="HOST:PORT of a replica (primary only; again for fan-out to several)",
    )
    parser.add_argument(
        "--next",
        default="",
        metavar="HOST:PORT",
        help="chain: relay to this replica and acknowledge what it acknowledges (replica only)",
    )
    parser.add_argument("--flush", choices=FLUSH_MODES, default="batched")
    parser.add_argument(
        "--reads",
        choices=READ_MODES,
        default="leased",
        help="answer a GET at once (leased) or after the replicas confirm a later forward",
    )
    parser.add_argument(
        "--busy-poll-us",
        type=busy_poll_window_us,
        default=0,
        metavar="US",
        help="keep the loop turning US µs after each input, as pbkv server --busy-poll-us",
    )
    arguments = parser.parse_args(argv)
    if arguments.role == "primary" and not arguments.replica:
        parser.error("a primary needs --replica HOST:PORT")
    if arguments.role == "primary" and arguments.next:
        parser.error("--next is for a replica (a chain member)")
    if arguments.role == "replica" and arguments.replica:
        parser.error("--replica is for a primary")
    return arguments


def main(argv: Sequence[str] | None = None) -> Any:
    arguments = parse_arguments(argv)
    loop = new_event_loop()
    try:
        loop.run_until_complete(serve(arguments))
    except KeyboardInterrupt:
        return 130
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
