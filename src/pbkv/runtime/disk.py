"""A replica's disk in a server process: the core's durable effects on the storage engine.

Theory of operation. The core asks for durability with effects (``Persist`` and
``PersistSnapshot``, D1 in docs/protocol.md); this module carries them out on a ``DurableLog``
(``pbkv.storage``) and rebuilds the replica's state from it at start:

* ``Persist`` becomes one ``append`` of its records (one storage record per ``DurableRecord``,
  encoded with msgspec), the whole batch of a handler in one frame and, with ``--fsync
  always``, one fdatasync: group commit. The host executes it before any later effect of the
  same handler, so no reply or confirmation leaves before the write it answers is durable;
* ``PersistSnapshot`` (an installed state transfer) replaces the log with the snapshot;
* with ``everysec``, a worker thread fsyncs once a second while the loop goes on;
* every fsync the server waits for is timed (``always``: the append's; ``everysec``: the
  worker's); one that takes a quarter of the dead interval or more is logged as
  ``disk_sync_slow`` (at most one line a second), because with ``always`` the process's pings
  wait behind it and the view service may judge a server with such a disk dead (protocol.md
  N6). ``on_sync`` receives each duration (the ``pbkv_disk_sync_seconds`` histogram), and a
  slow-disk fault (``Faults.disk_delay_s``, ``pbkv cluster slow-disk``) lengthens each fsync;
* compaction: once the log since the last snapshot is larger than ``snapshot_after_bytes`` and
  than the last snapshot, the host takes a copy of the replica's state between two handlers
  (``Replica.durable_snapshot``) at a compaction mark; a worker thread encodes and writes it
  while appends go on into the next segment, and the engine drops the segments it replaces.

Recovery decodes the newest valid snapshot and the records after it and replays them through the
core (``RecoveredState.replay``): the same ``execute`` that built the state (P5). A torn tail is
cut by the engine (one log line); damage in the middle refuses to start with the engine's one
line naming the file and offset (``--repair`` keeps the valid prefix). A repair that lost
records (the engine's ``REPAIRED`` mark) may have lost acknowledged writes, so the disk no longer
vouches for the views it recorded (V12): the recovered state reports durable view 0 and the
``storage_recovered`` line says why, on every start until the disk records a newer view
(``distrust_repaired``). Otherwise, after a total outage, the view service could make the
repaired server primary and overwrite an intact member's disk with the shorter history.

Any storage failure while serving is fatal: a replica that cannot make a write durable must not
acknowledge it, and one whose fsync failed cannot know what its disk holds ("fsyncgate"). The
process logs one line and exits with status 70; restarted, it recovers what really is on disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import msgspec

from pbkv.core.durable import (
    DurableRecord,
    LimitsChanged,
    RecoveredState,
    RecoveryError,
    Snapshot,
    holds_nothing,
    limits_to_record,
    repaired_view,
)
from pbkv.core.effects import Persist, PersistSnapshot
from pbkv.core.kv_store import Limits
from pbkv.core.messages import cluster_label
from pbkv.core.replica import Replica
from pbkv.runtime.config import Timing
from pbkv.runtime.faults import Faults
from pbkv.runtime.logging import EventLogger
from pbkv.storage import (
    CompactionMark,
    DurableLog,
    FsyncPolicy,
    Recovered,
    StorageCorrupt,
    StorageError,
)
from pbkv.storage.format import REPAIRED_MARK

SNAPSHOT_AFTER_BYTES_DEFAULT: Final = 64 * 1024 * 1024
EVERYSEC_INTERVAL_S: Final = 1.0
FSYNC_DEFAULT: Final[FsyncPolicy] = "always"
SLOW_SYNC_S_DEFAULT: Final = Timing().slow_sync_s
"""With the default timing; servers pass their own (``Timing.slow_sync_s``)."""
SLOW_SYNC_LOG_INTERVAL_S: Final = 1.0
VIEW_DIGITS_MAX: Final = 20  # a view number below 2**64, in the REPAIRED mark's note
MARK_CLEARED: Final = "the disk recorded a newer view since the repair, with a complete state"


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """How a server keeps its state on disk (``pbkv server --data-dir ...``)."""

    data_dir: str
    fsync: FsyncPolicy = FSYNC_DEFAULT
    repair: bool = False
    snapshot_after_bytes: int = SNAPSHOT_AFTER_BYTES_DEFAULT
    segment_bytes_max: int = 64 * 1024 * 1024


class ReplicaDisk:
    """The open log of one server and its compaction and ``everysec`` workers."""

    def __init__(
        self,
        log: DurableLog,
        options: StorageOptions,
        logger: EventLogger,
        slow_sync_s: float = SLOW_SYNC_S_DEFAULT,
    ) -> None:
        self.on_failure: Callable[[str], None] = lambda reason: None
        """Called on the loop when a worker's fsync or compaction failed (the host stops)."""
        self.on_sync: Callable[[float], None] | None = None
        """Called on the loop with the seconds each fsync took (metrics)."""
        self.faults = Faults()
        """The process's faults (the host shares its own): ``disk_delay_s`` slows each fsync."""
        self.slow_sync_s = slow_sync_s
        self.slow_syncs = 0
        self.sync_ms_max = 0
        self.log = log
        self.options = options
        self.logger = logger
        self.encoder = msgspec.msgpack.Encoder()
        self.log_bytes = 0  # appended since the last snapshot
        self.snapshot_bytes = 0
        self.compacting = False
        self.syncing = False
        self.last_sync_s = time.monotonic()
        self.compactions = 0
        self.failure: str | None = None

    @classmethod
    def open(
        cls,
        options: StorageOptions,
        limits: Limits,
        logger: EventLogger,
        slow_sync_s: float = SLOW_SYNC_S_DEFAULT,
    ) -> tuple[ReplicaDisk, RecoveredState | None]:
        """Lock, recover and open the data directory; the state it holds (None: empty); an
        fsync of ``slow_sync_s`` or more is logged. Raises ``StorageError`` (one line) when it
        cannot be used or is damaged."""
        log, recovered = DurableLog.open(
            options.data_dir,
            options.fsync,
            repair=options.repair,
            segment_bytes_max=options.segment_bytes_max,
        )
        try:
            state = decode_state(recovered.snapshot, recovered.records, limits, log.directory)
            distrusted = distrust_repaired(log, recovered.repaired_mark, state)
        except BaseException:
            log.close()
            raise
        for line in recovered.events:
            logger.event("storage_repaired" if options.repair else "storage_note", detail=line)
        disk = cls(log, options, logger, slow_sync_s)
        disk.snapshot_bytes = len(recovered.snapshot or b"")
        disk.log_bytes = sum(len(record) for record in recovered.records)
        record = limits_to_record(state, limits)  # what replay must use from here on (P5)
        if record is not None:
            disk.persist(Persist((record,), sync=True))
        if holds_nothing(state):
            state = None  # only limits recorded: a fresh server
        log_recovered(logger, disk, recovered, state, distrusted)
        return disk, state

    # --- the core's effects ----------------------------------------------------------------

    def persist(self, effect: Persist) -> None:
        encode = self.encoder.encode
        records = [encode(record) for record in effect.records]
        if effect.sync and self.options.fsync == "always":
            started = time.monotonic()
            self.injected_delay()
            self.log.append(records, sync=True)
            self.synced(time.monotonic() - started, "append")
        else:
            self.log.append(records, sync=effect.sync)
        self.log_bytes += sum(len(record) for record in records)

    def install(self, effect: PersistSnapshot) -> None:
        blob = self.encoder.encode(effect.snapshot)
        started = time.monotonic()
        self.injected_delay()
        self.log.install_snapshot(blob)
        self.synced(time.monotonic() - started, "snapshot")
        self.snapshot_bytes, self.log_bytes = len(blob), 0

    def injected_delay(self) -> None:
        """A slow-disk fault: the fsync takes this much longer (on the loop for ``always``,
        as a slow disk would hold it; on the worker for ``everysec``)."""
        delay_s = self.faults.disk_delay_s
        if delay_s:
            time.sleep(delay_s)

    def synced(self, seconds: float, what: str) -> None:
        """Account one fsync the server waited for; log it when it was slow (N6)."""
        if self.on_sync is not None:
            self.on_sync(seconds)
        milliseconds = round(seconds * 1000)
        self.sync_ms_max = max(self.sync_ms_max, milliseconds)
        if seconds < self.slow_sync_s:
            return
        self.slow_syncs += 1
        self.logger.limited(
            "disk_sync_slow",
            SLOW_SYNC_LOG_INTERVAL_S,
            "disk_sync_slow",
            what=what,
            duration_ms=milliseconds,
            threshold_ms=round(self.slow_sync_s * 1000),
            fsync=self.options.fsync,
            slow_syncs=self.slow_syncs,
        )

    # --- background work, between handlers --------------------------------------------------

    def on_tick(self, replica: Replica, loop: asyncio.AbstractEventLoop) -> None:
        """Start an ``everysec`` fsync or a compaction when one is due (never two at once).
        Workers only touch the log (thread-safe) and immutable copies; their outcome is
        handled back on the loop (``done``)."""
        if self.options.fsync == "everysec" and not self.syncing:
            now = time.monotonic()
            if now - self.last_sync_s >= EVERYSEC_INTERVAL_S and self.log.unsynced_bytes:
                self.last_sync_s = now
                self.syncing = True
                syncing = loop.run_in_executor(None, self.timed_sync)
                syncing.add_done_callback(self.sync_done)
        if not self.compacting and self.compaction_due():
            self.compacting = True
            mark = self.log.begin_compaction()
            snapshot = replica.durable_snapshot()
            self.log_bytes = 0
            compacting = loop.run_in_executor(None, compact, self.log, mark, snapshot)
            compacting.add_done_callback(self.compaction_done)

    def compaction_due(self) -> bool:
        threshold = max(self.options.snapshot_after_bytes, self.snapshot_bytes)
        return self.log_bytes >= threshold

    def timed_sync(self) -> float:
        """Worker thread (``everysec``): fsync what was appended; the seconds it took."""
        started = time.monotonic()
        self.injected_delay()
        self.log.sync()
        return time.monotonic() - started

    def sync_done(self, future: asyncio.Future[float]) -> None:
        self.syncing = False
        if not self.note_failure(future):
            self.synced(future.result(), "everysec")

    def compaction_done(self, future: asyncio.Future[Compacted | None]) -> None:
        self.compacting = False
        if self.note_failure(future):
            return
        done = future.result()
        if done is None:
            return  # superseded by an installed transfer
        self.snapshot_bytes = done.snapshot_bytes
        self.compactions += 1
        self.logger.event(
            "storage_compacted",
            keys=done.keys,
            position=done.position,
            snapshot_bytes=done.snapshot_bytes,
            duration_ms=done.duration_ms,
        )

    def note_failure(self, future: asyncio.Future[Any]) -> bool:
        error = future.exception()
        if error is None:
            return False
        self.failure = str(error) if isinstance(error, StorageError) else repr(error)
        self.on_failure(self.failure)
        return True

    def counters(self) -> dict[str, int]:
        log = self.log
        return {
            "disk_bytes": log.bytes_on_disk,
            "disk_syncs": log.syncs_total,
            "disk_unsynced_bytes": log.unsynced_bytes,
            "disk_compactions": self.compactions,
            "disk_slow_syncs": self.slow_syncs,
            "disk_sync_ms_max": self.sync_ms_max,
        }

    def close(self) -> None:
        self.log.close()


@dataclass(frozen=True, slots=True)
class Compacted:
    keys: int
    position: int
    snapshot_bytes: int
    duration_ms: int


def compact(log: DurableLog, mark: CompactionMark, snapshot: Snapshot) -> Compacted | None:
    """Worker thread: encode and write ``snapshot`` at ``mark`` (None: a transfer superseded
    it). ``snapshot`` is a copy nobody else touches."""
    started = time.monotonic()
    blob = msgspec.msgpack.encode(snapshot)
    if not log.finish_compaction(mark, blob):
        return None
    elapsed_ms = round((time.monotonic() - started) * 1000)
    return Compacted(len(snapshot.data), snapshot.next_index, len(blob), elapsed_ms)


def distrust_repaired(
    log: DurableLog, mark: bytes | None, state: RecoveredState | None
) -> int | None:
    """V12 after a repair that lost records (the ``REPAIRED`` mark, pbkv.storage.recovery):
    the newest view the incomplete history recorded, which this disk cannot vouch for, so
    ``state`` reports durable view 0 ("a fresh server with a disk", never preferred after an
    outage). The mark keeps that view as its note from the first start after the repair on. A
    view recorded since is one this process's successors entered with a complete state: then
    the mark is removed and None returned; None too when there is no mark."""
    if mark is None:
        return None
    view = 0 if state is None else state.durable_view
    noted = noted_view(mark)
    if noted is None:  # the repair just happened: everything on the disk is of the lost history
        log.write_repaired_mark(f"{view}\n".encode())
    distrusted = repaired_view(view, noted)  # the rule, shared with the simulator's disks
    if distrusted is None:
        log.clear_repaired_mark()
        return None
    if state is not None:
        state.durable_view = 0
    return distrusted


def noted_view(mark: bytes) -> int | None:
    """The view a ``REPAIRED`` mark notes (None: empty, as the repair leaves it)."""
    text = mark.strip()
    return int(text) if text.isdigit() and len(text) <= VIEW_DIGITS_MAX else None


def log_recovered(
    logger: EventLogger,
    disk: ReplicaDisk,
    recovered: Recovered,
    state: RecoveredState | None,
    distrusted: int | None,
) -> None:
    """The ``storage_recovered`` line: what the disk held; after a lossy repair, why its
    durable view is 0 (``distrusted``: the newest view it recorded, see ``distrust_repaired``)."""
    if distrusted is None and recovered.repaired_mark is not None:
        logger.event("storage_note", detail=f"{REPAIRED_MARK} removed: {MARK_CLEARED}")
        recovered = replace(recovered, repaired_mark=None)
    fields: dict[str, Any] = {
        "path": str(disk.log.directory),
        "fsync": disk.options.fsync,
        "keys": 0 if state is None else len(state.store.data),
        "position": 0 if state is None else state.next_index,
        "durable_view": 0 if state is None else state.durable_view,
        "cluster": cluster_label(0 if state is None else state.cluster_id),
        "summary": recovered.summary(),
    }
    if distrusted is not None:
        fields["note"] = (
            f"a repair lost records that may have been acknowledged ({REPAIRED_MARK}): durable "
            f"view unknown, reported as 0 until a view after {distrusted} is recorded (V12)"
        )
    logger.event("storage_recovered", **fields)


def decode_state(
    snapshot: bytes | None, records: list[bytes], limits: Limits, directory: Path
) -> RecoveredState | None:
    """The replica state the snapshot and records rebuild (None for an empty directory);
    ``StorageCorrupt`` when they are valid frames that do not decode or do not form one stream
    (a bug or tampering: the checksums passed)."""
    if snapshot is None and not records:
        return None
    try:
        base = None if snapshot is None else msgspec.msgpack.decode(snapshot, type=Snapshot)
        decoder = msgspec.msgpack.Decoder(DurableRecord)
        return RecoveredState.replay(base, (decoder.decode(r) for r in records), limits)
    except LimitsChanged as error:
        raise StorageError(
            f"cannot start on {directory}: {error}; start this server with the limits its "
            "state was built under (every member of a cluster shares them)"
        ) from None
    except (msgspec.DecodeError, msgspec.ValidationError, RecoveryError) as error:
        raise StorageCorrupt(directory, 0, f"records do not rebuild a state: {error}") from None
