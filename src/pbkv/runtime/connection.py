"""One TCP connection as an ``asyncio.Protocol``: frames in, batched frames out, bounded both ways.

Incoming bytes go through a ``FrameReader``; every complete message of one ``data_received``
call is handed to the owner in one list, together with the change in the bytes of the partial
frame this connection holds, so the owner can keep a budget across all connections. A
``ProtocolError`` (garbage, an oversized or undecodable frame, an unknown message type) closes
this connection only, with the reason logged by the owner.

Outgoing frames are queued and written with one ``transport.write`` per connection when the
owner flushes (once per loop iteration). The queue is bounded (per connection here, across
connections by the owner): a frame that does not fit is dropped, which is a lost message, never
an error.

Backpressure: the transport calls ``pause_writing`` when its buffer passes the high-water mark
(``send_high_water_bytes``). An inbound connection then stops being read
(``transport.pause_reading``) until the buffer drains: a peer that does not read its replies
gets no more work done for it, and TCP flow control pushes back on it. The same happens while
``requests_in_flight`` (counted by the owner) is at the window. Timestamps (``last_active``,
``partial_since``, ``stalled_since``) let the owner's housekeeping close idle, slow (slowloris)
and stalled connections.

Security (``pbkv.runtime.security``): with TLS, every byte passes a ``TlsLayer`` first; with a
secret, the connection runs the authentication handshake (``pbkv.runtime.auth``) before its
``FrameReader`` sees a byte, so nothing is decoded as a protocol message before the peer proved
the secret. A connection that fails either (or does not finish within ``handshake_timeout_s``) is
*refused*: an inbound one gets one error frame (``owner.refusal_frame``) and is closed, with
``refused`` set so the owner logs it rate-limited; an outbound one is closed and its ``opened``
future fails. ``role`` says what the peer proved (``peer``/``client``; None without a secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar, cast

from pbkv.runtime.auth import (
    HANDSHAKE_TIMEOUT_TEXT,
    HEADER,
    MAGIC,
    AuthError,
    ClientHandshake,
    HandshakeReader,
    Role,
    ServerHandshake,
)
from pbkv.runtime.config import NetworkLimits
from pbkv.runtime.security import Security
from pbkv.runtime.tls import TLS_RECORD_TYPES, TlsError, TlsLayer
from pbkv.wire import Codec, FrameReader, ProtocolError

T = TypeVar("T")

NO_SECRET_HERE: Final = (
    "this node holds no secret (started without --auth-token-file), but the client presented "
    "one ($PBKV_AUTH_TOKEN, --auth-token-file or ./.pbkv/auth-token): connect without it"
)
"""The refusal of an authentication handshake by a node that has no secret."""


REFUSAL_PREFIX: Final = "refused: "
"""How the reason of a connection refused for good begins (the error frame a node sends)."""


def refusal_words(message: object) -> str | None:
    """What a node's error frame says, without ``REFUSAL_PREFIX``; None without words."""
    detail = getattr(message, "detail", None) or getattr(message, "reason", None)
    if not isinstance(detail, str) or not detail:
        return None
    return detail.removeprefix(REFUSAL_PREFIX)


def _refusal_detail(message: object) -> str | None:
    """``the server refused us: ...`` from a server's error frame; None without its words."""
    words = refusal_words(message)
    return None if words is None else f"the server refused us: {words}"


def is_handshake_hello(data: bytes) -> bool:
    """Whether ``data`` begins with an authentication handshake frame (``pbkv.runtime.auth``)."""
    return data[HEADER.size : HEADER.size + len(MAGIC)] == MAGIC


class ConnectionOwner(Protocol[T]):
    """What a connection reports to."""

    def on_connection_made(self, connection: Connection[T]) -> None: ...

    def on_frames(self, connection: Connection[T], messages: list[T]) -> None: ...

    def on_partial(self, connection: Connection[T]) -> None: ...

    def on_connection_lost(self, connection: Connection[T], reason: str | None) -> None: ...

    def on_write_paused(self, connection: Connection[T], paused: bool) -> None: ...

    def mark_dirty(self, connection: Connection[T]) -> None: ...

    def refusal_frame(self, reason: str) -> bytes: ...


class Connection(asyncio.Protocol, Generic[T]):
    """A framed connection. ``source`` is what the core sees as the sender: the peer's address
    for outbound connections, an opaque ``conn:N`` id for inbound ones."""

    def __init__(
        self,
        owner: ConnectionOwner[T],
        codec: Codec[T],
        source: str,
        inbound: bool,
        limits: NetworkLimits,
        now: float = 0.0,
        security: Security | None = None,
        nonce: bytes = b"",
    ) -> None:
        self.owner = owner
        self.reader = FrameReader(codec)
        self.source = source
        self.inbound = inbound
        self.peer_name: str | None = None if inbound else source
        self.remote = "?"
        self.limits = limits
        # Read per frame: native copies (``NetworkLimits`` is a frozen dataclass of an
        # interpreted module, whose every field read is a generic lookup).
        self.send_buffer_bytes_max = limits.send_buffer_bytes_max
        self.messages_per_turn_max = limits.messages_per_turn_max
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        # What the transport held after our last write: never less than it holds now, since it
        # only drains between our writes. ``fits`` checks against it first, without a call.
        self.write_buffered = 0
        self.closed = False
        self.close_reason: str | None = None
        self.closed_at_limit = False
        """Closed by the owner for a limit, which counted it under that limit's own name."""
        # Accounting and timers, kept by the owner.
        self.receive_held = 0  # partial-frame bytes the owner has counted for us
        self.send_held = 0  # unsent bytes the owner has counted for us
        self.last_active = now
        self.partial_since: float | None = None
        self.stalled_since: float | None = None
        self.requests_in_flight = 0
        self.read_closed = False  # half-closed by the peer: close once its replies are sent
        self.window_full_since: float | None = None
        self.write_paused = False
        self.reading_paused = False
        self.backlogged = False  # whole frames wait in the reader for a later turn
        # Security: TLS layer, handshake in progress, what the peer proved.
        self.security = security
        self.tls: TlsLayer | None = None
        self.handshake: ServerHandshake | ClientHandshake | None = None
        self.handshake_reader: HandshakeReader | None = None
        self.role: Role | None = None
        self.client_codec: Codec[T] | None = None
        """Decodes what a connection that proved the client role sends (None: ``codec``)."""
        self.refused_as_client = False  # closed for sending what only a peer may send
        self.refused_for_good = False
        """Refused by a check that a retry cannot pass (secret, TLS), not by a timeout."""
        self.refused = False
        self.opened: asyncio.Future[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        if security is not None:
            self._arm(security, nonce)

    def _arm(self, security: Security, nonce: bytes) -> None:
        """Set up the TLS layer and the handshake this connection must pass first."""
        inbound = self.inbound
        context = security.server_tls if inbound else security.client_tls
        if context is not None:
            name = security.server_name or self.source.rpartition(":")[0].strip("[]")
            self.tls = TlsLayer(context, inbound, None if inbound else name)
        if inbound and security.secrets is not None:
            self.handshake = ServerHandshake(security.secrets, nonce)
        elif not inbound and security.token is not None:
            self.handshake = ClientHandshake(security.token, security.role, nonce)
        if self.handshake is not None:
            self.handshake_reader = HandshakeReader()
        if not inbound:
            self.opened = asyncio.get_running_loop().create_future()

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
        high = self.limits.send_high_water_bytes
        with contextlib.suppress(AttributeError, NotImplementedError):
            self.transport.set_write_buffer_limits(high=high, low=high // 4)
        self.owner.on_connection_made(self)
        if not self.closed and (self.tls is not None or self.handshake is not None):
            self._start_gate()
        elif self.opened is not None:
            self.opened.set_result(None)

    # --- security gate -----------------------------------------------------------------------

    def _start_gate(self) -> None:
        assert self.security is not None
        loop = asyncio.get_running_loop()
        timeout_s = self.security.handshake_timeout_s
        self._deadline = loop.call_later(timeout_s, self._expired, timeout_s)
        if self.inbound:
            return
        if self.tls is not None:
            self._raw_write(self._tls_call(self.tls.start))
        elif isinstance(self.handshake, ClientHandshake):
            self._raw_write(self.handshake.hello())

    def _tls_call(self, step: Callable[[], bytes]) -> bytes:
        try:
            return step()
        except TlsError as error:
            self.refuse(str(error))
            return b""

    def _expired(self, timeout_s: float) -> None:
        self.refuse(f"{HANDSHAKE_TIMEOUT_TEXT} {timeout_s:g} s")

    def _raw_write(self, data: bytes) -> None:
        transport = self.transport
        if data and transport is not None and not self.closed:
            transport.write(data)
            self.write_buffered = transport.get_write_buffer_size()

    def _secure_write(self, data: bytes) -> None:
        """Write ``data`` (through TLS when on)."""
        if self.tls is not None:
            try:
                data = self.tls.send(data)
            except TlsError as error:
                self.refuse(str(error))
                return
        self._raw_write(data)

    def _open(self) -> None:
        """Both layers passed: protocol frames from now on."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.opened is not None and not self.opened.done():
            self.opened.set_result(None)

    def refuse(self, reason: str) -> None:
        """Refuse the connection: one error frame (inbound), close, report as refused (for
        good unless the handshake was only slow, ours or as the other side told us)."""
        if self.closed:
            return
        self.refused = True
        self.refused_for_good = HANDSHAKE_TIMEOUT_TEXT not in reason
        if self.inbound:
            notice = self.owner.refusal_frame(reason)
            plaintext = self.tls is None or not self.tls.established
            if plaintext:
                self._raw_write(notice)
            else:
                self._secure_write(notice)
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(ConnectionError(reason))
        if self._deadline is not None:
            self._deadline.cancel()
        self.close(f"refused: {reason}")

    def _unwrap(self, data: bytes) -> bytes | None:
        """The TLS layer: plaintext of ``data``, None once refused."""
        tls = self.tls
        assert tls is not None
        was_established = tls.established
        try:
            plain = tls.receive(data)
        except TlsError as error:
            self.refuse(self._plaintext_refusal(data) or str(error))
            return None
        self._raw_write(tls.outgoing())
        if tls.established and not was_established:
            if self.handshake is None:
                self._open()
            elif isinstance(self.handshake, ClientHandshake):
                self._secure_write(self.handshake.hello())
        return plain

    def _authenticate(self, data: bytes) -> None:
        """Feed handshake bytes; on success, pass what follows to the frame reader."""
        handshake, reader = self.handshake, self.handshake_reader
        assert handshake is not None and reader is not None
        try:
            reader.feed(data)
            while not handshake.done and (payload := reader.next()) is not None:
                try:
                    answer = handshake.feed(payload)
                except AuthError as error:
                    if isinstance(handshake, ClientHandshake):
                        raise AuthError(self._refusal_text(payload, error)) from None
                    raise
                self._secure_write(answer)
        except AuthError as error:
            self.refuse(str(error))
            return
        if handshake.done:
            self.role = handshake.role
            if self.role == "client" and self.client_codec is not None:
                self.reader.codec = self.client_codec
            self.handshake = self.handshake_reader = None
            self._open()
            rest = reader.rest()
            if rest and not self.closed:
                self._consume(rest)

    def _plaintext_refusal(self, data: bytes) -> str | None:
        """The words of a server that refused our TLS handshake: its one plaintext error frame,
        which under TLS 1.3 arrives after our side of the handshake finished (a missing client
        certificate), where TLS itself would only say ``WRONG_VERSION_NUMBER``. None when
        ``data`` is not such a frame."""
        if self.inbound or not data or data[0] in TLS_RECORD_TYPES:
            return None
        try:
            messages = FrameReader(self.reader.codec).feed(data, 1)
        except ProtocolError:
            return None
        return _refusal_detail(messages[0]) if messages else None

    def _refusal_text(self, payload: bytes, error: AuthError) -> str:
        """What a server that refused us said (its error frame), else why we refused it."""
        try:
            message = self.reader.codec.decode(payload)
        except ProtocolError:
            return str(error)
        return _refusal_detail(message) or "the server refused the handshake"

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.tls is not None:
            plain = self._unwrap(data)
            if not plain:
                return
            data = plain
        if self.handshake is not None:
            self._authenticate(data)
        else:
            self._consume(data)

    def _consume(self, data: bytes) -> None:
        """Hand at most ``messages_per_turn_max`` messages to the owner; when more whole frames
        are buffered, stop reading and take the next ones in a later loop iteration, so one
        busy connection cannot hold the loop (and the ticker, and everyone else)."""
        before = self.reader.buffered
        try:
            messages = self.reader.feed(data, self.messages_per_turn_max)
        except ProtocolError as error:
            if self.client_codec is not None and self.reader.codec is self.client_codec:
                self.refused_as_client = True
                self.close(f"not a client message on a client-token connection: {error}")
            elif self.inbound and before == 0 and is_handshake_hello(data):
                self.refuse(NO_SECRET_HERE)  # told, so the client fails at once, not by timeout
            else:
                self.close(f"frame rejected: {error}")
            return
        if messages or before == 0:
            self.partial_since = None  # a new frame starts (the owner stamps it)
        if messages:
            self.owner.on_frames(self, messages)
        self.owner.on_partial(self)
        if self.closed or not self.reader.frame_ready():
            if self.backlogged:
                self.backlogged = False
                self.update_reading()
            return
        if not self.backlogged:
            self.backlogged = True
            self.update_reading()
        asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        if not self.closed:
            self._consume(b"")

    def eof_received(self) -> bool | None:
        """The other side will send nothing more. A client that half-closed after its requests
        still gets the replies it is owed: the connection stays open for writing until the
        owner has answered them (``read_closed``); otherwise it closes now."""
        if self.reader.buffered:
            self.close_reason = (
                f"truncated frame: {self.reader.buffered} bytes before end of stream"
            )
            return None
        if self.inbound and self.requests_in_flight > 0:
            self.read_closed = True
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
        if self.opened is not None and not self.opened.done():
            self.opened.set_exception(ConnectionError(self.close_reason or "connection closed"))
        self.pending.clear()
        self.reader.clear()
        reason = self.close_reason
        if reason is None and exc is not None:
            reason = f"connection error: {exc}"
        self.owner.on_connection_lost(self, reason)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.owner.on_write_paused(self, True)
        self.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.owner.on_write_paused(self, False)
        self.update_reading()

    # --- reading -----------------------------------------------------------------------------

    def update_reading(self) -> None:
        """Read a connection only while it has no whole frames waiting for a turn and, when it
        is inbound, while its replies drain and its window has room."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return
        full = self.requests_in_flight >= self.limits.connection_requests_in_flight_max
        pause = self.backlogged or (self.inbound and (self.write_paused or full))
        if pause and not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()
        elif not pause and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()

    # --- sending -----------------------------------------------------------------------------

    def write_buffer_size(self) -> int:
        transport = self.transport
        if self.closed or transport is None:
            return 0
        return int(transport.get_write_buffer_size())

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes stay within this connection's send budget (checked
        against the transport's buffer after our last write, an upper bound of what it holds
        now, and only when that says no against what it holds now)."""
        limit = self.send_buffer_bytes_max
        if self.pending_bytes + size + self.write_buffered <= limit:
            return True
        self.write_buffered = self.write_buffer_size()
        return self.pending_bytes + size + self.write_buffered <= limit

    def queue(self, frame: bytes) -> None:
        """Queue ``frame`` for the next flush (the owner checked ``fits`` and the budget)."""
        if not self.pending:
            self.owner.mark_dirty(self)
        self.pending.append(frame)
        self.pending_bytes += len(frame)

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        if not self.closed and self.transport is not None:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            if self.tls is None:
                self._raw_write(data)
            else:
                self._secure_write(data)
        self.pending = []
        self.pending_bytes = 0

    def close(self, reason: str | None = None, abort: bool = False) -> None:
        """Flush what is queued and close (``abort``: drop unsent bytes and close at once);
        ``reason`` is reported as the cause."""
        if self.closed:
            return
        if reason is not None:
            self.close_reason = reason
        if not abort:
            self.flush()
        self.closed = True
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
