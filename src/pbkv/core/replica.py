"""A replica server: primary, backup or idle, as the current view says.

Theory of operation.

*Views.* A replica learns views from ping replies and from state transfers, and adopts a view
only if its number is higher than the one it holds (P1). Its role follows the view; every role
change goes through ``become_primary`` / ``become_backup`` / ``become_idle``.

*Primary.* A primary serves only while ``SERVING``: it executes each request on its own store in
arrival order, appends it to the replication stream (positions ``0, 1, 2 ...``), and answers the
client only after the backup confirmed every position up to and including it (P2). Reads go
through the stream too (they carry no data for the backup to apply, only a place in the order),
so a primary that has been replaced cannot answer a read: its backup, now in a newer view,
refuses it (P3). Forwards are batched: up to ``forwards_in_flight_max`` batches travel at once and
everything that arrives meanwhile leaves in the next batch (group commit). A primary without a
backup answers at once: no other server can be promoted past it (V5).

*Entering a view.* A primary whose new view has a backup moves to ``TRANSFERRING``: it queues new
requests, sends its complete state (``transfer.py``), and only when the last chunk is confirmed
acknowledges the view to the view service and starts ``SERVING`` (P4). A fresh server told it is
primary of a view other than view 1 holds no state and refuses to serve (P7). A primary whose
backup refuses a forward is ``STALLED``: it answers "wrong server" until it learns a newer view.

*Backup.* A backup applies forwards from the primary of exactly its own view, in stream order,
applying each position once (P5); it confirms with the position it expects next.

Exactly-once lives in ``KVStore``; this module makes sure both replicas execute the same requests
in the same order.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from pbkv.core.effects import Outbox
from pbkv.core.kv_store import KVStore, Limits, Outcome
from pbkv.core.messages import (
    INITIAL_VIEW,
    AnyMessage,
    Dump,
    DumpReply,
    Forward,
    ForwardReply,
    Ping,
    PingReply,
    Reply,
    Request,
    StateTransfer,
    StateTransferReply,
    View,
)
from pbkv.core.sizes import (
    FRAME_BYTES_MAX_DEFAULT,
    NAME_BYTES_MAX,
    check_size_settings,
    forward_header_bytes,
    item_bytes,
    request_bytes_bound,
    text_bytes,
)
from pbkv.core.transfer import IncomingTransfer, OutgoingTransfer

REPLIES = (PingReply, ForwardReply, StateTransferReply)


class Role(StrEnum):
    PRIMARY = "primary"
    BACKUP = "backup"
    IDLE = "idle"


class Phase(StrEnum):
    IDLE = "idle"
    TRANSFERRING = "transferring"
    SERVING = "serving"
    STALLED = "stalled"
    UNSYNCED = "unsynced"
    SYNCED = "synced"


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    ping_interval_ticks: int = 10
    forward_retry_ticks: int = 20
    transfer_retry_ticks: int = 20
    transfer_chunk_bytes: int = 1024 * 1024
    forward_batch_bytes_max: int = 1024 * 1024
    forward_batch_requests_max: int = 4096
    forwards_in_flight_max: int = 2
    requests_queued_max: int = 10_000
    requests_queued_bytes_max: int = 64 * 1024 * 1024
    log_entries_max: int = 100_000
    log_bytes_max: int = 64 * 1024 * 1024
    backup_silent_ticks: int = 50
    dump_page_max: int = 10_000
    frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT
    limits: Limits = field(default_factory=Limits)

    def check(self) -> str | None:
        """None when every message this replica may send fits a frame (else why not)."""
        limits = self.limits
        return check_size_settings(
            self.frame_bytes_max,
            limits.key_bytes_max,
            limits.value_bytes_max,
            limits.client_id_bytes_max,
            limits.window,
        )


@dataclass(slots=True)
class LogEntry:
    """One stream position at the primary: executed locally, awaiting the backup."""

    request: Request
    reply_to: str
    outcome: Outcome
    size: int
    """Upper bound on the request's encoded size (``sizes.request_bytes_bound``)."""


class Replica:
    """Pure state machine for one server; see the module docstring."""

    def __init__(
        self,
        name: str,
        view_service: str,
        rng: random.Random,
        config: ReplicaConfig | None = None,
    ) -> None:
        self.name = name
        self.view_service = view_service
        self.config = config or ReplicaConfig()
        settings_error = self.config.check()
        if settings_error is not None:
            raise ValueError(settings_error)
        if text_bytes(name) > NAME_BYTES_MAX:
            raise ValueError(f"server name over {NAME_BYTES_MAX} bytes")
        self.incarnation = 1 + rng.getrandbits(62)
        self.store = KVStore(self.config.limits)
        self.view = INITIAL_VIEW
        self.role = Role.IDLE
        self.phase = Phase.IDLE
        self.synced = False
        self.synced_view = 0
        self.acknowledged_view_number = 0
        self.now = 0
        self.last_ping_tick = -self.config.ping_interval_ticks
        # Primary: the replication stream. ``log[i]`` holds position ``acked_index + i``.
        self.log: list[LogEntry] = []
        self.log_bytes = 0
        self.pending: dict[tuple[str, int], LogEntry] = {}
        self.acked_index = 0
        self.sent_index = 0
        self.next_index = 0
        self.inflight_ends: deque[int] = deque()
        self.last_progress_tick = 0
        self.queue: deque[tuple[str, Request]] = deque()
        self.queue_bytes = 0
        self.outgoing: OutgoingTransfer | None = None
        self.backup_incarnations: tuple[int, ...] = ()
        self.backup_heard_tick = 0
        # Backup: next stream position expected, and the transfer being received.
        self.backup_next_index = 0
        self.incoming: IncomingTransfer | None = None
        self.counters: dict[str, int] = {}
        self.ignored_since_log = 0
        self.ignored_log_tick = -self.config.ping_interval_ticks

    # --- entry points ------------------------------------------------------------------------

    def on_message(self, source: str, message: AnyMessage, out: Outbox) -> None:
        self.handle(source, message, out)
        if type(message) is Request and self.phase is Phase.SERVING:
            self.send_forwards(out)
        self.check_invariants()

    def on_messages(self, batch: Iterable[tuple[str, AnyMessage]], out: Outbox) -> None:
        """Handle messages that arrived together (``(source, message)`` pairs, in order) as
        ``on_message`` would one by one, except that new requests leave for the backup once,
        after all of them: a batch of requests travels in one forward (group commit)."""
        for source, message in batch:
            if type(message) is Request:
                self.on_request(source, message, out)
            else:
                self.handle(source, message, out)
        if self.phase is Phase.SERVING:
            self.send_forwards(out)
        self.check_invariants()

    def handle(self, source: str, message: AnyMessage, out: Outbox) -> None:
        if isinstance(message, REPLIES) and not self.trusted_source(source, message):
            self.note_ignored(source, message, out)
            return
        match message:
            case Request():
                self.on_request(source, message, out)
            case Forward():
                self.on_forward(source, message, out)
            case ForwardReply():
                self.on_forward_reply(message, out)
            case StateTransfer():
                self.on_state_transfer(source, message, out)
            case StateTransferReply():
                self.on_state_transfer_reply(message, out)
            case PingReply():
                self.on_ping_reply(message, out)
            case Dump():
                out.send(source, self.dump(message))
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

    def note_ignored(self, source: str, message: AnyMessage, out: Outbox) -> None:
        """Count a refused message; log at most once per ping interval, with the count."""
        self.counters["messages_untrusted"] = self.counters.get("messages_untrusted", 0) + 1
        self.ignored_since_log += 1
        if self.now - self.ignored_log_tick < self.config.ping_interval_ticks:
            return
        out.log(
            "message_untrusted",
            self.view.number,
            type=type(message).__name__,
            source=source,
            count=self.ignored_since_log,
        )
        self.ignored_since_log = 0
        self.ignored_log_tick = self.now

    def on_ping_reply(self, reply: PingReply, out: Outbox) -> None:
        if reply.view.number == self.view.number and self.role is Role.PRIMARY:
            self.backup_incarnations = reply.backup_incarnations
        self.adopt_view(reply.view, out, reply.incarnation, reply.backup_incarnations)

    def on_tick(self, out: Outbox) -> None:
        self.now += 1
        if self.now - self.last_ping_tick >= self.config.ping_interval_ticks:
            self.send_ping(out)
        if self.phase is Phase.SERVING:
            self.maybe_retransmit_forwards(out)
        elif self.phase is Phase.TRANSFERRING:
            self.maybe_retransmit_chunk(out)
        self.check_invariants()

    def send_ping(self, out: Outbox) -> None:
        self.last_ping_tick = self.now
        view_number = (
            self.acknowledged_view_number if self.role is Role.PRIMARY else self.view.number
        )
        if self.role is Role.BACKUP and self.phase is not Phase.SYNCED:
            # Holds nothing for this view yet: as a fresh process (V8), or a view service that
            # restarted would take a restarted backup that learned the view for the original.
            view_number = 0
        silent = self.backup_silence_ticks()
        out.send(
            self.view_service,
            Ping(
                self.name,
                view_number,
                self.incarnation,
                self.synced_view,
                holds_state=self.synced,
                backup_silent_view=self.view.number if silent else 0,
                backup_silent_ticks=silent,
                health=self.health(),
            ),
        )

    def backup_silence_ticks(self) -> int:
        """How long a primary waiting for its backup (a transfer, or unconfirmed positions) has
        not heard from it; 0 when it waits for nothing (reported in pings: V10)."""
        if self.role is not Role.PRIMARY or not self.view.backups:
            return 0
        waiting = self.phase is Phase.TRANSFERRING or (
            self.phase is Phase.SERVING and self.acked_index < self.next_index
        )
        return self.now - self.backup_heard_tick if waiting else 0

    def health(self) -> str:
        """Why this server cannot serve or make progress, for operators ("" when fine)."""
        if self.role is Role.PRIMARY and self.phase is Phase.UNSYNCED:
            return "refusing to serve: holds no replica state (P7)"
        if self.phase is Phase.STALLED:
            return f"stalled: backup refused view {self.view.number}; waiting for a newer view"
        silent = self.backup_silence_ticks()
        if silent >= self.config.backup_silent_ticks:
            return f"no stream progress for {silent} ticks: backup {self.view.backup} silent"
        return ""

    # --- views and roles ---------------------------------------------------------------------

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
        self.backup_incarnations = backup_incarnations
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
            self.become_backup(out)
        else:
            self.become_idle(out)

    def become_primary(self, previous_role: Role, out: Outbox, named_incarnation: int = 0) -> None:
        view = self.view
        # A restart of view 1's primary is not the server the view was formed with (V8): its
        # predecessor may have answered writes, so serving empty would lose them.
        named_me = named_incarnation == self.incarnation
        fresh_first_view = view.number == 1 and not self.synced and not self.store.data and named_me
        if not (self.synced or fresh_first_view):
            self.phase = Phase.UNSYNCED
            self.fail_pending(out)
            out.log("primary_role_refused", view.number, reason="server holds no replica state")
            return
        if previous_role is Role.BACKUP:
            self.reset_stream(self.backup_next_index)
        self.synced = True
        # Until it acknowledges this view, ping the view it synced in: 0 reads as a restart (V8).
        self.acknowledged_view_number = max(self.acknowledged_view_number, self.synced_view)
        self.synced_view = 0
        self.outgoing = None
        self.inflight_ends.clear()
        self.sent_index = self.next_index
        out.log("role_change", view.number, role="primary", previous=previous_role.value)
        self.counters["became_primary"] = self.counters.get("became_primary", 0) + 1
        if view.backup is None:
            self.start_serving(out)
        else:
            self.start_transfer(out)

    def become_backup(self, out: Outbox) -> None:
        self.fail_pending(out)
        self.acknowledged_view_number = 0
        self.synced = False
        self.phase = Phase.UNSYNCED
        self.incoming = None
        self.outgoing = None
        out.log("role_change", self.view.number, role="backup", state="awaiting state transfer")

    def become_idle(self, out: Outbox) -> None:
        self.fail_pending(out)
        self.acknowledged_view_number = 0
        self.synced = False
        self.synced_view = 0
        self.phase = Phase.IDLE
        self.incoming = None
        self.outgoing = None
        out.log("role_change", self.view.number, role="idle")

    def reset_stream(self, index: int) -> None:
        self.log.clear()
        self.log_bytes = 0
        self.pending.clear()
        self.inflight_ends.clear()
        self.acked_index = self.sent_index = self.next_index = index

    def fail_pending(self, out: Outbox) -> None:
        """Answer every waiting request "wrong server" and forget it; clients retry elsewhere."""
        for entry in self.log:
            self.reply(entry.reply_to, entry.request, Outcome("wrong_server"), out)
        for source, request in self.queue:
            self.reply(source, request, Outcome("wrong_server"), out)
        self.queue.clear()
        self.queue_bytes = 0
        self.reset_stream(self.next_index)

    # --- primary: requests -------------------------------------------------------------------

    def on_request(self, source: str, request: Request, out: Outbox) -> None:
        refusal = self.admit(request)
        if refusal is not None:
            self.reply(source, request, refusal, out)
        elif self.phase is Phase.SERVING and self.role is Role.PRIMARY:
            self.execute(source, request, out)  # the usual case first
        elif self.role is not Role.PRIMARY or self.phase is not Phase.TRANSFERRING:
            self.counters["wrong_server"] = self.counters.get("wrong_server", 0) + 1
            self.reply(source, request, Outcome("wrong_server", detail=self.refusal()), out)
        else:  # a primary in transfer: the request waits (bounded) until the transfer is over
            self.enqueue(source, request, out)

    def admit(self, request: Request) -> Outcome | None:
        """Refuse, before it enters the stream, a request whose client-controlled sizes are over
        their limits: every request in the stream then fits a frame (finding 1, L1)."""
        return self.store.admit(request)

    def enqueue(self, source: str, request: Request, out: Outbox) -> None:
        size = request_bytes_bound(request)
        config = self.config
        if (
            len(self.queue) >= config.requests_queued_max
            or self.queue_bytes + size > config.requests_queued_bytes_max
        ):
            self.reply(source, request, Outcome("busy", detail="state transfer"), out)
            return
        self.queue.append((source, request))
        self.queue_bytes += size

    def refusal(self) -> str:
        return f"{self.name} is {self.role.value} ({self.phase.value}) in view {self.view.number}"

    def execute(self, source: str, request: Request, out: Outbox) -> None:
        """Run ``request`` locally and give it a stream position (answered when confirmed)."""
        key = (request.client_id, request.seq)
        pending = self.pending
        entry = pending.get(key)
        if entry is not None:
            entry.reply_to = source
            return
        log = self.log
        size = request_bytes_bound(request)
        config = self.config
        if len(log) >= config.log_entries_max or self.log_bytes + size > config.log_bytes_max:
            self.reply(source, request, Outcome("busy", detail="replication backlog"), out)
            return
        outcome = self.store.execute(request)
        if not self.view.backups:
            self.reply(source, request, outcome, out)
            self.acked_index = self.sent_index = self.next_index = self.next_index + 1
            return
        pending[key] = entry = LogEntry(request, source, outcome, size)
        log.append(entry)
        self.log_bytes += size
        self.next_index += 1

    def reply(self, target: str, request: Request, outcome: Outcome, out: Outbox) -> None:
        out.send(
            target,
            Reply(request.client_id, request.seq, outcome.status, outcome.value, outcome.detail),
        )

    def start_serving(self, out: Outbox) -> None:
        """The view's backup (if any) holds our state: acknowledge the view, answer, serve."""
        self.phase = Phase.SERVING
        self.acknowledged_view_number = self.view.number
        self.confirm_through(self.next_index, out)
        self.sent_index = self.next_index
        self.last_progress_tick = self.backup_heard_tick = self.now
        self.send_ping(out)
        queued, self.queue = self.queue, deque()
        self.queue_bytes = 0
        for source, request in queued:
            self.execute(source, request, out)
        self.send_forwards(out)

    def confirm_through(self, index: int, out: Outbox) -> None:
        """Positions below ``index`` are on the backup: answer their clients (P2)."""
        count = index - self.acked_index
        if count <= 0:
            return
        send, pending = out.send, self.pending
        confirmed_bytes = 0
        for entry in self.log[:count]:
            confirmed_bytes += entry.size
            request, outcome = entry.request, entry.outcome
            client_id, seq = request.client_id, request.seq
            send(
                entry.reply_to,
                Reply(client_id, seq, outcome.status, outcome.value, outcome.detail),
            )
            del pending[(client_id, seq)]
        del self.log[:count]
        self.log_bytes -= confirmed_bytes
        self.acked_index = index
        self.last_progress_tick = self.now

    # --- primary: forwarding -----------------------------------------------------------------

    def send_forwards(self, out: Outbox) -> None:
        """Cut the unsent positions into batches of at most ``forward_batch_bytes_max`` of
        encoded requests and never more than a frame carries (admission guarantees one request
        always fits), and send while fewer than ``forwards_in_flight_max`` are in flight."""
        config = self.config
        backup = self.view.backup
        if backup is None:
            return
        batch_bytes = min(
            config.forward_batch_bytes_max,
            config.frame_bytes_max - forward_header_bytes(self.name),
        )
        log = self.log
        while self.sent_index < self.next_index and (
            len(self.inflight_ends) < config.forwards_in_flight_max
        ):
            start = self.sent_index
            offset = start - self.acked_index
            budget = batch_bytes - log[offset].size
            assert budget >= 0, "P2: an admitted request always fits a forward"
            end = offset + 1
            limit = min(len(log), offset + config.forward_batch_requests_max)
            while end < limit and log[end].size <= budget:
                budget -= log[end].size
                end += 1
            requests = tuple([entry.request for entry in log[offset:end]])
            out.send(backup, Forward(self.view.number, self.name, start, requests))
            self.sent_index = start + len(requests)
            self.inflight_ends.append(self.sent_index)

    def on_forward_reply(self, reply: ForwardReply, out: Outbox) -> None:
        if (
            self.role is not Role.PRIMARY
            or self.phase is not Phase.SERVING
            or reply.view_number != self.view.number
        ):
            return
        if not reply.accepted:
            self.stall(reply, out)
            return
        if reply.next_index > self.next_index:
            return  # cannot confirm a position that does not exist: a confused reply
        self.backup_heard_tick = self.now
        self.confirm_through(reply.next_index, out)
        self.sent_index = max(self.sent_index, self.acked_index)
        while self.inflight_ends and self.inflight_ends[0] <= self.acked_index:
            self.inflight_ends.popleft()
        self.send_forwards(out)

    def stall(self, reply: ForwardReply, out: Outbox) -> None:
        out.log(
            "forward_rejected",
            self.view.number,
            backup=self.view.backup,
            backup_view=reply.backup_view_number,
        )
        self.counters["forwards_rejected"] = self.counters.get("forwards_rejected", 0) + 1
        self.phase = Phase.STALLED
        self.fail_pending(out)

    def maybe_retransmit_forwards(self, out: Outbox) -> None:
        if self.acked_index == self.sent_index:
            self.last_progress_tick = self.now
            return
        if self.now - self.last_progress_tick < self.config.forward_retry_ticks:
            return
        self.inflight_ends.clear()
        self.sent_index = self.acked_index
        self.last_progress_tick = self.now
        self.send_forwards(out)

    # --- primary: state transfer -------------------------------------------------------------

    def start_transfer(self, out: Outbox) -> None:
        self.phase = Phase.TRANSFERRING
        self.backup_heard_tick = self.now
        config = self.config
        self.outgoing = OutgoingTransfer.of(
            self.store,
            self.view,
            self.name,
            self.next_index,
            config.transfer_chunk_bytes,
            config.frame_bytes_max,
            self.backup_incarnations[0] if self.backup_incarnations else 0,
        )
        out.log(
            "state_transfer_start",
            self.view.number,
            backup=self.view.backup,
            keys=len(self.outgoing.items),
            sessions=len(self.outgoing.sessions),
        )
        self.send_chunk(self.outgoing.next_chunk(), out)

    def send_chunk(self, chunk: StateTransfer, out: Outbox) -> None:
        assert self.outgoing is not None and self.view.backup is not None
        self.outgoing.sent_tick = self.now
        out.send(self.view.backup, chunk)

    def maybe_retransmit_chunk(self, out: Outbox) -> None:
        outgoing = self.outgoing
        assert outgoing is not None and outgoing.current is not None
        if self.now - outgoing.sent_tick >= self.config.transfer_retry_ticks:
            self.send_chunk(outgoing.current, out)

    def on_state_transfer_reply(self, reply: StateTransferReply, out: Outbox) -> None:
        outgoing = self.outgoing
        if (
            self.phase is not Phase.TRANSFERRING
            or outgoing is None
            or outgoing.current is None
            or reply.view_number != self.view.number
            or reply.chunk_index != outgoing.current.chunk_index
        ):
            return
        self.backup_heard_tick = self.now
        if not reply.accepted:
            out.log("state_transfer_refused", self.view.number, backup=self.view.backup)
            self.phase = Phase.STALLED
            self.outgoing = None
            self.fail_pending(out)
            return
        if not outgoing.current.last:
            self.send_chunk(outgoing.next_chunk(), out)
            return
        out.log(
            "state_transfer_done",
            self.view.number,
            backup=self.view.backup,
            keys=len(outgoing.items),
            bytes=outgoing.bytes_sent,
            chunks=outgoing.chunk_index,
        )
        self.counters["transfers_done"] = self.counters.get("transfers_done", 0) + 1
        self.outgoing = None
        self.start_serving(out)

    # --- backup ------------------------------------------------------------------------------

    def accepts_from(self, view_number: int, primary: str) -> bool:
        """P3: only the primary of exactly the view this backup holds may feed it."""
        return (
            self.role is Role.BACKUP
            and view_number == self.view.number
            and primary == self.view.primary
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
            execute = self.store.execute
            for request in forward.requests[self.backup_next_index - start :]:
                execute(request)
            self.backup_next_index = max(self.backup_next_index, start + len(forward.requests))
        out.send(source, ForwardReply(self.view.number, self.backup_next_index, True))

    def on_state_transfer(self, source: str, chunk: StateTransfer, out: Outbox) -> None:
        if chunk.view.number > self.view.number:
            # Views are learned from the view service only (V10): ask it now; the primary
            # resends the chunk after ``transfer_retry_ticks``.
            if self.last_ping_tick != self.now:
                self.send_ping(out)
            return
        if chunk.target_incarnation not in (0, self.incarnation):
            self.note_ignored(source, chunk, out)  # for the process this replaced (P8)
            return
        if not self.accepts_from(chunk.view.number, chunk.primary):
            out.send(source, StateTransferReply(chunk.view.number, chunk.chunk_index, False))
            return
        if self.phase is Phase.UNSYNCED:
            incoming = self.incoming
            if incoming is None or incoming.view_number != self.view.number:
                incoming = self.incoming = IncomingTransfer(self.view.number)
            if chunk.chunk_index > incoming.next_chunk:
                return  # a gap: the primary resends the chunk we miss
            if chunk.chunk_index == incoming.next_chunk:
                incoming.add(chunk)
                if chunk.last:
                    self.install_transfer(incoming, chunk.stream_index, out)
        out.send(source, StateTransferReply(self.view.number, chunk.chunk_index, True))

    def install_transfer(self, incoming: IncomingTransfer, stream_index: int, out: Outbox) -> None:
        self.store.install(incoming.data, incoming.sessions)
        self.incoming = None
        self.synced = True
        self.synced_view = self.view.number
        self.phase = Phase.SYNCED
        self.backup_next_index = stream_index
        out.log(
            "state_transfer_received",
            self.view.number,
            keys=len(incoming.data),
            bytes=incoming.bytes_received,
            chunks=incoming.next_chunk,
        )

    # --- introspection -----------------------------------------------------------------------

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

    def check_invariants(self) -> None:
        assert self.acked_index <= self.sent_index <= self.next_index
        assert len(self.log) == self.next_index - self.acked_index
        assert self.log_bytes >= 0 and self.queue_bytes >= 0
        assert not self.queue or self.phase is Phase.TRANSFERRING
        if self.phase in (Phase.SERVING, Phase.TRANSFERRING, Phase.STALLED):
            assert self.role is Role.PRIMARY and self.synced, "P4: only a synced primary serves"
        if self.phase is Phase.SYNCED:
            assert self.role is Role.BACKUP and self.synced_view == self.view.number
