"""Files of another format version (recovery rule 6): a downgrade after a newer release wrote
``PBKVWAL2`` segments or ``PBKVSNP2`` snapshots. Before the rule, recovery called such a file
damage (``bad segment header`` at offset 0) and ``repair`` deleted the segment (then created a
new ``wal-1`` in its place) or renamed the snapshot ``*.corrupt`` and deleted every segment: the
newer release's data, which it could still read, was gone. Now recovery refuses the whole
directory, with or without repair, naming the file and both versions, and changes nothing in
it. Garbage, and ``PBKV`` with another kind, are still damage.

The newer files are built here as a newer release would write them: a header with its own
valid checksum, in this layout or in a longer one of its own. Only the names of this release's
API that predate the rule are used, so each test fails on the old recovery, not at import.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from pbkv.storage import StorageCorrupt, StorageError
from pbkv.storage.format import CRC
from tests.storage.helpers import (
    as_newer_release,
    contents,
    flip_byte,
    reopen,
    segments,
    snapshots,
    write_log,
)

NEWER_HEADER: struct.Struct = struct.Struct("<8sQQQ")  # a longer header a newer layout might use


def newer_layout(path: Path, magic: bytes) -> None:
    """A newer release's file of its own layout: a longer header, its checksum after it."""
    head = NEWER_HEADER.pack(magic, 1, 2, 3)
    path.write_bytes(head + CRC.pack(zlib.crc32(head)) + b"records of the newer format")


def refusal(directory: Path, repair: bool) -> str:
    """The one line recovery refuses with; it must not be a ``StorageCorrupt`` (damage)."""
    with pytest.raises(StorageError) as caught:
        reopen(directory, repair=repair)
    assert not isinstance(caught.value, StorageCorrupt), caught.value
    return str(caught.value)


def expected(kind: str, path: Path, version: str = "2") -> str:
    return (
        f"{kind} {path} was written by another pbkv format version ({version}; this release "
        "reads 1): start the release that wrote it (--repair leaves such files as they are)"
    )


def compacted(directory: Path) -> None:
    """wal-1, snap-2 (a compaction snapshot) and wal-2."""
    log, _ = reopen(directory)
    log.append([b"a1", b"a2"])
    log.finish_compaction(log.begin_compaction(), b"SNAPSHOT")
    log.append([b"b1"])
    log.close()


@pytest.mark.parametrize("repair", [False, True], ids=["plain", "repair"])
def test_a_newer_segment_is_refused_and_left_as_it_is(tmp_path: Path, repair: bool) -> None:
    write_log(tmp_path, [[b"acknowledged"], [b"by the newer release"]])
    (segment,) = segments(tmp_path)
    as_newer_release(segment, b"PBKVWAL2")
    (tmp_path / "wal-0000000002.log.tmp").write_bytes(b"a newer release's write in flight")
    before = contents(tmp_path)
    assert refusal(tmp_path, repair) == expected("log", segment)
    assert contents(tmp_path) == before  # no cut, no new wal-1, no REPAIRED, not even the .tmp


@pytest.mark.parametrize("repair", [False, True], ids=["plain", "repair"])
def test_a_newer_snapshot_is_refused_and_nothing_is_renamed_or_deleted(
    tmp_path: Path, repair: bool
) -> None:
    compacted(tmp_path)
    (snapshot,) = snapshots(tmp_path)
    as_newer_release(snapshot, b"PBKVSNP2")
    before = contents(tmp_path)
    assert refusal(tmp_path, repair) == expected("snapshot", snapshot)
    assert contents(tmp_path) == before  # no *.corrupt, the segments are all there


@pytest.mark.parametrize("repair", [False, True], ids=["plain", "repair"])
def test_a_newer_segment_after_damage_is_refused_before_the_repair_cuts_anything(
    tmp_path: Path, repair: bool
) -> None:
    """A newer release continued an old directory: wal-1 of ours (damaged in the middle), then
    its wal-2. A repair must not cut wal-1 and then stop at wal-2: the check comes first."""
    compacted(tmp_path)
    first, second = segments(tmp_path)
    flip_byte(first, first.stat().st_size - 1)
    as_newer_release(second, b"PBKVWAL2")
    before = contents(tmp_path)
    assert refusal(tmp_path, repair) == expected("log", second)
    assert contents(tmp_path) == before


@pytest.mark.parametrize(
    ("kind", "magic"), [("log", b"PBKVWAL2"), ("snapshot", b"PBKVSNP9"), ("log", b"PBKVWALb")]
)
def test_a_newer_layout_is_refused_whatever_its_header(
    tmp_path: Path, kind: str, magic: bytes
) -> None:
    compacted(tmp_path)
    path = segments(tmp_path)[0] if kind == "log" else snapshots(tmp_path)[0]
    newer_layout(path, magic)
    before = contents(tmp_path)
    assert refusal(tmp_path, True) == expected(kind, path, chr(magic[-1]))
    assert contents(tmp_path) == before


@pytest.mark.parametrize("magic", [b"GARBAGE!", b"PBKVZZZ2", b"PBKVSNP2", b"PBKVWAL\x00"])
def test_garbage_or_another_kind_is_still_damage_that_repair_cuts(
    tmp_path: Path, magic: bytes
) -> None:
    """Only our kind's prefix with another version byte (a letter or digit) is another version:
    garbage, PBKV and another kind in a file named as a segment, or a zeroed version byte, is a
    bad header as before."""
    write_log(tmp_path, [[b"a"], [b"b"]])
    (segment,) = segments(tmp_path)
    as_newer_release(segment, magic)
    with pytest.raises(StorageCorrupt, match=f"corrupt log {segment} at offset 0: bad segment"):
        reopen(tmp_path)
    log, recovered = reopen(tmp_path, repair=True)
    log.close()
    assert recovered.records == [] and (tmp_path / "REPAIRED").exists()


def test_a_damaged_version_byte_of_our_own_header_is_damage(tmp_path: Path) -> None:
    """A bit flip that turns PBKVWAL1 into PBKVWAL3 leaves a header whose checksum holds with
    our byte put back: damage (a repair may cut it), not a newer release's file."""
    write_log(tmp_path, [[b"a"]])
    (segment,) = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[7] = ord("3")
    segment.write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt, match="bad segment header"):
        reopen(tmp_path)
