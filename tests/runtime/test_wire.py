"""pbkv.wire: frames split anywhere reassemble; bad input raises ProtocolError at the boundary."""

from __future__ import annotations

import itertools
import sys

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbkv.core.messages import AnyMessage, Append, Forward, Get, Ping, Put, Request
from pbkv.wire import FRAME_HEADER, MESSAGES, Codec, FrameReader, ProtocolError

SAMPLES: list[AnyMessage] = [
    Ping("127.0.0.1:7001", 3, 42, 2),
    Request("c1", 0, 0, Put("k", "v")),
    Request("c1", 1, 0, Get("k")),
    Forward(3, "p", 10, (Request("c2", 5, 4, Append("k", "é" * 100)),)),
]
STREAM = b"".join(MESSAGES.frame(message) for message in SAMPLES)


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_a_stream_yields_the_same_messages(cuts: list[int]) -> None:
    reader = FrameReader(MESSAGES)
    received = []
    bounds = [0, *sorted(cuts), len(STREAM)]
    for start, end in itertools.pairwise(bounds):
        received += reader.feed(STREAM[start:end])
    assert received == SAMPLES
    assert reader.buffered == 0


def test_byte_by_byte_delivery() -> None:
    reader = FrameReader(MESSAGES)
    received = [m for i in range(len(STREAM)) for m in reader.feed(STREAM[i : i + 1])]
    assert received == SAMPLES


def test_partial_frame_waits_for_the_rest() -> None:
    reader = FrameReader(MESSAGES)
    frame = MESSAGES.frame(SAMPLES[0])
    assert reader.feed(frame[:-1]) == []
    assert reader.buffered == len(frame) - 1
    assert reader.feed(frame[-1:] + frame) == [SAMPLES[0], SAMPLES[0]]


def test_oversized_frame_is_refused_before_reading_it() -> None:
    reader = FrameReader(Codec[object](object, frame_bytes_max=100))
    with pytest.raises(ProtocolError, match="exceeds 100"):
        reader.feed(FRAME_HEADER.pack(101))


def test_garbage_and_unknown_tags_raise_protocol_error() -> None:
    reader = FrameReader(MESSAGES)
    with pytest.raises(ProtocolError):
        reader.feed(FRAME_HEADER.pack(3) + b"\xc1\xc1\xc1")
    unknown = msgspec.msgpack.encode(["nope", 1, 2])
    with pytest.raises(ProtocolError):
        FrameReader(MESSAGES).feed(FRAME_HEADER.pack(len(unknown)) + unknown)


def test_wrong_field_type_is_refused() -> None:
    bad = msgspec.msgpack.encode(["rq", "c1", "not-a-number", 0, ["put", "k", "v"]])
    with pytest.raises(ProtocolError):
        FrameReader(MESSAGES).feed(FRAME_HEADER.pack(len(bad)) + bad)


def test_outgoing_frame_over_the_limit_is_refused() -> None:
    codec = Codec[Request](Request, frame_bytes_max=64)
    with pytest.raises(ProtocolError, match="outgoing"):
        codec.frame(Request("c1", 0, 0, Put("k", "x" * 100)))


def test_a_frame_header_alone_allocates_nothing_ahead() -> None:
    reader = FrameReader(MESSAGES)
    assert reader.feed(FRAME_HEADER.pack(MESSAGES.frame_bytes_max - 1) + b"xy") == []
    assert reader.buffered == FRAME_HEADER.size + 2
    assert sys.getsizeof(reader._buffer) < 1024  # not 16 MiB for a 4-byte promise
    reader.clear()
    assert reader.buffered == 0


def test_feed_hands_over_at_most_messages_max_and_keeps_the_rest() -> None:
    reader = FrameReader(MESSAGES)
    assert reader.feed(STREAM, messages_max=3) == SAMPLES[:3]
    assert reader.frame_ready()
    assert reader.feed(b"", messages_max=3) == SAMPLES[3:]
    assert not reader.frame_ready() and reader.buffered == 0


def test_a_frame_of_exactly_frame_bytes_max_passes_both_ways_one_byte_more_does_not() -> None:
    """``frame_bytes_max`` (§3): the bound is inclusive, on the way out as on the way in."""
    codec = Codec[object](object, frame_bytes_max=100)
    fits, over = "x" * 98, "x" * 99  # a str8 header of 2 bytes: payloads of 100 and 101 bytes
    frame = codec.frame(fits)
    assert len(frame) == FRAME_HEADER.size + 100
    assert FrameReader(codec).feed(frame) == [fits]
    with pytest.raises(ProtocolError, match="outgoing frame of 101 bytes exceeds 100"):
        codec.frame(over)
    with pytest.raises(ProtocolError, match="incoming frame of 101 bytes exceeds 100"):
        FrameReader(codec).feed(FRAME_HEADER.pack(101))
