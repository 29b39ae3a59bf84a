"""Damage the review found handled wrongly: a quadratic torn-tail search, a missing last
segment, a repair that hid its loss, a LOCK that is not a file.

The format's newer names are reached through the module (``storage_format.TailSearch``), so this
file imports on the code before them and each test fails there on its own.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from pbkv.storage import StorageCorrupt, StorageError
from pbkv.storage import format as storage_format
from pbkv.storage.format import (
    SEGMENT_HEADER_BYTES,
    decode_frames,
    encode_frame,
    encode_segment_header,
)
from tests.storage.helpers import reopen, segments, write_log

WRITE_BYTES_MAX = 4 * 1024 * 1024
NO_FIELD = b"(the code before Recovered.repaired_mark)"


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


def compacted(directory: Path) -> Path:
    """A log with a compaction snapshot and records after it; the path of the last segment."""
    log, _ = reopen(directory)
    log.append([b"a"])
    log.finish_compaction(log.begin_compaction(), b"SNAP")
    log.append([b"after the snapshot, acknowledged"])
    log.close()
    return segments(directory)[-1]


def mark_of(directory: Path) -> bytes | None:
    log, recovered = reopen(directory)
    log.close()
    mark: bytes | None = getattr(recovered, "repaired_mark", NO_FIELD)
    return mark


def test_a_deleted_last_segment_after_a_compaction_snapshot_is_refused(tmp_path: Path) -> None:
    last = compacted(tmp_path)
    assert last.name == "wal-0000000002.log"  # snap-2 was written after it
    last.unlink()
    with pytest.raises(StorageCorrupt, match="segment is missing") as caught:
        reopen(tmp_path)
    assert caught.value.path == last
    assert str(caught.value).startswith(f"corrupt log {last} at offset 0: segment is missing")
    assert not last.exists()  # refused: no empty segment created in its place


def test_repair_accepts_the_missing_segment_and_marks_the_history_incomplete(
    tmp_path: Path,
) -> None:
    last = compacted(tmp_path)
    last.unlink()
    log, recovered = reopen(tmp_path, repair=True)
    log.append([b"new"])
    log.close()
    assert (recovered.snapshot, recovered.records) == (b"SNAP", [])
    assert getattr(recovered, "repaired_mark", None) == b""
    assert (tmp_path / "REPAIRED").exists()
    assert any(f"{last.name}: segment is missing" in event for event in recovered.events)
    assert recovered.summary().endswith(" history=incomplete")
    assert mark_of(tmp_path) == b""  # an ordinary restart still knows


def test_a_repair_in_the_middle_marks_the_directory_until_its_owner_clears_it(
    tmp_path: Path,
) -> None:
    write_log(tmp_path, [[b"one"], [b"two"], [b"three"]])
    segment = segments(tmp_path)[0]
    data = bytearray(segment.read_bytes())
    data[SEGMENT_HEADER_BYTES + len(encode_frame([b"one"])) + 13] ^= 1  # inside "two"
    segment.write_bytes(bytes(data))
    log, recovered = reopen(tmp_path, repair=True)
    assert recovered.records == [b"one"]
    assert getattr(recovered, "repaired_mark", None) == b""
    log.write_repaired_mark(b"view 7")
    log.close()
    assert mark_of(tmp_path) == b"view 7"
    log, _ = reopen(tmp_path)
    log.clear_repaired_mark()
    log.close()
    assert mark_of(tmp_path) is None


def test_a_torn_tail_or_a_rebuilt_snapshot_is_no_loss_and_leaves_no_mark(tmp_path: Path) -> None:
    write_log(tmp_path / "torn", [[b"one"], [b"two"]])
    segment = segments(tmp_path / "torn")[0]
    segment.write_bytes(segment.read_bytes()[:-2])
    assert mark_of(tmp_path / "torn") is None
    compacted(tmp_path / "fallback")
    log, _ = reopen(tmp_path / "fallback")
    log.finish_compaction(log.begin_compaction(), b"SNAP-3")
    log.close()
    newest = sorted((tmp_path / "fallback").glob("snap-*.snap"))[-1]
    newest.write_bytes(newest.read_bytes()[:-1])  # rebuilt from the older one and the segments
    log, recovered = reopen(tmp_path / "fallback", repair=True)
    log.close()
    assert recovered.records == [b"after the snapshot, acknowledged"]
    assert getattr(recovered, "repaired_mark", NO_FIELD) is None


def test_an_installed_snapshot_without_its_segment_is_a_crash_not_damage(
    tmp_path: Path,
) -> None:
    compacted(tmp_path)
    log, _ = reopen(tmp_path)
    log.install_snapshot(b"TRANSFERRED")
    log.close()
    (segment,) = segments(tmp_path)
    segment.unlink()  # a crash between the snapshot's rename and its segment's creation
    log, recovered = reopen(tmp_path)
    log.close()
    assert (recovered.snapshot, recovered.records) == (b"TRANSFERRED", [])
    assert getattr(recovered, "repaired_mark", NO_FIELD) is None


def test_a_lock_that_is_a_directory_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "s3" / "LOCK").mkdir(parents=True)
    with pytest.raises(StorageError) as caught:
        reopen(tmp_path / "s3")
    assert str(caught.value) == (
        f"cannot open the lock file {tmp_path / 's3' / 'LOCK'}: Is a directory (EISDIR)"
    )
