"""The outbound half of a process's transport: one lazily opened connection per peer address.

Theory of operation. ``send`` to a node name goes through its ``Peer``: an open connection
queues the frame; otherwise the first send starts a connect task (bounded by
``connect_timeout_s``, TLS and the authentication handshake included) and frames wait in a
bounded buffer (``connect_buffer_bytes_max``) until it opens. A failed connect drops what was
buffered (a lost message, counted), backs off exponentially between
``reconnect_backoff_initial_s`` and ``reconnect_backoff_max_s``, and sends meanwhile are dropped
and counted at once. The pool holds at most ``outbound_peers_max`` addresses; when it is full,
the oldest address with no connection open or opening is forgotten to make room (a send is
dropped only when every address is in use). An address that is not ``HOST:PORT`` is refused
(counted, logged rate-limited). A peer that is a member of a replicated view service is reported
unreachable to its ``ViewServiceGroup``, which then tries the next member.

``OutboundPool`` is a mixin of ``pbkv.runtime.host.Network``, which owns the state it uses.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, cast

from pbkv.core.messages import AnyMessage
from pbkv.runtime.auth import NONCE_BYTES
from pbkv.runtime.config import ConfigError, NetworkLimits, parse_address
from pbkv.runtime.connection import Connection, ConnectionOwner
from pbkv.runtime.group import ViewServiceGroup
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.security import Security
from pbkv.wire import Codec

if TYPE_CHECKING:
    MessageConnection = Connection[AnyMessage]

LOG_INTERVAL_S: Final = 5.0


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


class OutboundPool:
    """Outbound connections by address (see the module docstring)."""

    peers: dict[str, Peer]
    limits: NetworkLimits
    logger: EventLogger
    loop: asyncio.AbstractEventLoop
    security: Security | None
    codec: Codec[AnyMessage]
    group_of: dict[str, ViewServiceGroup]
    _tasks: set[asyncio.Task[None]]

    def count(self, name: str, amount: int = 1) -> None:
        raise NotImplementedError

    def queue(self, connection: MessageConnection, frame: bytes) -> bool:
        raise NotImplementedError

    def _send_to_peer(self, address: str, frame: bytes) -> None:
        peer = self.peers.get(address) or self._new_peer(address)
        if peer is None:
            return
        if peer.connection is not None:
            self.queue(peer.connection, frame)
            return
        if not peer.connecting:
            if self.loop.time() < peer.retry_at:
                self.count("sends_dropped_unreachable")
                self._unreachable(address)
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
        if len(self.peers) >= self.limits.outbound_peers_max and not self._forget_a_peer():
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

    def _forget_a_peer(self) -> bool:
        """Make room in a full pool: forget the oldest address with no connection open or
        opening (a server long gone); False when every address is in use."""
        for address, peer in self.peers.items():
            if peer.connection is None and not peer.connecting:
                del self.peers[address]
                self.count("peers_forgotten")
                return True
        return False

    async def _connect(self, peer: Peer) -> None:
        limits = self.limits

        security = self.security
        if security is not None:
            security.refresh_client_tls()  # a client's renewed certificate, if any
        nonce = secrets.token_bytes(NONCE_BYTES) if security is not None else b""
        connection: MessageConnection | None = None

        def protocol() -> MessageConnection:
            return Connection(
                cast(ConnectionOwner[AnyMessage], self),
                self.codec,
                peer.address,
                False,
                limits,
                self.loop.time(),
                security,
                nonce,
            )

        try:
            async with asyncio.timeout(limits.connect_timeout_s):
                _, connection = await self.loop.create_connection(protocol, peer.host, peer.port)
            if connection.opened is not None:  # TLS and the handshake, bounded the same way
                async with asyncio.timeout(limits.connect_timeout_s):
                    await connection.opened
        except (OSError, TimeoutError) as error:
            if connection is not None:
                connection.close(abort=True)
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
            self.queue(connection, frame)

    def _unreachable(self, address: str) -> None:
        group = self.group_of.get(address) if self.group_of else None
        if group is not None:
            group.on_unreachable(address, self.loop.time())

    def _connect_failed(self, peer: Peer, error: BaseException) -> None:
        limits = self.limits
        self._unreachable(peer.address)
        peer.connecting = False
        self.count("sends_dropped_unreachable", len(peer.buffer))
        peer.buffer, peer.buffer_bytes = [], 0
        peer.backoff_s = min(
            limits.reconnect_backoff_max_s,
            max(limits.reconnect_backoff_initial_s, peer.backoff_s * 2),
        )
        peer.retry_at = self.loop.time() + peer.backoff_s
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        self.logger.limited(
            f"unreachable:{peer.address}",
            LOG_INTERVAL_S,
            "peer_unreachable",
            address=peer.address,
            reason=reason,
        )
