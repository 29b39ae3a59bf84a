"""Recovery from damage: torn tails are cut, damage in the middle is refused or repaired."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbkv.storage import StorageCorrupt
from pbkv.storage.format import SEGMENT_HEADER_BYTES, encode_frame, segment_name, snapshot_name
from tests.storage.helpers import (
    flip_byte,
    frame_offsets,
    inode,
    recording,
    recovered_after_close,
    reopen,
    segments,
    snapshots,
    write_log,
)

PAYLOADS = [b"first record", b"second record", b"the last record, which the crash tears"]
BATCHES = [[payload] for payload in PAYLOADS]  # one append each: one frame per record


def one_segment(directory: Path) -> Path:
    write_log(directory, BATCHES)
    (segment,) = segments(directory)
    return segment


def damaged_copies(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """For each byte offset of the last frame: (offset, a fresh copy of the log, its segment)."""
    one_segment(tmp_path / "pristine")
    last = frame_offsets(BATCHES)[2]
    for offset in range(last, segments(tmp_path / "pristine")[0].stat().st_size):
        directory = tmp_path / f"copy-{offset}"
        shutil.copytree(tmp_path / "pristine", directory)
        yield offset, directory, segments(directory)[0]


def test_torn_tail_at_every_byte_of_the_last_record_is_truncated(tmp_path: Path) -> None:
    last = frame_offsets(BATCHES)[2]
    for cut, directory, segment in damaged_copies(tmp_path):
        segment.write_bytes(segment.read_bytes()[:cut])
        recovered = recovered_after_close(directory)
        assert recovered.records == PAYLOADS[:2], cut
        assert recovered.truncated_bytes == cut - last, cut
        assert segment.stat().st_size == last
        if cut > last:
            assert "torn tail" in recovered.events[0]


def test_bad_checksum_at_every_byte_of_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    last = frame_offsets(BATCHES)[2]
    for offset, directory, segment in damaged_copies(tmp_path):
        size = segment.stat().st_size
        flip_byte(segment, offset)
        recovered = recovered_after_close(directory)
        assert recovered.records == PAYLOADS[:2], offset
        assert recovered.truncated_bytes == size - last, offset


def test_a_torn_batch_is_lost_whole_never_in_part(tmp_path: Path) -> None:
    write_log(tmp_path, [[b"kept"], [b"one", b"two", b"three"]])
    (segment,) = segments(tmp_path)
    torn = segment.read_bytes()[:-7]  # "one" and "two" are complete on disk, "three" is not
    segment.write_bytes(torn)
    recovered = recovered_after_close(tmp_path)
    assert recovered.records == [b"kept"]
    kept_end = SEGMENT_HEADER_BYTES + len(encode_frame([b"kept"]))
    assert recovered.truncated_bytes == len(torn) - kept_end


def test_torn_tail_is_gone_after_recovery_and_appends_continue(tmp_path: Path) -> None:
    segment = one_segment(tmp_path)
    segment.write_bytes(segment.read_bytes()[:-3])
    log, recovered = reopen(tmp_path)
    assert recovered.truncated_bytes > 0
    log.append([b"next"])
    log.close()
    again = recovered_after_close(tmp_path)
    assert again.records == [*PAYLOADS[:2], b"next"]
    assert again.truncated_bytes == 0


def test_damage_in_the_middle_is_refused_naming_file_and_offset(tmp_path: Path) -> None:
    segment = one_segment(tmp_path)
    second = frame_offsets(BATCHES)[1]
    flip_byte(segment, second + 10)
    with pytest.raises(StorageCorrupt) as caught:
        reopen(tmp_path)
    message = str(caught.value)
    assert message == (
        f"corrupt log {segment} at offset {second}: checksum mismatch "
        "(use --repair to truncate there and lose what follows)"
    )
    assert (caught.value.path, caught.value.offset) == (segment, second)
    with pytest.raises(StorageCorrupt):  # the refusal released the lock: same answer again
        reopen(tmp_path)


def test_damage_at_the_end_of_an_earlier_segment_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path, [[b"r" * 60] for _ in range(10)], segment_bytes_max=200)
    first = segments(tmp_path)[0]
    flip_byte(first, first.stat().st_size - 1)
    with pytest.raises(StorageCorrupt, match=first.name):
        reopen(tmp_path)


def test_repair_truncates_at_the_damage_and_reports_the_loss(tmp_path: Path) -> None:
    segment = one_segment(tmp_path)
    second = frame_offsets(BATCHES)[1]
    flip_byte(segment, second + 10)
    log, recovered = reopen(tmp_path, repair=True)
    assert recovered.records == PAYLOADS[:1]
    assert recovered.discarded_bytes == sum(len(encode_frame(batch)) for batch in BATCHES[1:])
    assert any(f"repair truncated {segment} at offset {second}" in e for e in recovered.events)
    log.append([b"after repair"])
    log.close()
    assert recovered_after_close(tmp_path).records == [PAYLOADS[0], b"after repair"]


def test_missing_segment_is_refused_and_repair_keeps_what_precedes_it(tmp_path: Path) -> None:
    batches = [[f"r{index}".encode() * 20] for index in range(12)]
    write_log(tmp_path, batches, segment_bytes_max=150)
    files = segments(tmp_path)
    assert len(files) >= 4
    files[1].unlink()
    with pytest.raises(StorageCorrupt, match=f"corrupt log {files[1]} at offset 0: segment is"):
        reopen(tmp_path)
    log, recovered = reopen(tmp_path, repair=True)
    log.close()
    kept = len(recovered.records)
    assert 0 < kept < len(batches)
    assert recovered.records == [batch[0] for batch in batches[:kept]]
    assert all(not path.exists() for path in files[2:])
    assert recovered.discarded_bytes > 0


def test_segment_with_a_bad_header_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path, [[b"a"]])
    (segment,) = segments(tmp_path)
    flip_byte(segment, 2)
    with pytest.raises(StorageCorrupt, match="bad segment header"):
        reopen(tmp_path)


def compacted_twice(directory: Path) -> list[bytes]:
    """Two compactions; returns the records appended after the first (the fallback replay)."""
    log, _ = reopen(directory, segment_bytes_max=120)
    log.append([b"a1", b"a2"])
    log.finish_compaction(log.begin_compaction(), b"SNAP-1")
    log.append([b"b1"])
    log.append([b"b2"])
    log.finish_compaction(log.begin_compaction(), b"SNAP-2")
    log.append([b"c1"])
    log.close()
    return [b"b1", b"b2", b"c1"]


def test_corrupt_newest_snapshot_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    after_first = compacted_twice(tmp_path)
    older, newest = snapshots(tmp_path)
    flip_byte(newest, newest.stat().st_size - 1)
    log, recovered = reopen(tmp_path)
    assert recovered.snapshot == b"SNAP-1"
    assert recovered.records == after_first
    assert recovered.snapshot_path == older
    assert "damaged" in recovered.events[0]
    assert newest.with_name(newest.name + ".corrupt").exists()
    log.close()


def test_corrupt_newest_snapshot_without_its_segments_is_refused(tmp_path: Path) -> None:
    compacted_twice(tmp_path)
    newest = snapshots(tmp_path)[-1]
    flip_byte(newest, newest.stat().st_size - 1)
    segments(tmp_path)[0].unlink()
    with pytest.raises(StorageCorrupt, match=f"corrupt snapshot {newest} at offset 0"):
        reopen(tmp_path)


def test_corrupt_newest_snapshot_without_its_own_segment_is_refused(tmp_path: Path) -> None:
    """Rule 2: the older snapshot stands in only if every segment from it up to the damaged
    one's own is there; the damaged one's segment holds the records written after it
    (acknowledged), so without it the fallback would replay a shorter history in silence."""
    compacted_twice(tmp_path)
    newest = snapshots(tmp_path)[-1]
    own = tmp_path / segment_name(int(newest.name[5:15]))
    assert own == segments(tmp_path)[-1]  # holding c1
    flip_byte(newest, newest.stat().st_size - 1)
    own.unlink()
    with pytest.raises(StorageCorrupt, match="the segments to rebuild it are gone") as caught:
        reopen(tmp_path)
    assert caught.value.path == newest


def test_two_damaged_snapshots_need_every_segment_up_to_the_newest(tmp_path: Path) -> None:
    """Rule 2 when the older snapshot is damaged too: the empty base stands in only if every
    segment up to the newest damaged snapshot's own is there, not merely up to the older's."""
    log, _ = reopen(tmp_path)
    log.finish_compaction(log.begin_compaction(), b"SNAP-1")  # over nothing: snap-1
    log.append([b"a"])
    log.finish_compaction(log.begin_compaction(), b"SNAP-2")
    log.append([b"acknowledged after SNAP-2"])
    log.close()
    assert [path.name for path in snapshots(tmp_path)] == [snapshot_name(1), snapshot_name(2)]
    assert [path.name for path in segments(tmp_path)] == [segment_name(1), segment_name(2)]
    older, newest = snapshots(tmp_path)
    for snapshot in (older, newest):
        flip_byte(snapshot, snapshot.stat().st_size - 1)
    segments(tmp_path)[-1].unlink()  # wal-2, the newest snapshot's own
    with pytest.raises(StorageCorrupt, match="the segments to rebuild it are gone") as caught:
        reopen(tmp_path)
    assert caught.value.path == newest


def test_snapshot_with_a_damaged_header_has_no_stand_in(tmp_path: Path) -> None:
    compacted_twice(tmp_path)
    newest = snapshots(tmp_path)[-1]
    flip_byte(newest, 1)
    with pytest.raises(StorageCorrupt, match="bad snapshot header; it may not be replaced"):
        reopen(tmp_path)
    log, recovered = reopen(tmp_path, repair=True)
    log.close()
    assert (recovered.snapshot, recovered.records) == (None, [])
    assert recovered.discarded_bytes > 0


def test_damaged_installed_snapshot_is_refused_not_replaced_by_older_state(
    tmp_path: Path,
) -> None:
    compacted_twice(tmp_path)
    log, _ = reopen(tmp_path)
    log.install_snapshot(b"TRANSFERRED")
    log.close()
    (installed,) = snapshots(tmp_path)
    flip_byte(installed, installed.stat().st_size - 1)
    with pytest.raises(StorageCorrupt, match="checksum mismatch; it may not be replaced"):
        reopen(tmp_path)


def test_leftover_temporary_files_are_removed(tmp_path: Path) -> None:
    write_log(tmp_path, [[b"a"]])
    leftover = tmp_path / "snap-0000000009.snap.tmp"
    leftover.write_bytes(b"half a snapshot")
    assert recovered_after_close(tmp_path).records == [b"a"]
    assert not leftover.exists()


def test_header_only_segment_is_a_valid_empty_log(tmp_path: Path) -> None:
    write_log(tmp_path, [])
    (segment,) = segments(tmp_path)
    assert segment.stat().st_size == SEGMENT_HEADER_BYTES
    assert recovered_after_close(tmp_path).records == []


def test_the_cut_of_a_torn_tail_is_durable_before_the_log_opens(tmp_path: Path) -> None:
    """Rule 5 and a power cut soon after the restart: the truncation is fsynced before the log
    takes appends (and with it the records before it, read from the crashed process's page
    cache), or the torn frame could come back in front of newly acknowledged writes."""
    segment = one_segment(tmp_path)
    segment.write_bytes(segment.read_bytes()[:-3])
    with recording() as events:
        log, recovered = reopen(tmp_path)
    log.close()
    assert recovered.truncated_bytes > 0
    cut = events.index(("ftruncate", inode(segment)))
    assert {("fsync", inode(segment)), ("fdatasync", inode(segment))} & set(events[cut + 1 :])


def test_the_segments_a_repair_deletes_stay_deleted_after_a_power_cut(tmp_path: Path) -> None:
    """Rule 5 with --repair: the directory is fsynced after the segments following the damage
    are deleted, or a power cut could bring them back behind the records appended since (old
    positions replayed after new ones)."""
    write_log(tmp_path, [[f"r{index}".encode() * 20] for index in range(12)], segment_bytes_max=150)
    later = segments(tmp_path)[2:]
    segments(tmp_path)[1].unlink()
    with recording() as events:
        log, _ = reopen(tmp_path, repair=True)
    log.close()
    deleted = [index for index, event in enumerate(events) if event[0] == "unlink"]
    assert [events[index][1] for index in deleted] == [path.name for path in later]
    assert ("fsync", inode(tmp_path)) in events[deleted[-1] + 1 :]
