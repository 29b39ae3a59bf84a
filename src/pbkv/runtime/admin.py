"""The admin port: fault injection and status for tests, demos and the cluster manager.

Every process (view service and server) started with ``--admin-port PORT`` listens on
127.0.0.1 (another interface only with ``--admin-listen HOST:PORT``: whoever reaches it can
break the node) and speaks the usual framing with its own small message union. With a secret,
a connection must first prove the *peer* secret (the client token is refused here), and with TLS
it must speak TLS, exactly as on the node's own port (``pbkv.runtime.connection``):

* ``Partition(peers, direction)`` drops messages to (``out``), from (``in``) or both ways with
  those node names, at the runtime's send/receive boundary (see ``pbkv.runtime.faults``);
  partitions accumulate until ``Heal``.
* ``Heal()`` removes every partition and unreliability, and makes a slowed disk normal.
* ``SlowDisk(delay_ms)`` adds ``delay_ms`` to every fsync of a server's data directory (refused
  by a process without one); ``0`` makes it normal again.
* ``Unreliable(drop, delay_ms, seed)`` drops each outgoing message with probability ``drop`` and
  delays the others by up to ``delay_ms``, from a ``random.Random`` seeded with ``seed``.
* ``AdminStatus()`` answers ``AdminStatusReply``: pid, kind, name, role, phase, view, keys held,
  counters and the faults in force.

Each request gets ``AdminOk``, ``AdminStatusReply`` or ``AdminError``. From Python::

    from pbkv.runtime.admin import Partition, send_admin
    send_admin("127.0.0.1:9101", Partition(("127.0.0.1:7000",), "both"))
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Final

import msgspec

from pbkv.core.messages import View
from pbkv.errors import PbkvError
from pbkv.runtime.auth import NONCE_BYTES
from pbkv.runtime.config import ADMIN_HOST, ConfigError, NetworkLimits
from pbkv.runtime.connection import Connection
from pbkv.runtime.faults import Direction, Faults
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.rpc import CALL_TIMEOUT_S_DEFAULT, async_call, call
from pbkv.runtime.security import Security
from pbkv.wire import Codec

ADMIN_CONNECTIONS_MAX: Final = 64
ADMIN_SEND_BUFFER_BYTES_MAX: Final = 1024 * 1024
ADMIN_LIMITS: Final = NetworkLimits(send_buffer_bytes_max=ADMIN_SEND_BUFFER_BYTES_MAX)
ADMIN_FRAME_BYTES_MAX: Final = 1024 * 1024


class AdminMessage(msgspec.Struct, frozen=True, array_like=True, tag_field="t"):
    """Base of the admin messages (tags never collide with the protocol's)."""


class Partition(AdminMessage, frozen=True, tag="a.partition"):
    peers: tuple[str, ...]
    direction: Direction = "both"


class Heal(AdminMessage, frozen=True, tag="a.heal"):
    pass


class Unreliable(AdminMessage, frozen=True, tag="a.unreliable"):
    drop: float = 0.0
    delay_ms: float = 0.0
    seed: int | None = None


class SlowDisk(AdminMessage, frozen=True, tag="a.slow_disk"):
    delay_ms: float


class AdminStatus(AdminMessage, frozen=True, tag="a.status"):
    pass


class FaultState(msgspec.Struct, frozen=True):
    blocked_in: tuple[str, ...]
    blocked_out: tuple[str, ...]
    drop: float
    delay_ms: float
    disk_delay_ms: float = 0.0


class AdminStatusReply(AdminMessage, frozen=True, tag="a.status_reply"):
    pid: int
    kind: str
    name: str
    role: str
    phase: str
    view: View
    keys: int
    counters: dict[str, int]
    faults: FaultState


class AdminOk(AdminMessage, frozen=True, tag="a.ok"):
    detail: str = ""


class AdminError(AdminMessage, frozen=True, tag="a.error"):
    reason: str


AdminRequest = Partition | Heal | Unreliable | SlowDisk | AdminStatus
AdminReply = AdminOk | AdminStatusReply | AdminError
AnyAdminMessage = AdminRequest | AdminReply
ADMIN: Final[Codec[AnyAdminMessage]] = Codec(AnyAdminMessage, ADMIN_FRAME_BYTES_MAX)


class AdminRequestFailed(PbkvError):
    """The process refused an admin request (``AdminError``)."""


def _checked(reply: AnyAdminMessage) -> AdminOk | AdminStatusReply:
    if isinstance(reply, AdminError):
        raise AdminRequestFailed(reply.reason)
    if not isinstance(reply, AdminOk | AdminStatusReply):
        raise AdminRequestFailed(f"unexpected admin reply {type(reply).__name__}")
    return reply


def send_admin(
    address: str,
    message: AdminRequest,
    timeout_s: float = CALL_TIMEOUT_S_DEFAULT,
    security: Security | None = None,
) -> AdminOk | AdminStatusReply:
    """Send one admin request to the admin port at ``address`` (``host:port``) and wait.

    Returns ``AdminOk`` or, for ``AdminStatus``, ``AdminStatusReply``. Raises
    ``AdminRequestFailed`` when the process refused the request, ``OSError`` (including
    ``TimeoutError``) when it cannot be reached or does not answer within ``timeout_s``.
    """
    return _checked(call(address, message, ADMIN, timeout_s, security))


async def send_admin_async(
    address: str,
    message: AdminRequest,
    timeout_s: float = CALL_TIMEOUT_S_DEFAULT,
    security: Security | None = None,
) -> AdminOk | AdminStatusReply:
    """``send_admin`` for coroutines."""
    return _checked(await async_call(address, message, ADMIN, timeout_s, security))


AdminConnection = Connection[AnyAdminMessage]


class AdminServer:
    """Serves admin requests for one process; ``status`` builds its ``AdminStatusReply``."""

    def __init__(
        self,
        faults: Faults,
        status: Callable[[], AdminStatusReply],
        logger: EventLogger,
        security: Security | None = None,
        has_disk: bool = False,
    ) -> None:
        self.security = security if security is not None and security.gated else None
        self.faults = faults
        self.has_disk = has_disk
        self.status = status
        self.logger = logger
        self.server: asyncio.Server | None = None
        self.connections: dict[AdminConnection, None] = {}  # in order of arrival

    async def listen(self, port: int, host: str = ADMIN_HOST) -> int:
        """Listen on ``host``:``port`` (0: any free port); returns the bound port."""
        loop = asyncio.get_running_loop()
        security = self.security

        def accept() -> AdminConnection:
            nonce = secrets.token_bytes(NONCE_BYTES) if security is not None else b""
            return Connection(self, ADMIN, "admin", True, ADMIN_LIMITS, 0.0, security, nonce)

        try:
            self.server = await loop.create_server(accept, host, port)
        except OSError as error:
            raise ConfigError(f"cannot listen on admin port {port}: {error.strerror}") from None
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.close()

    # --- ConnectionOwner ---------------------------------------------------------------------

    def on_connection_made(self, connection: AdminConnection) -> None:
        """At the cap the oldest connection is closed to make room, not the newcomer: a local
        process holding 64 connections open (or re-opening them as their handshakes time out)
        must not lock the operator out (review)."""
        if len(self.connections) >= ADMIN_CONNECTIONS_MAX:
            oldest = next(iter(self.connections))
            del self.connections[oldest]
            oldest.close("admin connection cap: the oldest makes room", abort=True)
        self.connections[connection] = None

    def on_frames(self, connection: AdminConnection, messages: list[AnyAdminMessage]) -> None:
        for message in messages:
            frame = ADMIN.frame(self.handle(message))
            if connection.fits(len(frame)):
                connection.queue(frame)

    def on_partial(self, connection: AdminConnection) -> None:
        del connection  # a handful of local connections: the per-connection bound suffices

    def on_write_paused(self, connection: AdminConnection, paused: bool) -> None:
        del connection, paused

    def on_connection_lost(self, connection: AdminConnection, reason: str | None) -> None:
        self.connections.pop(connection, None)
        if connection.refused:
            self.logger.limited(
                "admin_refused", 1.0, "admin_connection_refused", remote=connection.remote,
                reason=reason,
            )  # fmt: skip
        elif reason is not None:  # rate-limited: evictions at the cap come as fast as connects
            self.logger.limited("admin_closed", 1.0, "admin_connection_closed", reason=reason)

    def refusal_frame(self, reason: str) -> bytes:
        return ADMIN.frame(AdminError(f"refused: {reason}"[:200]))

    def mark_dirty(self, connection: AdminConnection) -> None:
        asyncio.get_running_loop().call_soon(connection.flush)

    # --- requests ----------------------------------------------------------------------------

    def handle(self, message: AnyAdminMessage) -> AdminReply:
        faults = self.faults
        match message:
            case Partition(peers=peers, direction=direction):
                faults.partition(peers, direction)
                self.logger.event("fault_partition", peers=",".join(peers), direction=direction)
            case Heal():
                faults.heal()
                self.logger.event("fault_heal")
            case Unreliable(drop=drop, delay_ms=delay_ms, seed=seed):
                try:
                    faults.unreliable(drop, delay_ms, seed)
                except ValueError as error:
                    return AdminError(str(error))
                self.logger.event("fault_unreliable", drop=drop, delay_ms=delay_ms, seed=seed)
            case SlowDisk(delay_ms=delay_ms):
                if not self.has_disk:
                    return AdminError("no data directory: this process keeps nothing on disk")
                try:
                    faults.slow_disk(delay_ms)
                except ValueError as error:
                    return AdminError(str(error))
                self.logger.event("fault_slow_disk", delay_ms=delay_ms)
            case AdminStatus():
                return self.status()
            case _:
                return AdminError(f"not an admin request: {type(message).__name__}")
        return AdminOk()


def fault_state(faults: Faults) -> FaultState:
    """The faults in force, for ``AdminStatusReply``."""
    return FaultState(
        blocked_in=tuple(sorted(faults.blocked_in)),
        blocked_out=tuple(sorted(faults.blocked_out)),
        drop=faults.drop_probability,
        delay_ms=faults.delay_s_max * 1000.0,
        disk_delay_ms=faults.disk_delay_s * 1000.0,
    )
