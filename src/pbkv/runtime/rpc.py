"""Request/reply over one framed connection, for operator tools: status, dump, admin, view.

Not the data path (clients use ``pbkv.client``): one request at a time, blocking (``Channel``)
or awaited (``async_call``), with a deadline for the whole call.

Both speak TLS and run the authentication handshake first when their ``Security`` says so;
without one given they use ``tool_security()``: the peer role with the token ``resolve_token``
finds (``--auth-token-file`` of the command, ``$PBKV_AUTH_TOKEN``, the local cluster's secret)
and the TLS of the local cluster, if any. A refused handshake raises ``AuthRefused`` (an
``OSError``, so callers that report unreachable nodes report it too, with the reason).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, Generic, TypeVar

from pbkv.errors import AuthenticationFailed
from pbkv.runtime.auth import NONCE_BYTES, AuthError, ClientHandshake, HandshakeReader
from pbkv.runtime.config import parse_address
from pbkv.runtime.connection import refusal_words
from pbkv.runtime.security import Security, client_security, resolve_tls
from pbkv.wire import MESSAGES, Codec, FrameReader, ProtocolError

T = TypeVar("T")
RECEIVE_BYTES: Final = 256 * 1024
CALL_TIMEOUT_S_DEFAULT: Final = 5.0


class AuthRefused(ConnectionError, AuthenticationFailed):
    """The other side refused our handshake, or failed to prove the secret (an ``OSError``
    for callers that retry on connection errors; exit status 4 on the command line)."""


def tool_security() -> Security:
    """What operator tools present when given nothing: see the module docstring."""
    return client_security(None, resolve_tls(), role="peer")


def _refusal(error: AuthError, payload: bytes | None, codec: Codec[T]) -> AuthRefused:
    if payload is not None:
        try:
            message = codec.decode(payload)
        except ProtocolError:
            pass
        else:
            words = refusal_words(message)
            if words:
                return AuthRefused(f"the server refused the connection: {words}")
    return AuthRefused(f"authentication failed: {error}")


def handshake_blocking(
    sock: socket.socket | ssl.SSLSocket, token: bytes, security: Security, codec: Codec[T]
) -> None:
    """Run the client side of the handshake on a connected blocking socket."""
    handshake = ClientHandshake(token, security.role, secrets.token_bytes(NONCE_BYTES))
    reader = HandshakeReader()
    sock.sendall(handshake.hello())
    while not handshake.done:
        payload = None
        try:
            while (payload := reader.next()) is None:
                data = sock.recv(4096)
                if not data:
                    raise AuthRefused("connection closed during the authentication handshake")
                reader.feed(data)
            sock.sendall(handshake.feed(payload))
        except AuthError as error:
            raise _refusal(error, payload, codec) from None


async def handshake_async(
    read: Callable[[], Awaitable[bytes]],
    write: Callable[[bytes], None],
    token: bytes,
    security: Security,
    codec: Codec[T],
) -> None:
    """The client side of the handshake over a stream (``read`` returns b"" at its end)."""
    handshake = ClientHandshake(token, security.role, secrets.token_bytes(NONCE_BYTES))
    reader = HandshakeReader()
    write(handshake.hello())
    while not handshake.done:
        payload = None
        try:
            while (payload := reader.next()) is None:
                data = await read()
                if not data:
                    raise AuthRefused("connection closed during the authentication handshake")
                reader.feed(data)
            write(handshake.feed(payload))
        except AuthError as error:
            raise _refusal(error, payload, codec) from None


class Channel(Generic[T]):
    """A blocking connection to ``address``; ``call`` sends one message and returns the next
    message received. Raises ``OSError`` (``TimeoutError`` included) on failure, and
    ``pbkv.wire.ProtocolError`` on a bad reply."""

    def __init__(
        self,
        address: str,
        codec: Codec[T],
        timeout_s: float = CALL_TIMEOUT_S_DEFAULT,
        security: Security | None = None,
    ) -> None:
        host, port = parse_address(address)
        security = security if security is not None else tool_security()
        self.codec = codec
        self.timeout_s = timeout_s
        self.reader = FrameReader(codec)
        self.received: deque[T] = deque()
        sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock: socket.socket = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if security.client_tls is not None:
                name = security.server_name or host
                self.sock = security.client_tls.wrap_socket(sock, server_hostname=name)
            if security.token is not None:
                handshake_blocking(self.sock, security.token, security, codec)
        except BaseException:
            sock.close()
            raise

    def call(self, message: T) -> T:
        self.send(message)
        return self.receive()

    def certificate_expiry_s(self) -> float | None:
        """When the certificate the node presented on this connection expires (Unix time);
        None without TLS."""
        if not isinstance(self.sock, ssl.SSLSocket):
            return None
        certificate = self.sock.getpeercert()
        not_after = certificate.get("notAfter") if certificate else None
        return None if not isinstance(not_after, str) else ssl.cert_time_to_seconds(not_after)

    def send(self, message: T) -> None:
        self.sock.settimeout(self.timeout_s)
        self.sock.sendall(self.codec.frame(message))

    def receive(self) -> T:
        deadline = time.monotonic() + self.timeout_s
        while not self.received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply in time")
            self.sock.settimeout(remaining)
            data = self.sock.recv(RECEIVE_BYTES)
            if not data:
                raise ConnectionError("connection closed by the peer")
            self.received.extend(self.reader.feed(data))
        return self.received.popleft()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Channel[T]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def presented_certificate_expiry(
    address: str, timeout_s: float = CALL_TIMEOUT_S_DEFAULT, security: Security | None = None
) -> float | None:
    """When the certificate the node at ``address`` presents expires (Unix time), read from a
    connection that completes TLS and authentication and closes, as any client's may; None
    without TLS, or when the node cannot be reached or refuses."""
    try:
        with Channel(address, MESSAGES, timeout_s, security) as channel:
            return channel.certificate_expiry_s()
    except (OSError, ProtocolError, AuthenticationFailed):
        return None


def call(
    address: str,
    message: T,
    codec: Codec[T],
    timeout_s: float = CALL_TIMEOUT_S_DEFAULT,
    security: Security | None = None,
) -> T:
    """One blocking request/reply on a fresh connection."""
    with Channel(address, codec, timeout_s, security) as channel:
        return channel.call(message)


async def async_call(
    address: str,
    message: T,
    codec: Codec[T],
    timeout_s: float = CALL_TIMEOUT_S_DEFAULT,
    security: Security | None = None,
) -> T:
    """One request/reply on a fresh connection, awaited; raises ``OSError``/``TimeoutError``."""
    host, port = parse_address(address)
    security = security if security is not None else tool_security()
    context = security.client_tls
    name = (security.server_name or host) if context is not None else None
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=name
        )
        try:
            if security.token is not None:

                async def read() -> bytes:
                    return await reader.read(4096)

                await handshake_async(read, writer.write, security.token, security, codec)
            writer.write(codec.frame(message))
            frames = FrameReader(codec)
            while True:
                data = await reader.read(RECEIVE_BYTES)
                if not data:
                    raise ConnectionError("connection closed by the peer")
                messages = frames.feed(data)
                if messages:
                    return messages[0]
        finally:
            writer.close()
