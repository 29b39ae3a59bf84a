"""A replica server: primary, backup or idle, as the current view says.

Theory of operation.

*Views.* A replica learns views only from the view service (ping replies, and pushes on its own
ping connection: V10), and adopts a view only if its number is higher than the one it holds
(P1). Its role follows the view; every role change goes through ``become_primary`` /
``become_backup`` / ``become_idle``. Replies count only from the peer they answer (V10).

*Roles.* The handlers of each role live in their own module: ``primary.PrimaryRole``
(admission, the replication stream, outgoing state transfers) and ``backup.BackupRole``
(forwards applied in order, transfers installed atomically); ``replica_base`` holds the state
they share. They stack in one line of single inheritance, ``Replica`` → ``PrimaryRole`` →
``BackupRole`` → ``ReplicaBase`` (the method order of the two mixins it replaced, and a shape
mypyc can compile, setup.py). A primary answers only what its backup confirmed (P2), reads
included, so a primary that has been replaced can answer nothing (P3). A fresh server told it
is primary of a view other than view 1 holds no state and refuses to serve (P7).

*Durability.* A durable replica (``ReplicaConfig.durable``) hands its host the records of each
handler in one ``Persist`` before the sends that depend on them (D1); restarted from its disk it
keeps its state, idle, until the view service forms a view with it (V12).

Exactly-once lives in ``KVStore``; this module makes sure both replicas execute the same requests
in the same order. Every entry point ends with ``check_invariants``.
"""

from __future__ import annotations

from collections.abc import Iterable

from mypy_extensions import mypyc_attr

from pbkv.core.durable import Snapshot
from pbkv.core.effects import Outbox
from pbkv.core.message_classes import FORWARD, FORWARD_REPLY, REQUEST
from pbkv.core.messages import (
    NO_CLUSTER,
    AnyMessage,
    Dump,
    DumpReply,
    Forward,
    ForwardReply,
    GetView,
    PingReply,
    Request,
    StateTransfer,
    StateTransferReply,
    StatusRequest,
    View,
    cluster_label,
    wrong_node,
)
from pbkv.core.primary import PrimaryRole
from pbkv.core.replica_base import REPLIES, LogEntry, Phase, ReplicaConfig, Role
from pbkv.core.sizes import (
    item_bytes,
)

__all__ = ["LogEntry", "Phase", "Replica", "ReplicaConfig", "Role"]


# Subclassed by the simulator's broken variants.
@mypyc_attr(allow_interpreted_subclasses=True)
class Replica(PrimaryRole):
    """Pure state machine for one server; see the module docstring."""

    def on_message(self, source: str, message: AnyMessage, out: Outbox) -> None:
        self.handle(source, message, out)
        if type(message) is REQUEST and self.phase is Phase.SERVING:
            self.send_forwards(out)
        self.trim_backlog()
        self.flush_durable(out)
        self.check_invariants()

    def on_messages(self, batch: Iterable[tuple[str, AnyMessage]], out: Outbox) -> None:
        """Handle messages that arrived together (``(source, message)`` pairs, in order) as
        ``on_message`` would one by one, except that new requests leave for the backup once,
        after all of them: a batch of requests travels in one forward (group commit)."""
        for source, message in batch:
            if type(message) is REQUEST:
                self.on_request(source, message, out)
            else:
                self.handle(source, message, out)
        if self.phase is Phase.SERVING:
            # Forwards leave before the primary's own fsync (a host may overlap the two): no
            # answer depends on them until the backup confirms, in a later handler (D1).
            self.send_forwards(out)
        self.trim_backlog()
        self.flush_durable(out)
        self.check_invariants()

    def handle(self, source: str, message: AnyMessage, out: Outbox) -> None:
        # The two messages of every write first, by exact type: no chain of isinstance checks.
        if type(message) is FORWARD:
            self.on_forward(source, message, out)
        elif type(message) is FORWARD_REPLY:
            if self.admit_reply(source, message, out):
                self.on_forward_reply(source, message, out)
        elif not isinstance(message, REPLIES) or self.admit_reply(source, message, out):
            self.handle_other(source, message, out)

    def admit_reply(self, source: str, message: AnyMessage, out: Outbox) -> bool:
        """Whether a reply comes from the peer it answers (V10); a stranger's is counted."""
        if self.trusted_source(source, message):
            return True
        self.note_ignored(source, message, out)
        return False

    def handle_other(self, source: str, message: AnyMessage, out: Outbox) -> None:
        match message:
            case Request():
                self.on_request(source, message, out)
            case Forward():
                self.on_forward(source, message, out)
            case ForwardReply():
                self.on_forward_reply(source, message, out)
            case StateTransfer():
                self.on_state_transfer(source, message, out)
            case StateTransferReply():
                self.on_state_transfer_reply(source, message, out)
            case PingReply():
                self.on_ping_reply(message, out)
            case Dump():
                out.send(source, self.dump(message))
            case GetView() | StatusRequest():  # meant for the view service: say so at once
                out.send(source, wrong_node(self.name, "a server"))
            case _:
                out.log("message_ignored", self.view.number, type=type(message).__name__)

    def trusted_source(self, source: str, message: AnyMessage) -> bool:
        """Replies count only from the peer they answer (V10): a ``PingReply`` from the view
        service, a ``ForwardReply`` or ``StateTransferReply`` from a backup of the view. Hosts
        name a message's source by the connection it came on (the address this replica
        dialled), so a stranger cannot speak for the view service or the backup."""
        if type(message) is PingReply:
            return source == self.view_service
        return source in self.view.backups

    def on_ping_reply(self, reply: PingReply, out: Outbox) -> None:
        if self.of_another_cluster(reply.cluster_id, out):
            return
        if reply.view.number == self.view.number and self.role is Role.PRIMARY:
            self.learn_backup_incarnations(reply.backup_incarnations)
        self.adopt_view(reply.view, out, reply.incarnation, reply.backup_incarnations)
        self.renew_lease(reply)
        self.take_fence(reply.fence_view, out)

    def of_another_cluster(self, cluster_id: int, out: Outbox) -> bool:
        """V16: whether the view service serves another cluster than the one whose state this
        replica's disk holds (it then takes nothing from it: no view, no role, no fence). A
        disk holding no cluster's state (and a replica without a disk) belongs to any."""
        if cluster_id == NO_CLUSTER or self.cluster_id in (NO_CLUSTER, cluster_id):
            self.view_cluster_id = cluster_id or self.view_cluster_id
            self.other_cluster = NO_CLUSTER
            return False
        if self.other_cluster != cluster_id:
            out.log(
                "cluster_mismatch",
                self.view.number,
                disk=cluster_label(self.cluster_id),
                view_service=cluster_label(cluster_id),
            )
        self.other_cluster = cluster_id
        return True

    def take_fence(self, fence_view: int, out: Outbox) -> None:
        """V15: accept nothing more for views up to ``fence_view`` (never above the view this
        replica holds: a fence names a view the service issued and sent us). A transfer in
        progress for a fenced view is dropped; the next ping reports the fence."""
        if not self.fenced_view < fence_view <= self.view.number:
            return
        self.fenced_view = fence_view
        if self.role is Role.BACKUP and self.view.number == fence_view:
            self.incoming = None  # a partial transfer for the fenced view can never complete
        out.log("view_fenced", self.view.number, fenced=fence_view, synced=self.synced_view)

    def renew_lease(self, reply: PingReply) -> None:
        """A reply to our own ping naming us primary of the view we hold grants a read lease
        that runs from when that ping was sent, by our clock (R1): the view service received
        it later, and waits a dead interval from then before anyone else may serve (R3)."""
        if (
            reply.lease_ticks > 0
            and 0 <= reply.ping_clock <= self.clock
            and reply.view.number == self.view.number
            and reply.view.primary == self.name
            and self.role is Role.PRIMARY
        ):
            self.lease_until = max(self.lease_until, reply.ping_clock + reply.lease_ticks)

    def on_tick(self, out: Outbox) -> None:
        self.now += 1
        if not self.clock_observed:
            self.clock += 1
        if self.now - self.last_ping_tick >= self.config.ping_interval_ticks:
            self.send_ping(out)
        if self.phase is Phase.SERVING:
            self.maybe_retransmit_forwards(out)
        elif self.phase is Phase.TRANSFERRING:
            self.maybe_retransmit_chunk(out)
        self.trim_backlog()
        self.flush_durable(out)
        self.check_invariants()

    def adopt_view(
        self,
        view: View,
        out: Outbox,
        named_incarnation: int = 0,
        backup_incarnations: tuple[int, ...] = (),
    ) -> None:
        if view.number <= self.view.number:
            return
        previous_role = self.role
        self.view = view
        self.lease_until = -1  # a lease holds for the view it was granted in only (R2)
        self.backup_incarnations = backup_incarnations
        if self.recovered_unconfirmed and named_incarnation != self.incarnation:
            # A role in a view formed with this server's predecessor is not ours: keep the
            # recovered state, idle, until the view service forms a view with us (V12).
            out.log("view_learned", view.number, role="idle", view=view.describe(), recovered=1)
            return
        if view.primary == self.name:
            self.role = Role.PRIMARY
        elif self.name in view.backups:
            self.role = Role.BACKUP
        else:
            self.role = Role.IDLE
        out.log("view_learned", view.number, role=self.role.value, view=view.describe())
        if self.role is Role.PRIMARY:
            self.become_primary(previous_role, out, named_incarnation)
        elif self.role is Role.BACKUP:
            # V14: a backup that held the complete state of an earlier view, and was a backup
            # in every view it learned since, still holds every acknowledged write (a view is
            # acknowledged only once all its backups synced; it may have missed unacknowledged
            # ones). Only the view service decides whether it may be promoted.
            self.become_backup(out, carried=previous_role is Role.BACKUP)
        else:
            self.become_idle(out, previous_role)

    def become_primary(self, previous_role: Role, out: Outbox, named_incarnation: int = 0) -> None:
        view = self.view
        # A restart of view 1's primary is not the server the view was formed with (V8): its
        # predecessor may have answered writes, so serving empty would lose them.
        named_me = named_incarnation == self.incarnation
        fresh_first_view = view.number == 1 and not self.synced and not self.store.data and named_me
        # V15: the view service promotes an idle server only for the store it kept, unchanged,
        # from the last acknowledged view, and only in a view formed with this very process.
        rescued = not self.synced and self.retained_view > 0 and named_me
        if self.recovered_unconfirmed and not named_me:
            # A disk's state may serve only in a view formed with this process (V12): the view
            # it recovered into was formed with its predecessor, whose backup moved on.
            self.phase = Phase.UNSYNCED
            self.fail_pending(out, "its recovered state is not confirmed (V12)")
            out.log("primary_role_refused", view.number, reason="recovered state not confirmed")
            return
        if not (self.synced or fresh_first_view or rescued):
            self.phase = Phase.UNSYNCED
            self.fail_pending(out, "it holds no replica state")
            out.log("primary_role_refused", view.number, reason="server holds no replica state")
            return
        if previous_role is Role.BACKUP or rescued:
            self.reset_stream(self.applied_index)
        if rescued:
            out.log("primary_from_retained_state", view.number, retained_view=self.retained_view)
            self.synced_view = self.retained_view
        self.retained_view = 0
        # A new view's backups cannot vouch for a round sent in the old one: reads waiting for
        # a round are told "wrong server"; leased reads keep waiting for their key's write,
        # which the new view's transfer confirms (R2).
        self.refuse_waiting_reads(
            out, rounds_only=True, detail=self.refusal_because("a read round of an older view")
        )
        self.synced = True
        self.recovered_unconfirmed = False
        if self.durable:
            self.unpersisted.append(self.view_record())
        # Until it acknowledges this view, ping the view it synced in: 0 reads as a restart (V8).
        self.acknowledged_view_number = max(self.acknowledged_view_number, self.synced_view)
        self.synced_view = 0
        self.outgoings.clear()
        self.streams.clear()
        out.log("role_change", view.number, role="primary", previous=previous_role.value)
        self.counters["became_primary"] = self.counters.get("became_primary", 0) + 1
        if view.backup is None:
            self.start_serving(out)
        else:
            self.start_transfer(out)

    def become_backup(self, out: Outbox, carried: bool = False) -> None:
        self.fail_pending(out)
        self.recovered_unconfirmed = False
        self.retained_view = 0  # the new primary's transfer or catch-up changes the store
        self.acknowledged_view_number = 0
        self.synced = self.synced and carried
        self.phase = Phase.UNSYNCED
        self.incoming = None
        self.outgoings.clear()
        out.log("role_change", self.view.number, role="backup", state="awaiting state transfer")

    def become_idle(self, out: Outbox, previous_role: Role = Role.IDLE) -> None:
        self.fail_pending(out)
        self.recovered_unconfirmed = False
        self.acknowledged_view_number = 0
        if previous_role is Role.BACKUP and self.synced:
            # V15: an idle replica accepts nothing, so its store stays exactly as it was when
            # it left the view (complete for ``synced_view``) until a new role changes it.
            self.retained_view = self.synced_view
        elif previous_role is not Role.IDLE:
            self.retained_view = 0
        self.synced = False
        self.synced_view = 0
        self.phase = Phase.IDLE
        self.incoming = None
        self.outgoings.clear()
        out.log("role_change", self.view.number, role="idle")

    def dump(self, request: Dump) -> DumpReply:
        """One page of the store: at most ``limit`` keys (capped) and what a frame carries."""
        limit = max(0, min(request.limit, self.config.dump_page_max))
        offset = max(0, request.offset)
        data = self.store.data
        page: list[tuple[str, str]] = []
        budget = self.config.frame_bytes_max // 2  # room for the reply's own fields
        if limit and offset < len(data):
            for key in list(data)[offset : offset + limit]:
                size = item_bytes(key, data[key])
                if page and size > budget:
                    break
                budget -= size
                page.append((key, data[key]))
        return DumpReply(
            name=self.name,
            role=self.role.value,
            phase=self.phase.value,
            view=self.view,
            synced=self.synced,
            total_keys=len(data),
            offset=offset,
            items=tuple(page),
            sessions=len(self.store.sessions),
        )

    def durable_snapshot(self) -> Snapshot:
        """Everything this replica handed to its disk, as one snapshot: the store, its
        exactly-once table and stream position (compaction: it replaces the records so far).
        Call between handlers, when no record waits for the host."""
        assert self.durable and not self.unpersisted
        return Snapshot(
            dict(self.store.data),
            self.store.session_records(),
            self.applied_index,
            self.durable_view,
            self.applied_tag,
            self.store.limits,
            self.cluster_id,
        )

    def stream_idle(self) -> bool:
        """No position of the replication stream waits for a backup, so a request handled now
        cannot join a forward already on its way: a host gains nothing by holding it back to
        gather more (it handles it at once, the shorter pipeline of issue #11). While
        positions are in flight, requests arriving together share the next forward."""
        return self.next_index == self.acked_index and not self.waiting_reads

    def check_invariants(self) -> None:
        assert self.acked_index <= self.next_index
        assert all(
            self.acked_index <= s.acked <= s.sent <= self.next_index for s in self.streams.values()
        )
        assert self.backlog_start + len(self.backlog) == self.applied_index, "P10"
        assert len(self.log) == self.next_index - self.acked_index
        assert len(self.unconfirmed_writes) <= 2 * len(self.log) + 64, "R2: bounded with the log"
        assert not self.waiting_reads or self.waiting_reads[-1][0] <= self.next_index, "R2"
        assert self.read_round_sent <= self.read_round, "P2: a round is chosen before it is sent"
        assert self.log_bytes >= 0 and self.queue_bytes >= 0
        assert not self.retained_view or self.role is not Role.BACKUP, "V15: kept only idle"
        assert not self.queue or self.phase is Phase.TRANSFERRING
        if self.phase in (Phase.SERVING, Phase.TRANSFERRING, Phase.STALLED):
            assert self.role is Role.PRIMARY and self.synced, "P4: only a synced primary serves"
            assert self.applied_index == self.next_index, "the stream is the store's history"
        if self.phase is Phase.SYNCED:
            assert self.role is Role.BACKUP and self.synced_view == self.view.number
            assert self.applied_index == self.backup_next_index
