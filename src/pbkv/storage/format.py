"""The bytes on disk: frames of records, segment and snapshot headers, file names. No I/O here.

A data directory holds numbered log segments ``wal-<seq>.log`` and snapshots
``snap-<seq>.snap``. Sequence numbers only grow. A snapshot ``snap-N`` holds the state produced
by every record of every segment below N; the records of segments N, N+1, ... follow it.

Segment file::

    header (20 bytes)  magic "PBKVWAL" + version "1" (8) | seq u64 | crc32 of those 16 bytes u32
    frame (repeated)   crc32 u32 | length u32 | count u32 | body (length bytes)

One ``append`` call is one frame (a batch over ``write_bytes_max`` is cut into several): the
body is the record itself when ``count`` is 1, otherwise a MessagePack array of ``count`` byte
strings. So a batch is recovered whole or not at all, and recovery decodes a batch with one
C call (msgspec) instead of a Python loop per record: a log of a million records in batches of
16 reads about three times faster than with one checksum per record (docs/design.md).

A frame's checksum covers its length, count and body, so a damaged length is caught too.
Checksums are ``zlib.crc32`` (stdlib, no dependency): per frame the call overhead dominates and
the fsync dwarfs both; CRC32C (the ``crc32c`` package) is faster only on megabytes, i.e. on
snapshots, where it would save ~0.1 s per 80 MiB (figures in docs/design.md).

Snapshot file::

    magic "PBKVSNP" + version "1" (8) | kind u8 | 3 pad | seq u64 | length u64 | payload crc32 u32
    | header crc32 u32 (over the previous 32 bytes) | payload

``kind`` says where the snapshot came from. ``COMPACTION`` summarises the segments below it,
so when it is damaged the older snapshot plus those segments rebuild the same state.
``INSTALLED`` came from a state transfer and replaces history: nothing older may stand in for
it. The header has its own checksum so the kind is trusted even when the payload is damaged.

Decoding a segment stops at the first frame that is incomplete or fails its checks and reports
it as a ``Damage``. Whether that is a torn tail (a crash cut the last write: truncate) or damage
in the middle (refuse) is decided by ``is_torn_tail``: a torn tail has no valid frame anywhere
after it. The search for one is bounded by the largest single write (``write_bytes_max``); a
longer undecodable tail is refused unless it is all zero bytes. The search is linear: only
offsets whose count field could pass ``decode_frames`` (1, or the count of the MessagePack array
the body starts with) are candidates, found with ``bytes.find``, and it computes at most
``TAIL_CHECKSUMS_MAX`` checksums over at most ``TAIL_CHECKSUM_BYTES_MAX`` bytes: a tail with more
candidates than that (only crafted data has them) is refused as damage, never guessed torn.
(A checksum at every offset took 14 s for a torn 1 MB record of NUL-heavy text, and minutes
for 4 MiB.)

Format version. The last byte of each magic is the version of this layout (``FORMAT_VERSION``,
an ASCII digit: ``PBKVWAL1``, ``PBKVSNP1``); a later layout keeps the file names and the 7-byte
prefix of its kind and changes only that byte, to another ASCII letter or digit (the contract
that lets this release know a newer one's files). A release reads its own version only, and a
file whose magic is ``PBKVWAL`` or ``PBKVSNP`` with another version byte was written by
another release (a newer one, before a downgrade): that is not damage, so recovery refuses the
whole directory before it changes anything, ``repair`` included (recovery rule 6), naming the
file and both versions. ``other_version`` tells the two apart: a header of ours whose version
byte alone was damaged has a checksum that holds once the byte is put back, so it stays damage
(a repair may cut it); a newer release's header, of its own layout, does not match by chance
(2**-32). Anything else that is not our header (garbage, ``PBKV`` and another kind in a file
named for this one, a version byte that is no letter or digit) is damage, as before.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import msgspec

FORMAT_VERSION: Final = 1
"""The on-disk format this release writes and reads: the last byte of both magics."""
VERSION_BYTE: Final = str(FORMAT_VERSION).encode()
SEGMENT_MAGIC_PREFIX: Final = b"PBKVWAL"
SNAPSHOT_MAGIC_PREFIX: Final = b"PBKVSNP"
SEGMENT_MAGIC: Final = SEGMENT_MAGIC_PREFIX + VERSION_BYTE
SNAPSHOT_MAGIC: Final = SNAPSHOT_MAGIC_PREFIX + VERSION_BYTE
MAGIC_BYTES: Final = len(SEGMENT_MAGIC)
SEGMENT_HEADER: Final = struct.Struct("<8sQ")
SEGMENT_HEADER_BYTES: Final = SEGMENT_HEADER.size + 4
FRAME_HEADER: Final = struct.Struct("<III")  # crc32, length, count
FRAME_HEADER_BYTES: Final = FRAME_HEADER.size
LENGTH_COUNT: Final = struct.Struct("<II")
CRC: Final = struct.Struct("<I")
COUNT: Final = struct.Struct("<I")  # the last field of a frame header
SNAPSHOT_HEADER: Final = struct.Struct("<8sB3xQQI")
SNAPSHOT_HEADER_BYTES: Final = SNAPSHOT_HEADER.size + 4
HEADER_BYTES_MAX: Final = max(SEGMENT_HEADER_BYTES, SNAPSHOT_HEADER_BYTES)
FRAME_BYTES_MAX: Final = 0xFFFF_FFFF  # the length field is a u32
PACK_OVERHEAD_BYTES: Final = 5  # MessagePack's header of one byte string, at most
TAIL_CHECKSUMS_MAX: Final = 65_536
"""Checksums ``is_torn_tail`` computes at most before it refuses to call a tail torn."""
TAIL_CHECKSUM_BYTES_MAX: Final = 64 * 1024 * 1024
"""Bytes those checksums cover at most (about 0.1 s of zlib.crc32)."""
FIXARRAY: Final = 0x90  # MessagePack array of 0-15 elements: 0x90 | count
ARRAY16: Final = b"\xdc"  # then the count as a big-endian u16
ARRAY32: Final = b"\xdd"  # then the count as a big-endian u32
BIG_U16: Final = struct.Struct(">H")
BIG_U32: Final = struct.Struct(">I")

REPAIRED_MARK: Final = "REPAIRED"  # the file that says a repair lost records (recovery.py)
SEGMENT_NAME: Final = re.compile(r"wal-(\d+)\.log")
SNAPSHOT_NAME: Final = re.compile(r"snap-(\d+)\.snap")
BATCH_DECODER: Final = msgspec.msgpack.Decoder(list[bytes])


class SnapshotKind(IntEnum):
    """Where a snapshot came from (see the module docstring)."""

    COMPACTION = 1
    INSTALLED = 2


def segment_name(seq: int) -> str:
    return f"wal-{seq:010d}.log"


def snapshot_name(seq: int) -> str:
    return f"snap-{seq:010d}.snap"


def encode_frame(records: Sequence[bytes]) -> bytes:
    """One frame holding ``records`` (at least one)."""
    body = records[0] if len(records) == 1 else msgspec.msgpack.encode(list(records))
    if len(body) > FRAME_BYTES_MAX:
        raise ValueError(f"a frame of {len(body)} bytes is over {FRAME_BYTES_MAX}")
    tail = LENGTH_COUNT.pack(len(body), len(records)) + body
    return CRC.pack(zlib.crc32(tail)) + tail


def encode_frames(records: Sequence[bytes], frame_bytes_max: int) -> list[bytes]:
    """``records`` as frames of at most ``frame_bytes_max`` bytes (a bigger record alone)."""
    frames: list[bytes] = []
    group: list[bytes] = []
    group_bytes = FRAME_HEADER_BYTES + PACK_OVERHEAD_BYTES
    for record in records:
        cost = len(record) + PACK_OVERHEAD_BYTES
        if group and group_bytes + cost > frame_bytes_max:
            frames.append(encode_frame(group))
            group, group_bytes = [], FRAME_HEADER_BYTES + PACK_OVERHEAD_BYTES
        group.append(record)
        group_bytes += cost
    if group:
        frames.append(encode_frame(group))
    return frames


def encode_segment_header(seq: int) -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, seq)
    return head + CRC.pack(zlib.crc32(head))


def segment_header_problem(data: bytes, seq: int) -> str | None:
    """Why the first bytes of a segment are not the header of segment ``seq`` (None: they are)."""
    if len(data) < SEGMENT_HEADER_BYTES:
        return f"header is {len(data)} bytes, expected {SEGMENT_HEADER_BYTES}"
    magic, found = SEGMENT_HEADER.unpack_from(data)
    (crc,) = CRC.unpack_from(data, SEGMENT_HEADER.size)
    if magic != SEGMENT_MAGIC or crc != zlib.crc32(data[: SEGMENT_HEADER.size]):
        return "bad segment header"
    if found != seq:
        return f"header says segment {found}"
    return None


def other_version(head: bytes, prefix: bytes, covered_bytes: int) -> str | None:
    """The format version the first bytes of a file say it was written in, when that is not
    ours (None: ours, or not a pbkv file of this kind, which recovery treats as damage).

    Args:
        head: the file's first bytes (up to ``HEADER_BYTES_MAX``).
        prefix: the magic of the kind without its version byte (``SEGMENT_MAGIC_PREFIX``).
        covered_bytes: how many bytes our header's checksum covers (it follows them).

    Returns:
        The version byte as text (``"2"``), or None. A header of ours whose version byte alone
        is damaged (its checksum holds with ours put back), or whose version byte is no ASCII
        letter or digit (a zeroed or garbled header), is None: damage, not another version.
    """
    magic = head[:MAGIC_BYTES]
    version = magic[-1:]
    if len(magic) < MAGIC_BYTES or magic[:-1] != prefix or version == VERSION_BYTE:
        return None
    if not version.isalnum():  # versions are ASCII letters or digits: anything else is damage
        return None
    if len(head) >= covered_bytes + CRC.size:
        ours = prefix + VERSION_BYTE + head[MAGIC_BYTES:covered_bytes]
        if zlib.crc32(ours) == CRC.unpack_from(head, covered_bytes)[0]:
            return None
    return version.decode()


def segment_other_version(head: bytes) -> str | None:
    """``other_version`` of a segment's first bytes."""
    return other_version(head, SEGMENT_MAGIC_PREFIX, SEGMENT_HEADER.size)


def snapshot_other_version(head: bytes) -> str | None:
    """``other_version`` of a snapshot's first bytes."""
    return other_version(head, SNAPSHOT_MAGIC_PREFIX, SNAPSHOT_HEADER.size)


@dataclass(frozen=True)
class Damage:
    """The first frame at ``offset`` that is incomplete or fails its checks."""

    offset: int
    reason: str


@dataclass(frozen=True)
class Decoded:
    """The records of the valid frames of a segment up to ``end`` (its length if ``damage``
    is None)."""

    records: list[bytes]
    end: int
    damage: Damage | None


def decode_frames(data: bytes, start: int) -> Decoded:
    """Every record of every valid frame from ``start`` on, stopping at the first damage.

    The hot loop of recovery, so it is written flat: one header unpack, one checksum and one
    slice (or one msgspec decode) per frame; ``frame_problem`` says what failed.
    """
    records: list[bytes] = []
    unpack, crc32 = FRAME_HEADER.unpack_from, zlib.crc32
    offset, size = start, len(data)
    view = memoryview(data)
    while offset + FRAME_HEADER_BYTES <= size:
        crc, length, count = unpack(data, offset)
        body_start = offset + FRAME_HEADER_BYTES
        end = body_start + length
        if end > size or crc32(view[offset + 4 : end]) != crc:
            break
        if count == 1:
            records.append(data[body_start:end])
        else:
            batch = decode_batch(view[body_start:end], count)
            if batch is None:
                break
            records += batch
        offset = end
    if offset == size:
        return Decoded(records, offset, None)
    return Decoded(records, offset, Damage(offset, frame_problem(view, offset, size)))


def decode_batch(body: memoryview, count: int) -> list[bytes] | None:
    """The records of a frame body holding ``count`` of them (None: it does not)."""
    try:
        batch = BATCH_DECODER.decode(body)
    except msgspec.DecodeError:
        return None
    return batch if len(batch) == count and count > 1 else None


def frame_problem(view: memoryview, offset: int, size: int) -> str:
    """Why no valid frame starts at ``offset``."""
    if offset + FRAME_HEADER_BYTES > size:
        return f"incomplete frame header ({size - offset} of {FRAME_HEADER_BYTES} bytes)"
    crc, length, count = FRAME_HEADER.unpack_from(view, offset)
    end = offset + FRAME_HEADER_BYTES + length
    if end > size:
        return f"incomplete frame ({size - offset - FRAME_HEADER_BYTES} of {length} bytes)"
    if zlib.crc32(view[offset + 4 : end]) != crc:
        return "checksum mismatch"
    return f"frame body is not {count} records"


@dataclass
class TailSearch:
    """The work of one ``is_torn_tail`` (tests bound it); ``gave_up``: it refused because the
    tail had more candidate frames than it may check."""

    checksums: int = 0
    checksum_bytes: int = 0
    gave_up: bool = False


def is_torn_tail(
    data: bytes, damage: Damage, write_bytes_max: int, search: TailSearch | None = None
) -> bool:
    """True when nothing valid follows the damage, so a crash during the last write explains it.

    All-zero remainders (a file system that extended the file before writing the data) are torn
    at any length; otherwise every offset up to ``write_bytes_max`` past the damage where a
    frame could start (``frame_starts``) is checked, with a budget (module docstring): False
    when it runs out (``search.gave_up``).
    """
    search = TailSearch() if search is None else search
    if not data[damage.offset :].strip(b"\0"):
        return True
    if len(data) - damage.offset > write_bytes_max:
        return False
    view = memoryview(data)
    for offset in frame_starts(data, damage.offset + 1):
        crc, length, _ = FRAME_HEADER.unpack_from(data, offset)
        end = offset + FRAME_HEADER_BYTES + length
        if end > len(data):
            continue
        search.checksums += 1
        search.checksum_bytes += end - offset - 4
        if search.checksums > TAIL_CHECKSUMS_MAX or (
            search.checksum_bytes > TAIL_CHECKSUM_BYTES_MAX
        ):
            search.gave_up = True
            return False
        if zlib.crc32(view[offset + 4 : end]) == crc:
            return False
    return True


def frame_starts(data: bytes, start: int) -> Iterator[int]:
    """Every offset from ``start`` on where ``decode_frames`` could accept a frame: its count
    field is 1 (the body is the record), or it is the count of the MessagePack array the body
    begins with (fixarray, array16 or array32). Each kind is found with ``bytes.find``."""
    count_at = FRAME_HEADER_BYTES - COUNT.size
    yield from found_at(data, COUNT.pack(1), start + count_at, count_at)
    for count in range(2, 16):
        pattern = COUNT.pack(count) + bytes([FIXARRAY | count])
        yield from found_at(data, pattern, start + count_at, count_at)
    for offset in found_at(data, b"\0\0" + ARRAY16, start + count_at + 2, count_at + 2):
        if array_count(data, offset, BIG_U16) >= 2:
            yield offset
    for offset in found_at(data, ARRAY32, start + FRAME_HEADER_BYTES, FRAME_HEADER_BYTES):
        if array_count(data, offset, BIG_U32) >= 2:
            yield offset


def found_at(data: bytes, pattern: bytes, start: int, back: int) -> Iterator[int]:
    """``position - back`` for each position from ``start`` on where ``pattern`` occurs."""
    position = data.find(pattern, start)
    while position >= 0:
        yield position - back
        position = data.find(pattern, position + 1)


def array_count(data: bytes, offset: int, size: struct.Struct) -> int:
    """The frame's count when the array header of its body says the same, else 0."""
    body = offset + FRAME_HEADER_BYTES
    if body + 1 + size.size > len(data):
        return 0
    (count,) = COUNT.unpack_from(data, offset + FRAME_HEADER_BYTES - COUNT.size)
    (declared,) = size.unpack_from(data, body + 1)
    return count if count == declared else 0


@dataclass(frozen=True)
class SnapshotHeader:
    kind: SnapshotKind
    seq: int
    length: int
    payload_crc: int


def encode_snapshot_header(kind: SnapshotKind, seq: int, payload: bytes) -> bytes:
    """The header to write before ``payload`` (written separately: no copy of a big blob)."""
    head = SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, kind, seq, len(payload), zlib.crc32(payload))
    return head + CRC.pack(zlib.crc32(head))


def encode_snapshot(kind: SnapshotKind, seq: int, payload: bytes) -> bytes:
    return encode_snapshot_header(kind, seq, payload) + payload


def decode_snapshot_header(data: bytes) -> SnapshotHeader | str:
    """The header of a snapshot file, or why it is not one."""
    if len(data) < SNAPSHOT_HEADER_BYTES:
        return f"header is {len(data)} bytes, expected {SNAPSHOT_HEADER_BYTES}"
    magic, kind, seq, length, payload_crc = SNAPSHOT_HEADER.unpack_from(data)
    (crc,) = CRC.unpack_from(data, SNAPSHOT_HEADER.size)
    if magic != SNAPSHOT_MAGIC or crc != zlib.crc32(data[: SNAPSHOT_HEADER.size]):
        return "bad snapshot header"
    if kind not in (SnapshotKind.COMPACTION, SnapshotKind.INSTALLED):
        return f"unknown snapshot kind {kind}"
    return SnapshotHeader(SnapshotKind(kind), seq, length, payload_crc)


def snapshot_payload_problem(payload: bytes, header: SnapshotHeader) -> str | None:
    """Why the bytes after the header are not the payload it describes (None: they are)."""
    if len(payload) != header.length:
        return f"payload is {len(payload)} bytes, header says {header.length}"
    if zlib.crc32(payload) != header.payload_crc:
        return "checksum mismatch"
    return None
