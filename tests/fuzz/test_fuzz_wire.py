"""Fuzzing the wire decoder: random bytes, mutated frames of valid messages, and round trips.

Nothing but ``ProtocolError`` may come out of ``FrameReader.feed``, whatever the bytes; a frame
that decodes re-encodes to a message of the same type; every valid message survives a round
trip through ``frame`` and ``feed`` split at any point.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pbkv.core.messages import AnyMessage
from pbkv.wire import FRAME_HEADER, MESSAGES, FrameReader, ProtocolError

from .runner import long, run, short
from .strategies import messages

Mutation = tuple[str, int, int]
mutations = st.lists(
    st.tuples(
        st.sampled_from(("flip", "set", "insert", "delete", "truncate")),
        st.integers(0, 1 << 20),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, changes: list[Mutation]) -> bytes:
    buffer = bytearray(data)
    for kind, position, value in changes:
        at = position % (len(buffer) + 1)
        if kind == "insert":
            buffer[at:at] = bytes([value])
        elif not buffer:
            continue
        elif kind == "truncate":
            del buffer[at:]
        elif kind == "delete":
            del buffer[at % len(buffer)]
        elif kind == "flip":
            buffer[at % len(buffer)] ^= 1 << (value % 8)
        else:
            buffer[at % len(buffer)] = value
    return bytes(buffer)


def feed_all(chunks: list[bytes]) -> list[AnyMessage]:
    reader = FrameReader(MESSAGES)
    received: list[AnyMessage] = []
    try:
        for chunk in chunks:
            received += reader.feed(chunk, 3)
        while reader.frame_ready():
            received += reader.feed(b"", 3)
    except ProtocolError:
        pass  # the one allowed outcome of bad bytes: the connection is closed
    for message in received:  # whatever was accepted is a message the codec can send back
        assert type(MESSAGES.decode(MESSAGES.encode(message))) is type(message)
    return received


def check_random_bytes(data: bytes, cut: int) -> None:
    feed_all([data[:cut], data[cut:]])
    feed_all([FRAME_HEADER.pack(len(data)) + data])


def check_mutated_frames(batch: list[AnyMessage], changes: list[Mutation], cut: int) -> None:
    stream = mutate(b"".join(MESSAGES.frame(message) for message in batch), changes)
    cut %= len(stream) + 1
    feed_all([stream[:cut], stream[cut:]])


def check_round_trip(batch: list[AnyMessage], cut: int) -> None:
    stream = b"".join(MESSAGES.frame(message) for message in batch)
    cut %= len(stream) + 1
    assert feed_all([stream[:cut], stream[cut:]]) == batch


_bytes = (st.binary(max_size=512), st.integers(0, 512))
_mutated = (st.lists(messages(), min_size=1, max_size=4), mutations, st.integers(0, 1 << 16))
_valid = (st.lists(messages(), max_size=6), st.integers(0, 1 << 16))


def test_fuzz_random_bytes_raise_only_protocol_error() -> None:
    run(short(given(*_bytes)(check_random_bytes)), long(given(*_bytes)(check_random_bytes)))


def test_fuzz_mutated_frames_raise_only_protocol_error() -> None:
    run(short(given(*_mutated)(check_mutated_frames)), long(given(*_mutated)(check_mutated_frames)))


def test_fuzz_every_message_survives_a_round_trip() -> None:
    run(short(given(*_valid)(check_round_trip)), long(given(*_valid)(check_round_trip)))
