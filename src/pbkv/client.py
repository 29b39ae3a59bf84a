"""The public Python API: ``pbkv.AsyncClient`` and its synchronous wrapper ``pbkv.Client``.

Both drive one ``core.ClientSession`` (which numbers operations, finds the primary and retries
until done or timed out) with the same host pattern as the servers: messages and ticks go in,
effects come out — ``Send`` through a connection pool, ``Deliver`` resolving the caller's future.
Many operations may be in flight at once; every client on one event loop shares one connection
per server, and requests leave in one write per loop iteration.

Security: ``token`` is the secret the client proves (the cluster's client token; default
``$PBKV_AUTH_TOKEN``); ``tls`` is ``pbkv.TlsOptions(ca=..., cert=..., key=...)`` or a ready
``ssl.SSLContext`` (docs/guide.md, "Running across hosts"). Clients with the same token and TLS
on one loop share the hub; others get their own. With ``TlsOptions`` the files are read again
before a new connection when they changed, so a renewed client certificate or CA file is used
without a new client (``pbkv.runtime.security.ClientTlsFiles``).

Example::

    import pbkv
    with pbkv.Client("127.0.0.1:7000", timeout=30.0) as kv:
        kv.put("k", "v")
        kv.append("k", "w")
        assert kv.get("k") == "vw"
"""

from __future__ import annotations

import asyncio
import random
import ssl
import threading
import weakref
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, ClassVar, Final, TypeVar

from pbkv.core.client_session import QUEUE_FULL_DETAIL, ClientSession
from pbkv.core.effects import Deliver, Outbox, Send
from pbkv.core.message_classes import ERROR_REPLY, GET, PUT, REPLY
from pbkv.core.messages import (
    WRONG_NODE_PREFIX,
    AnyMessage,
    Append,
    Delete,
    ErrorReply,
    GetView,
    Operation,
    View,
    ViewReply,
)
from pbkv.core.sizes import text_bytes, written_value
from pbkv.errors import AuthenticationFailed, PbkvError, RequestRejected, Unavailable, WrongNode
from pbkv.runtime.auth import HANDSHAKE_TIMEOUT_TEXT, resolve_token
from pbkv.runtime.config import (
    CLIENT_TIMEOUT_S_DEFAULT,
    ConfigError,
    NetworkLimits,
    Timing,
)
from pbkv.runtime.connection import REFUSAL_PREFIX
from pbkv.runtime.group import call_view_service, split_members
from pbkv.runtime.host import Network
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.loop import Ticker, new_event_loop
from pbkv.runtime.security import Security, client_security, resolve_tls
from pbkv.runtime.tls import TlsOptions
from pbkv.wire import FRAME_BYTES_MAX_DEFAULT, MESSAGES

__all__ = ["AsyncClient", "Client", "TlsOptions"]

T = TypeVar("T")
Tls = TlsOptions | ssl.SSLContext | None
HubKey = tuple[bytes | None, object]
REQUEST_OVERHEAD_BYTES: Final = 256
VIEW_ATTEMPT_TIMEOUT_S: Final = 1.0
VIEW_RETRY_PAUSE_S: Final = 0.05
SYNC_RESULT_MARGIN_S: Final = 10.0
WRITE_UNAVAILABLE_NOTE: Final = "it may or may not have taken effect"
"""Said of a put, append or delete no primary completed in time (N4)."""
READ_UNAVAILABLE_NOTE: Final = (
    "a read changes nothing: it simply did not complete; try it again, or check with pbkv "
    "status that the view's primary is alive"
)
"""Said of a get no primary completed in time: no effect to doubt, only no answer."""
NEVER_SENT_NOTE: Final = (
    "it was never sent, so it took no effect: too many operations wait in this client; "
    "retry once some complete"
)
"""Said of any operation the session refused before sending it (``QUEUE_FULL_DETAIL``)."""


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return value


def _check_address(address: str) -> str:
    """``HOST:PORT``, or a list ``A,B,C`` of view service members."""
    try:
        split_members(address)
    except ConfigError as error:
        raise ValueError(str(error)) from None
    return address


class _Hub:
    """The connections and the ticker shared by every ``AsyncClient`` on one event loop.

    Many clients in one process (a load generator, a test harness) then share one connection
    per server, so their requests leave and their replies arrive in batches: one write and one
    read per loop iteration instead of one per client. Each ``Reply`` goes to the session its
    ``client_id`` names; a ``ViewReply`` goes to every session (each ignores a view it has
    already passed). Only demultiplexing: every decision stays in the sessions.
    """

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[HubKey, _Hub]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, timing: Timing, security: Security, key: HubKey
    ) -> None:
        self.loop = loop
        self.key = key
        logger = EventLogger("client", "client", int, enabled=False)
        self.network = Network(NetworkLimits(), logger, security=security)
        self.network.receive = self.receive
        self.network.on_refused = self.refused
        self.sessions: dict[str, _SessionHost] = {}
        self.heard = False
        """Some node answered over an accepted connection: operations may have reached one."""
        self.ticker = Ticker(loop, timing.tick_interval_s, self.tick, timing.tick_catch_up_max)
        self.ticker.start()

    @classmethod
    def of_running_loop(cls, timing: Timing, security: Security, key: HubKey) -> _Hub:
        loop = asyncio.get_running_loop()
        hubs = cls._by_loop.setdefault(loop, {})
        hub = hubs.get(key)
        if hub is None:
            hub = hubs[key] = cls(loop, timing, security, key)
        return hub

    def attach(self, host: _SessionHost) -> None:
        self.sessions[host.session.client_id] = host

    async def detach(self, host: _SessionHost) -> None:
        self.sessions.pop(host.session.client_id, None)
        if not self.sessions:
            self.ticker.stop()
            hubs = self._by_loop.get(self.loop, {})
            if hubs.get(self.key) is self:
                del hubs[self.key]
            await self.network.close()

    def receive(self, source: str, messages: list[AnyMessage]) -> None:
        sessions, earlier = self.sessions, self.heard
        self.heard = True
        for message in messages:
            if type(message) is REPLY:
                host = sessions.get(message.client_id)
                if host is not None:
                    host.feed(source, message)
            elif type(message) is ERROR_REPLY and (
                (error := refusal_error(source, message.reason, earlier)) is not None
            ):
                self.end_all(source, error)  # e.g. no secret, a cluster that has one
            else:
                for host in list(sessions.values()):
                    host.feed(source, message)

    def refused(self, peer: str, reason: str) -> None:
        """``peer`` refused our connection for good (secret, TLS)."""
        self.end_all(peer, authentication_failed(peer, reason, self.heard))

    def end_all(self, peer: str, error: PbkvError) -> None:
        """No retry can pass ``peer``'s answer: end the operations of every session whose
        view service it is. A server named by a view only means the view is stale (another
        process may hold that address now): its sessions retry and ask for a new view."""
        for host in list(self.sessions.values()):
            if host.ends_on(peer, error):
                host.end_all(error)

    def tick(self, count: int) -> None:
        for host in list(self.sessions.values()):
            if host.session.in_flight:  # an idle session's clock may rest: no timer runs
                host.tick(count)


class _SessionHost:
    """Runs one ``ClientSession`` on the loop it was created on, over the loop's hub."""

    def __init__(
        self, view_service: str, timeout_s: float, timing: Timing, client: AsyncClient
    ) -> None:
        self.hub = _Hub.of_running_loop(timing, client.security, client.hub_key)
        self.loop = self.hub.loop
        self.session = ClientSession(view_service, random.Random(), timing.client_config(timeout_s))
        self.hub.network.add_group(view_service)
        self.view_service_members = frozenset(split_members(view_service))
        self.outbox = Outbox()
        self.futures: dict[int, asyncio.Future[Deliver]] = {}
        self.broken: Exception | None = None
        self.hub.attach(self)

    def submit(self, op: Operation) -> asyncio.Future[Deliver]:
        if self.broken is not None:
            raise RuntimeError("the client session failed") from self.broken
        future: asyncio.Future[Deliver] = self.loop.create_future()
        seq = self.session.submit(op, self.outbox)
        self.futures[seq] = future
        self.flush()
        return future

    def feed(self, source: str, message: AnyMessage) -> None:
        """Hand ``message`` to the session and execute what it asks for (requests it sends
        still leave in the connection's one write per loop iteration)."""
        if self.broken is None:
            try:
                self.session.on_message(source, message, self.outbox)
            except Exception as error:
                self.fail(error)
                return
            self.flush()

    def tick(self, count: int) -> None:
        try:
            for _ in range(count):
                self.session.on_tick(self.outbox)
        except Exception as error:
            self.fail(error)
            return
        self.flush()

    def flush(self) -> None:
        """Execute the session's effects in order."""
        outbox = self.outbox
        if not outbox.effects:
            return
        network, futures = self.hub.network, self.futures
        for effect in outbox.take():  # plain type checks: this runs twice per operation
            if type(effect) is Send:
                network.send(effect.target, effect.message)  # native: no bound method
            elif type(effect) is Deliver:
                seq = effect.seq
                future = futures.get(seq)
                if future is not None:
                    del futures[seq]
                    # Done only when its caller cancelled it: one call, not two, per operation
                    # (and no context manager object, as contextlib.suppress would build).
                    try:  # noqa: SIM105
                        future.set_result(effect)
                    except asyncio.InvalidStateError:
                        pass

    def ends_on(self, peer: str, error: PbkvError) -> bool:
        """Whether ``peer``'s refusal ends this session's operations: only its view service's
        (one member's "wrong node" of a replicated service leaves the others to try)."""
        members = self.view_service_members
        return peer in members and not (isinstance(error, WrongNode) and len(members) > 1)

    def end_all(self, error: PbkvError) -> None:
        """Every operation in flight ends now with ``error`` (a refusal no retry can pass)
        instead of waiting out its timeout; the session stays usable (the cause may be fixed
        meanwhile)."""
        self.session.abandon_all(self.outbox, str(error))
        for effect in self.outbox.take():
            if type(effect) is Deliver:
                future = self.futures.pop(effect.seq, None)
                if future is not None and not future.done():
                    future.set_exception(error)

    def fail(self, error: Exception) -> None:
        """A bug in the session: every waiting caller gets the exception, not a hang."""
        self.broken = error
        self.outbox.take()
        self.hub.sessions.pop(self.session.client_id, None)
        self._fail_futures(error)

    def _fail_futures(self, error: Exception) -> None:
        for future in self.futures.values():
            if not future.done():
                future.set_exception(error)
        self.futures.clear()

    async def close(self) -> None:
        self._fail_futures(Unavailable("the client was closed"))
        await self.hub.detach(self)


def refusal_error(source: str, reason: str, earlier: bool = False) -> PbkvError | None:
    """What an ``ErrorReply`` from ``source`` means when no retry can pass it: the wrong kind
    of node (``WrongNode``) or a refusal of our secret or TLS (``AuthenticationFailed``, all
    refusals but a slow handshake's); None for anything else. ``earlier``: a node answered
    this client before, over a connection it accepted. Shared by the client and the
    command-line tools."""
    if reason.startswith(WRONG_NODE_PREFIX):
        return WrongNode(reason)
    if reason.startswith(REFUSAL_PREFIX) and HANDSHAKE_TIMEOUT_TEXT not in reason:
        return authentication_failed(source, reason, earlier)
    return None


def authentication_failed(source: str, reason: str, earlier: bool) -> AuthenticationFailed:
    """The refusal, and, when the cluster had answered this client before (``earlier``: the
    secret or certificate changed under it), that a write sent then may have taken effect; on
    a first contact nothing reached any node."""
    said = f"authentication failed: {source}: {reason.removeprefix(REFUSAL_PREFIX)}"
    if earlier:
        said += " (a write sent before, over a connection accepted then, may have taken effect)"
    return AuthenticationFailed(said)


def _outcome(result: Deliver, read: bool = False) -> str | None:
    """The value of a completed operation, or its error; ``read``: a get, which an ``Unavailable``
    says did not complete (a put, append or delete may or may not have taken effect)."""
    if result.status == "ok":
        return result.value
    if result.status in ("too_large", "invalid"):
        raise RequestRejected(
            f"{result.status}: {result.detail}" if result.detail else result.status
        )
    detail = result.detail or "no primary completed the operation in time"
    if detail == QUEUE_FULL_DETAIL:
        note = NEVER_SENT_NOTE
    else:
        note = READ_UNAVAILABLE_NOTE if read else WRITE_UNAVAILABLE_NOTE
    raise Unavailable(f"{detail} ({note})")


class AsyncClient:
    """Asyncio client of a pbkv cluster, for use from coroutines.

    Args:
        viewserver: address ``host:port`` of the view service, or ``"A,B,C"``: the members of
            a view service replicated on etcd (the client finds the leader).
        timeout: seconds each operation may take before it fails with ``pbkv.Unavailable``.
        token: the cluster's client secret (str or bytes, at least 16 bytes); default
            ``$PBKV_AUTH_TOKEN``; none: connect without authenticating.
        tls: ``pbkv.TlsOptions`` (``ca``, and ``cert``/``key`` for mutual TLS; read again
            at a new connection when the files changed) or an ``ssl.SSLContext``; none:
            plaintext.

    Operations may run concurrently (``asyncio.gather``); each takes effect exactly once.
    Use it as ``async with pbkv.AsyncClient(...) as kv:`` or call ``close()``. The client
    binds to the event loop of its first operation.

    Raises:
        ValueError: ``viewserver`` is not a ``host:port`` address or a list of them.
    """

    def __init__(
        self,
        viewserver: str,
        timeout: float = CLIENT_TIMEOUT_S_DEFAULT,
        token: str | bytes | None = None,
        tls: Tls = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        try:
            resolved_tls = resolve_tls(tls)
            self.security = client_security(resolve_token(token), resolved_tls)
        except PbkvError as error:
            raise ValueError(str(error)) from None
        self.hub_key: HubKey = (self.security.token, resolved_tls)
        self.viewserver = _check_address(viewserver)
        self.members = split_members(viewserver)
        self.timeout = timeout
        self.timing = Timing()
        self.frame_bytes_max = FRAME_BYTES_MAX_DEFAULT
        self._host: _SessionHost | None = None
        self._closed = False

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections; operations still waiting fail with ``Unavailable``."""
        self._closed = True
        if self._host is not None:
            host, self._host = self._host, None
            await host.close()

    def _session_host(self) -> _SessionHost:
        if self._closed:
            raise RuntimeError("the client is closed")
        host = self._host
        if host is None:
            host = self._host = _SessionHost(self.viewserver, self.timeout, self.timing, self)
        elif host.loop is not asyncio.get_running_loop():
            raise RuntimeError("an AsyncClient is bound to the event loop of its first operation")
        return host

    def _submit(self, op: Operation) -> asyncio.Future[Deliver]:
        """Start ``op``; the caller awaits the future (one coroutine frame less per call)."""
        # Any: the caller's arguments, checked here.
        key: Any = op.key
        value: Any = written_value(op)
        if not (isinstance(key, str) and isinstance(value, str)):  # one check on the hot path
            _check_text("key", key)
            _check_text("value", value)
        if text_bytes(key) + text_bytes(value) + REQUEST_OVERHEAD_BYTES > self.frame_bytes_max:
            raise RequestRejected(
                f"too_large: request exceeds the {self.frame_bytes_max}-byte frame"
            )
        return self._session_host().submit(op)

    async def get(self, key: str) -> str | None:
        """Read ``key``.

        Returns:
            The value, or None when the key does not exist.
        Raises:
            pbkv.Unavailable: no primary answered within ``timeout`` seconds (a read changes
                nothing: try it again).
            pbkv.RequestRejected: the key is over the size limit.
        """
        return _outcome(await self._submit(GET(key)), read=True)

    async def put(self, key: str, value: str) -> None:
        """Set ``key`` to ``value``.

        Raises:
            pbkv.Unavailable: no primary completed it within ``timeout`` seconds; it may or may
                not have taken effect.
            pbkv.RequestRejected: the key or value is over the size limit (no effect).
        """
        _outcome(await self._submit(PUT(key, value)))

    async def append(self, key: str, value: str) -> None:
        """Append ``value`` to the value of ``key`` (a missing key counts as ``""``).

        Raises:
            pbkv.Unavailable: as for ``put``.
            pbkv.RequestRejected: the key or the resulting value is over the size limit.
        """
        _outcome(await self._submit(Append(key, value)))

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it does not exist).

        Raises:
            pbkv.Unavailable: as for ``put``.
            pbkv.RequestRejected: the key is over the size limit.
        """
        _outcome(await self._submit(Delete(key)))

    async def view(self) -> View:
        """Ask the view service for the current view.

        Returns:
            ``pbkv.View`` with ``number``, ``primary``, ``backups`` and ``backup``
            (number 0 and no primary before any server joined).
        Raises:
            pbkv.Unavailable: the view service did not answer within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        error: BaseException | None = None
        while (remaining := deadline - loop.time()) > 0:
            attempt = min(VIEW_ATTEMPT_TIMEOUT_S * len(self.members), remaining)
            try:
                _, reply = await call_view_service(
                    self.members, GetView(), MESSAGES, attempt, self.security
                )
            except AuthenticationFailed:
                raise  # a refusal for good: retrying cannot pass it
            except (OSError, PbkvError) as failure:
                error = failure
                await asyncio.sleep(min(VIEW_RETRY_PAUSE_S, max(0.0, deadline - loop.time())))
                continue
            if isinstance(reply, ViewReply):
                return reply.view
            if isinstance(reply, ErrorReply) and len(self.members) == 1:
                refused = refusal_error(self.viewserver, reply.reason)
                if refused is not None:  # a replicated service's other members may answer
                    raise refused
            error = PbkvError(f"unexpected reply {type(reply).__name__}")
        raise Unavailable(f"the view service at {self.viewserver} did not answer: {error}")


class Client:
    """Synchronous client of a pbkv cluster.

    Args:
        viewserver: address ``host:port`` of the view service, or ``"A,B,C"``: the members of
            a view service replicated on etcd (the client finds the leader).
        timeout: seconds each operation may take before it fails with ``pbkv.Unavailable``.

    ``token`` and ``tls`` as for ``AsyncClient``. Runs an ``AsyncClient`` on a private event
    loop in a background thread, so it works in programs with or without their own event loop,
    and from several threads at once. Use it as a context manager
    (``with pbkv.Client(...) as kv:``) or call ``close()``.

    Raises:
        ValueError: ``viewserver`` is not a ``host:port`` address or a list of them.
    """

    def __init__(
        self,
        viewserver: str,
        timeout: float = CLIENT_TIMEOUT_S_DEFAULT,
        token: str | bytes | None = None,
        tls: Tls = None,
    ) -> None:
        self._async = AsyncClient(viewserver, timeout, token, tls)
        self.timeout = timeout
        self._loop = new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="pbkv-client", daemon=True
        )
        self._loop_thread.start()
        self._closed = False

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(self.timeout + SYNC_RESULT_MARGIN_S)
        except TimeoutError:
            future.cancel()
            raise Unavailable("the client's event loop did not answer in time") from None

    def get(self, key: str) -> str | None:
        """Read ``key``; returns its value or None. Raises as ``AsyncClient.get``."""
        return self._call(self._async.get(key))

    def put(self, key: str, value: str) -> None:
        """Set ``key`` to ``value``. Raises as ``AsyncClient.put``."""
        self._call(self._async.put(key, value))

    def append(self, key: str, value: str) -> None:
        """Append ``value`` to ``key`` (missing counts as ""). Raises as ``AsyncClient.append``."""
        self._call(self._async.append(key, value))

    def delete(self, key: str) -> None:
        """Remove ``key``. Raises as ``AsyncClient.delete``."""
        self._call(self._async.delete(key))

    def view(self) -> View:
        """The current view from the view service. Raises as ``AsyncClient.view``."""
        return self._call(self._async.view())

    def close(self) -> None:
        """Close the connections and stop the background thread (idempotent)."""
        if self._closed:
            return
        try:
            self._call(self._async.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join()
            self._loop.close()
