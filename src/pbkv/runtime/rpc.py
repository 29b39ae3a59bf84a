"""Request/reply over one framed connection, for operator tools: status, dump, admin, view.

Not the data path (clients use ``pbkv.client``): one request at a time, blocking (``Channel``)
or awaited (``async_call``), with a deadline for the whole call.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from types import TracebackType
from typing import Final, Generic, TypeVar

from pbkv.runtime.config import parse_address
from pbkv.wire import Codec, FrameReader

T = TypeVar("T")
RECEIVE_BYTES: Final = 256 * 1024
CALL_TIMEOUT_S_DEFAULT: Final = 5.0


class Channel(Generic[T]):
    """A blocking connection to ``address``; ``call`` sends one message and returns the next
    message received. Raises ``OSError`` (``TimeoutError`` included) on failure, and
    ``pbkv.wire.ProtocolError`` on a bad reply."""

    def __init__(
        self, address: str, codec: Codec[T], timeout_s: float = CALL_TIMEOUT_S_DEFAULT
    ) -> None:
        host, port = parse_address(address)
        self.codec = codec
        self.timeout_s = timeout_s
        self.reader = FrameReader(codec)
        self.received: deque[T] = deque()
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, message: T) -> T:
        self.send(message)
        return self.receive()

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


def call(address: str, message: T, codec: Codec[T], timeout_s: float = CALL_TIMEOUT_S_DEFAULT) -> T:
    """One blocking request/reply on a fresh connection."""
    with Channel(address, codec, timeout_s) as channel:
        return channel.call(message)


async def async_call(
    address: str, message: T, codec: Codec[T], timeout_s: float = CALL_TIMEOUT_S_DEFAULT
) -> T:
    """One request/reply on a fresh connection, awaited; raises ``OSError``/``TimeoutError``."""
    host, port = parse_address(address)
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
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
