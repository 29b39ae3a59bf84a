"""One TCP connection as an ``asyncio.Protocol``: frames in, batched frames out.

Incoming bytes go through a ``FrameReader``; every complete message of one ``data_received``
call is handed to the owner in one list. A ``ProtocolError`` (garbage, an oversized or
undecodable frame, an unknown message type) closes this connection only, with the reason
logged by the owner. Outgoing frames are queued and written with one ``transport.write`` per
connection when the owner flushes (once per loop iteration), and the queue is bounded: a frame
that does not fit is dropped, which is a lost message, never an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Generic, Protocol, TypeVar, cast

from pbkv.wire import Codec, FrameReader, ProtocolError

T = TypeVar("T")


class ConnectionOwner(Protocol[T]):
    """What a connection reports to."""

    def on_connection_made(self, connection: Connection[T]) -> None: ...

    def on_frames(self, connection: Connection[T], messages: list[T]) -> None: ...

    def on_connection_lost(self, connection: Connection[T], reason: str | None) -> None: ...

    def mark_dirty(self, connection: Connection[T]) -> None: ...


class Connection(asyncio.Protocol, Generic[T]):
    """A framed connection. ``source`` is what the core sees as the sender: the peer's address
    for outbound connections, an opaque ``conn:N`` id for inbound ones."""

    def __init__(
        self,
        owner: ConnectionOwner[T],
        codec: Codec[T],
        source: str,
        inbound: bool,
        send_buffer_bytes_max: int,
    ) -> None:
        self.owner = owner
        self.reader = FrameReader(codec)
        self.source = source
        self.inbound = inbound
        self.peer_name: str | None = None if inbound else source
        self.remote = "?"
        self.send_buffer_bytes_max = send_buffer_bytes_max
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.closed = False
        self.close_reason: str | None = None

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.remote = f"{peer[0]}:{peer[1]}"
        self.owner.on_connection_made(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            messages = self.reader.feed(data)
        except ProtocolError as error:
            self.close(f"frame rejected: {error}")
            return
        if messages:
            self.owner.on_frames(self, messages)

    def eof_received(self) -> bool | None:
        if self.reader.buffered:
            self.close_reason = (
                f"truncated frame: {self.reader.buffered} bytes before end of stream"
            )
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pending.clear()
        reason = self.close_reason
        if reason is None and exc is not None:
            reason = f"connection error: {exc}"
        self.owner.on_connection_lost(self, reason)

    # --- sending -----------------------------------------------------------------------------

    def queue(self, frame: bytes) -> bool:
        """Queue ``frame`` for the next flush; False when it was dropped (closed or full)."""
        transport = self.transport
        if self.closed or transport is None:
            return False
        size = len(frame)
        if self.pending_bytes + size + transport.get_write_buffer_size() > (
            self.send_buffer_bytes_max
        ):
            return False
        if not self.pending:
            self.owner.mark_dirty(self)
        self.pending.append(frame)
        self.pending_bytes += size
        return True

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        if not self.closed and self.transport is not None:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        self.pending = []
        self.pending_bytes = 0

    def close(self, reason: str | None = None) -> None:
        """Flush what is queued and close; ``reason`` is reported as the cause."""
        if self.closed:
            return
        if reason is not None:
            self.close_reason = reason
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()
