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
    """From here on this disk holds a complete state for ``view_number`` (V12)."""

    view_number: int


DurableRecord = StreamRecord | ViewRecord


class Snapshot(msgspec.Struct, frozen=True, array_like=True, tag="snap"):
    """A whole replica state: store, exactly-once table, and where the stream goes on."""

    data: dict[str, str]
    sessions: tuple[SessionRecord, ...]
    next_index: int
    durable_view: int
    last_view_tag: int = 0


class RecoveryError(Exception):
    """The records do not form one stream (a gap): the disk is damaged."""


def needs_sync(records: Iterable[DurableRecord]) -> bool:
    """A batch holding anything but reads must be durable before what follows it."""
    return any(type(r) is ViewRecord or type(r.request.op) is not Get for r in records)  # type: ignore[union-attr]


@dataclass(slots=True)
class RecoveredState:
    """What a replica restarts with: its store, stream position and durable view."""

    store: KVStore
    next_index: int
    durable_view: int
    last_view_tag: int

    @classmethod
    def replay(
        cls, snapshot: Snapshot | None, records: Iterable[DurableRecord], limits: Limits
    ) -> RecoveredState:
        """The snapshot, then every record after it, in order; duplicates of positions already
        applied are skipped, a gap raises ``RecoveryError``."""
        store = KVStore(limits)
        state = cls(store, 0, 0, 0)
        if snapshot is not None:
            store.install(dict(snapshot.data), snapshot.sessions)
            state.next_index = snapshot.next_index
            state.durable_view = snapshot.durable_view
            state.last_view_tag = snapshot.last_view_tag
        for record in records:
            state.apply(record)
        return state

    def apply(self, record: DurableRecord) -> None:
        if type(record) is ViewRecord:
            self.durable_view = max(self.durable_view, record.view_number)
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
        )
