"""The on-disk format by itself: framing round trips, and every check bites."""

from __future__ import annotations

import zlib

import msgspec
import pytest

from pbkv.storage.format import (
    CRC,
    FRAME_HEADER_BYTES,
    LENGTH_COUNT,
    SEGMENT_HEADER_BYTES,
    SNAPSHOT_HEADER_BYTES,
    SnapshotKind,
    decode_frames,
    decode_snapshot_header,
    encode_frame,
    encode_frames,
    encode_segment_header,
    encode_snapshot,
    is_torn_tail,
    segment_header_problem,
    segment_other_version,
    snapshot_other_version,
    snapshot_payload_problem,
)


def segment(*batches: list[bytes]) -> bytes:
    return encode_segment_header(1) + b"".join(encode_frame(batch) for batch in batches)


def test_frames_round_trip_including_empty_records() -> None:
    batches = [[b""], [b"a"], [b"\x00" * 7, b"", bytes(range(256))], [b"", b""]]
    data = segment(*batches)
    decoded = decode_frames(data, SEGMENT_HEADER_BYTES)
    assert decoded.records == [record for batch in batches for record in batch]
    assert decoded.damage is None
    assert decoded.end == len(data)


def test_a_single_record_frame_is_the_record_itself() -> None:
    assert encode_frame([b"payload"])[FRAME_HEADER_BYTES:] == b"payload"


def test_big_batches_are_cut_into_frames_under_the_limit() -> None:
    records = [bytes([index]) * 100 for index in range(50)]
    frames = encode_frames(records, 1000)
    assert len(frames) > 5
    assert all(len(frame) <= 1000 for frame in frames)
    decoded = decode_frames(encode_segment_header(1) + b"".join(frames), SEGMENT_HEADER_BYTES)
    assert decoded.records == records
    assert encode_frames([b"x" * 5000], 1000) == [encode_frame([b"x" * 5000])]


def test_a_damaged_length_field_is_caught_by_the_checksum() -> None:
    data = bytearray(segment([b"abcdef"], [b"ghi"]))
    data[SEGMENT_HEADER_BYTES + 4] = 2  # length 6 -> 2: still fits in the file
    decoded = decode_frames(bytes(data), SEGMENT_HEADER_BYTES)
    assert decoded.records == []
    assert decoded.damage is not None
    assert decoded.damage.reason == "checksum mismatch"


@pytest.mark.parametrize(
    ("cut", "reason"),
    [(3, "incomplete frame header (3 of 12 bytes)"), (15, "incomplete frame (3 of 7 bytes)")],
)
def test_incomplete_frames_say_how_much_is_missing(cut: int, reason: str) -> None:
    data = segment([b"0123456"])[: SEGMENT_HEADER_BYTES + cut]
    damage = decode_frames(data, SEGMENT_HEADER_BYTES).damage
    assert damage is not None
    assert (damage.offset, damage.reason) == (SEGMENT_HEADER_BYTES, reason)


def test_segment_header_names_its_own_sequence() -> None:
    header = encode_segment_header(7)
    assert segment_header_problem(header, 7) is None
    assert segment_header_problem(header, 8) == "header says segment 7"
    assert segment_header_problem(header[:-1], 7) is not None
    assert segment_header_problem(b"X" + header[1:], 7) == "bad segment header"


def test_a_magic_of_our_kind_with_another_version_byte_names_that_version() -> None:
    """Recovery rule 6 at the byte level (``other_version``); recovery: test_format_version."""
    ours = encode_segment_header(7)
    newer = b"PBKVWAL2" + ours[8:16]
    assert segment_other_version(ours) is None
    assert segment_other_version(newer + CRC.pack(zlib.crc32(newer))) == "2"
    assert segment_other_version(b"PBKVWALa and a header of its own") == "a"
    assert segment_other_version(b"PBKVWAL\x00" + bytes(12)) is None  # zeroed: damage
    assert segment_other_version(b"PBKVWAL3" + ours[8:]) is None  # ours, its version byte hit
    assert segment_other_version(b"PBKVSNP2" + ours[8:]) is None  # another kind: damage
    assert segment_other_version(b"PBKVWAL") is None  # shorter than a magic: damage
    snapshot = encode_snapshot(SnapshotKind.COMPACTION, 4, b"state")
    assert snapshot_other_version(snapshot) is None
    assert snapshot_other_version(b"PBKVSNP2" + snapshot[8:]) is None
    assert snapshot_other_version(b"PBKVSNP2" + bytes(40)) == "2"


def test_torn_tail_only_when_nothing_valid_follows() -> None:
    torn = segment([b"one"]) + encode_frame([b"two"])[:-1]
    decoded = decode_frames(torn, SEGMENT_HEADER_BYTES)
    assert decoded.damage is not None
    assert is_torn_tail(torn, decoded.damage, 1 << 20)
    damaged = bytearray(segment([b"one"], [b"two"], [b"three"]))
    damaged[-len(encode_frame([b"three"])) - 1] ^= 1  # inside "two"; "three" is intact after
    decoded = decode_frames(bytes(damaged), SEGMENT_HEADER_BYTES)
    assert decoded.damage is not None
    assert not is_torn_tail(bytes(damaged), decoded.damage, 1 << 20)


def test_a_long_zero_filled_tail_is_torn_but_long_garbage_is_not() -> None:
    zeros = segment([b"one"]) + b"\0" * 5000
    decoded = decode_frames(zeros, SEGMENT_HEADER_BYTES)
    assert decoded.damage is not None
    assert is_torn_tail(zeros, decoded.damage, 100)
    garbage = segment([b"one"]) + b"\x01" * 5000
    decoded = decode_frames(garbage, SEGMENT_HEADER_BYTES)
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


def test_a_frame_whose_body_is_not_its_count_of_records_is_damage() -> None:
    body = msgspec.msgpack.encode([b"a", b"b"])
    tail = LENGTH_COUNT.pack(len(body), 3) + body
    data = encode_segment_header(1) + CRC.pack(zlib.crc32(tail)) + tail
    damage = decode_frames(data, SEGMENT_HEADER_BYTES).damage
    assert damage is not None
    assert damage.reason == "frame body is not 3 records"


def test_a_last_frame_holding_one_empty_record_is_valid() -> None:
    """An acknowledged append of one empty record ends the segment with a header-only frame;
    taken for an incomplete one, recovery would cut it as a torn tail and lose the write (D1).
    """
    data = segment([b"a"], [b""])
    decoded = decode_frames(data, SEGMENT_HEADER_BYTES)
    assert (decoded.records, decoded.damage, decoded.end) == ([b"a", b""], None, len(data))


def test_a_valid_frame_within_a_header_of_the_damage_is_damage_in_the_middle() -> None:
    """A torn tail has no valid frame anywhere after the damage (recovery rule 4): the search
    starts at the next byte, so an intact frame 3 bytes on is found and the tail refused, not
    cut with the acknowledged record in it."""
    data = segment([b"one"]) + b"\x07\x07\x07" + encode_frame([b"two"])
    decoded = decode_frames(data, SEGMENT_HEADER_BYTES)
    assert decoded.damage is not None
    assert decoded.damage.offset == len(segment([b"one"]))
    assert not is_torn_tail(data, decoded.damage, 1 << 20)


def test_the_snapshot_kind_is_covered_by_the_header_checksum() -> None:
    """Recovery rule 2 trusts the kind of a damaged snapshot: an INSTALLED one whose kind byte
    turned COMPACTION is a bad header (no stand-in), never a compaction snapshot that older
    state may replace."""
    data = bytearray(encode_snapshot(SnapshotKind.INSTALLED, 4, b"state"))
    assert data[8] == SnapshotKind.INSTALLED  # right after the magic
    data[8] = SnapshotKind.COMPACTION
    assert decode_snapshot_header(bytes(data)) == "bad snapshot header"
