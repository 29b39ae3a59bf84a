"""Deliberately broken replicas and view services (test code only), one overridden method each.

Each breaks one rule of docs/protocol.md; ``test_broken_variants`` shows that the simulator's
checkers catch every one within a fixed seed budget, which is what lets us trust a clean sweep.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pbkv.core.effects import Outbox
from pbkv.core.messages import (
    Delete,
    Forward,
    ForwardReply,
    Reply,
    Request,
    StateTransferReply,
    View,
)
from pbkv.core.replica import Phase, Replica
from pbkv.core.view_service import ViewService


class ReadsWithoutBackup(Replica):
    """Breaks P2 for reads: a serving primary answers gets from its own store at once, with no
    read round (a deposed primary answers from a store its successor has overwritten)."""

    def read_locally(self, source: str, request: Request, out: Outbox) -> bool:
        op = request.op
        out.send(source, Reply(request.client_id, request.seq, "ok", self.store.data.get(op.key)))
        return True


class ReadsConfirmedByAnEarlierRound(Replica):
    """Breaks P2's read round: a read waits for the round already on its way when it arrived,
    so an echo the backup sent before the read arrived (and before it moved to a newer view)
    confirms it."""

    def next_read_round(self) -> int:
        sent = self.read_round_sent
        fresh = super().next_read_round()  # still opened, so that echoes keep coming
        return sent if sent > 0 else fresh


class TransferWithoutSessions(Replica):
    """Breaks P4/C1: the state transfer carries the store but not the exactly-once table."""

    def choose_transfer(self, backup: str, reply: StateTransferReply, out: Outbox) -> None:
        super().choose_transfer(backup, reply, out)
        self.outgoings[backup].sessions = ()


class AcceptsStalePrimary(Replica):
    """Breaks P3: any server holding replica state applies and confirms forwards from any sender,
    whatever view it names (a deposed primary keeps a willing "backup")."""

    def on_forward(self, source: str, forward: Forward, out: Outbox) -> None:
        if not self.synced:
            out.send(source, ForwardReply(forward.view_number, 0, False, self.view.number))
            return
        start = forward.start_index
        if start <= self.backup_next_index:
            for request in forward.requests[self.backup_next_index - start :]:
                self.store.execute(request)
            self.backup_next_index = max(self.backup_next_index, start + len(forward.requests))
        reply = ForwardReply(forward.view_number, self.backup_next_index, True)
        out.send(source, msgspec.structs.replace(reply, read_round=forward.read_round))

    def check_invariants(self) -> None:
        """Its store no longer matches its stream positions: leave catching it to the checker."""

    def suffix_for(self, position: int, tag: int) -> None:
        return None  # positions mean nothing here: always the complete state


class AnswersBeforeBackup(Replica):
    """Breaks P2: the primary answers a request as soon as it executed it, before the backup
    confirmed it (and again when confirmed; the client ignores the second answer)."""

    def execute(self, source: str, request: Request, out: Outbox) -> None:
        before = self.next_index
        super().execute(source, request, out)
        if self.view.backup is not None and self.next_index > before:
            self.reply(source, request, self.log[-1].outcome, out)


class AnswersAfterOneOfTheBackups(Replica):
    """Breaks P2 with K backups: a position is answered once any one backup confirmed it (the
    fastest), not every backup; a promoted slower backup misses acknowledged writes."""

    def on_forward_reply(self, source: str, reply: ForwardReply, out: Outbox) -> None:
        super().on_forward_reply(source, reply, out)
        if self.streams and self.phase is Phase.SERVING:
            fastest = max(stream.acked for stream in self.streams.values())
            for stream in self.streams.values():
                stream.acked = max(stream.acked, fastest)
                stream.sent = max(stream.sent, fastest)
            self.confirm_through(fastest, out)


class ConfirmsReadsWithOneBackup(Replica):
    """Breaks P2/P3 with K backups: a read's round counts as confirmed once one backup echoed
    it; a deposed primary whose remaining backup was left out of the new view serves stale
    reads."""

    def rounds_confirmed(self) -> int:
        return max(stream.round_acked for stream in self.streams.values())


class ResendRestartsSilence(Replica):
    """Breaks V10 / N5 for reads (the read rounds as first shipped, 2d9092d): each resend of
    an unechoed round starts the backup's silence afresh, so a backup cut off from the primary
    for good while only reads wait is never reported, and the reads never complete."""

    def maybe_retransmit_forwards(self, out: Outbox) -> None:
        super().maybe_retransmit_forwards(out)
        for stream in self.streams.values():
            if stream.progress_tick == self.now and stream.acked == self.next_index:
                stream.heard_tick = self.now  # owes only a round, just resent: "silent" anew


class PromotesIdleServer(ViewService):
    """Breaks V5: when the primary fails, an idle server becomes primary (no state)."""

    def next_view(self) -> View | None:
        view = self.view
        if view.number != 0 and not self.member_ok(view.primary):
            idle = self.pick_idle(view.primary or "", exclude=[])
            if idle is not None and idle not in view.members():
                return View(view.number + 1, idle, ())
        return super().next_view()


class PromotesUnsyncedBackup(ViewService):
    """Breaks V4/V6: the backup is promoted when the primary fails even if the view was never
    acknowledged and the backup never reported a completed transfer (it may hold nothing)."""

    def next_view(self) -> View | None:
        view = self.view
        if view.number != 0 and not self.member_ok(view.primary):
            backup = view.backup
            if backup is not None and self.member_ok(backup):
                return self.make_view(backup, [])
            return None
        return super().next_view()


__all__ = [
    "AcceptsStalePrimary",
    "AnswersAfterOneOfTheBackups",
    "AnswersBeforeBackup",
    "ConfirmsReadsWithOneBackup",
    "PromotesIdleServer",
    "PromotesUnsyncedBackup",
    "ReadsConfirmedByAnEarlierRound",
    "ReadsWithoutBackup",
    "TransferWithoutSessions",
]


class LeaseOutlivesDeadInterval(ViewService):
    """Breaks R1: the primary is granted a read lease three dead intervals long, so it still
    answers reads alone after the view service promoted its backup."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.leases.lease:
            self.leases.lease = 3 * self.config.dead_after_ticks


class NoLeaseRecheckAfterPause(Replica):
    """Breaks R4: the primary judges its lease by the ticks it was handed, not by the clock the
    host reports, so after a pause it answers reads from a lease that ran out while frozen."""

    def observe_clock(self, clock_ticks: int) -> None:
        pass


class UnconfirmedDeletesForgotten(Replica):
    """Breaks R2's per-key rule for one kind of write: a delete does not mark its key as
    unconfirmed, so a leased read of that key answers "absent" at once, although a failover may
    still lose the delete (and bring the value back)."""

    def execute(self, source: str, request: Request, out: Outbox) -> None:
        super().execute(source, request, out)
        if type(request.op) is Delete:
            self.unconfirmed_writes.pop(request.op.key, None)


class LeasedReadBeforeEarlierWrites(Replica):
    """Breaks R2's second half: a leased read is answered at once even while the latest write
    to its key waits for the backup, so it may show a write that a failover then loses."""

    def read_locally(self, source: str, request: Request, out: Outbox) -> bool:
        answered = super().read_locally(source, request, out)
        while self.waiting_reads:
            _, _, target, reply, size = self.waiting_reads.pop()
            self.waiting_reads_bytes -= size
            out.send(target, reply)
        return answered
