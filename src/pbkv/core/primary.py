"""The primary's side of a replica: admission, the replication stream, outgoing transfers.

Theory of operation. A primary serves only while ``SERVING``: it admits a request only if every
size its client controls is within limits (P9), executes it on its own store in arrival order,
appends it to the replication stream (positions ``0, 1, 2 ...``), and answers the client only
after every backup of the view confirmed every position up to and including it (P2). Forwards
fan out: each backup has its own ``BackupStream`` (confirmed and sent positions and read rounds,
batches in flight, silence), and the log is answered and trimmed up to the slowest.

Reads take no position (``read_locally``): the value is read from the store when the read
arrives, and the answer waits in ``waiting_reads`` until the latest write to that key is
confirmed by every backup (``unconfirmed_writes``; writes to other keys in flight are
unobserved and do not hold it up) and, without a read lease, until every backup echoed a read
round sent after the read arrived (P2, Raft's ReadIndex): a primary that has been replaced
cannot answer, because the backup promoted past it, now in a newer view, refuses the round
(P3). Reads arriving together share a round; the next forward carries it, or a forward with no
requests. With read leases (R1-R5) a serving primary whose lease holds by its own clock needs
no round: no other primary can exist while it holds.

Forwards are cut by encoded size, never past a frame; up to
``forwards_in_flight_max`` travel at once and everything that arrives meanwhile leaves in the
next batch (group commit). A primary without a backup answers at once (V5), after its disk
holds the write when it is durable (D1).

Entering a view with backups, it moves to ``TRANSFERRING``: it queues new requests (bounded in
count and bytes), sends each backup its complete state or the suffix it misses (``transfer.py``,
in parallel), and only when the last chunk of the last backup is confirmed acknowledges the
view and starts ``SERVING`` (P4). A backup that refuses a forward or
a chunk makes it ``STALLED`` until it learns a newer view.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

import msgspec
from mypy_extensions import mypyc_attr

from pbkv.core.backup import BackupRole
from pbkv.core.effects import Outbox
from pbkv.core.kv_store import Outcome
from pbkv.core.message_classes import GET, REPLY
from pbkv.core.messages import (
    Forward,
    ForwardReply,
    Get,
    Reply,
    Request,
    StateTransfer,
    StateTransferReply,
)
from pbkv.core.replica_base import BackupStream, LogEntry, Phase, Role
from pbkv.core.sizes import (
    forward_header_bytes,
    item_bytes,
    request_bytes_bound,
    text_bytes,
)
from pbkv.core.transfer import OutgoingTransfer


# Replica below it is subclassed by the simulator's broken variants.
@mypyc_attr(allow_interpreted_subclasses=True)
class PrimaryRole(BackupRole):
    """Handlers of a replica in the primary role."""

    def on_request(self, source: str, request: Request, out: Outbox) -> None:
        serving = self.phase is Phase.SERVING and self.role is Role.PRIMARY
        if not serving and (self.role is not Role.PRIMARY or self.phase is not Phase.TRANSFERRING):
            # Only the view's primary judges a request, final errors included: a server that is
            # not would judge it by its own limits, which may not be the view's (V17).
            self.counters["wrong_server"] = self.counters.get("wrong_server", 0) + 1
            self.reply(source, request, Outcome("wrong_server", detail=self.refusal()), out)
            return
        refusal = self.admit(request)
        if refusal is not None:
            self.reply(source, request, refusal, out)
        elif serving:
            if type(request.op) is GET and self.read_locally(source, request, out):
                return
            self.execute(source, request, out)  # the usual case first
        else:  # a primary in transfer: the request waits (bounded) until the transfer is over
            self.enqueue(source, request, out)

    def read_locally(self, source: str, request: Request, out: Outbox) -> bool:
        """Answer a read from this primary's store without giving it a stream position: the
        value is read now (the read's linearization point), and the answer leaves once the
        latest write to the key is confirmed by the view's backups (R2: no failover can lose
        what it shows) and, without a lease, once every backup echoed a read round sent after
        now, so that none of them had moved to a newer view when the value was read (P2, P3:
        Raft's ReadIndex). Under a lease (R2) no round is needed: no other primary can exist
        now. False: the read takes the stream (a primary alone, V5; stale, over the window or
        over the bounds), never a stale answer."""
        leased = self.clock < self.lease_until
        if not (leased or self.view.backups):
            return False  # a primary alone answers a read through the stream at once (V5)
        record = self.store.sessions.get(request.client_id)
        seq = request.seq
        if record is not None and not (
            record.completed_below <= seq < record.completed_below + self.config.limits.window
        ):
            return False  # stale or over the window: the stream path answers as it always does
        key = request.op.key
        value = self.store.data.get(key)
        reply = REPLY(request.client_id, seq, "ok", value, "")
        position = self.unconfirmed_writes.get(key, -1)
        if leased and position < self.acked_index:
            out.send(source, reply)
        elif not self.wait_for_confirmation(position + 1, leased, source, request, reply):
            return False
        counter = "reads_leased" if leased else "reads_by_round"
        self.counters[counter] = self.counters.get(counter, 0) + 1
        return True

    def wait_for_confirmation(
        self, position: int, leased: bool, source: str, request: Request, reply: Reply
    ) -> bool:
        """Hold ``reply`` until ``acked_index`` reaches ``position`` and, without a lease, a
        new read round is echoed by every backup; False when that would pass the stream's
        bounds (the read then takes the stream path, or is told busy)."""
        value = reply.value
        size = request_bytes_bound(request) + (0 if value is None else text_bytes(value))
        config = self.config
        if (
            len(self.log) + len(self.waiting_reads) >= config.log_entries_max
            or self.log_bytes + self.waiting_reads_bytes + size > config.log_bytes_max
        ):
            return False
        if not leased:
            self.start_silence_clocks()
        read_round = 0 if leased else self.next_read_round()
        self.waiting_reads.append((position, read_round, source, reply, size))
        self.waiting_reads_bytes += size
        return True

    def start_silence_clocks(self) -> None:
        """Work for the backups arrives (a write's position, a read's round): a backup that
        owed nothing starts its silence clock (V10) now, not at its last reply before an idle
        spell, or a healthy backup would be reported at once. One that owes something keeps
        counting, whatever is resent to it meanwhile: silence ends only with its answer."""
        next_index, now = self.next_index, self.now
        # ``not stream.waits(next_index)``, inlined: this runs for every request.
        for stream in self.streams.values():
            if stream.acked == next_index and stream.round_acked >= stream.round_sent:
                stream.heard_tick = now

    def next_read_round(self) -> int:
        """The read round a read arriving now waits for: the current one while no forward
        carried it yet (reads arriving together share it), else a new one (P2)."""
        if self.read_round <= self.read_round_sent:
            self.read_round += 1
        return self.read_round

    def rounds_confirmed(self) -> int:
        """The newest read round every backup of the view echoed (P2: every one, not one)."""
        return min(stream.round_acked for stream in self.streams.values())

    def release_waiting_reads(self, out: Outbox) -> None:
        """Answer the waiting reads whose key's write is confirmed (R2) and whose read round
        every backup echoed (P2), in arrival order: a read behind one that waits longer waits
        with it (later, never wrong)."""
        waiting, acked = self.waiting_reads, self.acked_index
        rounds = self.rounds_confirmed() if self.streams else 0
        while waiting and waiting[0][0] <= acked and waiting[0][1] <= rounds:
            _, _, source, reply, size = waiting.popleft()
            self.waiting_reads_bytes -= size
            out.send(source, reply)

    def new_streams(self) -> None:
        """One ``BackupStream`` per backup of the view, from the current position, with no
        read round owed: a read waiting now needs a round newer than any sent (P2)."""
        index, now, sent = self.next_index, self.now, self.read_round_sent
        self.streams = {
            backup: BackupStream(index, index, now, now, sent, sent) for backup in self.view.backups
        }

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
        self.record_position(self.view.number, request, size)
        if not self.view.backups:
            reply = Reply(
                request.client_id, request.seq, outcome.status, outcome.value, outcome.detail
            )
            self.send_after_persist(out, source, reply)
            self.acked_index = self.next_index = self.next_index + 1
            return
        self.start_silence_clocks()
        op = request.op
        if type(op) is not Get:
            self.unconfirmed_writes[op.key] = self.next_index  # a leased read waits (R2)
        pending[key] = entry = LogEntry(request, source, outcome, size)
        log.append(entry)
        self.log_bytes += size
        self.next_index += 1

    def start_serving(self, out: Outbox) -> None:
        """Every backup of the view holds our state: acknowledge the view, answer, serve."""
        self.phase = Phase.SERVING
        self.acknowledged_view_number = self.view.number
        self.confirm_through(self.next_index, out)
        if self.waiting_reads:
            self.release_waiting_reads(out)  # leased reads kept across the view change (R2)
        self.new_streams()
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
        pending = self.pending
        confirmed_bytes = 0
        for entry in self.log[:count]:
            confirmed_bytes += entry.size
            request, outcome = entry.request, entry.outcome
            client_id, seq = request.client_id, request.seq
            out.send(  # on the object, not a bound method: a native call
                entry.reply_to,
                REPLY(client_id, seq, outcome.status, outcome.value, outcome.detail),
            )
            del pending[(client_id, seq)]
        del self.log[:count]
        self.log_bytes -= confirmed_bytes
        self.acked_index = index
        self.forget_confirmed_writes(index)

    def forget_confirmed_writes(self, acked: int) -> None:
        """Keep ``unconfirmed_writes`` no larger than about twice the log: emptied when the log
        is, swept of positions below ``acked`` when it outgrows it (amortised O(1) a write)."""
        unconfirmed = self.unconfirmed_writes
        if not self.log:
            unconfirmed.clear()
        elif len(unconfirmed) > 2 * len(self.log) + 64:
            self.unconfirmed_writes = {
                key: position for key, position in unconfirmed.items() if position >= acked
            }

    def send_forwards(self, out: Outbox) -> None:
        """Fan-out: the same positions go to every backup of the view, in parallel, each at its
        own pace (a write waits for the slowest of K round trips, not their sum as in a chain;
        docs/design.md)."""
        for backup, stream in self.streams.items():
            self.send_stream(backup, stream, out)

    def send_stream(self, backup: str, stream: BackupStream, out: Outbox) -> None:
        """Cut ``backup``'s unsent positions into batches of at most ``forward_batch_bytes_max``
        of encoded requests, or one request alone when it is larger (values may be as large as
        the batch bound), never more than a frame carries (admission guarantees one request
        always fits), and send while fewer than ``forwards_in_flight_max`` are in flight."""
        config = self.config
        frame_room = config.frame_bytes_max - forward_header_bytes(self.name)
        batch_bytes = min(config.forward_batch_bytes_max, frame_room)
        log, inflight, next_index = self.log, stream.inflight_ends, self.next_index
        read_round = self.read_round
        while (stream.sent < next_index or stream.round_sent < read_round) and len(
            inflight
        ) < config.forwards_in_flight_max:
            start = stream.sent
            offset = start - self.acked_index
            end = offset
            if start < next_index:
                assert log[offset].size <= frame_room, "P2: an admitted request fits a forward"
                budget = batch_bytes - log[offset].size  # below 0: this request travels alone
                end = offset + 1
                limit = min(len(log), offset + config.forward_batch_requests_max)
                while end < limit and log[end].size <= budget:
                    budget -= log[end].size
                    end += 1
            requests = tuple([entry.request for entry in log[offset:end]])
            out.send(backup, Forward(self.view.number, self.name, start, requests, read_round))
            stream.sent = start + len(requests)
            stream.round_sent = read_round
            inflight.append(stream.sent)
        self.read_round_sent = max(self.read_round_sent, stream.round_sent)

    def on_forward_reply(self, source: str, reply: ForwardReply, out: Outbox) -> None:
        stream = self.streams.get(source)
        if (
            stream is None
            or self.role is not Role.PRIMARY
            or self.phase is not Phase.SERVING
            or reply.view_number != self.view.number
        ):
            return
        if not reply.accepted:
            self.stall(source, reply, out)
            return
        if reply.next_index > self.next_index:
            return  # cannot confirm a position that does not exist: a confused reply
        stream.heard_tick = self.now
        if reply.next_index > stream.acked:
            stream.acked = reply.next_index
            stream.progress_tick = self.now
        if stream.round_acked < reply.read_round <= self.read_round_sent:
            stream.round_acked = reply.read_round
            stream.progress_tick = self.now
        stream.sent = max(stream.sent, stream.acked)
        stream.round_sent = max(stream.round_sent, stream.round_acked)
        while stream.inflight_ends and stream.inflight_ends[0] <= stream.acked:
            stream.inflight_ends.popleft()
        # P2: a position is answered once every backup of the view confirmed it.
        self.confirm_through(min(s.acked for s in self.streams.values()), out)
        if self.waiting_reads:
            self.release_waiting_reads(out)
        self.send_stream(source, stream, out)

    def stall(self, backup: str, reply: ForwardReply, out: Outbox) -> None:
        out.log(
            "forward_rejected",
            self.view.number,
            backup=backup,
            backup_view=reply.backup_view_number,
        )
        self.counters["forwards_rejected"] = self.counters.get("forwards_rejected", 0) + 1
        backup_view = reply.backup_view_number
        self.stall_because(
            f"backup {backup} refused its forward (it is in view {backup_view})", out
        )

    def stall_because(self, why: str, out: Outbox) -> None:
        """Stop serving this view (its backup moved on) and say ``why`` to every request that
        waits and every later one (``refusal``)."""
        self.phase = Phase.STALLED
        self.stalled_because = why
        self.fail_pending(out, why)

    def maybe_retransmit_forwards(self, out: Outbox) -> None:
        """Resend, from its last confirmed position, to a backup without progress for
        ``forward_retry_ticks``."""
        for backup, stream in self.streams.items():
            if stream.acked == stream.sent and stream.round_acked >= stream.round_sent:
                stream.progress_tick = self.now
                continue
            if self.now - stream.progress_tick < self.config.forward_retry_ticks:
                continue
            stream.inflight_ends.clear()
            stream.sent = stream.acked
            stream.round_sent = stream.round_acked
            stream.progress_tick = self.now
            self.send_stream(backup, stream, out)

    def learn_backup_incarnations(self, incarnations: tuple[int, ...]) -> None:
        """The view service named the backups' processes (it may not have known them when the
        view was announced, after its own restart): chunks name the target from now on (P8)."""
        if not incarnations or incarnations == self.backup_incarnations:
            return
        self.backup_incarnations = incarnations
        for backup, incarnation in zip(self.view.backups, incarnations, strict=False):
            outgoing = self.outgoings.get(backup)
            if outgoing is not None and outgoing.current is not None:
                outgoing.target_incarnation = incarnation
                outgoing.current = msgspec.structs.replace(
                    outgoing.current, target_incarnation=incarnation
                )

    def start_transfer(self, out: Outbox) -> None:
        """Freeze (P6) and probe every backup: each answer decides suffix or complete state for
        that backup; the primary serves once all of them are synced (P4, V14)."""
        self.phase = Phase.TRANSFERRING
        config = self.config
        self.new_streams()
        incarnations = self.backup_incarnations
        for i, backup in enumerate(self.view.backups):
            outgoing = self.outgoings[backup] = OutgoingTransfer.of(
                self.view,
                self.name,
                self.next_index,
                self.applied_tag,
                config.transfer_chunk_bytes,
                config.frame_bytes_max,
                incarnations[i] if i < len(incarnations) else 0,
            )
            self.send_chunk(backup, outgoing.probe_chunk(), out)

    def choose_transfer(self, backup: str, reply: StateTransferReply, out: Outbox) -> None:
        """``backup`` holds ``reply.position``: send it only what it misses when the backlog
        proves its state a prefix of ours (P10), else the complete state."""
        outgoing = self.outgoings[backup]
        # A backup holding nothing gets the state: it is never larger than the history.
        suffix = self.suffix_for(reply.position, reply.position_tag) if reply.position else None
        reason = self.full_transfer_reason(reply, suffix is not None)
        if suffix is not None and self.store_smaller_than(self.suffix_bytes(reply.position)):
            suffix = None  # many overwrites of few keys: the state itself is cheaper
        if suffix is not None:
            outgoing.use_suffix(reply.position, suffix)
            out.log(
                "catch_up_start",
                self.view.number,
                backup=backup,
                backup_position=reply.position,
                positions=len(suffix),
            )
        else:
            outgoing.use_state(self.store)
            out.log(
                "state_transfer_start",
                self.view.number,
                backup=backup,
                keys=len(outgoing.items),
                sessions=len(outgoing.sessions),
                backup_position=reply.position,
                reason=reason,
            )

    def suffix_bytes(self, position: int) -> int:
        """Encoded-size bound of the backlog's positions from ``position`` on."""
        skip = position - self.backlog_start
        return sum(entry[2] for entry in islice(self.backlog, skip, None))

    def store_smaller_than(self, limit: int) -> bool:
        """Whether the complete state's items weigh less than ``limit`` (stops counting at
        it: the cost is bounded by the suffix it is compared with)."""
        total = 0
        for key, value in self.store.data.items():
            total += item_bytes(key, value)
            if total >= limit:
                return False
        return True

    def full_transfer_reason(self, reply: StateTransferReply, suffix_held: bool) -> str:
        """Why the complete state, should it be sent (``suffix_held``: the backlog held a
        suffix for this backup, so only its size can have ruled it out)."""
        if reply.position == 0:
            return "backup holds nothing"
        if suffix_held:
            return "the complete state is smaller than the suffix"
        if self.config.backlog_bytes_max == 0:
            return "catch-up off"
        if reply.position < self.backlog_start:
            return "backlog no longer holds the backup's position"
        if reply.position > self.applied_index:
            return "backup ahead of this primary: another history"
        return "backup's last position comes from another history"

    def send_chunk(self, backup: str, chunk: StateTransfer, out: Outbox) -> None:
        self.outgoings[backup].sent_tick = self.now
        out.send(backup, chunk)

    def maybe_retransmit_chunk(self, out: Outbox) -> None:
        for backup, outgoing in self.outgoings.items():
            assert outgoing.current is not None
            if self.now - outgoing.sent_tick >= self.config.transfer_retry_ticks:
                self.send_chunk(backup, outgoing.current, out)

    def on_state_transfer_reply(self, source: str, reply: StateTransferReply, out: Outbox) -> None:
        outgoing = self.outgoings.get(source)
        if (
            self.phase is not Phase.TRANSFERRING
            or outgoing is None
            or outgoing.current is None
            or reply.view_number != self.view.number
            or reply.chunk_index != outgoing.current.chunk_index
        ):
            return
        self.streams[source].heard_tick = self.now
        if not reply.accepted:
            out.log("state_transfer_refused", self.view.number, backup=source)
            self.outgoings.clear()
            self.stall_because(f"backup {source} refused the state transfer", out)
            return
        if outgoing.mode == "probe":
            self.choose_transfer(source, reply, out)
        if not outgoing.current.last:
            self.send_chunk(source, outgoing.next_chunk(), out)
            return
        self.finish_transfer(source, outgoing, out)

    def finish_transfer(self, backup: str, outgoing: OutgoingTransfer, out: Outbox) -> None:
        if outgoing.mode == "suffix":
            event, what = "catch_up_done", {"positions": len(outgoing.suffix)}
            self.counters["catch_ups_done"] = self.counters.get("catch_ups_done", 0) + 1
        else:
            event, what = "state_transfer_done", {"keys": len(outgoing.items)}
            self.counters["transfers_done"] = self.counters.get("transfers_done", 0) + 1
        out.log(
            event,
            self.view.number,
            backup=backup,
            bytes=outgoing.bytes_sent,
            chunks=outgoing.chunk_index - 1,
            **what,
        )
        del self.outgoings[backup]
        if not self.outgoings:  # the last backup is synced: acknowledge, serve (P4, V14)
            self.start_serving(out)
