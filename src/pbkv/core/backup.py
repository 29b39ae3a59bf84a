"""The backup's side of a replica: applying forwards and receiving state transfers.

Theory of operation. A backup accepts forwards and transfer chunks only from the primary of
exactly the view it holds (P3), and a chunk only if it names this very process (P8). It
assembles a transfer in order and installs it atomically with its last chunk (P4), then applies
forwards in stream order, each position once whatever the network duplicates or reorders (P5),
and confirms with the position it expects next, after its disk holds them when durable (D1).
A chunk naming a newer view does not move it there: views come from the view service (V10).
Chunk 0 (a probe) is answered with the position its own state holds; a catch-up chunk (P10)
is applied in order, like forwards, and the last one makes the backup synced.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from pbkv.core.durable import Snapshot
from pbkv.core.effects import Outbox, PersistSnapshot
from pbkv.core.messages import (
    Forward,
    ForwardReply,
    StateTransfer,
    StateTransferReply,
)
from pbkv.core.replica_base import Phase, ReplicaBase, Role
from pbkv.core.sizes import SUFFIX_ENTRY_OVERHEAD_BYTES, request_bytes_bound
from pbkv.core.transfer import IncomingTransfer


# Replica below it is subclassed by the simulator's broken variants.
@mypyc_attr(allow_interpreted_subclasses=True)
class BackupRole(ReplicaBase):
    """Handlers of a replica in the backup role."""

    def accepts_from(self, view_number: int, primary: str) -> bool:
        """P3: only the primary of exactly the view this backup holds may feed it, and only
        while the view service has not fenced that view (V15)."""
        return (
            self.role is Role.BACKUP
            and view_number == self.view.number
            and primary == self.view.primary
            and view_number > self.fenced_view
        )

    def on_forward(self, source: str, forward: Forward, out: Outbox) -> None:
        if not (
            self.phase is Phase.SYNCED and self.accepts_from(forward.view_number, forward.primary)
        ):
            out.log(
                "forward_refused",
                self.view.number,
                sender=forward.primary,
                sender_view=forward.view_number,
            )
            out.send(source, ForwardReply(forward.view_number, 0, False, self.view.number))
            return
        start = forward.start_index
        if start <= self.backup_next_index:
            store = self.store  # called on the object, not a bound method: a native call
            requests = forward.requests[self.backup_next_index - start :]
            for request in requests:
                store.execute(request)
            self.record_forwarded(forward.view_number, requests)
            self.backup_next_index = max(self.backup_next_index, start + len(forward.requests))
        reply = ForwardReply(self.view.number, self.backup_next_index, True, 0, forward.read_round)
        self.send_after_persist(out, source, reply)

    def on_state_transfer(self, source: str, chunk: StateTransfer, out: Outbox) -> None:
        if chunk.view.number > self.view.number:
            # Views are learned from the view service only (V10): ask it now; the primary
            # resends the chunk after ``transfer_retry_ticks``.
            if self.last_ping_tick != self.now:
                self.send_ping(out)
            return
        if not self.accepts_from(chunk.view.number, chunk.primary):
            out.send(source, StateTransferReply(chunk.view.number, chunk.chunk_index, False))
            return
        if chunk.target_incarnation != self.incarnation:
            # For another process at this address (P8), or a forgery: only the view service and
            # the view's primary know this process's incarnation.
            self.note_ignored(source, chunk, out)
            return
        if self.phase is Phase.UNSYNCED:
            incoming = self.incoming
            if incoming is None or incoming.view_number != self.view.number:
                incoming = self.incoming = IncomingTransfer(self.view.number)
            if chunk.chunk_index > incoming.next_chunk:
                return  # a gap: the primary resends the chunk we miss
            if chunk.chunk_index == incoming.next_chunk and not self.take_chunk(
                incoming, chunk, out
            ):
                out.send(source, StateTransferReply(self.view.number, chunk.chunk_index, False))
                return
        reply = StateTransferReply(
            self.view.number, chunk.chunk_index, True, self.applied_index, self.applied_tag
        )
        self.send_after_persist(out, source, reply)

    def take_chunk(self, incoming: IncomingTransfer, chunk: StateTransfer, out: Outbox) -> bool:
        """Stage a chunk of the complete state, or apply a catch-up chunk (P10); False when a
        catch-up chunk does not start where this state ends (refused: a confused primary)."""
        if chunk.suffix_start >= 0:
            if chunk.suffix_start != self.applied_index:
                return False
            self.apply_suffix(incoming, chunk, out)
            return True
        incoming.add(chunk)
        if chunk.last:
            self.install_transfer(incoming, chunk.stream_index, chunk.stream_tag, out)
        return True

    def apply_suffix(self, incoming: IncomingTransfer, chunk: StateTransfer, out: Outbox) -> None:
        """Execute the positions this state misses, in order, as forwards would (P5)."""
        store = self.store  # methods called on their objects: native calls
        for tag, request in chunk.suffix:
            store.execute(request)
            size = request_bytes_bound(request)
            self.record_position(tag, request, size)
            incoming.bytes_received += SUFFIX_ENTRY_OVERHEAD_BYTES + size
        incoming.positions += len(chunk.suffix)
        incoming.next_chunk += 1
        if not chunk.last:
            return
        assert chunk.stream_index == self.applied_index, "P10: the suffix ends the stream"
        if self.durable:
            self.unpersisted.append(self.view_record())
        self.become_synced(chunk.stream_index)
        out.log(
            "catch_up_received",
            self.view.number,
            positions=incoming.positions,
            bytes=incoming.bytes_received,
            chunks=incoming.next_chunk - 1,
            position=self.applied_index,
        )

    def become_synced(self, stream_index: int) -> None:
        self.incoming = None
        self.synced = True
        self.synced_view = self.view.number
        self.phase = Phase.SYNCED
        self.backup_next_index = stream_index

    def install_transfer(
        self, incoming: IncomingTransfer, stream_index: int, stream_tag: int, out: Outbox
    ) -> None:
        self.store.install(incoming.data, incoming.sessions)
        self.reset_backlog(stream_index, stream_tag)
        if self.durable:
            # The snapshot must not alias the live store: later handlers of this batch mutate it.
            assert not self.unpersisted, "a backup in transfer applies no stream positions"
            snapshot = Snapshot(
                dict(incoming.data),
                tuple(incoming.sessions),
                stream_index,
                self.view.number,
                stream_tag,
                self.store.limits,
                self.view_record().cluster_id,
            )
            out.effects.append(PersistSnapshot(snapshot))
            self.durable_view, self.durable_index = self.view.number, stream_index
            self.cluster_id = snapshot.cluster_id
        self.become_synced(stream_index)
        out.log(
            "state_transfer_received",
            self.view.number,
            keys=len(incoming.data),
            bytes=incoming.bytes_received,
            chunks=incoming.next_chunk - 1,
        )
