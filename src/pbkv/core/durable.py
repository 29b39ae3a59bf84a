"""Durable state of a replica: the records it writes to its disk, and recovery from them.

Theory of operation. With ``ReplicaConfig.durable`` on, a replica asks its host (effects
``Persist`` and ``PersistSnapshot``) to keep, on its disk, everything needed to rebuild the state
it holds:

* a ``StreamRecord`` for every stream position it executes (as primary) or applies (as
  backup), in position order, tagged with the view whose primary gave the position (the
  lineage tag, as Raft tags entries with terms);
* a ``ViewRecord`` when its state becomes complete for a view: a primary entering a view with
  its state (it holds every write acknowledged before), a backup whose transfer installed;
* a ``Snapshot`` that replaces everything when a state transfer installs.

Hosts make a ``Persist`` with ``sync`` (a batch holding a write or a view record) durable before
executing any later effect of the same handler (etcd raft's rule: persist before send), so a
reply or a confirmation never leaves before the write it answers is on disk (D1 in
docs/protocol.md). Recovery is the newest snapshot plus every record after it, replayed through
the very ``KVStore.execute`` that built it (P5: the same requests in the same order give the same
state). ``durable_view`` tells the view service which view this disk is complete for (V12).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from pbkv.core.kv_store import KVStore, Limits
from pbkv.core.messages import Get, Request, SessionRecord


class StreamRecord(msgspec.Struct, frozen=True, array_like=True, tag="sr"):
    """Stream position ``index`` executed on this replica; ``view_number``: the lineage tag."""

    index: int
    view_number: int
    request: Request


class ViewRecord(msgspec.Struct, frozen=True, array_like=True, tag="vr"):
    """From here on this disk holds a complete state for ``view_number`` (V12), of the cluster
    ``cluster_id`` (V16; 0 in records written before clusters had ids)."""

    view_number: int
    cluster_id: int = 0


class LimitsRecord(msgspec.Struct, frozen=True, array_like=True, tag="lim"):
    """Every record after it was executed under ``limits``: they decide outcomes (an append
    refused for growing past the value limit, an evicted session), so replay uses them (P5)."""

    limits: Limits


DurableRecord = StreamRecord | ViewRecord | LimitsRecord


class LimitsChanged(Exception):
    """The disk's records were executed under other limits than this server's: replaying them
    under these would not rebuild the state they built (acknowledged writes lost, refused ones
    applied). One line naming the differences."""


class Snapshot(msgspec.Struct, frozen=True, array_like=True, tag="snap"):
    """A whole replica state: store, exactly-once table, and where the stream goes on."""

    data: dict[str, str]
    sessions: tuple[SessionRecord, ...]
    next_index: int
    durable_view: int
    last_view_tag: int = 0
    limits: Limits | None = None
    """What its state was built under (None: written before limits were recorded)."""
    cluster_id: int = 0
    """The cluster whose state this is (V16; 0: unknown, written before clusters had ids)."""


class RecoveryError(Exception):
    """The records do not form one stream (a gap): the disk is damaged."""


def needs_sync(records: Iterable[DurableRecord]) -> bool:
    """A batch holding anything but reads must be durable before what follows it."""
    return any(type(r) is not StreamRecord or type(r.request.op) is not Get for r in records)


@dataclass(slots=True)
class RecoveredState:
    """What a replica restarts with: its store, stream position and durable view."""

    store: KVStore
    next_index: int
    durable_view: int
    last_view_tag: int
    limits: Limits | None = None
    """The limits the disk recorded (the last ``LimitsRecord`` or the snapshot's); None for a
    disk written before they were recorded."""
    cluster_id: int = 0
    """The cluster whose state the disk holds (V16: the last id its view records or snapshot
    name; 0: none)."""

    @classmethod
    def replay(
        cls, snapshot: Snapshot | None, records: Iterable[DurableRecord], limits: Limits
    ) -> RecoveredState:
        """The snapshot, then every record after it, in order, each under the limits the disk
        recorded for it (``limits`` where it recorded none); duplicates of positions already
        applied are skipped, a gap raises ``RecoveryError``; ``LimitsChanged`` when the disk's
        limits are not ``limits`` and it holds some state (the server must start with the
        limits its state has; a disk that holds nothing yet takes any)."""
        state = cls(KVStore(limits), 0, 0, 0)
        if snapshot is not None:
            state.set_limits(snapshot.limits)
            state.store.install(dict(snapshot.data), snapshot.sessions)
            state.next_index = snapshot.next_index
            state.durable_view = snapshot.durable_view
            state.last_view_tag = snapshot.last_view_tag
            state.cluster_id = snapshot.cluster_id
        for record in records:
            state.apply(record)
        recorded = state.limits
        if recorded is not None and recorded != limits and not holds_nothing(state):
            raise LimitsChanged(limits_difference(recorded, limits))
        return state

    def set_limits(self, limits: Limits | None) -> None:
        if limits is not None:
            self.limits = self.store.limits = limits

    def apply(self, record: DurableRecord) -> None:
        if type(record) is ViewRecord:
            self.durable_view = max(self.durable_view, record.view_number)
            self.cluster_id = record.cluster_id or self.cluster_id
            return
        if type(record) is LimitsRecord:
            self.set_limits(record.limits)
            return
        assert type(record) is StreamRecord
        if record.index < self.next_index:
            return
        if record.index > self.next_index:
            raise RecoveryError(
                f"stream record {record.index} follows position {self.next_index - 1}"
            )
        self.store.execute(record.request)
        self.next_index = record.index + 1
        self.last_view_tag = record.view_number

    def snapshot(self) -> Snapshot:
        """This state as one snapshot (compaction)."""
        return Snapshot(
            dict(self.store.data),
            self.store.session_records(),
            self.next_index,
            self.durable_view,
            self.last_view_tag,
            self.store.limits,
            self.cluster_id,
        )


def limits_to_record(state: RecoveredState | None, limits: Limits) -> LimitsRecord | None:
    """What a host appends, synced, before its replica handles anything (D1): the limits every
    later record is executed under, unless the disk recorded these already (P5: replay then
    uses them, and a restart with other limits is refused, V17; a disk that holds nothing yet
    takes the new ones)."""
    return LimitsRecord(limits) if state is None or state.limits != limits else None


def holds_nothing(state: RecoveredState | None) -> bool:
    """Recovered nothing but limits: the replica starts as a fresh server."""
    return state is None or (state.next_index == 0 and state.durable_view == 0)


def repaired_view(durable_view: int, noted: int | None) -> int | None:
    """V12 after a repair that dropped records (``--repair``, the ``REPAIRED`` mark): the
    newest view the incomplete history recorded (``noted`` by the mark; None: the repair just
    happened, and it is ``durable_view``). The disk cannot vouch for it, since the records lost
    may have been acknowledged writes: the state must report durable view 0, a fresh server with
    a disk, never preferred after an outage. None once the disk recorded a newer view (this
    process's successors entered it with a complete state): the mark may go."""
    noted = durable_view if noted is None else noted
    return None if durable_view > noted else noted


def limits_difference(recorded: Limits, configured: Limits) -> str:
    """One line: which limits differ, with the disk's value and this server's."""
    changed = [
        f"{name} {getattr(recorded, name)} (this server: {getattr(configured, name)})"
        for name in recorded.__dataclass_fields__
        if getattr(recorded, name) != getattr(configured, name)
    ]
    return "its state was built under other limits: " + ", ".join(changed)
