"""Damage the review found handled wrongly: a quadratic torn-tail search, a missing last
segment, a repair that hid its loss, a LOCK that is not a file.

The format's newer names are reached through the module (``storage_format.TailSearch``), so this
file imports on the code before them and each test fails there on its own.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pbkv.storage import StorageCorrupt
from pbkv.storage import format as storage_format
from pbkv.storage.format import (
    SEGMENT_HEADER_BYTES,
    decode_frames,
    encode_frame,
    encode_segment_header,
)
from tests.storage.helpers import reopen, segments, write_log

WRITE_BYTES_MAX = 4 * 1024 * 1024


def torn(record: bytes, cut: int) -> tuple[bytes, storage_format.Damage]:
    """A segment holding one frame of ``record`` whose last ``cut`` bytes were never written."""
    frame = encode_frame([b"before"]) + encode_frame([record])
    data = encode_segment_header(1) + frame[: len(frame) - cut]
    damage = decode_frames(data, SEGMENT_HEADER_BYTES).damage
    assert damage is not None
    return data, damage


def test_a_torn_megabyte_of_header_like_text_is_torn_without_checksumming_each_offset() -> None:
    data, damage = torn(b"\x00\x00\x08\x00" * 250_000, 1000)  # the review's 14 s case
    search = storage_format.TailSearch()
    assert storage_format.is_torn_tail(data, damage, WRITE_BYTES_MAX, search)
    assert search.checksums == 0
    assert not search.gave_up


def test_a_tail_crafted_with_frames_at_every_offset_is_refused_within_the_budget() -> None:
    # Every 8 bytes a header whose count is 1 and whose 64 KiB frame fits in the file: the old
    # search computed a checksum at each (gigabytes of CRC).
    data, damage = torn(b"\x00\x00\x01\x00\x01\x00\x00\x00" * 500_000, 1000)
    search = storage_format.TailSearch()
    assert not storage_format.is_torn_tail(data, damage, WRITE_BYTES_MAX, search)
    assert search.gave_up
    assert search.checksums <= storage_format.TAIL_CHECKSUMS_MAX
    budget = storage_format.TAIL_CHECKSUM_BYTES_MAX + WRITE_BYTES_MAX  # the last one may pass
    assert search.checksum_bytes <= budget
    tiny, damage = torn(b"\x01\x00\x00\x00" * 1_000_000, 1000)  # a million 1-byte frames
    search = storage_format.TailSearch()
    assert not storage_format.is_torn_tail(tiny, damage, WRITE_BYTES_MAX, search)
    assert search.gave_up
    assert search.checksums == storage_format.TAIL_CHECKSUMS_MAX + 1


def test_every_kind_of_frame_is_a_candidate_of_the_search() -> None:
    batches = [
        [b"single"],
        [b"a", b"b"],  # fixarray
        [b"r"] * 20,  # array16
        [b""] * 70_000,  # array32
    ]
    data = b"".join(encode_frame(batch) for batch in batches)
    starts, offset = [], 0
    for batch in batches:
        starts.append(offset)
        offset += len(encode_frame(batch))
    assert msgspec.msgpack.encode([b""] * 70_000)[:1] == b"\xdd"
    assert set(starts) <= set(storage_format.frame_starts(data, 0))
    assert list(storage_format.frame_starts(data, 1)) == starts[1:]


def test_recovery_says_why_a_crafted_tail_is_not_taken_for_a_torn_one(tmp_path: Path) -> None:
    write_log(tmp_path, [[b"before"]])
    segment = segments(tmp_path)[0]
    frame = encode_frame([b"\x00\x00\x01\x00\x01\x00\x00\x00" * 100_000])
    with segment.open("ab") as file:
        file.write(frame[: len(frame) - 1000])
    offset = SEGMENT_HEADER_BYTES + len(encode_frame([b"before"]))
    with pytest.raises(StorageCorrupt, match="more frames could start after it") as caught:
        reopen(tmp_path)
    assert (caught.value.path, caught.value.offset) == (segment, offset)
