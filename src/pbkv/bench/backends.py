"""The systems the load generator drives: pbkv, Redis with ``WAIT 1 0``, and an in-process
null backend.

Each backend is one client. Factories are module-level functions taking only picklable
arguments, so ``functools.partial(open_redis, ...)`` can be handed to generator processes.

The Redis backend makes Redis keep pbkv's promise — a write is on the replica before the client
hears OK — by sending ``SET key value`` and ``WAIT 1 0`` together in one write on the client's
connection and succeeding only when ``WAIT`` reports at least one replica. ``0`` means wait
without a timeout, which is fine with a local replica. Reads are a plain ``GET`` on the primary.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Final

from pbkv.bench.loadgen import Backend, BackendFactory
from pbkv.bench.resp import RespConnection, RespError, encode_command
from pbkv.runtime.auth import resolve_token
from pbkv.runtime.security import resolve_tls
from pbkv.runtime.tls import TlsOptions

WAIT_ONE_REPLICA: Final = encode_command(("WAIT", "1", "0"))
BACKEND_NAMES: Final = ("pbkv", "redis", "null")


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` -> ``(host, port)``.

    Raises:
        ValueError: not of that form.
    """
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host, int(port)


OK_REPLIES: Final = ("OK", b"OK")
"""``+OK`` as the pure-Python parser (text) and hiredis (bytes) give it."""


class RedisBackend:
    """One Redis connection; writes are ``SET`` + ``WAIT 1 0`` in one round trip."""

    def __init__(self, connection: RespConnection, replicas: int = 1) -> None:
        self.connection = connection
        self.replicas = replicas
        self._wait = WAIT_ONE_REPLICA if replicas == 1 else encode_command(("WAIT", replicas, 0))

    async def write(self, key: str, value: str) -> None:
        payload = encode_command(("SET", key, value)) + self._wait
        stored, acknowledged = await self.connection.request(payload, 2)
        if stored not in OK_REPLIES:
            raise stored if isinstance(stored, RespError) else RespError(f"SET: {stored!r}")
        if not isinstance(acknowledged, int) or acknowledged < self.replicas:
            raise RespError(f"WAIT: {acknowledged!r} replicas acknowledged")

    async def read(self, key: str) -> None:
        (reply,) = await self.connection.request(encode_command(("GET", key)))
        if isinstance(reply, RespError):
            raise reply

    async def close(self) -> None:
        await self.connection.close()

    def retries(self) -> int | None:
        return 0  # this client never re-sends


async def open_redis(address: str, replicas: int = 1, tls: TlsOptions | None = None) -> Backend:
    """A ``RedisBackend`` connected to the primary at ``address`` (``host:port``); over TLS
    with ``tls`` (``pbkv --tls-ca ... bench``: the comparison of TLS costs)."""
    host, port = parse_address(address)
    context = tls.client_context() if tls is not None else None
    connection = await RespConnection.open(host, port, native=True, ssl=context)
    return RedisBackend(connection, replicas)


class PbkvBackend:
    """One ``pbkv.AsyncClient``: its own client session; the connections are shared by every
    client on the event loop. ``write`` and ``read`` are the client's own ``put`` and ``get``: no
    wrapper coroutine per operation."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.write: Callable[[str, str], Coroutine[Any, Any, None]] = client.put
        self.read: Callable[[str], Coroutine[Any, Any, None]] = client.get  # value discarded

    async def close(self) -> None:
        await self.client.close()

    def retries(self) -> int | None:
        return session_retries(self.client)


def session_retries(client: Any) -> int | None:
    """The client session's ``retries`` counter, wherever this client keeps it, else None."""
    host = getattr(client, "_host", None)  # AsyncClient's per-loop session host
    holders = (client, getattr(client, "session", None), getattr(host, "session", None))
    for holder in holders:
        count = getattr(holder, "retries", None)
        if isinstance(count, int):
            return count
    return None


async def open_pbkv(
    viewserver: str,
    timeout_s: float,
    token: bytes | None = None,
    tls: TlsOptions | None = None,
) -> Backend:
    """A ``PbkvBackend`` for the cluster whose view service is at ``viewserver``."""
    from pbkv.client import AsyncClient

    return PbkvBackend(AsyncClient(viewserver, timeout=timeout_s, token=token, tls=tls))


class NullBackend:
    """Answers after one trip through the event loop: measures the generator's own ceiling,
    and is the fake backend of the tests. ``fail_every`` > 0 makes every n-th operation raise.
    """

    def __init__(self, fail_every: int = 0, delay_s: float = 0.0) -> None:
        self.fail_every = fail_every
        self.delay_s = delay_s
        self.operations = 0
        self.store: dict[str, str] = {}

    async def write(self, key: str, value: str) -> None:
        await self._step()
        self.store[key] = value

    async def read(self, key: str) -> None:
        await self._step()
        self.store.get(key)

    async def _step(self) -> None:
        self.operations += 1
        await asyncio.sleep(self.delay_s)
        if self.fail_every and self.operations % self.fail_every == 0:
            raise RuntimeError("injected failure")

    async def close(self) -> None:
        return None

    def retries(self) -> int | None:
        return None


async def open_null(fail_every: int = 0, delay_s: float = 0.0) -> Backend:
    return NullBackend(fail_every, delay_s)


def backend_factory(
    name: str, address: str, *, timeout_s: float = 30.0, replicas: int = 1
) -> BackendFactory:
    """A picklable factory for backend ``name`` (one of ``BACKEND_NAMES``) at ``address``."""
    if name == "pbkv":
        # Resolved here, in the parent: the secret and TLS a command chose (--cluster-dir,
        # --auth-token-file, --tls-*) live in this process's globals, which the spawned
        # generator processes of --procs > 1 would not have.
        tls = resolve_tls()
        options = tls if isinstance(tls, TlsOptions) else None
        return functools.partial(open_pbkv, address, timeout_s, resolve_token(), options)
    if name == "redis":
        tls = resolve_tls()
        options = tls if isinstance(tls, TlsOptions) else None
        return functools.partial(open_redis, address, replicas, options)
    if name == "null":
        return functools.partial(open_null)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")
