"""The bytes on disk: record framing, segment and snapshot headers, file names. No I/O here.

A data directory holds numbered log segments ``wal-<seq>.log`` and snapshots
``snap-<seq>.snap``. Sequence numbers only grow. A snapshot ``snap-N`` holds the state produced
by every record of every segment below N; the records of segments N, N+1, ... follow it.

Segment file::

    header  magic "PBKVWAL1" (8) | seq u64 | crc32 of the previous 16 bytes u32      (20 bytes)
    record  crc32 u32 | length u32 | payload (length bytes)                          (repeated)

A record's checksum covers its length field and its payload, so a damaged length is caught too.
Checksums are ``zlib.crc32`` (stdlib, table-driven C, no dependency): records are ~100 bytes,
where the call costs more than the arithmetic, and the fsync dwarfs both (docs/design.md has the
figures). CRC32C would add hardware speed on big payloads only.

Snapshot file::

    magic "PBKVSNP1" (8) | kind u8 | 3 pad | seq u64 | length u64 | payload crc32 u32
    | header crc32 u32 (over the previous 32 bytes) | payload

``kind`` says where the snapshot came from. ``COMPACTION`` summarises the segments below it,
so when it is damaged the older snapshot plus those segments rebuild the same state.
``INSTALLED`` came from a state transfer and replaces history: nothing older may stand in for
it. The header has its own checksum so the kind is trusted even when the payload is damaged.

Decoding a segment stops at the first record that is incomplete or fails its checksum and
reports it as a ``Damage``. Whether that is a torn tail (a crash cut the last write: truncate)
or damage in the middle (refuse) is decided by ``is_torn_tail``: a torn tail has no valid record
anywhere after it. The search for one is bounded by the largest single write
(``write_bytes_max``); a longer undecodable tail is refused unless it is all zero bytes.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

SEGMENT_MAGIC: Final = b"PBKVWAL1"
SNAPSHOT_MAGIC: Final = b"PBKVSNP1"
SEGMENT_HEADER: Final = struct.Struct("<8sQ")
SEGMENT_HEADER_BYTES: Final = SEGMENT_HEADER.size + 4
RECORD_HEADER: Final = struct.Struct("<II")
RECORD_HEADER_BYTES: Final = RECORD_HEADER.size
LENGTH: Final = struct.Struct("<I")
CRC: Final = struct.Struct("<I")
SNAPSHOT_HEADER: Final = struct.Struct("<8sB3xQQI")
SNAPSHOT_HEADER_BYTES: Final = SNAPSHOT_HEADER.size + 4
RECORD_BYTES_MAX: Final = 0xFFFF_FFFF  # the length field is a u32

SEGMENT_NAME: Final = re.compile(r"wal-(\d+)\.log")
SNAPSHOT_NAME: Final = re.compile(r"snap-(\d+)\.snap")


class SnapshotKind(IntEnum):
    """Where a snapshot came from (see the module docstring)."""

    COMPACTION = 1
    INSTALLED = 2


def segment_name(seq: int) -> str:
    return f"wal-{seq:010d}.log"


def snapshot_name(seq: int) -> str:
    return f"snap-{seq:010d}.snap"


def encode_record(payload: bytes) -> bytes:
    """One framed record: checksum, length, payload."""
    if len(payload) > RECORD_BYTES_MAX:
        raise ValueError(f"record of {len(payload)} bytes is over {RECORD_BYTES_MAX}")
    body = LENGTH.pack(len(payload)) + payload
    return CRC.pack(zlib.crc32(body)) + body


def encode_records(payloads: Sequence[bytes]) -> bytes:
    """Framed records back to back, ready for one write."""
    return b"".join([encode_record(payload) for payload in payloads])


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


@dataclass(frozen=True)
class Damage:
    """The first record at ``offset`` that is incomplete or fails its checksum."""

    offset: int
    reason: str


@dataclass(frozen=True)
class Decoded:
    """The valid records of a segment up to ``end`` (its length if ``damage`` is None)."""

    records: list[bytes]
    end: int
    damage: Damage | None


def decode_records(data: bytes, start: int) -> Decoded:
    """Every valid record from ``start`` on, stopping at the first damage.

    The hot loop of recovery (a million records per restart), so it is written flat: one
    header unpack, one checksum and one slice per record; ``record_problem`` says what failed.
    """
    records: list[bytes] = []
    append, unpack, crc32 = records.append, RECORD_HEADER.unpack_from, zlib.crc32
    offset, size = start, len(data)
    view = memoryview(data)
    while offset + RECORD_HEADER_BYTES <= size:
        crc, length = unpack(data, offset)
        end = offset + RECORD_HEADER_BYTES + length
        if end > size or crc32(view[offset + 4 : end]) != crc:
            break
        append(data[offset + RECORD_HEADER_BYTES : end])
        offset = end
    if offset == size:
        return Decoded(records, offset, None)
    problem = record_problem(view, offset, size) or "checksum mismatch"
    return Decoded(records, offset, Damage(offset, problem))


def record_problem(view: memoryview, offset: int, size: int) -> str | None:
    """Why no valid record starts at ``offset`` (None: one does)."""
    if offset + RECORD_HEADER_BYTES > size:
        return f"incomplete record header ({size - offset} of {RECORD_HEADER_BYTES} bytes)"
    crc, length = RECORD_HEADER.unpack_from(view, offset)
    end = offset + RECORD_HEADER_BYTES + length
    if end > size:
        return f"incomplete record ({size - offset - RECORD_HEADER_BYTES} of {length} bytes)"
    if zlib.crc32(view[offset + 4 : end]) != crc:
        return "checksum mismatch"
    return None


def is_torn_tail(data: bytes, damage: Damage, write_bytes_max: int) -> bool:
    """True when nothing valid follows the damage, so a crash during the last write explains it.

    All-zero remainders (a file system that extended the file before writing the data) are torn
    at any length; otherwise every offset up to ``write_bytes_max`` past the damage is tried.
    """
    remainder = len(data) - damage.offset
    if not data[damage.offset :].strip(b"\0"):
        return True
    if remainder > write_bytes_max:
        return False
    view = memoryview(data)
    size = len(data)
    for offset in range(damage.offset + 1, size - RECORD_HEADER_BYTES + 1):
        crc, length = RECORD_HEADER.unpack_from(view, offset)
        end = offset + RECORD_HEADER_BYTES + length
        if end <= size and zlib.crc32(view[offset + 4 : end]) == crc:
            return False
    return True


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
