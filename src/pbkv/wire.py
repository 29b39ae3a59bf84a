"""Message <-> bytes: length-prefixed MessagePack frames, decoded straight into typed messages.

A frame is a 4-byte big-endian length followed by that many bytes of MessagePack encoding one
tagged message. Decoding validates the whole structure against the message types (msgspec typed
decoding), so anything else — garbage, a truncated or oversized frame, an unknown tag, a field
of the wrong type — raises ``ProtocolError`` here, at the boundary; the host drops only the
connection that sent it. The simulator passes every message through ``encode``/``decode`` too, so
what it tests is what travels.
"""

from __future__ import annotations

import struct
from typing import Any, Final, Generic, TypeVar

import msgspec

from pbkv.core.messages import AnyMessage
from pbkv.core.sizes import FRAME_BYTES_MAX_DEFAULT

__all__ = ["FRAME_BYTES_MAX_DEFAULT", "MESSAGES", "Codec", "FrameReader", "ProtocolError"]

FRAME_HEADER: Final = struct.Struct(">I")
FRAME_HEADER_BYTES: Final = FRAME_HEADER.size

T = TypeVar("T")


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame or message."""


DECODE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError)


def undecodable(error: Exception) -> ProtocolError:
    return ProtocolError(f"undecodable message: {error}")


class Codec(Generic[T]):
    """Encoder and typed decoder for one message union (reused: no per-message allocation)."""

    def __init__(self, message_type: Any, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        self.frame_bytes_max = frame_bytes_max
        self._encoder = msgspec.msgpack.Encoder()
        self.decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(message_type)
        # Bound once: compiled, a method call on an extension object looks the method up by
        # name each time (count_instructions.py).
        self._encode = self._encoder.encode
        self._pack_header = FRAME_HEADER.pack

    def encode(self, message: T) -> bytes:
        return self._encoder.encode(message)

    def decode(self, payload: bytes | memoryview) -> T:
        try:
            return self.decoder.decode(payload)
        except DECODE_ERRORS as error:
            raise undecodable(error) from None

    def frame(self, message: T) -> bytes:
        """One frame: header + payload."""
        payload = self._encode(message)
        if len(payload) > self.frame_bytes_max:
            raise ProtocolError(
                f"outgoing frame of {len(payload)} bytes exceeds {self.frame_bytes_max}"
            )
        return self._pack_header(len(payload)) + payload


class FrameReader(Generic[T]):
    """Incremental frame splitter: ``feed`` bytes as they arrive, get whole messages back.

    A partial frame costs what has arrived of it, never what its header announces: nothing is
    allocated ahead from a length field a peer controls. The owner bounds the total.
    """

    def __init__(self, codec: Codec[T]) -> None:
        self.codec = codec
        self._buffer = bytearray()

    def feed(self, data: bytes, messages_max: int | None = None) -> list[T]:
        """Append ``data``; decode and return the whole frames buffered, at most
        ``messages_max`` of them (the rest stay buffered: ``feed(b"")`` gets them later)."""
        if self._buffer:
            self._buffer += data
            source: bytes | bytearray = self._buffer
        else:
            source = data  # the common case: no partial frame pending, no copy
        messages: list[T] = []
        offset = self._split(source, messages, messages_max)
        if source is self._buffer:
            del self._buffer[:offset]
        elif offset < len(data):
            self._buffer += data[offset:]
        return messages

    def _split(self, source: bytes | bytearray, messages: list[T], messages_max: int | None) -> int:
        """Decode whole frames of ``source`` into ``messages``; return the bytes used."""
        count = len(source) if messages_max is None else messages_max
        try:
            if type(source) is bytes:
                return self._split_bytes(source, messages, count)
            return self._split_buffer(source, messages, count)
        except DECODE_ERRORS as error:
            raise undecodable(error) from None

    def _split_bytes(self, source: bytes, messages: list[T], count: int) -> int:
        """``_split`` of a ``bytes`` object, the common case (no partial frame was pending):
        the header read byte by byte and each payload sliced off as ``bytes``, which compiled
        code does without a call per frame (count_instructions.py: a struct call, a tuple and
        a memoryview slice cost about a thousand instructions a frame)."""
        offset = 0
        header = FRAME_HEADER_BYTES
        limit = self.codec.frame_bytes_max
        decode = self.codec.decoder.decode  # no wrapper call per frame: errors caught above
        size = len(source)
        while count > 0 and size - offset >= header:
            length = (
                (source[offset] << 24)
                | (source[offset + 1] << 16)
                | (source[offset + 2] << 8)
                | source[offset + 3]
            )
            if length > limit:
                raise ProtocolError(f"incoming frame of {length} bytes exceeds {limit}")
            end = offset + header + length
            if size < end:
                break
            messages.append(decode(source[offset + header : end]))
            offset = end
            count -= 1
        return offset

    def _split_buffer(self, source: bytes | bytearray, messages: list[T], count: int) -> int:
        """``_split`` of the reader's own buffer (a partial frame was pending): payloads are
        decoded through a memoryview, without copying them."""
        offset = 0
        header = FRAME_HEADER_BYTES
        limit = self.codec.frame_bytes_max
        decode = self.codec.decoder.decode
        unpack_header = FRAME_HEADER.unpack_from
        with memoryview(source) as view:
            while count > 0 and len(source) - offset >= header:
                (length,) = unpack_header(source, offset)
                if length > limit:
                    raise ProtocolError(f"incoming frame of {length} bytes exceeds {limit}")
                end = offset + header + length
                if len(source) < end:
                    break
                messages.append(decode(view[offset + header : end]))
                offset = end
                count -= 1
        return offset

    def frame_ready(self) -> bool:
        """Whether a whole frame is buffered (left by ``messages_max``)."""
        buffer = self._buffer
        if len(buffer) < FRAME_HEADER_BYTES:
            return False
        length: int = FRAME_HEADER.unpack_from(buffer, 0)[0]
        return len(buffer) >= FRAME_HEADER_BYTES + length

    def clear(self) -> None:
        """Forget a partial frame (the connection is gone); its memory is released."""
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for more data."""
        return len(self._buffer)


MESSAGES: Final[Codec[AnyMessage]] = Codec(AnyMessage)
"""The codec of the core protocol."""
