"""The transport of one process: a listener, inbound connections, an outbound connection pool.

Targets of ``send`` are either node names (``host:port``), reached through the pool, or the
opaque ``conn:N`` id of an inbound connection, so a reply travels back on the connection its
request came in on. The pool connects lazily, backs off (bounded) after a failed connect, and
buffers a bounded amount while connecting; whatever cannot be sent is dropped and counted, never
raised: a failed send is a lost message. Messages from an outbound connection are reported with
the peer's address as their source.

Writes are batched: frames queued during one loop iteration leave with one write per
connection, in a single ``flush`` scheduled with ``call_soon``.

Bounds (``NetworkLimits``; docs/protocol.md §11): the bytes of partial frames and of
unsent frames are counted across all connections, each against its own budget. Over the
receive budget, the connection holding the largest partial frame is closed; over the send
budget (or a connection's own), a frame is dropped. Inbound connections are kept in order of
last activity, so the housekeeping timer closes idle ones from the front, and at the
connection cap the least recently active one makes room for a newcomer (peers ping all the
time, so it is never one of them) unless it was active a moment ago, in which case the
newcomer is refused. The same timer closes connections whose frame does not complete in time
(slowloris) or whose sends stay stalled, and recounts the send buffers the kernel drained.
Every such event is counted and logged rate-limited.

Security (``Security``): inbound connections pass TLS and the authentication handshake before
any frame is decoded (``pbkv.runtime.connection``); a refused one is counted
(``connections_refused_auth``) and logged under one rate-limited key, so a flood of bad
handshakes writes a bounded number of lines. A connection that proved only the client token may
send client messages (``CLIENT_MESSAGES``): its frames are decoded as client messages only
(``client_codec``), so a peer's message is refused by its tag before anything in it is decoded;
should one still arrive, it is refused, counted (``messages_refused_role``) and the connection
closed, with nothing of its batch applied.
Outbound connections authenticate (and speak TLS) before their first frame leaves.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any, Final

from pbkv.core.message_classes import REPLY, REQUEST
from pbkv.core.messages import (
    AnyMessage,
    Dump,
    ErrorReply,
    GetView,
    NotLeader,
    Reply,
    Request,
    StatusRequest,
    ViewServiceStatus,
)
from pbkv.runtime.auth import NONCE_BYTES
from pbkv.runtime.config import ConfigError, NetworkLimits
from pbkv.runtime.connection import REFUSAL_PREFIX, Connection
from pbkv.runtime.faults import Faults, sender_name
from pbkv.runtime.group import ViewServiceGroup, split_members
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.peers import LOG_INTERVAL_S, OutboundPool, Peer
from pbkv.runtime.security import Security
from pbkv.wire import MESSAGES, Codec, ProtocolError

INBOUND_PREFIX: Final = "conn:"
REFUSAL_LOG_INTERVAL_S: Final = 1.0
REPLY_PRECHECK_CHARS_MIN: Final = 64 * 1024
"""Replies with a value this long are checked against the send budgets before encoding."""
ClientMessage = Request | GetView | StatusRequest | Dump
CLIENT_MESSAGES: Final = frozenset({Request, GetView, StatusRequest, Dump})

Receiver = Callable[[str, list[AnyMessage]], None]
MessageConnection = Connection[AnyMessage]


def _ignore(source: str, messages: list[AnyMessage]) -> None:
    del source, messages


class Network(OutboundPool):
    """Listener, inbound table and outbound pool of one process, for the core protocol."""

    # Declared again here, where mypyc compiles them as native fields: declared only by the
    # interpreted mixin, each read from this class's compiled methods is a generic lookup
    # (read per frame: the codec, the peers, the loop, the limits).
    peers: dict[str, Peer]
    limits: NetworkLimits
    loop: asyncio.AbstractEventLoop
    codec: Codec[AnyMessage]

    def __init__(
        self,
        limits: NetworkLimits,
        logger: EventLogger,
        faults: Faults | None = None,
        view_service: str | None = None,
        codec: Codec[AnyMessage] = MESSAGES,
        security: Security | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.security = security
        self.limits = limits
        self.send_buffers_bytes_max = limits.send_buffers_bytes_max  # read per frame: native
        self.logger = logger
        self.faults = faults or Faults()
        self.view_service = view_service
        self.codec = (
            codec
            if codec.frame_bytes_max == limits.frame_bytes_max
            else (Codec(AnyMessage, limits.frame_bytes_max))
        )
        self.client_codec: Codec[AnyMessage] = Codec(ClientMessage, limits.frame_bytes_max)
        """Decodes a client-token connection's frames: a peer's message is refused by its tag,
        before anything in it is decoded (a forged 16 MiB transfer costs nothing)."""
        self.receive: Receiver = _ignore
        self.on_refused: Callable[[str, str], None] | None = None
        """Told ``(peer, reason)`` when an outbound connection is refused for good (a client
        fails its operations at once instead of retrying into a refusal)."""
        self.inbound: dict[str, MessageConnection] = {}
        self.inbound_connections_max = limits.inbound_connections_max
        self.peers: dict[str, Peer] = {}
        self.server: asyncio.Server | None = None
        self.counters: dict[str, int] = {}
        self.receive_bytes = 0  # partial frames held, all connections
        self.send_bytes = 0  # unsent bytes held, all connections
        self._activity: dict[MessageConnection, None] = {}  # inbound, least recently active first
        self._partial: dict[MessageConnection, None] = {}
        self._sending: dict[MessageConnection, None] = {}
        self._stalled: dict[MessageConnection, None] = {}
        self._finishing: dict[MessageConnection, None] = {}
        """Half-closed by the client, every reply queued: closed once its sends drained (a
        client that never reads them is aborted by the stall timer, its bytes still counted)."""
        self._window_full: dict[MessageConnection, None] = {}
        self._dirty: list[MessageConnection] = []
        self._flush_scheduled = False
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self._housekeeping = self.loop.call_later(limits.housekeeping_interval_s, self.housekeep)
        self.groups: dict[str, ViewServiceGroup] = {}
        self.group_of: dict[str, ViewServiceGroup] = {}
        if view_service is not None:
            self.add_group(view_service)

    def add_group(self, name: str) -> None:
        """Address the view service list ``name`` (``"A,B,C"``) as one target; see
        ``pbkv.runtime.group``. A single address is no group."""
        members = split_members(name)
        if len(members) < 2 or name in self.groups:
            return
        group = self.groups[name] = ViewServiceGroup(members)
        for member in members:
            self.group_of[member] = group

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    # --- listening ---------------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        """Bind (not yet serving); returns the bound port. Call ``start_serving`` next."""
        limits = self.limits

        def accept() -> MessageConnection:
            self._next_id += 1
            source = f"{INBOUND_PREFIX}{self._next_id}"
            security = self.security if self.security is not None and self.security.gated else None
            nonce = secrets.token_bytes(NONCE_BYTES) if security is not None else b""
            connection = Connection(
                self, self.codec, source, True, limits, self.loop.time(), security, nonce
            )
            connection.client_codec = self.client_codec
            return connection

        try:
            self.server = await self.loop.create_server(
                accept, host, port, start_serving=False, backlog=1024
            )
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {error.strerror or error}"
            ) from None
        # Untyped on purpose: typeshed promises a tuple, uvloop returns a list, and compiled
        # code (setup.py) would refuse the list.
        server: Any = self.server
        sockets: Sequence[socket.socket] = server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def start_serving(self) -> None:
        assert self.server is not None
        await self.server.start_serving()

    async def close(self) -> None:
        """Stop listening and close every connection (flushing what is queued)."""
        self.closed = True
        self._housekeeping.cancel()
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
        if len(self.inbound) >= self.inbound_connections_max and not self._make_room():
            self.count("connections_refused")
            self._log_limit("connection_refused", connection, "connection cap reached")
            connection.close(abort=True)
            return
        self.inbound[connection.source] = connection
        self._activity[connection] = None

    def _make_room(self) -> bool:
        """Close the least recently active inbound connection if it was quiet long enough."""
        oldest = next(iter(self._activity), None)
        if oldest is None:
            return False
        quiet_s = self.loop.time() - oldest.last_active
        if quiet_s < self.limits.evict_quiet_min_s:
            return False
        self.count("connections_evicted")
        self._close(oldest, f"connection cap: least recently active ({quiet_s:.1f} s quiet)")
        return True

    def refusal_frame(self, reason: str) -> bytes:
        return self.codec.frame(ErrorReply(f"{REFUSAL_PREFIX}{reason}"[:200]))

    def on_frames(self, connection: MessageConnection, messages: list[AnyMessage]) -> None:
        if (
            connection.inbound
            and connection.role == "client"
            and not self._client_may_send(connection, messages)
        ):
            return
        if connection.inbound:
            requests = sum(1 for message in messages if type(message) is REQUEST)
            if requests:
                connection.requests_in_flight += requests
                window = self.limits.connection_requests_in_flight_max
                if connection.requests_in_flight >= window and connection.window_full_since is None:
                    self._window_full[connection] = None
                    connection.window_full_since = self.loop.time()
                    connection.update_reading()
        if self.faults.active:
            messages = self._filter_incoming(connection, messages)
        group = self.group_of.get(connection.source) if self.group_of else None
        if group is not None and not connection.inbound:
            self._from_group(group, connection.source, messages)
            return
        self.receive(connection.source, messages)

    def _from_group(self, group: ViewServiceGroup, member: str, messages: list[AnyMessage]) -> None:
        """Messages from a member of a view service list: ``NotLeader`` re-targets the list,
        everything else is reported as coming from the list's name."""
        now = self.loop.time()
        group.heard(member, now)
        kept = [message for message in messages if type(message) is not NotLeader]
        for message in messages:
            if type(message) is NotLeader:
                self.count("view_service_redirects")
                group.on_not_leader(member, message.leader, now)
        if kept:
            self.receive(group.name, kept)

    def _client_may_send(self, connection: MessageConnection, messages: list[AnyMessage]) -> bool:
        """A client-token connection sends client messages only; else nothing of the batch is
        applied and the connection is closed."""
        for message in messages:
            if type(message) not in CLIENT_MESSAGES:
                reason = f"{type(message).__name__} on a client-token connection"
                self._close(connection, reason)
                self._refuse_role(connection, reason)
                return False
        return True

    def _refuse_role(self, connection: MessageConnection, reason: str) -> None:
        self.count("messages_refused_role")
        self.logger.limited(
            "role_refused",
            REFUSAL_LOG_INTERVAL_S,
            "message_refused",
            remote=connection.remote,
            reason=reason,
        )

    def on_partial(self, connection: MessageConnection) -> None:
        """After every read: activity, and the partial frame held against the budget."""
        now = connection.last_active = self.loop.time()
        if connection.inbound:
            activity = self._activity
            if activity.pop(connection, 0) is None:  # still tracked: move it to the end
                activity[connection] = None
        held = connection.reader.buffered
        self.receive_bytes += held - connection.receive_held
        connection.receive_held = held
        if held:
            self._partial[connection] = None
            if connection.partial_since is None:
                connection.partial_since = now
        else:
            self._partial.pop(connection, None)
        if self.receive_bytes > self.limits.receive_buffers_bytes_max:
            self._evict_largest_partial()

    def _evict_largest_partial(self) -> None:
        largest = max(self._partial, key=lambda connection: connection.receive_held)
        self.count("connections_closed_receive_budget")
        budget = self.limits.receive_buffers_bytes_max
        self._close(
            largest,
            f"receive budget of {budget} bytes full: "
            f"closed the largest partial frame ({largest.receive_held} bytes)",
        )

    def on_write_paused(self, connection: MessageConnection, paused: bool) -> None:
        if paused:
            connection.stalled_since = self.loop.time()
            self._stalled[connection] = None
            self.count("connections_backpressured")
        else:
            connection.stalled_since = None
            self._stalled.pop(connection, None)
            self._recount_send(connection)

    def on_connection_lost(self, connection: MessageConnection, reason: str | None) -> None:
        self._release(connection)
        if not connection.inbound:
            peer = self.peers.get(connection.source)
            if peer is not None and peer.connection is connection:
                peer.connection = None
        if connection.refused_for_good and not connection.inbound and self.on_refused:
            self.on_refused(connection.source, reason or "refused")
        if connection.refused:
            self.count("connections_refused_auth")
            self.logger.limited(
                "auth_refused",
                REFUSAL_LOG_INTERVAL_S,
                "connection_refused",
                remote=connection.remote,
                peer=connection.peer_name or connection.source,
                reason=reason,
            )
        elif connection.refused_as_client:
            self._refuse_role(connection, reason or "")
        elif reason is not None:
            if not connection.closed_at_limit:  # a limit's close is counted under its name
                self.count("connections_closed_on_error")
            self._log_limit("connection_closed", connection, reason)

    def _release(self, connection: MessageConnection) -> None:
        """Forget ``connection`` in every table and budget (idempotent)."""
        if connection.inbound and self.inbound.get(connection.source) is connection:
            del self.inbound[connection.source]
        for table in (self._activity, self._partial, self._sending, self._stalled):
            table.pop(connection, None)
        self._finishing.pop(connection, None)
        self._window_full.pop(connection, None)
        self.receive_bytes -= connection.receive_held
        self.send_bytes -= connection.send_held
        connection.receive_held = connection.send_held = 0
        connection.reader.clear()

    def _close(self, connection: MessageConnection, reason: str) -> None:
        """Close at once for a limit the caller counted, dropping unsent bytes, and release
        its budgets now."""
        connection.closed_at_limit = True
        connection.close(reason, abort=True)
        self._release(connection)

    def _log_limit(self, event: str, connection: MessageConnection, reason: str) -> None:
        self.logger.limited(
            f"{event}:{connection.remote.rpartition(':')[0]}",
            1.0,
            event,
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
            self._recount_send(connection)

    def _recount_send(self, connection: MessageConnection) -> None:
        held = connection.pending_bytes + connection.write_buffer_size()
        self.send_bytes += held - connection.send_held
        connection.send_held = held
        if held:
            self._sending[connection] = None
        else:
            self._sending.pop(connection, None)

    # --- housekeeping ------------------------------------------------------------------------

    def housekeep(self) -> None:
        """Every ``housekeeping_interval_s``: recount drained send buffers, close idle, slow
        and stalled connections, reopen windows that stalled, report suppressed log lines."""
        limits = self.limits
        self._housekeeping = self.loop.call_later(limits.housekeeping_interval_s, self.housekeep)
        now = self.loop.time()
        for connection in list(self._sending):
            self._recount_send(connection)
        idle: list[MessageConnection] = []
        for connection in self._activity:
            if now - connection.last_active < limits.idle_timeout_s:
                break
            idle.append(connection)
        for connection in idle:
            self.count("connections_closed_idle")
            self._close(connection, f"idle for {limits.idle_timeout_s:g} s")
        self._expire_partial(now)
        self._expire_stalled(now)
        self._finish_half_closed()
        for connection in list(self._window_full):
            self._reopen_window(connection, now)
        self.logger.report_suppressed()

    def _expire_partial(self, now: float) -> None:
        """Close connections whose frame is still incomplete after ``frame_timeout_s``."""
        limit_s = self.limits.frame_timeout_s
        slow = [c for c in self._partial if now - (c.partial_since or now) > limit_s]
        for connection in slow:
            self.count("connections_closed_frame_timeout")
            self._close(connection, f"frame incomplete after {limit_s:g} s")

    def _expire_stalled(self, now: float) -> None:
        """Close connections that could not send for ``send_stall_timeout_s``."""
        limit_s = self.limits.send_stall_timeout_s
        stalled = [c for c in self._stalled if now - (c.stalled_since or now) > limit_s]
        for connection in stalled:
            self.count("connections_closed_send_timeout")
            self._close(connection, f"sends stalled for {limit_s:g} s")

    def _finish_half_closed(self) -> None:
        """Close half-closed connections whose replies all left; until then they count against
        the cap and the send budget like any other."""
        for connection in list(self._finishing):
            if not connection.pending and connection.write_buffer_size() == 0:
                self._release(connection)
                connection.close()

    def _reopen_window(self, connection: MessageConnection, now: float) -> None:
        """A window below half, or full for ``in_flight_stall_s`` (a request the core answers
        only once, such as a retransmitted duplicate, never gets its own reply): read again."""
        limits = self.limits
        since = connection.window_full_since or now
        if connection.requests_in_flight > limits.connection_requests_in_flight_max // 2:
            if now - since < limits.in_flight_stall_s:
                return
            connection.requests_in_flight = 0
        connection.window_full_since = None
        del self._window_full[connection]
        connection.update_reading()

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
        """Best effort: queue ``message`` for ``target`` (a node name, a view service list's
        name, or an inbound id)."""
        if self.groups and target in self.groups:
            target = self.groups[target].target(self.loop.time())
        delay = 0.0
        if self.faults.active:
            connection = self.inbound.get(target)
            peer = connection.peer_name if connection is not None else target
            held = self.faults.outgoing_delay(peer)
            if held is None:
                return
            delay = held
        if (
            type(message) is REPLY
            and len(message.value or "") >= REPLY_PRECHECK_CHARS_MIN
            and not self._reply_may_fit(target, message)
        ):
            return
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
            return
        self.queue(connection, frame)
        if type(message) is REPLY and connection.inbound:
            self._answered(connection)

    def queue(self, connection: MessageConnection, frame: bytes) -> bool:
        """Queue ``frame`` on ``connection`` within its budget and the global one; a frame that
        does not fit is dropped (counted, logged rate-limited)."""
        size = len(frame)
        if not self.admits(connection, size):
            return False
        connection.queue(frame)
        connection.send_held += size
        self.send_bytes += size
        self._sending[connection] = None
        return True

    def admits(self, connection: MessageConnection, size: int) -> bool:
        """Whether ``size`` more bytes fit ``connection``'s send budget and the global one; if
        not, the drop is counted and logged (rate-limited)."""
        if connection.closed:
            self.count("sends_dropped_connection_gone")
            return False
        if not connection.fits(size):
            self.count("sends_dropped_buffer_full")
            self._log_limit("send_dropped", connection, "connection send buffer full")
            return False
        if self.send_bytes + size > self.send_buffers_bytes_max:
            self.count("sends_dropped_send_budget")
            self._log_limit("send_dropped", connection, "send budget of all connections full")
            return False
        return True

    def _reply_may_fit(self, target: str, reply: Reply) -> bool:
        """A large value is at least as many bytes as characters: a reply that cannot fit its
        connection's budget is dropped before it is encoded (review: a burst of 1 MB answers
        to clients that do not read encoded gigabytes only to drop them, stalling the loop)."""
        connection = self.inbound.get(target)
        if connection is None or self.admits(connection, len(reply.value or "")):
            return True
        self._answered(connection)
        return False

    def _answered(self, connection: MessageConnection) -> None:
        if connection.requests_in_flight > 0:
            connection.requests_in_flight -= 1
            if connection.read_closed and connection.requests_in_flight == 0:
                self._finishing[connection] = None  # every reply it was owed is queued
        if connection.window_full_since is not None:
            self._reopen_window(connection, self.loop.time())

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
            if isinstance(message, ViewServiceStatus):
                detail = f"status too large: {len(message.servers)} servers"
            else:
                detail = f"reply {type(message).__name__} exceeds frame limit"
            self.send(target, ErrorReply(detail))

    def deliver(self, target: str, frame: bytes) -> None:
        if self.closed:
            return
        connection = self.inbound.get(target)
        if connection is not None:
            self.queue(connection, frame)
            return
        if target.startswith(INBOUND_PREFIX):
            self.count("replies_dropped_connection_gone")
            return
        self._send_to_peer(target, frame)
