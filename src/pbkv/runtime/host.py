"""The transport of one process: a listener, inbound connections, an outbound connection pool.

Targets of ``send`` are either node names (``host:port``), reached through the pool, or the
opaque ``conn:N`` id of an inbound connection, so a reply travels back on the connection its
request came in on. The pool connects lazily, backs off (bounded) after a failed connect, and
buffers a bounded amount while connecting; whatever cannot be sent is dropped and counted, never
raised: a failed send is a lost message. Messages from an outbound connection are reported with
the peer's address as their source.

Writes are batched: frames queued during one loop iteration leave with one write per
connection, in a single ``flush`` scheduled with ``call_soon``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from pbkv.core.messages import AnyMessage, ErrorReply
from pbkv.runtime.config import ConfigError, NetworkLimits, parse_address
from pbkv.runtime.connection import Connection
from pbkv.runtime.faults import Faults, sender_name
from pbkv.runtime.logging import EventLogger
from pbkv.wire import MESSAGES, Codec, ProtocolError

INBOUND_PREFIX: Final = "conn:"
LOG_INTERVAL_S: Final = 5.0

Receiver = Callable[[str, list[AnyMessage]], None]
MessageConnection = Connection[AnyMessage]


def _ignore(source: str, messages: list[AnyMessage]) -> None:
    del source, messages


@dataclass(slots=True)
class Peer:
    """Outbound state for one address."""

    address: str
    host: str
    port: int
    connection: MessageConnection | None = None
    connecting: bool = False
    buffer: list[bytes] = field(default_factory=list)
    buffer_bytes: int = 0
    retry_at: float = 0.0
    backoff_s: float = 0.0


class Network:
    """Listener, inbound table and outbound pool of one process, for the core protocol."""

    def __init__(
        self,
        limits: NetworkLimits,
        logger: EventLogger,
        faults: Faults | None = None,
        view_service: str | None = None,
        codec: Codec[AnyMessage] = MESSAGES,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.limits = limits
        self.logger = logger
        self.faults = faults or Faults()
        self.view_service = view_service
        self.codec = (
            codec
            if codec.frame_bytes_max == limits.frame_bytes_max
            else (Codec(AnyMessage, limits.frame_bytes_max))
        )
        self.receive: Receiver = _ignore
        self.inbound: dict[str, MessageConnection] = {}
        self.peers: dict[str, Peer] = {}
        self.server: asyncio.Server | None = None
        self.counters: dict[str, int] = {}
        self._dirty: list[MessageConnection] = []
        self._flush_scheduled = False
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    # --- listening ---------------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        """Bind (not yet serving); returns the bound port. Call ``start_serving`` next."""
        limits = self.limits

        def accept() -> MessageConnection:
            self._next_id += 1
            source = f"{INBOUND_PREFIX}{self._next_id}"
            return Connection(self, self.codec, source, True, limits.send_buffer_bytes_max)

        try:
            self.server = await self.loop.create_server(
                accept, host, port, start_serving=False, backlog=1024
            )
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {error.strerror or error}"
            ) from None
        sockets = self.server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def start_serving(self) -> None:
        assert self.server is not None
        await self.server.start_serving()

    async def close(self) -> None:
        """Stop listening and close every connection (flushing what is queued)."""
        self.closed = True
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        self.flush()
        for connection in list(self.inbound.values()):
            connection.close()
        for peer in self.peers.values():
            if peer.connection is not None:
                peer.connection.close()
        await asyncio.sleep(0)

    # --- ConnectionOwner ---------------------------------------------------------------------

    def on_connection_made(self, connection: MessageConnection) -> None:
        if not connection.inbound:
            return
        if len(self.inbound) >= self.limits.inbound_connections_max:
            self.logger.limited(
                "inbound_full",
                LOG_INTERVAL_S,
                "connection_refused",
                remote=connection.remote,
                reason="too many connections",
            )
            connection.close()
            return
        self.inbound[connection.source] = connection

    def on_frames(self, connection: MessageConnection, messages: list[AnyMessage]) -> None:
        if self.faults.active:
            messages = self._filter_incoming(connection, messages)
        self.receive(connection.source, messages)

    def on_connection_lost(self, connection: MessageConnection, reason: str | None) -> None:
        if connection.inbound:
            self.inbound.pop(connection.source, None)
        else:
            peer = self.peers.get(connection.source)
            if peer is not None and peer.connection is connection:
                peer.connection = None
        if reason is not None:
            self.count("connections_closed_on_error")
            self.logger.limited(
                f"closed:{connection.remote.rpartition(':')[0]}",
                1.0,
                "connection_closed",
                peer=connection.peer_name or connection.remote,
                connection=connection.source,
                reason=reason,
            )

    def mark_dirty(self, connection: MessageConnection) -> None:
        self._dirty.append(connection)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every queued frame (one write per connection)."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.flush()

    # --- receiving ---------------------------------------------------------------------------

    def _filter_incoming(
        self, connection: MessageConnection, messages: list[AnyMessage]
    ) -> list[AnyMessage]:
        kept = []
        for message in messages:
            sender = sender_name(message, self.view_service) or connection.peer_name
            if connection.inbound and sender is not None:
                connection.peer_name = sender
            if not self.faults.blocks_in(sender):
                kept.append(message)
        return kept

    # --- sending -----------------------------------------------------------------------------

    def send(self, target: str, message: AnyMessage) -> None:
        """Best effort: queue ``message`` for ``target`` (a node name or an inbound id)."""
        delay = 0.0
        if self.faults.active:
            connection = self.inbound.get(target)
            peer = connection.peer_name if connection is not None else target
            held = self.faults.outgoing_delay(peer)
            if held is None:
                return
            delay = held
        try:
            frame = self.codec.frame(message)
        except ProtocolError as error:
            self._oversized(target, message, error)
            return
        if delay > 0.0:
            self.loop.call_later(delay, self.deliver, target, frame)
            return
        # The common cases inline: a reply on an inbound connection, or an open peer connection.
        connection = self.inbound.get(target)
        if connection is None:
            outbound = self.peers.get(target)
            connection = None if outbound is None else outbound.connection
        if connection is None or self.closed:
            self.deliver(target, frame)
        elif not connection.queue(frame):
            self.count("sends_dropped_buffer_full")

    def _oversized(self, target: str, message: AnyMessage, error: ProtocolError) -> None:
        self.count("frames_oversized_out")
        self.logger.limited(
            "oversized",
            LOG_INTERVAL_S,
            "frame_not_sent",
            target=target,
            type=type(message).__name__,
            reason=str(error),
        )
        if target in self.inbound and not isinstance(message, ErrorReply):
            self.send(target, ErrorReply(f"reply {type(message).__name__} exceeds frame limit"))

    def deliver(self, target: str, frame: bytes) -> None:
        if self.closed:
            return
        connection = self.inbound.get(target)
        if connection is not None:
            if not connection.queue(frame):
                self.count("sends_dropped_buffer_full")
            return
        if target.startswith(INBOUND_PREFIX):
            self.count("replies_dropped_connection_gone")
            return
        self._send_to_peer(target, frame)

    def _send_to_peer(self, address: str, frame: bytes) -> None:
        peer = self.peers.get(address) or self._new_peer(address)
        if peer is None:
            return
        if peer.connection is not None:
            if not peer.connection.queue(frame):
                self.count("sends_dropped_buffer_full")
            return
        if not peer.connecting:
            if self.loop.time() < peer.retry_at:
                self.count("sends_dropped_unreachable")
                return
            peer.connecting = True
            task = self.loop.create_task(self._connect(peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if peer.buffer_bytes + len(frame) > self.limits.connect_buffer_bytes_max:
            self.count("sends_dropped_buffer_full")
            return
        peer.buffer.append(frame)
        peer.buffer_bytes += len(frame)

    def _new_peer(self, address: str) -> Peer | None:
        if len(self.peers) >= self.limits.outbound_peers_max:
            self.count("sends_dropped_pool_full")
            self.logger.limited(
                "pool_full",
                LOG_INTERVAL_S,
                "peer_refused",
                address=address,
                reason="outbound pool full",
            )
            return None
        try:
            host, port = parse_address(address)
        except ConfigError:
            self.count("sends_dropped_bad_address")
            self.logger.limited(
                "bad_address",
                LOG_INTERVAL_S,
                "peer_refused",
                address=address,
                reason="not a HOST:PORT address",
            )
            return None
        peer = self.peers[address] = Peer(address, host, port)
        return peer

    async def _connect(self, peer: Peer) -> None:
        limits = self.limits

        def protocol() -> MessageConnection:
            return Connection(self, self.codec, peer.address, False, limits.send_buffer_bytes_max)

        try:
            async with asyncio.timeout(limits.connect_timeout_s):
                _, connection = await self.loop.create_connection(protocol, peer.host, peer.port)
        except (OSError, TimeoutError) as error:
            self._connect_failed(peer, error)
            return
        if connection.closed:
            self._connect_failed(peer, ConnectionError("closed by the peer at once"))
            return
        peer.connecting = False
        peer.backoff_s = 0.0
        peer.connection = connection
        buffered, peer.buffer, peer.buffer_bytes = peer.buffer, [], 0
        for frame in buffered:
            connection.queue(frame)

    def _connect_failed(self, peer: Peer, error: BaseException) -> None:
        limits = self.limits
        peer.connecting = False
        self.count("sends_dropped_unreachable", len(peer.buffer))
        peer.buffer, peer.buffer_bytes = [], 0
        peer.backoff_s = min(
            limits.reconnect_backoff_max_s,
            max(limits.reconnect_backoff_initial_s, peer.backoff_s * 2),
        )
        peer.retry_at = self.loop.time() + peer.backoff_s
        reason = getattr(error, "strerror", None) or type(error).__name__
        self.logger.limited(
            f"unreachable:{peer.address}",
            LOG_INTERVAL_S,
            "peer_unreachable",
            address=peer.address,
            reason=reason,
        )
