"""The state of a replica and the helpers all its roles share.

Theory of operation: a replica is one state machine (``replica.Replica``) whose handlers are
grouped by role — ``primary.PrimaryRole`` (admission, the replication stream, outgoing state
transfers) and ``backup.BackupRole`` (applying forwards, receiving transfers) — over the state
declared here. This module holds that state, the configuration, and what every role calls:
pings (liveness, acknowledgement and health for the view service), durability (records handed
to the host before the sends that depend on them, D1), and failing whatever waits when a role
ends. See ``replica.py`` for the protocol as a whole.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from typing import Any

from mypy_extensions import mypyc_attr

from pbkv.core.admission import reported_limits
from pbkv.core.durable import (
    DurableRecord,
    RecoveredState,
    StreamRecord,
    ViewRecord,
    needs_sync,
)
from pbkv.core.effects import Outbox, Persist
from pbkv.core.kv_store import KVStore, Limits, Outcome
from pbkv.core.messages import (
    INITIAL_VIEW,
    NO_CLUSTER,
    AnyMessage,
    ForwardReply,
    Ping,
    PingReply,
    Reply,
    Request,
    StateTransferReply,
    cluster_label,
)
from pbkv.core.picklable import reduce_by_constructor
from pbkv.core.sizes import (
    FRAME_BYTES_MAX_DEFAULT,
    NAME_BYTES_MAX,
    check_size_settings,
    clip_detail,
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
    durable: bool = False
    """Keep the state on disk (``Persist`` effects) and report it to the view service (V12)."""
    backlog_bytes_max: int = 16 * 1024 * 1024
    """Recent stream positions kept (encoded-size bound) to catch a returning backup up with
    only what it misses instead of the whole state (P10); 0 turns catch-up off."""
    limits: Limits = field(default_factory=Limits)

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt from its fields when unpickled (picklable.py: compiled, it must be)."""
        return reduce_by_constructor(self)

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


class LogEntry:
    """One stream position at the primary: executed locally, awaiting the backup. A plain
    class (native when compiled: see ``client_session.PendingOperation``)."""

    __slots__ = ("outcome", "reply_to", "request", "size")

    def __init__(self, request: Request, reply_to: str, outcome: Outcome, size: int) -> None:
        self.request = request
        self.reply_to = reply_to
        self.outcome = outcome
        self.size = size
        """Upper bound on the request's encoded size (``sizes.request_bytes_bound``)."""


@dataclass(slots=True)
class BackupStream:
    """A primary's view of one backup's progress through the stream (fan-out, P2, V10)."""

    acked: int
    """Every position below it is confirmed by this backup."""
    sent: int
    """Positions below it were sent (resent from ``acked`` after ``forward_retry_ticks``)."""
    heard_tick: int
    """When it last answered (or the primary started waiting for it): its silence, V10."""
    progress_tick: int
    round_sent: int = 0
    """The newest read round a forward to it carried (reset to ``round_acked`` to resend)."""
    round_acked: int = 0
    """The newest read round it echoed: it was in this view after that round was sent (P2)."""
    inflight_ends: deque[int] = field(default_factory=deque)

    def waits(self, next_index: int) -> bool:
        """It owes an answer: positions below ``next_index``, or a read round."""
        return self.acked < next_index or self.round_acked < self.round_sent


# Replica below it is subclassed by the simulator's broken variants.
@mypyc_attr(allow_interpreted_subclasses=True)
class ReplicaBase:
    """The state of one replica and the helpers every role uses."""

    def __init__(
        self,
        name: str,
        view_service: str,
        rng: random.Random,
        config: ReplicaConfig | None = None,
        recovered: RecoveredState | None = None,
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
        self.stalled_because = ""
        """Why the primary stalled (``stall_because``; said in every refusal while STALLED)."""
        self.synced = False
        self.synced_view = 0
        self.retained_view = 0
        """Idle after leaving a view as a synced backup: the view its store was complete for,
        untouched since (V15); 0 otherwise."""
        self.fenced_view = 0
        """The view service fenced views up to this one: nothing of them is accepted (V15)."""
        self.acknowledged_view_number = 0
        self.now = 0
        # Read leases (R1-R5): the lease clock counts real elapsed ticks as the host reports
        # them (``observe_clock``; a pause shows as a jump), else one per ``on_tick``.
        self.clock = 0
        self.clock_observed = False
        self.lease_until = -1
        """Lease clock tick from which this primary's read lease no longer holds (R2)."""
        self.waiting_reads: deque[tuple[int, int, str, Reply, int]] = deque()
        """Reads answered from the store, in arrival order, once ``acked_index`` reaches the
        position they wait for (their key's latest write, R2) and every backup echoed the read
        round they wait for (0 under a lease; P2): those two, the client, the answer read when
        they arrived, its bytes (bounded with the log)."""
        self.read_round = 0
        """The read round reads arriving now wait for (P2): the forwards sent next carry it."""
        self.read_round_sent = 0
        """The newest read round any forward carried: a read arriving now needs a newer one."""
        self.unconfirmed_writes: dict[str, int] = {}
        """Key -> stream position of its latest write the backups may not hold yet (R2): a
        leased read of that key waits for it. Entries below ``acked_index`` are stale (they
        are dropped when the log empties, or swept when they outnumber the log)."""
        self.waiting_reads_bytes = 0
        self.last_ping_tick = -self.config.ping_interval_ticks
        # Primary: the replication stream. ``log[i]`` holds position ``acked_index + i``.
        self.log: list[LogEntry] = []
        self.log_bytes = 0
        self.pending: dict[tuple[str, int], LogEntry] = {}
        self.acked_index = 0
        """Every position below it is confirmed by every backup (the minimum of ``streams``)."""
        self.next_index = 0
        self.streams: dict[str, BackupStream] = {}
        self.queue: deque[tuple[str, Request]] = deque()
        self.queue_bytes = 0
        self.outgoings: dict[str, OutgoingTransfer] = {}
        """The transfers in progress, one per backup of the view still being brought in."""
        self.backup_incarnations: tuple[int, ...] = ()
        # Backup: next stream position expected, and the transfer being received.
        self.backup_next_index = 0
        self.incoming: IncomingTransfer | None = None
        self.counters: dict[str, int] = {}
        self.ignored_since_log = 0
        self.ignored_log_tick = -self.config.ping_interval_ticks
        self.durable = self.config.durable
        self.recovered_unconfirmed = False
        # Durability (D1): records not yet handed to the host, and the sends that must follow.
        self.unpersisted: list[DurableRecord] = []
        self.held: list[tuple[str, Reply | ForwardReply | StateTransferReply]] = []
        self.durable_view = 0
        self.durable_index = 0
        self.cluster_id = NO_CLUSTER
        """The cluster whose state this replica's disk holds (V16; 0: none, or no disk)."""
        self.view_cluster_id = NO_CLUSTER
        """The cluster of the view service's last reply: records written now name it."""
        self.other_cluster = NO_CLUSTER
        """A view service of another cluster answered last (V16): this replica takes no role."""
        self.limits_reported = reported_limits(self.config.limits)
        # Every role: the stream position the store holds, the lineage tag of the position
        # before it, and the backlog of recent positions (tag, request, size) from
        # ``backlog_start`` on, to catch a returning backup up (P10).
        self.applied_index = 0
        self.applied_tag = 0
        self.backlog: deque[tuple[int, Request, int]] = deque()
        self.backlog_bytes = 0
        self.backlog_start = 0
        self.backlog_tag_before = 0
        if recovered is not None:
            self.recover(recovered)

    def recover(self, state: RecoveredState) -> None:
        """Start from what the disk holds: the store and the stream position. A disk complete
        for a view counts as holding the replica state, but this process serves as primary only
        in a view formed with it (``recovered_unconfirmed``, P7)."""
        assert self.config.durable, "recovery needs a durable replica"
        self.store = state.store
        self.acked_index = self.next_index = state.next_index
        self.backup_next_index = self.durable_index = state.next_index
        self.durable_view = state.durable_view
        self.cluster_id = state.cluster_id
        self.synced = state.durable_view > 0
        self.recovered_unconfirmed = self.synced
        self.reset_backlog(state.next_index, state.last_view_tag)

    def view_record(self) -> ViewRecord:
        """The record that this disk is complete for the current view, of its cluster (V12,
        V16)."""
        return ViewRecord(self.view.number, self.view_cluster_id or self.cluster_id)

    def record_position(self, tag: int, request: Request, size: int) -> None:
        """The store just executed ``request`` at the next stream position, assigned by the
        primary of view ``tag``: keep it in the backlog (trimmed to its bound once, at the end
        of the handler: ``trim_backlog``) and, when durable, for the disk."""
        index = self.applied_index
        if self.durable:
            self.unpersisted.append(StreamRecord(index, tag, request))
        self.applied_index, self.applied_tag = index + 1, tag
        self.backlog.append((tag, request, size))
        self.backlog_bytes += size

    def record_forwarded(self, tag: int, requests: Sequence[Request]) -> None:
        """``record_position`` for a forward's requests, just executed in order: one call per
        batch instead of one per request (the backup's hot path)."""
        if not requests:
            return
        index = self.applied_index
        if self.durable:
            self.unpersisted.extend(
                StreamRecord(index + i, tag, request) for i, request in enumerate(requests)
            )
        self.applied_index, self.applied_tag = index + len(requests), tag
        backlog, added = self.backlog, 0
        for request in requests:
            size = request_bytes_bound(request)
            backlog.append((tag, request, size))
            added += size
        self.backlog_bytes += added

    def trim_backlog(self) -> None:
        """Forget the oldest positions until the backlog is within ``backlog_bytes_max``
        (called at the end of every handler: within one, it may exceed the bound by what that
        handler executed, itself bounded by a frame)."""
        backlog, limit = self.backlog, self.config.backlog_bytes_max
        while self.backlog_bytes > limit:
            old_tag, _, old_size = backlog.popleft()
            self.backlog_bytes -= old_size
            self.backlog_start += 1
            self.backlog_tag_before = old_tag

    def reset_backlog(self, index: int, tag: int) -> None:
        """The store now holds positions below ``index``, the last from view ``tag``'s primary
        (a transfer installed, or a disk recovered): the backlog starts afresh there."""
        self.applied_index, self.applied_tag = index, tag
        self.backlog.clear()
        self.backlog_bytes = 0
        self.backlog_start, self.backlog_tag_before = index, tag

    def suffix_for(self, position: int, tag: int) -> list[tuple[int, Request]] | None:
        """The positions a replica holding ``position`` (its last from view ``tag``'s primary)
        misses, if the backlog holds them all and that replica's state is a prefix of ours
        (P10: the same position from the same view's primary); None otherwise."""
        start = self.backlog_start
        if self.config.backlog_bytes_max == 0 or not start <= position <= self.applied_index:
            return None
        before = (
            self.backlog_tag_before if position == start else self.backlog[position - 1 - start][0]
        )
        if before != tag:
            return None
        return [(entry[0], entry[1]) for entry in islice(self.backlog, position - start, None)]

    def flush_durable(self, out: Outbox) -> None:
        """Hand the records of this handler to the host in one ``Persist`` (group commit), then
        the sends that must follow them (D1)."""
        records = self.unpersisted
        if not records:
            return
        self.unpersisted = []
        out.effects.append(Persist(tuple(records), needs_sync(records)))
        for record in records:
            if type(record) is StreamRecord:
                self.durable_index = record.index + 1
            elif type(record) is ViewRecord:
                self.durable_view = max(self.durable_view, record.view_number)
                self.cluster_id = record.cluster_id or self.cluster_id
        held, self.held = self.held, []
        for target, message in held:
            out.send(target, message)

    def send_after_persist(
        self, out: Outbox, target: str, message: Reply | ForwardReply | StateTransferReply
    ) -> None:
        if self.unpersisted:
            self.held.append((target, message))
        else:
            out.send(target, message)

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

    def send_ping(self, out: Outbox) -> None:
        self.last_ping_tick = self.now
        view_number = (
            self.acknowledged_view_number if self.role is Role.PRIMARY else self.view.number
        )
        if (self.role is Role.BACKUP and self.phase is not Phase.SYNCED) or (
            self.recovered_unconfirmed
        ):
            # Holds no role in this view yet: as a fresh process (V8), or a view service that
            # restarted would take a restarted backup that learned the view for the original.
            view_number = 0
        silent_backup, silent = self.backup_silence()
        out.send(
            self.view_service,
            Ping(
                self.name,
                view_number,
                self.incarnation,
                self.synced_view,
                holds_state=self.synced,
                durable_view=self.durable_view,
                durable_index=self.durable_index,
                held_view=self.view.number,
                backup_silent_view=self.view.number if silent else 0,
                backup_silent_ticks=silent,
                backup_silent=silent_backup,
                health=self.health(),
                clock_tick=self.clock,
                retained_view=self.retained_view,
                fenced_view=self.fenced_view,
                cluster_id=self.cluster_id,
                limits=self.limits_reported,
            ),
        )

    def observe_clock(self, clock_ticks: int) -> None:
        """The host reports the real time elapsed since this process started, in ticks (its
        monotonic clock, never capped like protocol ticks): a pause or a late loop shows up
        here as a jump, and the lease is judged by it (R4). From then on only the host moves
        this clock."""
        self.clock_observed = True
        self.clock = max(self.clock, clock_ticks)

    def lease_remaining_ticks(self) -> int:
        """How long this primary's read lease still holds by its own clock (0: none)."""
        return max(0, self.lease_until - self.clock)

    def backup_silence(self) -> tuple[str, int]:
        """The backup a primary waits for (a transfer, or unconfirmed positions) that has been
        silent longest, and for how long; ("", 0) when it waits for nothing (V10, per backup:
        the view service replaces only that one)."""
        if self.role is not Role.PRIMARY or not self.view.backups:
            return "", 0
        transferring = self.phase is Phase.TRANSFERRING
        serving = self.phase is Phase.SERVING
        worst, silent = "", 0
        for backup, stream in self.streams.items():
            waiting = (transferring and backup in self.outgoings) or (
                serving and stream.waits(self.next_index)
            )
            ticks = self.now - stream.heard_tick
            if waiting and (not worst or ticks > silent):
                worst, silent = backup, ticks
        return worst, silent

    def backup_silence_ticks(self) -> int:
        return self.backup_silence()[1]

    def health(self) -> str:
        """Why this server cannot serve or make progress, for operators ("" when fine)."""
        if self.other_cluster != NO_CLUSTER:
            return (
                f"its data directory holds cluster {cluster_label(self.cluster_id)}; the view "
                f"service serves cluster {cluster_label(self.other_cluster)}: no role (V16)"
            )
        if self.recovered_unconfirmed:
            return (
                f"recovered from disk (complete for view {self.durable_view}); a spare: it "
                "takes a role when the view service names it in a view (V12)"
            )
        if self.role is Role.PRIMARY and self.phase is Phase.UNSYNCED:
            return "refusing to serve: holds no replica state (P7)"
        if self.phase is Phase.STALLED:
            return f"stalled: backup refused view {self.view.number}; waiting for a newer view"
        backup, silent = self.backup_silence()
        if silent >= self.config.backup_silent_ticks:
            return f"no stream progress for {silent} ticks: backup {backup} silent"
        return ""

    def reset_stream(self, index: int) -> None:
        self.log.clear()
        self.log_bytes = 0
        # Reads waiting for their key's write (R2) or a read round (P2) are dropped unanswered:
        # neither may come now; the client retries and is answered by whoever serves.
        self.waiting_reads.clear()
        self.waiting_reads_bytes = 0
        self.unconfirmed_writes.clear()
        self.pending.clear()
        self.streams.clear()
        self.acked_index = self.next_index = index

    def fail_pending(self, out: Outbox, why: str = "") -> None:
        """Answer every waiting request "wrong server" and forget it; clients retry elsewhere.
        The detail says what this server is now and ``why`` it gave up (``pbkv cluster probe``
        and a client's ``unavailable`` show it)."""
        refused = Outcome("wrong_server", detail=self.refusal_because(why))
        for entry in self.log:
            self.reply(entry.reply_to, entry.request, refused, out)
        for source, request in self.queue:
            self.reply(source, request, refused, out)
        self.refuse_waiting_reads(out, detail=refused.detail)
        self.queue.clear()
        self.queue_bytes = 0
        self.reset_stream(self.next_index)

    def refuse_waiting_reads(
        self, out: Outbox, rounds_only: bool = False, detail: str = ""
    ) -> None:
        """Answer the waiting reads (only those waiting for a read round: ``rounds_only``)
        "wrong server" (saying ``detail``) and forget them; the client retries at once instead
        of timing out."""
        kept: deque[tuple[int, int, str, Reply, int]] = deque()
        for entry in self.waiting_reads:
            if entry[1] > 0 or not rounds_only:
                reply = entry[3]
                out.send(entry[2], Reply(reply.client_id, reply.seq, "wrong_server", None, detail))
            else:
                kept.append(entry)
        self.waiting_reads = kept
        self.waiting_reads_bytes = sum(entry[4] for entry in kept)

    def refusal(self) -> str:
        """Why this server refuses a client now: its role, phase and view (and, stalled, why)."""
        return self.refusal_because(self.stalled_because if self.phase is Phase.STALLED else "")

    def refusal_because(self, why: str) -> str:
        """Its role, phase and view, and ``why`` when there is one, within a reply's detail
        bound (two maximal names would pass it)."""
        said = f"{self.name} is {self.role.value} ({self.phase.value}) in view {self.view.number}"
        return clip_detail(f"{said}: {why}") if why else said

    def reply(self, target: str, request: Request, outcome: Outcome, out: Outbox) -> None:
        out.send(
            target,
            Reply(request.client_id, request.seq, outcome.status, outcome.value, outcome.detail),
        )
