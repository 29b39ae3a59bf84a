"""A minimal asyncio RESP2 client: enough Redis to benchmark it fairly, with pipelining.

Theory of operation. Redis answers the commands of one connection in order, so a connection is
an ``asyncio.Protocol`` with a FIFO of waiters: ``request(payload, replies)`` writes one or more
encoded commands in a single ``write`` and returns a future for their ``replies`` answers;
``data_received`` parses whole replies off the buffer and hands them to the waiters in order.
Any number of requests may be outstanding (pipelining). A reply Redis marks as an error
(``-ERR ...``) is returned as a ``RespError`` value inside the list; ``execute`` raises it.

Why not redis-py: the load generator has to be cheap (it shares two cores with the servers),
and what we need — encode a command, parse five reply types, match replies in order — is a
couple of hundred lines with no per-request task or lock.

The benchmark's connections (``native=True``) parse replies with ``hiredis`` (Redis's own C
parser) when it is installed (``pip install 'pbkv[bench]'``; the dev tools include it), so the
Redis side of ``pbkv bench`` is not held back by a Python parser; otherwise, and for every other
use, by ``parse_reply`` below. The values are the same except that hiredis gives status replies
(``+OK``) as bytes, not text.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Sequence
from ssl import SSLContext
from typing import Any, Final, TypeAlias, cast

hiredis: Any
try:
    import hiredis
except ImportError:  # the pure-Python parser below does the same, slower
    hiredis = None

Value: TypeAlias = "str | int | bytes | RespError | list[Value] | None"
Argument: TypeAlias = bytes | str | int

CRLF: Final = b"\r\n"
REPLY_BYTES_MAX: Final = 512 * 1024 * 1024
"""Redis's own limit on a bulk string; anything longer is a protocol error."""


class RespError(Exception):
    """An error reply from the server (``-ERR ...``)."""


class RespProtocolError(Exception):
    """The server sent bytes that are not RESP2."""


def encode_command(arguments: Sequence[Argument]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        if isinstance(argument, str):
            data = argument.encode()
        elif isinstance(argument, int):
            data = str(argument).encode()
        else:
            data = argument
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def parse_reply(buffer: bytes | bytearray, offset: int) -> tuple[Value, int] | None:
    """Parse one reply starting at ``offset``; return it and the offset after it, or None when
    the buffer does not yet hold the whole reply.

    Raises:
        RespProtocolError: the bytes are not a RESP2 reply.
    """
    line_end = buffer.find(CRLF, offset)
    if line_end < 0:
        return None
    kind = buffer[offset]
    line = bytes(buffer[offset + 1 : line_end])
    after = line_end + 2
    if kind == 43:  # '+'
        return line.decode(), after
    if kind == 45:  # '-'
        return RespError(line.decode(errors="replace")), after
    if kind == 58:  # ':'
        return _integer(line), after
    if kind == 36:  # '$'
        length = _integer(line)
        if length < 0:
            return None, after
        if length > REPLY_BYTES_MAX:
            raise RespProtocolError(f"bulk string of {length} bytes")
        end = after + length
        if len(buffer) < end + 2:
            return None
        if buffer[end : end + 2] != CRLF:
            raise RespProtocolError("bulk string not followed by CRLF")
        return bytes(buffer[after:end]), end + 2
    if kind == 42:  # '*'
        count = _integer(line)
        if count < 0:
            return None, after
        items: list[Value] = []
        position = after
        for _ in range(count):
            parsed = parse_reply(buffer, position)
            if parsed is None:
                return None
            item, position = parsed
            items.append(item)
        return items, position
    raise RespProtocolError(f"unknown reply type byte {kind!r}")


def _integer(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise RespProtocolError(f"bad integer {line[:40]!r}") from None


class _Waiter:
    __slots__ = ("future", "remaining", "replies")

    def __init__(self, future: asyncio.Future[list[Value]], remaining: int) -> None:
        self.future = future
        self.remaining = remaining
        self.replies: list[Value] = []


class RespConnection(asyncio.Protocol):
    """One pipelined connection; create with ``await RespConnection.open(host, port)``."""

    def __init__(self, native: bool = False) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiters: deque[_Waiter] = deque()
        self._lost: BaseException | None = None
        self._reader: Any = None
        if native and hiredis is not None:
            self._reader = hiredis.Reader(protocolError=RespProtocolError, replyError=RespError)

    @property
    def parser(self) -> str:
        """``hiredis`` or ``python``: which parser reads the replies."""
        return "python" if self._reader is None else "hiredis"

    @classmethod
    async def open(
        cls, host: str, port: int, native: bool = False, ssl: SSLContext | None = None
    ) -> RespConnection:
        """Connect to ``host:port``; ``native`` parses replies with hiredis if installed.

        Raises:
            OSError: the connection was refused or failed.
        """
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(native), host, port, ssl=ssl)
        return protocol

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            if self._reader is not None:
                self._reader.feed(data)
                while (value := self._reader.gets()) is not False:
                    self._deliver(value)
                return
            buffer = self._buffer
            buffer += data
            offset = 0
            while offset < len(buffer):
                parsed = parse_reply(buffer, offset)
                if parsed is None:
                    break
                value, offset = parsed
                self._deliver(value)
            del buffer[:offset]
        except RespProtocolError as error:
            self._fail(error)
            if self._transport is not None:
                self._transport.abort()

    def _deliver(self, value: Value) -> None:
        waiters = self._waiters
        if not waiters:
            raise RespProtocolError("a reply nobody asked for")
        waiter = waiters[0]
        waiter.replies.append(value)
        waiter.remaining -= 1
        if waiter.remaining == 0:
            waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(waiter.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed by the server"))

    def _fail(self, error: BaseException) -> None:
        self._lost = error
        while self._waiters:
            future = self._waiters.popleft().future
            if not future.done():
                future.set_exception(ConnectionError(f"redis connection lost: {error}"))

    # --- requests ----------------------------------------------------------------------------

    def request(self, payload: bytes, replies: int = 1) -> asyncio.Future[list[Value]]:
        """Send ``payload`` (``replies`` encoded commands) at once; the future gets the replies.

        Raises:
            ConnectionError: the connection is closed.
        """
        if replies < 1:
            raise ValueError("a request expects at least one reply")
        if self._lost is not None or self._transport is None:
            raise ConnectionError(f"redis connection lost: {self._lost}")
        future: asyncio.Future[list[Value]] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(future, replies))
        self._transport.write(payload)
        return future

    async def execute(self, *arguments: Argument) -> Value:
        """Run one command and return its reply.

        Raises:
            RespError: the server answered with an error.
            ConnectionError: the connection was lost.
        """
        (reply,) = await self.request(encode_command(arguments))
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Argument]]) -> list[Value]:
        """Send ``commands`` in one write; return their replies (errors as ``RespError``)."""
        payload = b"".join(encode_command(command) for command in commands)
        return await self.request(payload, len(commands))

    async def close(self) -> None:
        """Close the connection; outstanding requests fail."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        await asyncio.sleep(0)
