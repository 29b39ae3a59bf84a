"""Raw connections that pass the authentication handshake first, for tests of what an
authenticated peer may still get wrong (bad frames, floods, slow readers): they present
``$PBKV_AUTH_TOKEN`` (set by the conftest) in the peer role, then hand over the raw stream."""

from __future__ import annotations

import asyncio
import socket

from pbkv.runtime.config import parse_address
from pbkv.runtime.rpc import handshake_async, handshake_blocking, tool_security
from pbkv.wire import MESSAGES


def connect(address: str, timeout: float = 5.0, sock: socket.socket | None = None) -> socket.socket:
    """A blocking socket to ``address``, authenticated (when a token is set)."""
    host, port = parse_address(address)
    if sock is None:
        sock = socket.create_connection((host, port), timeout=timeout)
    else:
        sock.settimeout(timeout)
        sock.connect((host, port))
    security = tool_security()
    if security.token is not None:
        handshake_blocking(sock, security.token, security, MESSAGES)
    return sock


async def open_connection(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` to ``address``, authenticated (when a token is set)."""
    host, port = parse_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    security = tool_security()
    if security.token is not None:

        async def read() -> bytes:
            return await reader.read(4096)

        await handshake_async(read, writer.write, security.token, security, MESSAGES)
    return reader, writer
