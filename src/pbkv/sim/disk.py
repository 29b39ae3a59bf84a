"""The simulated disk of a durable replica: what survives a crash, and what a restart reads.

Theory of operation. A durable replica (``ReplicaConfig.durable``) hands its host ``Persist``
(records of its stream, ``sync`` when the batch holds a write or a view record) and
``PersistSnapshot`` (a state transfer installed) effects (D1 in docs/protocol.md). The world
keeps one ``Disk`` per replica name, across incarnations, and models the real engine
(``pbkv.storage``): each ``Persist`` is one frame, the encoded batch behind a CRC-32, appended
to the log; a ``PersistSnapshot`` replaces the whole content atomically and durably (temp file,
fsync, rename). ``synced`` counts the frames that are durable. The fsync policy decides when
appended frames become durable:

* ``always``: a ``sync`` batch is durable before the node's later effects run; on a *slow* disk
  the sync takes ``latency`` ticks, and everything the node sends meanwhile waits for it (the
  world holds its sends, see ``World``), as a host blocked in ``fdatasync`` would; syncs
  asked for while one is in progress share the next one (group commit, ``Disk.sync``);
* ``everysec``: every ``EVERYSEC_TICKS`` (one second of simulated time) everything is synced;
* ``no``: the operating system writes back at drawn moments (``os_flush_ticks_max``).

A *crash* loses a drawn suffix of the unsynced frames, and may *tear* the last unsynced frame
that survives (keep only a prefix of its bytes): recovery drops a torn last frame, as the real
engine truncates a torn tail. Synced frames are never touched. A *damaged* log (drawn on a
restart) has a byte flipped in a frame that is not the last: recovery refuses to start the node
(it stays down, traced), or the operator wipes the disk (drawn) and it starts without state, or
(drawn) restarts it with ``--repair``: the frames before the damaged one are kept and the disk is
marked repaired; from then on the core's rule ``repaired_view`` (the runtime's, V12) makes it
report durable view 0 until it records a newer view. A
*foreign* disk (drawn on a restart, V16) is an operator's mistake: another cluster's data
directory in the replica's place, complete for a view numbered like this cluster's current one
and with a longer stream, so that a view service blind to cluster ids would make it primary
(V12) and serve the other cluster's values.

Recovery is the runtime's path: decode the snapshot and the frames, ``RecoveredState.replay``
them (a gap in the stream is damage too), and the replica is built with the recovered state.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from pbkv.core.durable import (
    DurableRecord,
    LimitsChanged,
    RecoveredState,
    RecoveryError,
    Snapshot,
    holds_nothing,
    limits_to_record,
    needs_sync,
    repaired_view,
)
from pbkv.core.kv_store import Limits

FsyncPolicy = Literal["always", "everysec", "no"]
EVERYSEC_TICKS: Final = 100
"""One second of simulated time (a tick is 10 ms)."""
CRC_BYTES: Final = 4

_encoder = msgspec.msgpack.Encoder()
_records = msgspec.msgpack.Decoder(tuple[DurableRecord, ...])
_snapshot = msgspec.msgpack.Decoder(Snapshot)


@dataclass(frozen=True, slots=True)
class DiskParams:
    """Whether replicas keep a disk in this run, and how it fails (drawn per run)."""

    durable: bool = False
    fsync: FsyncPolicy = "always"
    os_flush_ticks_max: int = 300
    """``no``: the operating system syncs after 1 .. this many ticks, again and again."""
    slow_rate: float = 0.0
    """Probability that one sync under ``always`` is slow."""
    latency_ticks_max: int = 0
    """A slow sync takes 1 .. this many ticks."""
    torn_rate: float = 0.0
    """Probability that a crash tears the last unsynced frame that survives it."""
    damage_rate: float = 0.0
    """Probability that a restart finds a frame in the middle of the log damaged."""
    wipe_rate: float = 0.0
    """Probability that the operator wipes a damaged disk (else the node stays down)."""
    foreign_rate: float = 0.0
    """Probability that a restart finds another cluster's disk in the replica's place (V16)."""
    repair_rate: float = 0.0
    """Probability that the operator restarts a server refused for a damaged log (and not
    wiped) with ``--repair``."""

    def describe(self) -> str:
        if not self.durable:
            return "disk: none (replicas in memory only)"
        parts = [f"disk: fsync {self.fsync}"]
        if self.fsync == "no":
            parts.append(f"os-flush<={self.os_flush_ticks_max}")
        if self.slow_rate:
            parts.append(f"slow={self.slow_rate:.2f}(<={self.latency_ticks_max})")
        if self.torn_rate:
            parts.append(f"torn={self.torn_rate:.2f}")
        if self.damage_rate:
            parts.append(f"damage={self.damage_rate:.2f}(wiped {self.wipe_rate:.0%})")
        if self.foreign_rate:
            parts.append(f"foreign={self.foreign_rate:.2f}")
        if self.repair_rate and self.damage_rate:
            parts.append(f"repair={self.repair_rate:.2f}")
        return " ".join(parts)


def draw_disk_params(rng: random.Random) -> DiskParams:
    """Durable in about 60 % of the runs (``always`` in 60 % of those); each disk fault on by
    its own coin. Drawn last, so no earlier draw of a seed moves."""
    durable = rng.random() < 0.6
    fsync: FsyncPolicy = rng.choice(("always", "always", "always", "everysec", "no"))
    slow = rng.random() < 0.4
    torn = rng.random() < 0.5
    damage = rng.random() < 0.2
    return DiskParams(
        durable=durable,
        fsync=fsync,
        os_flush_ticks_max=rng.choice((50, 300, 3000)),
        slow_rate=rng.uniform(0.1, 0.8) if slow else 0.0,
        latency_ticks_max=rng.choice((2, 10, 40)) if slow else 0,
        torn_rate=rng.choice((0.5, 1.0)) if torn else 0.0,
        damage_rate=rng.uniform(0.02, 0.15) if damage else 0.0,
        wipe_rate=rng.choice((0.0, 0.5, 1.0)) if damage else 0.0,
    )


FOREIGN_CLUSTER_ID: Final = 0x0F0E0D0C0B0A0908
"""The other cluster's id (a view service draws its own from 1 .. 2**63-1)."""
FOREIGN_INDEX: Final = 1 << 20
"""The other cluster's stream length: longer than any run's, so V12 alone would choose it."""
FOREIGN_KEYS: Final = 10


def foreign_snapshot(limits: Limits, view_number: int) -> Snapshot:
    """Another cluster's disk (see the module docstring): its own values of this workload's
    keys, which no client here ever wrote, complete for view ``view_number``."""
    data = {f"k{index}": f"foreign-{index}" for index in range(FOREIGN_KEYS)}
    return Snapshot(data, (), FOREIGN_INDEX, view_number, view_number, limits, FOREIGN_CLUSTER_ID)


class DiskDamaged(Exception):
    """The log cannot be read back: ``detail`` names the frame (the runtime's one line)."""


def frame(payload: bytes) -> bytes:
    return zlib.crc32(payload).to_bytes(CRC_BYTES, "big") + payload


def unframe(data: bytes) -> bytes | None:
    """The payload, or None when the checksum does not match (torn or damaged)."""
    payload = data[CRC_BYTES:]
    if len(data) < CRC_BYTES or zlib.crc32(payload).to_bytes(CRC_BYTES, "big") != data[:CRC_BYTES]:
        return None
    return payload


@dataclass(slots=True)
class CrashLoss:
    """What one crash did to a disk."""

    frames_lost: int = 0
    torn: bool = False
    writes_lost: bool = False
    """A lost or torn frame held a write or a view record (something maybe acknowledged)."""


class Disk:
    """One replica's disk (see the module docstring)."""

    __slots__ = (
        "frames",
        "pending",
        "repaired",
        "repaired_note",
        "snapshot",
        "synced",
        "wiped_on_damage",
        "writes",
    )

    def __init__(self) -> None:
        self.snapshot: bytes | None = None
        self.frames: list[bytes] = []
        self.writes: list[bool] = []
        """Per frame: it holds a write or a view record (``needs_sync``)."""
        self.synced = 0
        self.pending: deque[tuple[int, int, int]] = deque()
        """Syncs in progress, in order: (tick it completes, frames it covers, tick it starts).
        A sync starts when the one before it completes (one fsync at a time), so the ticks
        never decrease; at most one waits to start (``sync``)."""
        self.wiped_on_damage = False
        self.repaired = False
        """The engine's ``REPAIRED`` mark: a repair dropped frames."""
        self.repaired_note: int | None = None
        """The view the mark notes (None: the repair just happened)."""

    def append(self, records: tuple[DurableRecord, ...]) -> None:
        self.frames.append(frame(_encoder.encode(records)))
        self.writes.append(needs_sync(records))

    def sync(self, now: int, latency: int = 0) -> int:
        """Make every frame appended so far durable ``latency`` ticks after the sync in
        progress completes; returns the tick it is durable at. A sync asked for while another
        waits to start joins it (group commit: a host blocked in ``fdatasync`` handles what
        arrived meanwhile as one batch, with one sync), so a slow disk delays a busy node by
        at most two syncs, never by a queue that grows with the load."""
        pending = self.pending
        if latency <= 0 and not pending:
            self.synced = len(self.frames)
            return now
        if pending and pending[-1][2] > now:  # the last one has not started: join it
            due, _, start = pending[-1]
            pending[-1] = (due, len(self.frames), start)
            return due
        start = max(now, pending[-1][0] if pending else now)
        pending.append((start + latency, len(self.frames), start))
        return start + latency

    def tick(self, now: int) -> None:
        """Complete the syncs that are due."""
        pending = self.pending
        while pending and pending[0][0] <= now:
            self.synced = max(self.synced, pending.popleft()[1])

    def install(self, snapshot: Snapshot) -> None:
        """A state transfer installed: the content is replaced, atomically and durably."""
        self.snapshot = frame(_encoder.encode(snapshot))
        self.frames.clear()
        self.writes.clear()
        self.synced = 0
        self.pending.clear()

    def crash(self, rng: random.Random, torn_rate: float) -> CrashLoss:
        """Lose a drawn suffix of the unsynced frames; maybe tear the last one that survives."""
        self.pending.clear()
        unsynced = len(self.frames) - self.synced
        loss = CrashLoss()
        if unsynced <= 0:
            return loss
        keep = self.synced + rng.randint(0, unsynced)
        loss.frames_lost = len(self.frames) - keep
        loss.writes_lost = any(self.writes[keep:])
        del self.frames[keep:]
        del self.writes[keep:]
        if keep > self.synced and rng.random() < torn_rate:
            last = self.frames[-1]
            self.frames[-1] = last[: rng.randint(0, len(last) - 1)]
            loss.torn = True
            loss.writes_lost = loss.writes_lost or self.writes[-1]
        self.synced = len(self.frames)
        return loss

    def damage(self, rng: random.Random) -> int | None:
        """Flip a byte in a frame that is not the last; the frame's index, or None if the log
        is too short to be damaged in the middle."""
        if len(self.frames) < 2:
            return None
        index = rng.randrange(len(self.frames) - 1)
        data = bytearray(self.frames[index])
        position = rng.randrange(len(data))
        data[position] ^= 1 + rng.randrange(255)
        self.frames[index] = bytes(data)
        return index

    def repair(self) -> int:
        """``--repair``: keep the frames before the first damaged one, as the engine keeps the
        valid prefix, and mark the disk repaired. Returns how many frames were dropped."""
        frames = self.frames
        keep = next((i for i, data in enumerate(frames) if unframe(data) is None), len(frames))
        dropped = len(frames) - keep
        del frames[keep:]
        del self.writes[keep:]
        self.synced = min(self.synced, keep)
        self.repaired, self.repaired_note = True, None
        return dropped

    def distrust(self, state: RecoveredState) -> int | None:
        """The runtime's ``distrust_repaired`` on this disk: the view a repaired history can no
        longer vouch for (``state`` then reports durable view 0), or None."""
        if not self.repaired:
            return None
        if self.repaired_note is None:
            self.repaired_note = state.durable_view
        distrusted = repaired_view(state.durable_view, self.repaired_note)
        if distrusted is None:
            self.repaired = False
            return None
        state.durable_view = 0
        return distrusted

    def wipe(self) -> None:
        self.snapshot = None
        self.frames.clear()
        self.writes.clear()
        self.synced = 0
        self.pending.clear()
        self.repaired, self.repaired_note = False, None

    def recover(self, limits: Limits) -> tuple[RecoveredState, bool]:
        """The state a restarted replica begins with, and whether a torn last frame was
        dropped. Raises ``DiskDamaged`` for damage in the middle or a gap in the stream."""
        snapshot = None
        if self.snapshot is not None:
            payload = unframe(self.snapshot)
            if payload is None:
                raise DiskDamaged("snapshot checksum mismatch")
            snapshot = _snapshot.decode(payload)
        records: list[DurableRecord] = []
        torn = False
        for index, data in enumerate(self.frames):
            payload = unframe(data)
            if payload is None:
                if index == len(self.frames) - 1:
                    torn = True
                    break
                raise DiskDamaged(f"log frame {index} of {len(self.frames)}: checksum mismatch")
            records.extend(_records.decode(payload))
        if torn:
            self.frames.pop()  # truncated, as the engine does with a torn tail
            self.writes.pop()
            self.synced = min(self.synced, len(self.frames))
        try:
            return RecoveredState.replay(snapshot, records, limits), torn
        except RecoveryError as error:
            raise DiskDamaged(str(error)) from None


class DiskRefused(Exception):
    """A restart found the log damaged and the operator did not wipe it: the node stays down."""


@dataclass(slots=True)
class DiskStats:
    syncs: int = 0
    slow_syncs: int = 0
    frames_lost: int = 0
    torn: int = 0
    refused: int = 0
    wiped: int = 0
    foreign: int = 0
    repaired: int = 0


class DiskHost:
    """Every replica's disk in one world, and the fsync policy's clock (see the module
    docstring). The world calls ``persist``/``install`` for the effects, ``tick`` once per tick,
    ``crash`` when a replica crashes and ``start`` when one (re)starts."""

    def __init__(
        self,
        params: DiskParams,
        rng: random.Random,
        operator_rng: random.Random | None = None,
    ) -> None:
        self.params = params
        self.rng = rng
        self.operator_rng = operator_rng or random.Random(FOREIGN_CLUSTER_ID)
        """The operator's choices (a foreign disk, ``--repair``): see ``World.operator_rng``."""
        self.disks: dict[str, Disk] = {}
        self.lossy: set[str] = set()
        """Disks whose crash lost a frame holding a write since their last snapshot."""
        self.stats = DiskStats()
        self.next_flush = self._flush_gap(0)
        self.latency_cap_ticks: int | None = None
        """Once set (the liveness phase: faults stop, L4), no slow sync takes longer."""

    def disk(self, name: str) -> Disk:
        disk = self.disks.get(name)
        if disk is None:
            disk = self.disks[name] = Disk()
        return disk

    def persist(self, name: str, records: tuple[DurableRecord, ...], sync: bool, now: int) -> int:
        """Append one batch; returns for how many ticks the node's later sends must wait."""
        disk = self.disk(name)
        disk.append(records)
        if not sync or self.params.fsync != "always":
            return 0
        return self._sync(disk, now)

    def install(self, name: str, snapshot: Snapshot, now: int) -> int:
        self.disk(name).install(snapshot)
        self.lossy.discard(name)
        return self._latency() if self.params.fsync == "always" else 0

    def _sync(self, disk: Disk, now: int) -> int:
        latency = self._latency()
        self.stats.syncs += 1
        self.stats.slow_syncs += latency > 0
        return disk.sync(now, latency) - now

    def _latency(self) -> int:
        params = self.params
        if params.slow_rate and self.rng.random() < params.slow_rate:
            latency = self.rng.randint(1, params.latency_ticks_max)
            cap = self.latency_cap_ticks
            return latency if cap is None else min(latency, cap)
        return 0

    def cap_latency(self, ticks: int) -> None:
        """From now on a slow sync takes at most ``ticks`` (the draws stay the same, so no
        later random choice moves)."""
        self.latency_cap_ticks = max(1, ticks)

    def _flush_gap(self, now: int) -> int:
        if self.params.fsync == "everysec":
            return now + EVERYSEC_TICKS
        return now + self.rng.randint(1, self.params.os_flush_ticks_max)

    def tick(self, now: int) -> None:
        """Complete slow syncs; ``everysec`` and ``no``: sync everything when it is time."""
        flush = self.params.fsync != "always" and now >= self.next_flush
        if flush:
            self.next_flush = self._flush_gap(now)
        for disk in self.disks.values():
            disk.tick(now)
            if flush:
                disk.synced = len(disk.frames)

    def crash(self, name: str) -> str:
        """The replica crashed: its disk loses what was not synced. Returns what happened."""
        loss = self.disk(name).crash(self.rng, self.params.torn_rate)
        self.stats.frames_lost += loss.frames_lost
        self.stats.torn += loss.torn
        if loss.writes_lost:
            self.lossy.add(name)
        if not loss.frames_lost:
            return ""
        torn = ", the last one left torn" if loss.torn else ""
        return f" (its disk lost {loss.frames_lost} unsynced frames{torn})"

    def start(
        self, name: str, limits: Limits, view_number: int = 0
    ) -> tuple[RecoveredState | None, str]:
        """What a (re)starting replica recovers (None: an empty disk) and a note for the trace;
        raises ``DiskRefused`` when the log is damaged and stays so. ``view_number``: the
        cluster's current view, which a foreign disk claims to be complete for."""
        disk = self.disk(name)
        note = self._mount_foreign(name, disk, limits, view_number)
        if self.params.damage_rate and self.rng.random() < self.params.damage_rate:
            index = disk.damage(self.rng)
            if index is not None:
                disk.wiped_on_damage = self.rng.random() < self.params.wipe_rate
                note = f"its log is damaged at frame {index}; "
        try:
            state, torn = self._recover(disk, limits)
        except DiskDamaged as error:
            if disk.wiped_on_damage:
                self._wipe(name, disk)
                self._record_limits(disk, limits, None)
                return None, note + "the operator wiped it; it starts without state"
            state, torn = self._repair(disk, limits, error)
            note += "the operator restarted it with --repair; "
        if torn:
            note += "torn last frame truncated; "
        distrusted = disk.distrust(state)
        if distrusted is not None:
            note += f"repaired: its disk no longer vouches for view {distrusted} (V12); "
        self._record_limits(disk, limits, state)
        what = "empty disk" if holds_nothing(state) else f"recovered position {state.next_index}"
        note += what + f", durable view {state.durable_view}"
        return (None if holds_nothing(state) else state), note

    @staticmethod
    def _record_limits(disk: Disk, limits: Limits, state: RecoveredState | None) -> None:
        """Before the replica starts, record its limits when the disk has none, synced, as the
        runtime does (``limits_to_record``, D1)."""
        record = limits_to_record(state, limits)
        if record is not None:
            disk.append((record,))
            disk.synced = len(disk.frames)

    def _recover(self, disk: Disk, limits: Limits) -> tuple[RecoveredState, bool]:
        """``Disk.recover``; a disk built under other limits is refused as the runtime refuses
        it (``DiskRefused``, the node stays down: D1, V17)."""
        try:
            return disk.recover(limits)
        except LimitsChanged as error:
            self.stats.refused += 1
            raise DiskRefused(str(error)) from None

    def _mount_foreign(self, name: str, disk: Disk, limits: Limits, view_number: int) -> str:
        """Maybe put another cluster's disk in ``name``'s place (V16); the trace's note."""
        foreign = self.params.foreign_rate
        if not (foreign and view_number > 0 and self.operator_rng.random() < foreign):
            return ""
        disk.install(foreign_snapshot(limits, view_number))
        self.lossy.discard(name)
        self.stats.foreign += 1
        return "another cluster's disk is in its place (V16); "

    def _wipe(self, name: str, disk: Disk) -> None:
        self.stats.wiped += 1
        disk.wipe()
        disk.wiped_on_damage = False
        self.lossy.discard(name)

    def _repair(
        self, disk: Disk, limits: Limits, error: DiskDamaged
    ) -> tuple[RecoveredState, bool]:
        """The operator's ``--repair`` (drawn), or ``DiskRefused``: the node stays down."""
        repair = self.params.repair_rate
        if repair and self.operator_rng.random() < repair:
            disk.repair()
            self.stats.repaired += 1
            try:
                return self._recover(disk, limits)
            except DiskDamaged as again:
                error = again
        self.stats.refused += 1
        raise DiskRefused(f"damaged log: {error}") from None
