"""Recovery: rebuild (snapshot, records) from a data directory, or refuse with one line.

The rules, in order (rule 6 is checked before the others):

1. Leftover ``*.tmp`` files are from a write that never reached its rename: deleted.
2. The base is the newest snapshot whose header and payload checksums hold. When the newest is
   damaged, an older snapshot may stand in for it only if the damaged one is a ``COMPACTION``
   snapshot (its header, which has its own checksum, says so) and every segment from the older
   snapshot up to the damaged one is still there: replaying them rebuilds the same state. The
   damaged file is renamed ``*.corrupt`` (kept as evidence, never read again). A damaged
   ``INSTALLED`` snapshot (from a state transfer) or one whose header is unreadable has no
   stand-in: older files belong to a history it replaced. No snapshot at all is the empty base
   at segment 1.
3. The segments from the base on must be numbered base, base+1, ... with no gap; and a
   ``COMPACTION`` base ``snap-N`` needs ``wal-N`` (compaction writes it only after that segment
   exists, so its absence is a deleted last segment, not a crash). An ``INSTALLED`` base may lack
   it: a crash between writing it and creating its segment leaves that, with nothing appended.
4. Each segment's header must name its own sequence; its records are read until the first one
   that is incomplete or fails its checksum.
5. That first damage is a *torn tail* when it is in the last segment and nothing valid follows
   it (``format.is_torn_tail``): a crash cut the last write. The segment is truncated there and
   fsynced, and the cut is reported in ``Recovered.truncated_bytes``. Anything else is damage
   in the middle: ``StorageCorrupt`` naming the file and offset.
6. Before rule 1 changes anything: a segment or snapshot whose magic names another format
   version (``format.other_version``: a newer release wrote it, and this one was started on
   the directory after a downgrade) refuses recovery with ``StorageFormatVersion`` naming the
   file and both versions, with ``repair`` too. It is not damage: the release that wrote it
   reads it, so nothing in the directory is cut, renamed or deleted, that file or any other.

With ``repair=True`` rules 2, 3 and 5 do not refuse (rule 6 still does): recovery keeps the
longest valid prefix of the history (truncate at the first damage, delete every later segment,
fall back past a damaged snapshot, or start empty when nothing trustworthy is left) and reports
each discard as one line in ``Recovered.events`` and the bytes in ``Recovered.discarded_bytes``.
Before a repair throws away records that may have been acknowledged (anything but a torn tail,
or the damaged snapshot an older one rebuilds), it durably writes the mark ``REPAIRED`` (empty)
in the directory: the history there is incomplete, and stays so for its owner until it clears
the mark (``DurableLog.clear_repaired_mark``), even if the process dies before it reads
``Recovered``. The owner may keep a note in it (``DurableLog.write_repaired_mark``); a later
lossy repair empties it again. pbkv's server notes there the newest view the incomplete history
recorded, and reports no durable view up to it (runtime/disk.py, protocol.md V12).

Memory: one segment is read at a time (at most ``segment_bytes_max`` plus one batch), but every
record since the base snapshot is returned in one list, so the log since the last compaction
must fit in memory; compaction is what bounds it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from pbkv.storage import files
from pbkv.storage.errors import StorageCorrupt, StorageFormatVersion, os_error
from pbkv.storage.format import (
    HEADER_BYTES_MAX,
    REPAIRED_MARK,
    SEGMENT_HEADER_BYTES,
    SEGMENT_NAME,
    SNAPSHOT_HEADER_BYTES,
    SNAPSHOT_NAME,
    SnapshotKind,
    TailSearch,
    decode_frames,
    decode_snapshot_header,
    is_torn_tail,
    segment_header_problem,
    segment_name,
    segment_other_version,
    snapshot_name,
    snapshot_other_version,
    snapshot_payload_problem,
)

CORRUPT_SUFFIX = ".corrupt"


def is_data_file(name: str) -> bool:
    """A file the storage engine writes in a data directory: its lock, a segment, a snapshot
    or the ``REPAIRED`` mark, also as a temporary file or set aside as corrupt."""
    base = name.removesuffix(files.TEMP_SUFFIX).removesuffix(CORRUPT_SUFFIX)
    if base in (files.LOCK_FILE, REPAIRED_MARK):
        return True
    return bool(SEGMENT_NAME.fullmatch(base) or SNAPSHOT_NAME.fullmatch(base))


@dataclass(frozen=True)
class Recovered:
    """What ``DurableLog.open`` found.

    Attributes:
        snapshot: the newest valid snapshot blob (None: no snapshot, the state starts empty).
        records: every valid record appended after that snapshot, in order.
        truncated_bytes: the torn tail cut off the last segment (0 if none).
        snapshot_path: the file ``snapshot`` came from.
        segment_paths: the segments replayed, in order.
        bytes_read: bytes of snapshot and segments read.
        duration_s: wall time of the recovery.
        events: one line per notable thing done (torn tail cut, fallback, repair discards).
        discarded_bytes: bytes that ``repair`` threw away (0 without repair).
        repaired_mark: the content of the ``REPAIRED`` mark (``b""`` when this recovery wrote
            it): a repair, this one or an earlier, lost records that may have been
            acknowledged. None: no mark, no such loss.
    """

    snapshot: bytes | None
    records: list[bytes]
    truncated_bytes: int = 0
    snapshot_path: Path | None = None
    segment_paths: tuple[Path, ...] = ()
    bytes_read: int = 0
    duration_s: float = 0.0
    events: tuple[str, ...] = ()
    discarded_bytes: int = 0
    repaired_mark: bytes | None = None

    def summary(self) -> str:
        """One log line: ``snapshot=... records=N segments=N bytes_read=N ...``, ending with
        ``history=incomplete`` while the directory carries the ``REPAIRED`` mark."""
        snapshot = self.snapshot_path.name if self.snapshot_path else "none"
        incomplete = "" if self.repaired_mark is None else " history=incomplete"
        return (
            f"snapshot={snapshot} records={len(self.records)} "
            f"segments={len(self.segment_paths)} bytes_read={self.bytes_read} "
            f"truncated_bytes={self.truncated_bytes} discarded_bytes={self.discarded_bytes} "
            f"duration_s={self.duration_s:.3f}{incomplete}"
        )


@dataclass
class Layout:
    """The files of a data directory after recovery, for the log to continue from."""

    directory: Path
    segments: dict[int, int] = field(default_factory=dict)  # seq -> bytes
    snapshots: dict[int, int] = field(default_factory=dict)  # seq -> bytes
    base_seq: int = 1
    base_kind: SnapshotKind | None = None
    last_segment_synced: bool = False  # truncated (and so fsynced) during recovery
    repaired_mark: bytes | None = None  # the REPAIRED mark's content (None: no mark)
    temporary: list[Path] = field(default_factory=list)  # leftover *.tmp files (rule 1)


@dataclass
class Progress:
    """What recovery gathers on its way."""

    repair: bool
    write_bytes_max: int
    records: list[bytes] = field(default_factory=list)
    segment_paths: list[Path] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    bytes_read: int = 0
    truncated_bytes: int = 0
    discarded_bytes: int = 0

    marked: bool = False  # this recovery wrote the REPAIRED mark

    def discard(self, path: Path, size: int, why: str) -> None:
        files.remove(path)
        self.discarded_bytes += size
        self.events.append(f"repair deleted {path} ({size} bytes): {why}")


@dataclass(frozen=True)
class Base:
    seq: int
    kind: SnapshotKind | None
    payload: bytes | None
    path: Path | None


def recover(directory: Path, *, repair: bool, write_bytes_max: int) -> tuple[Recovered, Layout]:
    """Read ``directory`` by the rules in the module docstring."""
    started = time.monotonic()
    layout = scan_directory(directory)
    refuse_other_versions(layout)
    for path in layout.temporary:
        files.remove(path)
    progress = Progress(repair, write_bytes_max)
    base = choose_base(layout, progress)
    replay_segments(layout, base, progress)
    files.sync_directory(directory)
    recovered = Recovered(
        snapshot=base.payload,
        records=progress.records,
        truncated_bytes=progress.truncated_bytes,
        snapshot_path=base.path,
        segment_paths=tuple(progress.segment_paths),
        bytes_read=progress.bytes_read,
        duration_s=time.monotonic() - started,
        events=tuple(progress.events),
        discarded_bytes=progress.discarded_bytes,
        repaired_mark=layout.repaired_mark,
    )
    return recovered, layout


def scan_directory(directory: Path) -> Layout:
    """Every segment and snapshot by sequence, with sizes, and the temp files (not deleted
    yet: rule 6 comes first)."""
    layout = Layout(directory)
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        raise os_error("list data directory", directory, error) from None
    for path in entries:
        if path.name.endswith(files.TEMP_SUFFIX):
            layout.temporary.append(path)
        elif match := SEGMENT_NAME.fullmatch(path.name):
            layout.segments[int(match[1])] = files.file_size(path)
        elif match := SNAPSHOT_NAME.fullmatch(path.name):
            layout.snapshots[int(match[1])] = files.file_size(path)
        elif path.name == REPAIRED_MARK:
            layout.repaired_mark = files.read_file(path)
    return layout


def refuse_other_versions(layout: Layout) -> None:
    """Rule 6: raise ``StorageFormatVersion`` for the first segment or snapshot written by
    another format version, before anything in the directory is changed."""
    kinds = (
        (layout.segments, segment_name, segment_other_version),
        (layout.snapshots, snapshot_name, snapshot_other_version),
    )
    for found, name, other_version in kinds:
        for seq in sorted(found):
            path = layout.directory / name(seq)
            version = other_version(files.read_head(path, HEADER_BYTES_MAX))
            if version is not None:
                raise StorageFormatVersion(path, version)


def mark_loss(layout: Layout, progress: Progress, why: str) -> None:
    """Before a repair discards what may have been acknowledged: write the empty mark, once."""
    if progress.marked:
        return
    path = layout.directory / REPAIRED_MARK
    files.atomic_write(path, b"")
    progress.marked, layout.repaired_mark = True, b""
    progress.events.append(
        f"repair loses records that may have been acknowledged ({why}): marked {path}"
    )


def snapshot_path(layout: Layout, seq: int) -> Path:
    return layout.directory / snapshot_name(seq)


def read_snapshot(path: Path, seq: int) -> tuple[bytes | None, SnapshotKind | None, str | None]:
    """(payload, kind, problem): payload None when damaged; kind None when the header is."""
    try:
        with path.open("rb") as file:
            header = decode_snapshot_header(file.read(SNAPSHOT_HEADER_BYTES))
            payload = file.read() if not isinstance(header, str) else b""
    except OSError as error:
        raise os_error("read", path, error) from None
    if isinstance(header, str):
        return None, None, header
    if header.seq != seq:
        return None, None, f"header says snapshot {header.seq}"
    problem = snapshot_payload_problem(payload, header)
    if problem is not None:
        return None, header.kind, problem
    return payload, header.kind, None


def choose_base(layout: Layout, progress: Progress) -> Base:
    """The newest valid snapshot, or a permitted fallback (rule 2)."""
    damaged: list[tuple[int, str]] = []
    for seq in sorted(layout.snapshots, reverse=True):
        path = snapshot_path(layout, seq)
        payload, kind, problem = read_snapshot(path, seq)
        progress.bytes_read += layout.snapshots[seq]
        if problem is None:
            return accept_fallback(layout, progress, Base(seq, kind, payload, path), damaged)
        damaged.append((seq, problem))
        if kind is not SnapshotKind.COMPACTION:
            return start_empty(layout, progress, damaged, "it may not be replaced by older state")
    return accept_fallback(layout, progress, Base(1, None, None, None), damaged)


def accept_fallback(
    layout: Layout, progress: Progress, base: Base, damaged: list[tuple[int, str]]
) -> Base:
    """``base`` stands in for the damaged snapshots above it, if their segments are all there."""
    if damaged:
        newest, problem = damaged[0]
        needed = range(base.seq, newest + 1)
        if any(seq not in layout.segments for seq in needed):
            why = f"{problem}; the segments to rebuild it are gone"
            if not progress.repair:
                raise StorageCorrupt(snapshot_path(layout, newest), 0, why)
            mark_loss(layout, progress, f"{snapshot_name(newest)}: {why}")
        for seq, reason in damaged:
            quarantine(layout, seq, reason, progress)
    layout.base_seq, layout.base_kind = base.seq, base.kind
    return base


def start_empty(
    layout: Layout, progress: Progress, damaged: list[tuple[int, str]], why: str
) -> Base:
    """No trustworthy base: refuse, or (repair) delete everything and start from nothing."""
    seq, problem = damaged[0]
    if not progress.repair:
        raise StorageCorrupt(snapshot_path(layout, seq), 0, f"{problem}; {why}")
    mark_loss(layout, progress, f"{snapshot_name(seq)}: {problem}; {why}")
    for damaged_seq, reason in damaged:
        quarantine(layout, damaged_seq, reason, progress)
    for older in sorted(layout.snapshots):
        progress.discard(snapshot_path(layout, older), layout.snapshots.pop(older), "no base")
    for segment in sorted(layout.segments):
        path = layout.directory / segment_name(segment)
        progress.discard(path, layout.segments.pop(segment), "no snapshot to replay it onto")
    layout.base_seq, layout.base_kind = 1, None
    return Base(1, None, None, None)


def quarantine(layout: Layout, seq: int, problem: str, progress: Progress) -> None:
    """Rename a damaged snapshot out of the way (kept for inspection, never read again)."""
    path = snapshot_path(layout, seq)
    size = layout.snapshots.pop(seq)
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        path.replace(target)
    except OSError as error:
        raise os_error("rename", path, error) from None
    progress.discarded_bytes += size if progress.repair else 0
    progress.events.append(f"snapshot {path} is damaged ({problem}): renamed to {target.name}")


def replay_segments(layout: Layout, base: Base, progress: Progress) -> None:
    """Rules 3-5 over the segments at or above the base."""
    seqs = sorted(seq for seq in layout.segments if seq >= base.seq)
    if not seqs and base.kind is SnapshotKind.COMPACTION and base.path is not None:
        missing = layout.directory / segment_name(base.seq)
        why = f"segment is missing ({base.path.name} was written after it)"
        damage_at(layout, progress, [], missing, 0, why)
        return
    for index, seq in enumerate(seqs):
        expected = base.seq + index
        if seq != expected:
            missing = layout.directory / segment_name(expected)
            damage_at(layout, progress, seqs[index:], missing, 0, "segment is missing")
            return
        if not replay_segment(layout, progress, seqs[index:]):
            return


def replay_segment(layout: Layout, progress: Progress, remaining: list[int]) -> bool:
    """Replay ``remaining[0]``; False when damage ended the replay."""
    seq = remaining[0]
    path = layout.directory / segment_name(seq)
    data = files.read_file(path)
    progress.bytes_read += len(data)
    progress.segment_paths.append(path)
    problem = segment_header_problem(data, seq)
    if problem is not None:
        damage_at(layout, progress, remaining, path, 0, problem)
        return False
    decoded = decode_frames(data, SEGMENT_HEADER_BYTES)
    progress.records.extend(decoded.records)
    damage = decoded.damage
    if damage is None:
        return True
    last = len(remaining) == 1
    search = TailSearch()
    if last and is_torn_tail(data, damage, progress.write_bytes_max, search):
        cut = len(data) - damage.offset
        files.truncate(path, damage.offset)
        layout.segments[seq] = damage.offset
        layout.last_segment_synced = True
        progress.truncated_bytes += cut
        progress.events.append(
            f"torn tail of {path} truncated at offset {damage.offset} ({cut} bytes: "
            f"{damage.reason})"
        )
        return True
    reason = damage.reason
    if search.gave_up:
        reason += (
            f"; more frames could start after it than recovery checks ({search.checksums}), "
            "so it is not taken for a torn tail"
        )
    damage_at(layout, progress, remaining, path, damage.offset, reason)
    return False


def damage_at(
    layout: Layout, progress: Progress, remaining: list[int], path: Path, offset: int, reason: str
) -> None:
    """Refuse; or (repair) truncate ``path`` at ``offset`` and delete every later segment of
    ``remaining`` (which starts with ``path``'s, unless ``path`` is missing)."""
    if not progress.repair:
        raise StorageCorrupt(path, offset, reason)
    mark_loss(layout, progress, f"{path.name}: {reason}")
    first = remaining[0] if remaining else None
    later = remaining
    if first is not None and path.exists() and offset >= SEGMENT_HEADER_BYTES:
        size = layout.segments[first]
        files.truncate(path, offset)
        layout.segments[first] = offset
        layout.last_segment_synced = True
        progress.discarded_bytes += size - offset
        progress.events.append(
            f"repair truncated {path} at offset {offset} ({size - offset} bytes): {reason}"
        )
        later = remaining[1:]
    for seq in later:
        why = reason if seq == first else f"follows damage in {path.name}"
        progress.discard(layout.directory / segment_name(seq), layout.segments.pop(seq), why)
