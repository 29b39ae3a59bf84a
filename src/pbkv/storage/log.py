"""``DurableLog``: an append-only write-ahead log of opaque records, plus snapshots.

Modelled on Redis's AOF (the ``appendfsync`` vocabulary) and etcd's WAL (checksummed records
in numbered segments, snapshots that let old segments go). The caller (the replica's host)
hands in bytes it encoded itself; the log never looks inside them.

Writing. ``append(records)`` encodes the batch as one frame and writes it with one ``write``
(a batch over ``write_bytes_max`` is cut into several frames and writes; recovery keeps the
complete ones). The fsync policy decides
when it becomes durable:

- ``always``: ``append`` returns after one ``fdatasync`` — group commit, one per call;
- ``everysec``: ``sync_if_due(now_s)``, called from a timer, fsyncs when a second has passed;
- ``no``: the operating system decides; we fsync only on rotation and ``close``.

A segment is closed when it would pass ``segment_bytes_max``: it is fsynced *before* the next
one is created (whatever the policy), so a crash can only ever tear the last segment. New
segments and snapshots are created atomically (temp, fsync, rename, fsync directory).

Failures. A failed write (ENOSPC, EIO) truncates the segment back to where the batch started
and raises ``StorageError``: nothing of the batch survives, nothing before it is touched, and
the log stays usable once space is freed. A failed fsync is different: the kernel may already
have dropped the dirty pages, so retrying could report success for lost data (PostgreSQL's
"fsyncgate"). The log then refuses every later call; the process must reopen it, and recovery
will read what really is on disk.

Compaction without stopping service. ``begin_compaction()`` (main thread) rotates to a new
segment N and returns a mark; the caller serializes its state as of that moment, possibly in a
worker thread, and calls ``finish_compaction(mark, blob)`` (any thread), which writes
``snap-N`` and deletes what it made obsolete. Appends continue meanwhile into segment N and
later. Two locks: ``_lock`` guards the file bookkeeping and the current segment and is held by
``append`` and, briefly, by ``finish_compaction`` (never across a snapshot write);
``_compaction_lock`` serializes ``finish_compaction`` and ``install_snapshot``. Lock order:
``_compaction_lock`` then ``_lock``. ``sync()`` may run on a worker thread too: it fsyncs a
duplicate of the descriptor outside ``_lock``, so appends do not wait for it.

A repair that lost records that may have been acknowledged leaves the mark ``REPAIRED`` in the
directory (recovery.py); the owner reads it in ``Recovered.repaired_mark``, may keep a note in it
and removes it when its history is whole again.

Retention (the disk bound): the newest snapshot, the one before it, and the segments from that
older one on, so a damaged newest snapshot can be rebuilt from the older one plus the segments.
After ``install_snapshot`` (a state transfer) only the new snapshot is kept: older files
belong to a replaced history.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from pbkv.storage import files
from pbkv.storage.errors import StorageError, os_error
from pbkv.storage.format import (
    FRAME_HEADER_BYTES,
    REPAIRED_MARK,
    SEGMENT_HEADER_BYTES,
    SnapshotKind,
    encode_frames,
    encode_segment_header,
    encode_snapshot_header,
    segment_name,
    snapshot_name,
)
from pbkv.storage.recovery import Layout, Recovered, recover

FsyncPolicy = Literal["always", "everysec", "no"]
FSYNC_POLICIES: Final[tuple[str, ...]] = get_args(FsyncPolicy)
SEGMENT_BYTES_MAX_DEFAULT: Final = 64 * 1024 * 1024
WRITE_BYTES_MAX_DEFAULT: Final = 4 * 1024 * 1024
EVERYSEC_INTERVAL_S: Final = 1.0


@dataclass(frozen=True)
class CompactionMark:
    """Records appended before ``begin_compaction`` returned this are in segments below
    ``seq``; the snapshot passed to ``finish_compaction`` must cover exactly those."""

    seq: int
    generation: int


class DurableLog:
    """The write-ahead log of one data directory. Open it with ``DurableLog.open``."""

    def __init__(
        self,
        layout: Layout,
        fsync: FsyncPolicy,
        lock: files.DirectoryLock,
        segment_bytes_max: int,
        write_bytes_max: int,
    ) -> None:
        self._directory = layout.directory
        self._fsync: FsyncPolicy = fsync
        self._directory_lock = lock
        self._segment_bytes_max = segment_bytes_max
        self._write_bytes_max = write_bytes_max
        self._lock = threading.Lock()
        self._compaction_lock = threading.Lock()
        self._segments = dict(layout.segments)
        self._snapshots = dict(layout.snapshots)
        self._newest_kind = layout.base_kind
        self._generation = 0
        self._written_bytes_total = 0
        self._synced_bytes_total = 0
        self._syncs_total = 0
        self._last_due_s: float | None = None
        self._failed: str | None = None
        self._closed = False
        self._fd = -1
        self._seq = 0
        self._path_cache: tuple[int, Path] = (-1, self._directory)
        self._drop(self._retention())
        self._start_segment(layout)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        fsync: FsyncPolicy,
        *,
        repair: bool = False,
        segment_bytes_max: int = SEGMENT_BYTES_MAX_DEFAULT,
        write_bytes_max: int = WRITE_BYTES_MAX_DEFAULT,
    ) -> tuple[DurableLog, Recovered]:
        """Lock ``directory`` (created if missing), recover it, and open it for appending.

        Args:
            directory: the data directory; one process at a time.
            fsync: ``always``, ``everysec`` or ``no`` (see the module docstring).
            repair: keep the longest valid prefix instead of refusing damage in the middle.
            segment_bytes_max: a segment is closed when the next batch would pass this.
            write_bytes_max: the largest single write, so the largest record (less a 12-byte
                header); also how far past damage recovery looks for valid data before
                calling it a torn tail.

        Returns:
            The open log and what recovery found.

        Raises:
            StorageLocked: another process holds the directory.
            StorageCorrupt: damage that is not a torn tail (and ``repair`` is False).
            StorageError: the file system failed (permissions, read-only, I/O error).
        """
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}: {fsync!r}")
        if segment_bytes_max <= SEGMENT_HEADER_BYTES or write_bytes_max <= 0:
            raise ValueError("segment_bytes_max and write_bytes_max must be positive sizes")
        path = Path(directory)
        lock = files.DirectoryLock(path)
        try:
            recovered, layout = recover(path, repair=repair, write_bytes_max=write_bytes_max)
            log = cls(layout, fsync, lock, segment_bytes_max, write_bytes_max)
        except BaseException:
            lock.release()
            raise
        return log, recovered

    # -- appending ---------------------------------------------------------------------------

    def append(self, records: Sequence[bytes], *, sync: bool = True) -> None:
        """Append one batch; with ``always`` it is durable when this returns.

        Args:
            records: the batch, written as one frame with one write.
            sync: False lets an ``always`` log skip this batch's fsync (the core's
                ``Persist.sync`` is False for a batch of reads): the next fsync covers it.

        Raises:
            StorageError: the write or fsync failed; no record of this batch will be recovered
                after a failed write (after a failed fsync, the log must be reopened).
            ValueError: a record is over ``write_bytes_max`` less a frame header (nothing is
                written): every frame fits one write, so a torn one is always recognized.
        """
        if not records:
            return
        largest = max(len(record) for record in records)
        if largest + FRAME_HEADER_BYTES > self._write_bytes_max:
            raise ValueError(
                f"a record of {largest} bytes is over write_bytes_max ({self._write_bytes_max}) "
                f"less the {FRAME_HEADER_BYTES}-byte frame header"
            )
        frames = encode_frames(records, self._write_bytes_max)
        size = sum(len(frame) for frame in frames)
        with self._lock:
            self._check_usable()
            used = self._segments[self._seq]
            if used > SEGMENT_HEADER_BYTES and used + size > self._segment_bytes_max:
                self._rotate()
            self._write(frames, size)
            if self._fsync == "always" and sync:
                self._sync_current()

    def _write(self, frames: list[bytes], size: int) -> None:
        """Write ``frames`` to the current segment, or leave it exactly as it was and raise."""
        before = self._segments[self._seq]
        path = self._segment_path(self._seq)
        try:
            for frame in frames:
                files.write_all(self._fd, frame, path)
        except StorageError:
            try:
                os.ftruncate(self._fd, before)
            except OSError as error:
                self._failed = f"could not undo a failed write: {os_error('truncate', path, error)}"
            raise
        self._segments[self._seq] = before + size
        self._written_bytes_total += size

    def _sync_current(self) -> None:
        try:
            files.sync_data(self._fd, self._segment_path(self._seq))
        except StorageError as error:
            self._failed = str(error)
            raise
        self._syncs_total += 1
        self._synced_bytes_total = self._written_bytes_total

    def sync(self) -> None:
        """Make every appended record durable now. Safe from a worker thread: appends go on
        while the fsync runs."""
        with self._lock:
            self._check_usable()
            if self._synced_bytes_total == self._written_bytes_total:
                return
            target = self._written_bytes_total
            path = self._segment_path(self._seq)
            try:
                fd = os.dup(self._fd)
            except OSError as error:
                raise os_error("duplicate descriptor of", path, error) from None
        try:
            files.sync_data(fd, path)
        except StorageError as error:
            with self._lock:
                self._failed = str(error)
            raise
        finally:
            os.close(fd)
        with self._lock:
            self._syncs_total += 1
            self._synced_bytes_total = max(self._synced_bytes_total, target)

    def sync_if_due(self, now_s: float) -> None:
        """With ``everysec``: fsync if unsynced records exist and a second has passed since the
        last time this synced. ``now_s`` is any monotonic clock, the same one on every call."""
        if self._fsync != "everysec":
            return
        if self._last_due_s is not None and now_s - self._last_due_s < EVERYSEC_INTERVAL_S:
            return
        if self.unsynced_bytes == 0:
            return
        self._last_due_s = now_s
        self.sync()

    # -- segments ----------------------------------------------------------------------------

    def _segment_path(self, seq: int) -> Path:
        """The path of segment ``seq``; the last one asked for is kept, because every append
        names the current segment (for its error messages) and building a ``Path`` costs more
        than the rest of a small append. One tuple, so a worker thread never sees a torn pair."""
        cached_seq, cached_path = self._path_cache
        if cached_seq == seq:
            return cached_path
        path = self._directory / segment_name(seq)
        self._path_cache = (seq, path)
        return path

    def _start_segment(self, layout: Layout) -> None:
        """Continue the last replayed segment, or create the first one at the base."""
        tail = [seq for seq in self._segments if seq >= layout.base_seq]
        if not tail:
            self._create_segment(layout.base_seq)
            return
        seq = max(tail)
        path = self._segment_path(seq)
        fd = files.open_append(path)
        try:
            if not layout.last_segment_synced:
                files.sync_data(fd, path)  # a crashed process's writes may be in memory only
        except StorageError:
            os.close(fd)
            raise
        self._fd, self._seq = fd, seq
        if self._segments[seq] >= self._segment_bytes_max:
            self._rotate()

    def _create_segment(self, seq: int) -> None:
        """Create ``wal-<seq>`` durably and make it the current segment."""
        path = self._segment_path(seq)
        files.atomic_write(path, encode_segment_header(seq))
        fd = files.open_append(path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._seq = fd, seq
        self._segments[seq] = SEGMENT_HEADER_BYTES

    def _rotate(self) -> None:
        """Close the current segment durably, then start the next (so only the last can tear)."""
        self._sync_current()
        self._create_segment(self._seq + 1)

    # -- snapshots and compaction ----------------------------------------------------------

    def begin_compaction(self) -> CompactionMark:
        """Start a new segment; the returned mark separates what the snapshot must cover."""
        with self._lock:
            self._check_usable()
            if self._segments[self._seq] > SEGMENT_HEADER_BYTES:
                self._rotate()
            return CompactionMark(self._seq, self._generation)

    def finish_compaction(self, mark: CompactionMark, snapshot: bytes) -> bool:
        """Durably write ``snapshot`` (the state of every record before ``mark``) and delete
        what it made obsolete. Safe from a worker thread while ``append`` goes on.

        Returns:
            False when the mark is stale (an install or a later compaction superseded it):
            nothing was written.
        """
        with self._compaction_lock:
            with self._lock:
                self._check_usable()
                newest = max(self._snapshots, default=0)
                if mark.generation != self._generation or mark.seq <= newest:
                    return False
            header = encode_snapshot_header(SnapshotKind.COMPACTION, mark.seq, snapshot)
            files.atomic_write(self._directory / snapshot_name(mark.seq), header, snapshot)
            with self._lock:
                self._snapshots[mark.seq] = len(header) + len(snapshot)
                self._newest_kind = SnapshotKind.COMPACTION
                obsolete = self._retention()
            self._drop(obsolete)
        return True

    def install_snapshot(self, snapshot: bytes) -> None:
        """Replace everything with ``snapshot`` (after a full state transfer): the records
        appended so far are forgotten; later appends follow the snapshot."""
        with self._compaction_lock, self._lock:
            self._check_usable()
            seq = max(self._seq, *self._snapshots, 0) + 1
            header = encode_snapshot_header(SnapshotKind.INSTALLED, seq, snapshot)
            files.atomic_write(self._directory / snapshot_name(seq), header, snapshot)
            try:
                self._create_segment(seq)
            except StorageError as error:
                self._failed = f"snapshot installed but no segment follows it: {error}"
                raise
            self._generation += 1
            self._snapshots[seq] = len(header) + len(snapshot)
            self._newest_kind = SnapshotKind.INSTALLED
            self._synced_bytes_total = self._written_bytes_total
            obsolete = self._retention()
        self._drop(obsolete)

    def _retention(self) -> list[Path]:
        """Files no recovery will need (see the module docstring); removed from bookkeeping."""
        if not self._snapshots:
            return []
        order = sorted(self._snapshots)
        if self._newest_kind is not SnapshotKind.COMPACTION:
            keep_from = order[-1]  # an installed snapshot: nothing older is of its history
        elif len(order) >= 2:
            keep_from = order[-2]  # the fallback snapshot and the segments that follow it
        else:
            return []  # the first compaction: segment 1 on is the fallback
        paths = [self._directory / snapshot_name(seq) for seq in order if seq < keep_from]
        paths += [self._segment_path(seq) for seq in sorted(self._segments) if seq < keep_from]
        for seq in order:
            if seq < keep_from:
                del self._snapshots[seq]
        for seq in list(self._segments):
            if seq < keep_from:
                del self._segments[seq]
        return paths

    def _drop(self, paths: list[Path]) -> None:
        for path in paths:
            files.remove(path)
        if paths:
            files.sync_directory(self._directory)

    # -- the mark of a lossy repair ----------------------------------------------------------

    def write_repaired_mark(self, note: bytes) -> None:
        """Keep ``note`` in the ``REPAIRED`` mark (``Recovered.repaired_mark`` reads it back)
        until a later lossy repair empties it or ``clear_repaired_mark`` removes it."""
        with self._lock:
            self._check_usable()
            files.atomic_write(self._directory / REPAIRED_MARK, note)

    def clear_repaired_mark(self) -> None:
        """Remove the ``REPAIRED`` mark durably: the owner knows its history is whole again."""
        with self._lock:
            self._check_usable()
            files.remove(self._directory / REPAIRED_MARK)
            files.sync_directory(self._directory)

    # -- life cycle and figures ------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"log {self._directory} is closed")
        if self._failed is not None:
            raise StorageError(f"log {self._directory} must be reopened: {self._failed}")

    def close(self) -> None:
        """Fsync what is unsynced (every policy: a clean stop loses nothing), then unlock.
        Waits for a ``finish_compaction`` running in another thread."""
        with self._compaction_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._failed is None and self._synced_bytes_total < self._written_bytes_total:
                    self._sync_current()
            finally:
                os.close(self._fd)
                self._directory_lock.release()

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def fsync_policy(self) -> FsyncPolicy:
        return self._fsync

    @property
    def bytes_on_disk(self) -> int:
        """Segments and snapshots, as the log wrote them."""
        with self._lock:
            return sum(self._segments.values()) + sum(self._snapshots.values())

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def snapshot_count(self) -> int:
        return len(self._snapshots)

    @property
    def segment_seq(self) -> int:
        """The sequence number of the segment appends go to."""
        return self._seq

    @property
    def syncs_total(self) -> int:
        """Fsyncs of segment data since open (rotations included)."""
        return self._syncs_total

    @property
    def unsynced_bytes(self) -> int:
        """Bytes appended that a power cut could still lose."""
        return self._written_bytes_total - self._synced_bytes_total

    @property
    def last_sync_s(self) -> float | None:
        """The ``now_s`` of the last ``sync_if_due`` that synced (None: none yet)."""
        return self._last_due_s

    @property
    def failed(self) -> str | None:
        """Why the log refuses further calls (None: it does not)."""
        return self._failed
