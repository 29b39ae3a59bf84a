"""The on-disk format by itself: framing round trips, and every check bites."""

from __future__ import annotations

from pbkv.storage.format import (
    SEGMENT_HEADER_BYTES,
    SNAPSHOT_HEADER_BYTES,
    SnapshotKind,
    decode_records,
    decode_snapshot_header,
    encode_records,
    encode_segment_header,
    encode_snapshot,
    is_torn_tail,
    segment_header_problem,
    snapshot_payload_problem,
)


def test_records_round_trip_including_empty_payloads() -> None:
    payloads = [b"", b"a", b"\x00" * 7, bytes(range(256))]
    data = encode_segment_header(3) + encode_records(payloads)
    decoded = decode_records(data, SEGMENT_HEADER_BYTES)
    assert decoded.records == payloads
    assert decoded.damage is None
    assert decoded.end == len(data)


def test_a_damaged_length_field_is_caught_by_the_checksum() -> None:
    data = bytearray(encode_segment_header(1) + encode_records([b"abcdef", b"ghi"]))
    data[SEGMENT_HEADER_BYTES + 4] = 2  # length 6 -> 2: still fits in the file
    decoded = decode_records(bytes(data), SEGMENT_HEADER_BYTES)
    assert decoded.records == []
    assert decoded.damage is not None
    assert decoded.damage.reason == "checksum mismatch"


def test_segment_header_names_its_own_sequence() -> None:
    header = encode_segment_header(7)
    assert segment_header_problem(header, 7) is None
    assert segment_header_problem(header, 8) == "header says segment 7"
    assert segment_header_problem(header[:-1], 7) is not None
    assert segment_header_problem(b"X" + header[1:], 7) == "bad segment header"


def test_torn_tail_only_when_nothing_valid_follows() -> None:
    good = encode_segment_header(1) + encode_records([b"one"])
    torn = good + encode_records([b"two"])[:-1]
    decoded = decode_records(torn, SEGMENT_HEADER_BYTES)
    assert decoded.damage is not None
    assert is_torn_tail(torn, decoded.damage, 1 << 20)
    damaged = bytearray(good + encode_records([b"two", b"three"]))
    damaged[len(good) + 9] ^= 1  # inside "two"; "three" is intact after it
    decoded = decode_records(bytes(damaged), SEGMENT_HEADER_BYTES)
    assert decoded.damage is not None
    assert not is_torn_tail(bytes(damaged), decoded.damage, 1 << 20)


def test_a_long_zero_filled_tail_is_torn_but_long_garbage_is_not() -> None:
    good = encode_segment_header(1) + encode_records([b"one"])
    zeros = good + b"\0" * 5000
    decoded = decode_records(zeros, SEGMENT_HEADER_BYTES)
    assert decoded.damage is not None
    assert is_torn_tail(zeros, decoded.damage, 100)
    garbage = good + b"\x01" * 5000
    decoded = decode_records(garbage, SEGMENT_HEADER_BYTES)
    assert decoded.damage is not None
    assert not is_torn_tail(garbage, decoded.damage, 100)
    assert is_torn_tail(garbage, decoded.damage, 10_000)


def test_snapshot_header_and_payload_are_checked_separately() -> None:
    data = encode_snapshot(SnapshotKind.COMPACTION, 4, b"state")
    header = decode_snapshot_header(data)
    assert not isinstance(header, str)
    assert (header.kind, header.seq, header.length) == (SnapshotKind.COMPACTION, 4, 5)
    payload = data[SNAPSHOT_HEADER_BYTES:]
    assert payload == b"state"
    assert snapshot_payload_problem(payload, header) is None
    assert snapshot_payload_problem(b"stat", header) == "payload is 4 bytes, header says 5"
    assert snapshot_payload_problem(b"stats", header) == "checksum mismatch"
    assert decode_snapshot_header(b"Q" + data[1:]) == "bad snapshot header"
