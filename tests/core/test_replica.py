"""Replica driven by hand, one test per rule (P1-P7 in docs/protocol.md).

Replicas are real state machines on a ``Wire``; the view service and the clients are recorders,
views are announced by hand (a ``PingReply`` from "vs"), and every message is delivered, dropped
or duplicated explicitly.
"""

from __future__ import annotations

import random

import pytest

from pbkv.core.effects import Effect, Outbox
from pbkv.core.kv_store import KVStore, Limits
from pbkv.core.messages import (
    Append,
    Dump,
    DumpReply,
    Forward,
    ForwardReply,
    Get,
    Operation,
    Ping,
    PingReply,
    Put,
    Reply,
    Request,
    StateTransfer,
    StateTransferReply,
    View,
)
from pbkv.core.replica import Phase, Replica, ReplicaConfig, Role
from pbkv.core.sizes import REPLY_DETAIL_BYTES_MAX, clip_detail, request_bytes_bound
from tests.core.harness import Recorder, Wire, sent
from tests.sim import broken

CONFIG = ReplicaConfig(
    ping_interval_ticks=5,
    forward_retry_ticks=4,
    transfer_retry_ticks=3,
    dump_page_max=8,
    limits=Limits(key_bytes_max=16, value_bytes_max=64),
)
V1 = View(1, "p")
V2 = View(2, "p", ("b",))


class Net:
    """Replicas p, b, c on a wire; "vs", "c1" and "c2" record what reaches them."""

    def __init__(self, config: ReplicaConfig = CONFIG, factory: type[Replica] = Replica) -> None:
        self.wire = Wire()
        self.vs = Recorder()
        self.clients = {"c1": Recorder(), "c2": Recorder()}
        self.wire.add("vs", self.vs)
        for name, client in self.clients.items():
            self.wire.add(name, client)
        self.r: dict[str, Replica] = {}
        for index, name in enumerate(("p", "b", "c")):
            self.r[name] = factory(name, "vs", random.Random(index), config)
            self.wire.add(name, self.r[name])

    def announce(self, view: View, *names: str) -> list[Effect]:
        """The view service tells ``names`` (default: the view's members) about ``view``."""
        effects: list[Effect] = []
        for name in names or view.members():
            member = name in view.members() and name in self.r
            incarnation = self.r[name].incarnation if member else 0
            backups: tuple[int, ...] = ()
            if name == view.primary:  # as the view service does: the backups' processes (P8)
                backups = tuple(self.r[b].incarnation if b in self.r else 0 for b in view.backups)
            effects += self.wire.send("vs", name, PingReply(view, incarnation, backups))
        return effects

    def request(
        self, seq: int, op: Operation, target: str = "p", client: str = "c1", completed: int = 0
    ) -> list[Effect]:
        return self.wire.send(client, target, Request(client, seq, completed, op))

    def replies(self, client: str = "c1") -> list[Reply]:
        """Replies that reached ``client`` so far (delivering those in flight to it)."""
        self.wire.deliver_where(Reply, target=client)
        return self.clients[client].of(Reply)

    def tick(self, name: str, count: int = 1) -> list[Effect]:
        effects: list[Effect] = []
        for _ in range(count):
            out = Outbox()
            self.r[name].on_tick(out)
            effects += self.wire.collect(name, out)
        return effects

    def serving_alone(self) -> Replica:
        self.announce(V1)
        assert self.r["p"].phase is Phase.SERVING
        return self.r["p"]

    def serving_pair(self) -> tuple[Replica, Replica]:
        """p primary of view 2 with b its synced backup (transfer done)."""
        self.serving_alone()
        self.announce(V2)
        self.wire.settle()
        p, b = self.r["p"], self.r["b"]
        assert p.phase is Phase.SERVING and b.phase is Phase.SYNCED
        return p, b

    def put(self, key: str, value: str, seq: int, client: str = "c1") -> Reply:
        self.request(seq, Put(key, value), client=client)
        self.wire.settle()
        return self.clients[client].of(Reply)[-1]


# --- P1 -------------------------------------------------------------------------------------------


def test_p1_adopts_only_higher_views_and_role_follows_the_view() -> None:
    net = Net()
    p = net.r["p"]
    net.announce(View(3, "x", ("p",)), "p")
    assert (p.view.number, p.role, p.phase) == (3, Role.BACKUP, Phase.UNSYNCED)
    net.announce(View(2, "p"), "p")
    net.announce(View(3, "p"), "p")  # same number: the view we hold is authoritative
    assert (p.view, p.role) == (View(3, "x", ("p",)), Role.BACKUP)
    net.announce(View(4, "x"), "p")
    assert (p.view.number, p.role, p.phase) == (4, Role.IDLE, Phase.IDLE)


def test_p1_state_transfer_for_an_older_view_is_refused() -> None:
    net = Net()
    net.announce(View(4, "x", ("b",)), "b")
    effects = net.wire.send("p", "b", StateTransfer(V2, "p", 0, (("k", "v"),), True))
    [reply] = sent(effects, StateTransferReply)
    assert not reply.accepted
    assert net.r["b"].view.number == 4 and net.r["b"].store.data == {}


# --- P2 -------------------------------------------------------------------------------------------


def test_p2_primary_answers_only_after_the_backup_confirmed() -> None:
    net = Net()
    p, b = net.serving_pair()
    net.request(0, Put("k", "v"))
    assert p.store.data == {"k": "v"}  # executed locally at once ...
    [forward] = net.wire.pending(Forward, target="b")
    assert not net.wire.pending(Reply)  # ... but not answered
    net.wire.deliver(forward)
    assert b.store.data == {"k": "v"}
    assert not net.wire.pending(Reply)
    [confirmation] = net.wire.pending(ForwardReply, target="p")
    assert confirmation.message == ForwardReply(2, 1, True)
    net.wire.deliver(confirmation)
    assert net.replies() == [Reply("c1", 0, "ok")]


def test_p2_reads_wait_for_a_read_round_the_backup_echoes() -> None:
    net = Net()
    p, _ = net.serving_pair()
    net.put("k", "v", seq=0)
    net.request(1, Get("k"))
    [forward] = net.wire.pending(Forward, target="b")
    assert forward.message == Forward(2, "p", 1, (), read_round=1)  # no position, a round
    net.wire.drop_where(Forward)
    net.tick("p", CONFIG.forward_retry_ticks - 1)
    assert net.replies() == [Reply("c1", 0, "ok")]  # the read waits for the backup
    assert p.backup_silence() == ("b", CONFIG.forward_retry_ticks - 1)  # V10 counts meanwhile
    net.tick("p")
    net.wire.settle()
    assert net.replies()[-1] == Reply("c1", 1, "ok", "v")
    assert p.counters["reads_by_round"] == 1 and p.backup_silence() == ("", 0)
    assert p.next_index == 1, "a read takes no stream position"


def test_v10_a_write_behind_an_unechoed_round_does_not_restart_the_silence_clock() -> None:
    """V10: a backup that owes a read round has been silent since that round; a write arriving
    meanwhile must not start its silence afresh (the report would come late by up to the whole
    wait, once per silent spell)."""
    net = Net()
    p, _ = net.serving_pair()
    net.put("k", "v", seq=0)
    net.request(1, Get("k"))
    net.wire.drop_where(Forward)  # the round is lost
    net.tick("p", 2)
    net.request(2, Put("k", "w"))
    assert p.backup_silence() == ("b", 2), "counted from the round, not from the write"


def test_a_waiting_read_counts_its_value_in_utf8_bytes_against_the_log_bound() -> None:
    """Bounds are bytes (§10): a read held for its round weighs its request and the UTF-8 bytes
    of the value it will return, not its characters (a 4-byte character counts 4)."""
    net = Net()
    p, _ = net.serving_pair()
    value = "\U0001f600" * 16  # 64 bytes: the limit of CONFIG
    net.put("k", value, seq=0)
    net.request(1, Get("k"))
    [(_, _, _, reply, size)] = p.waiting_reads
    assert reply.value == value
    request = Request("c1", 1, 1, Get("k"))
    assert size == request_bytes_bound(request) + 64 == p.waiting_reads_bytes


def test_p2_a_round_sent_before_the_read_arrived_does_not_confirm_it() -> None:
    net = Net()
    net.serving_pair()
    net.put("k", "v", seq=0)
    net.request(1, Get("k"))
    [first] = net.wire.pending(Forward, target="b")
    net.request(2, Get("k"))  # arrives while round 1 is on its way: it needs round 2
    [second] = [e for e in net.wire.pending(Forward, target="b") if e is not first]
    assert isinstance(first.message, Forward) and isinstance(second.message, Forward)
    assert (first.message.read_round, second.message.read_round) == (1, 2)
    net.wire.deliver(first)
    net.wire.deliver_where(ForwardReply)
    assert [r.seq for r in net.replies()] == [0, 1]  # round 1 answers the first read only
    net.wire.settle()
    assert [r.seq for r in net.replies()] == [0, 1, 2]


def test_p2_reads_arriving_together_share_one_round() -> None:
    net = Net()
    p, _ = net.serving_pair()
    net.put("k", "v", seq=0)
    batch = [("c1", Request("c1", seq, 0, Get("k"))) for seq in (1, 2, 3)]
    out = Outbox()
    p.on_messages(batch, out)
    forwards = sent(net.wire.collect("p", out), Forward)
    assert forwards == [Forward(2, "p", 1, (), read_round=1)]
    net.wire.settle()
    assert [r.value for r in net.replies()] == [None, "v", "v", "v"]


def test_p2_a_read_round_does_not_answer_a_read_before_its_keys_write() -> None:
    net = Net()
    p, _ = net.serving_pair()
    net.request(0, Put("k", "new"))  # position 0 in flight
    [write] = net.wire.pending(Forward, target="b")
    net.request(1, Get("k"))  # shows "new": must wait until the backup holds it (R2)
    [round_only] = [e for e in net.wire.pending(Forward, target="b") if e is not write]
    net.wire.deliver(round_only)  # the backup echoes round 1 but holds no position yet
    net.wire.deliver_where(ForwardReply)
    assert net.replies() == [] and p.waiting_reads
    net.wire.settle()
    assert net.replies() == [Reply("c1", 0, "ok"), Reply("c1", 1, "ok", "new")]


def test_p2_an_echo_of_a_round_never_sent_confirms_no_later_read() -> None:
    """P2: an echo counts only up to the newest round sent. A reply naming a round the primary
    never sent (a confused backup) must not vouch for the rounds that later reads wait for,
    or a late duplicate of an old reply would answer them without a real echo."""
    net = Net()
    p, _ = net.serving_pair()
    net.put("k", "v", seq=0)
    net.wire.send("b", "p", ForwardReply(2, 1, True, 0, read_round=99))
    assert p.read_round_sent == 0
    net.request(1, Get("k"))
    net.wire.drop_where(Forward)  # the round the read waits for is lost
    net.wire.send("b", "p", ForwardReply(2, 1, True, 0, read_round=0))  # a late duplicate
    assert net.replies() == [Reply("c1", 0, "ok")]
    net.tick("p", CONFIG.forward_retry_ticks)
    net.wire.settle()
    assert net.replies()[-1] == Reply("c1", 1, "ok", "v")


def test_p2_a_reply_confirming_a_position_that_does_not_exist_is_ignored() -> None:
    """P2: a backup cannot confirm a position the primary never assigned: such a reply (a
    confused backup) answers nothing and confirms nothing, and the stream goes on."""
    net = Net()
    p, b = net.serving_pair()
    net.request(0, Put("k", "v"))
    net.wire.drop_where(Forward)
    net.wire.send("b", "p", ForwardReply(2, 5, True))
    assert net.replies() == [] and p.acked_index == 0 and p.phase is Phase.SERVING
    net.tick("p", CONFIG.forward_retry_ticks)
    net.wire.settle()
    assert net.replies() == [Reply("c1", 0, "ok")] and b.store.data == {"k": "v"}


def test_c3_a_read_beyond_the_window_is_invalid_as_on_the_stream_path() -> None:
    """C3: a number at or beyond ``completed_below + window`` is refused ``invalid``, reads
    included: the read path without a stream position hands such a read to the stream, which
    refuses it; it never answers it with a value."""
    net = Net()
    net.serving_pair()
    net.put("k", "v", seq=0)
    window = CONFIG.limits.window
    net.request(window - 1, Get("k"))
    net.request(window, Get("k"))
    net.wire.settle()
    answers = {reply.seq: (reply.status, reply.value) for reply in net.replies()}
    assert answers[window - 1] == ("ok", "v")
    assert answers[window] == ("invalid", None)


def test_r2_a_stalled_primary_forgets_its_unconfirmed_writes_with_its_log() -> None:
    """R2: ``unconfirmed_writes`` is emptied whenever the log is, a stall included: a stale
    position left behind would make a later read of that key wait for a write it never had."""
    net = Net()
    p, _ = net.serving_pair()
    net.request(0, Put("k", "v"))
    net.wire.drop_where(Forward)
    assert p.unconfirmed_writes == {"k": 0}
    net.wire.send("b", "p", ForwardReply(2, 0, False, 3))  # refused: b holds a newer view
    assert p.phase is Phase.STALLED and not p.log
    assert p.unconfirmed_writes == {}


def test_p2_primary_without_backup_answers_at_once() -> None:
    net = Net()
    net.serving_alone()
    effects = net.request(0, Append("k", "a"))
    assert sent(effects, Reply) == [Reply("c1", 0, "ok")]
    assert sent(net.request(1, Get("k")), Reply) == [Reply("c1", 1, "ok", "a")]
    assert sent(net.request(2, Get("missing")), Reply) == [Reply("c1", 2, "ok", None)]
    assert not sent(effects, Forward)


def test_p2_replies_leave_in_stream_order() -> None:
    net = Net()
    net.serving_pair()
    for seq in range(5):
        net.request(seq, Append("k", str(seq)))
    net.wire.settle()
    assert [r.seq for r in net.replies()] == [0, 1, 2, 3, 4]


# --- P3 -------------------------------------------------------------------------------------------


def test_p3_backup_refuses_forwards_from_a_non_primary_or_another_view() -> None:
    net = Net()
    _, b = net.serving_pair()
    request = Request("c1", 0, 0, Put("k", "v"))
    for sender, forward in [
        ("x", Forward(2, "x", 0, (request,))),  # not the primary
        ("p", Forward(1, "p", 0, (request,))),  # an older view
        ("p", Forward(3, "p", 0, (request,))),  # a view the backup does not hold
    ]:
        [reply] = sent(net.wire.send(sender, "b", forward), ForwardReply)
        assert reply == ForwardReply(forward.view_number, 0, False, 2)
    assert b.store.data == {} and b.backup_next_index == 0


def test_p3_backup_refuses_forwards_before_its_transfer_completed() -> None:
    net = Net()
    net.serving_alone()
    net.announce(V2, "b")
    request = Request("c1", 0, 0, Put("k", "v"))
    [reply] = sent(net.wire.send("p", "b", Forward(2, "p", 0, (request,))), ForwardReply)
    assert not reply.accepted
    assert net.r["b"].store.data == {}


def test_p3_deposed_primary_answers_wrong_server_and_stalls_until_a_newer_view() -> None:
    net = Net()
    p, b = net.serving_pair()
    assert net.put("k", "v", seq=0).status == "ok"
    net.announce(View(3, "b"), "b")  # p was declared dead; p does not know
    net.request(1, Get("k"))
    net.wire.settle()
    assert p.phase is Phase.STALLED
    [_, refused] = net.replies()
    assert (refused.seq, refused.status, refused.value) == (1, "wrong_server", None)
    # The refusal says why, for `pbkv cluster probe` and the client's unavailable message.
    stalled = "p is primary (stalled) in view 2: backup b refused its forward (it is in view 3)"
    assert refused.detail == stalled
    net.request(2, Put("k", "w"))
    assert net.replies()[-1].status == "wrong_server"
    assert net.replies()[-1].detail == stalled  # every later request hears why, too
    assert p.store.data == {"k": "v"}  # a stalled primary executes nothing
    net.tick("p", CONFIG.forward_retry_ticks * 3)
    assert not net.wire.pending(Forward)
    net.announce(View(4, "b", ("p",)), "p")
    assert (p.role, p.phase) == (Role.BACKUP, Phase.UNSYNCED)
    assert b.role is Role.PRIMARY


@pytest.mark.parametrize(
    ("factory", "stale"), [(Replica, False), (broken.ReadsConfirmedByAnEarlierRound, True)]
)
def test_p3_an_echo_sent_before_a_read_arrived_cannot_confirm_it(
    factory: type[Replica], stale: bool
) -> None:
    net = Net(factory=factory)
    net.serving_pair()
    net.put("k", "old", seq=0)
    net.request(1, Get("k"))  # round 1 leaves for b
    net.wire.deliver_where(Forward, target="b")
    [echo] = net.wire.pending(ForwardReply, target="p")  # b's echo, slow on its way back
    net.announce(View(3, "b"), "b")  # p was declared dead; p does not know
    net.request(0, Put("k", "new"), target="b", client="c2")
    assert net.replies("c2") == [Reply("c2", 0, "ok")]
    net.request(2, Get("k"))  # invoked after "new" was acknowledged
    net.wire.deliver(echo)
    net.wire.settle()
    answers = {r.seq: (r.status, r.value) for r in net.replies()}
    assert answers[1] == ("ok", "old")  # it overlapped the write: either value is right
    assert (answers.get(2) == ("ok", "old")) is stale


@pytest.mark.parametrize(
    ("factory", "stale"), [(Replica, False), (broken.ConfirmsReadsWithOneBackup, True)]
)
def test_p2_with_two_backups_a_read_round_needs_the_echo_of_both(
    factory: type[Replica], stale: bool
) -> None:
    """P2 "why every backup, for reads": p and c are cut off from b, which is promoted without
    c; c, still in view 2, would echo p's round."""
    net = Net(factory=factory)
    net.serving_alone()
    net.announce(View(2, "p", ("b", "c")))
    net.wire.settle()
    net.put("k", "old", seq=0)
    net.wire.cut("b", "p", "c")
    net.announce(View(3, "b"), "b")
    net.request(0, Put("k", "new"), target="b", client="c2")
    assert net.replies("c2") == [Reply("c2", 0, "ok")]
    net.request(1, Get("k"))
    net.wire.settle()
    assert (net.replies()[-1] == Reply("c1", 1, "ok", "old")) is stale


# --- P4 and P6: entering a view with a backup -------------------------------------------------


def test_p4_requests_arriving_during_the_transfer_are_queued_then_served() -> None:
    net = Net()
    p = net.serving_alone()
    net.put("a", "1", seq=0)
    net.announce(V2)  # b learns the view from the view service, never from a chunk (V10)
    assert p.phase is Phase.TRANSFERRING
    effects = net.request(1, Append("a", "2"))
    assert not sent(effects, Reply) and not sent(effects, Forward)
    assert p.store.data == {"a": "1"} and len(p.queue) == 1
    net.wire.settle()
    assert net.r["p"].phase is Phase.SERVING
    assert net.replies()[-1] == Reply("c1", 1, "ok")
    assert net.r["b"].store.data == p.store.data == {"a": "12"}


def test_p6_requests_pending_at_a_view_change_are_answered_after_the_transfer() -> None:
    net = Net()
    p, _ = net.serving_pair()
    net.request(0, Put("k", "1"))
    net.wire.drop_where(Forward)  # b dies with the forward
    net.announce(View(3, "p", ("c",)), "p", "c")
    assert p.phase is Phase.TRANSFERRING
    net.wire.pass_probe("c")
    [chunk] = net.wire.pending(StateTransfer, target="c")
    net.wire.deliver(chunk)
    assert net.r["c"].store.data == {"k": "1"}  # the executed write is in the snapshot
    assert not net.wire.pending(Reply)
    net.wire.deliver_where(StateTransferReply)
    assert net.replies() == [Reply("c1", 0, "ok")]


def test_p4_transfer_is_chunked_and_installs_everything() -> None:
    net = Net(ReplicaConfig(transfer_chunk_bytes=40))
    p = net.serving_alone()
    for i in range(20):
        net.request(i, Put(f"key{i:02}", f"value{i}"), completed=i)
    net.announce(V2)
    net.wire.settle()
    chunks = [e.message for e in net.wire.history if isinstance(e.message, StateTransfer)]
    assert len(chunks) > 3
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    b = net.r["b"]
    assert b.store.data == p.store.data and len(b.store.data) == 20
    assert b.store.session_records() == p.store.session_records()
    assert b.synced_view == 2 and b.backup_next_index == p.next_index


def test_p4_backup_ignores_gaps_and_accepts_duplicate_chunks_without_reapplying() -> None:
    net = Net(ReplicaConfig(transfer_chunk_bytes=30))
    p = net.serving_alone()
    for i in range(6):
        net.request(i, Put(f"key{i}", f"value{i}"))
    net.announce(V2)
    b = net.r["b"]
    net.wire.pass_probe("b")
    [first] = net.wire.pending(StateTransfer, target="b")
    assert isinstance(first.message, StateTransfer) and not first.message.last
    future = StateTransfer(V2, "p", 5, (("bogus", "x"),), True, (), 99)
    assert not sent(net.wire.send("p", "b", future), StateTransferReply)  # a gap: no answer
    net.wire.deliver(first)
    assert not net.wire.pending(StateTransfer)  # stop-and-wait: chunk 1 follows the reply
    net.wire.deliver_where(StateTransferReply)
    assert len(net.wire.pending(StateTransfer)) == 1
    [duplicate] = sent(net.wire.send("p", "b", first.message), StateTransferReply)
    assert duplicate.accepted and duplicate.chunk_index == 1
    assert net.wire.send("p", "b", future) == []  # still a gap
    net.wire.settle()
    assert b.phase is Phase.SYNCED
    assert b.store.data == p.store.data and "bogus" not in b.store.data
    assert p.phase is Phase.SERVING


def test_p4_lost_chunk_is_resent_after_transfer_retry_ticks() -> None:
    net = Net()
    p = net.serving_alone()
    net.put("k", "v", seq=0)
    net.announce(V2)
    [lost] = net.wire.pending(StateTransfer)
    net.wire.drop_where(StateTransfer)
    effects = net.tick("p", CONFIG.transfer_retry_ticks - 1)
    assert not sent(effects, StateTransfer)
    effects = net.tick("p")
    assert sent(effects, StateTransfer, target="b") == [lost.message]
    net.wire.settle()
    assert p.phase is Phase.SERVING and net.r["b"].store.data == {"k": "v"}


def test_p4_primary_acknowledges_the_view_only_after_the_transfer() -> None:
    net = Net()
    p = net.serving_alone()
    net.announce(V2)
    effects = net.tick("p", CONFIG.ping_interval_ticks * 3)
    pings = sent(effects, Ping, target="vs")
    assert pings and {ping.view_number for ping in pings} == {1}
    net.wire.deliver_where(Ping)
    net.wire.pass_probe()
    net.wire.drop_where(StateTransfer)  # resent probes
    net.tick("p", CONFIG.transfer_retry_ticks)  # the chunk went out before the probe copies
    net.wire.deliver(net.wire.pending(StateTransfer)[0])
    [confirmation] = net.wire.pending(StateTransferReply)
    effects = net.wire.deliver(confirmation)
    assert sent(effects, Ping) == [
        Ping(
            "p",
            2,
            p.incarnation,
            0,
            holds_state=True,
            held_view=2,
            clock_tick=p.clock,
            limits=p.limits_reported,
        )
    ]


def test_p4_promoted_backup_keeps_pinging_the_view_it_synced_in_until_it_acknowledges() -> None:
    """Bug found: a backup promoted into a view with a new backup pinged view number 0 while
    transferring (it had never acknowledged a view as primary). A view service restarted from its
    persisted view reads 0 from a member it does not know as "restarted" (V8), and fails over away
    from the only server holding the data (or blocks, if the new backup dies too)."""
    net = Net()
    _, b = net.serving_pair()
    net.announce(View(3, "b", ("c",)), "b", "c")
    assert b.phase is Phase.TRANSFERRING
    pings = sent(net.tick("b", CONFIG.ping_interval_ticks), Ping, target="vs")
    assert pings and all(0 < ping.view_number < 3 for ping in pings)
    net.wire.settle()
    assert sent(net.tick("b", CONFIG.ping_interval_ticks), Ping)[-1].view_number == 3


def test_backup_pings_its_view_number_only_once_synced() -> None:
    """An unsynced backup holds nothing for its view: it pings 0 like a fresh process, so a
    restarted view service cannot take a restarted backup for the original (V8)."""
    net = Net()
    net.serving_alone()
    net.announce(V2, "b")
    b = net.r["b"]
    pings = sent(net.tick("b", CONFIG.ping_interval_ticks), Ping)
    assert [(ping.view_number, ping.synced_view) for ping in pings] == [(0, 0)]
    net.announce(V2, "p")
    net.wire.settle()
    assert b.phase is Phase.SYNCED
    pings = sent(net.tick("b", CONFIG.ping_interval_ticks), Ping)
    assert [(ping.view_number, ping.synced_view) for ping in pings] == [(2, 2)]


def test_p4_primary_restarts_the_transfer_when_its_new_backup_is_replaced() -> None:
    net = Net()
    p = net.serving_alone()
    net.put("k", "v", seq=0)
    net.announce(V2)
    net.wire.drop_where(StateTransfer)  # b died during its own transfer
    net.request(1, Append("k", "w"))
    net.announce(View(3, "p", ("c",)), "p", "c")  # V7: same primary, new backup
    assert p.phase is Phase.TRANSFERRING and len(p.queue) == 1
    net.wire.settle()
    assert net.r["c"].store.data == {"k": "vw"}
    assert net.replies()[-1] == Reply("c1", 1, "ok")


def test_p4_exactly_once_table_survives_transfer_and_failover() -> None:
    net = Net()
    net.serving_alone()
    retry = Request("c1", 0, 0, Append("k", "x"))
    assert sent(net.wire.send("c1", "p", retry), Reply)[0].status == "ok"
    net.announce(V2)
    net.wire.settle()
    net.announce(View(3, "b"), "b")  # p fails; b is promoted
    b = net.r["b"]
    assert b.phase is Phase.SERVING
    [reply] = sent(net.wire.send("c1", "b", retry), Reply)  # the client's retry
    assert reply.status == "ok"
    assert b.store.data == {"k": "x"}  # not re-applied
    late = Request("c1", 0, 0, Append("k", "x"))
    net.wire.send("c1", "b", Request("c1", 1, 1, Get("k")))
    assert sent(net.wire.send("c1", "b", late), Reply)[0].status == "stale"


def test_p4_refused_transfer_stalls_the_primary() -> None:
    net = Net()
    p = net.serving_alone()
    net.announce(V2, "p")
    net.announce(View(3, "b"), "b")  # b already moved on
    net.request(0, Put("k", "v"))
    net.wire.settle()
    assert p.phase is Phase.STALLED
    detail = "p is primary (stalled) in view 2: backup b refused the state transfer"
    assert net.replies() == [Reply("c1", 0, "wrong_server", None, detail)]


def test_a_refusal_naming_two_maximal_servers_stays_within_the_reply_detail_bound() -> None:
    """Two 255-byte names (the protocol's longest) and the reason pass 512 bytes: cut, never
    inside a character, so the reply still fits what the size check reserved for it."""
    net = Net()
    p = net.serving_alone()
    p.name = "é" * 127 + "p"  # 255 bytes of UTF-8
    backup = "ü" * 127 + "b"
    detail = p.refusal_because(f"backup {backup} refused its forward (it is in view 3)")
    assert detail.startswith(f"{p.name} is primary (serving) in view 1: backup ")
    assert REPLY_DETAIL_BYTES_MAX - 1 <= len(detail.encode()) <= REPLY_DETAIL_BYTES_MAX
    assert clip_detail("short") == "short"
    assert clip_detail("ab" * 300) == "ab" * 256


# --- P5 -------------------------------------------------------------------------------------------


def test_p5_backup_applies_each_position_once_in_order() -> None:
    net = Net()
    _, b = net.serving_pair()
    a0 = Request("A", 0, 0, Append("k", "a"))
    b0 = Request("B", 0, 0, Append("k", "b"))
    a1 = Request("A", 1, 0, Append("k", "c"))
    deliveries = [
        (1, (b0,), 0),  # ahead of a gap: not applied
        (0, (a0, b0), 2),
        (1, (b0, a1), 3),  # overlapping: only the new position applies
        (0, (a0,), 3),  # duplicate
        (1, (b0,), 3),  # late duplicate
    ]
    for start, requests, expected_next in deliveries:
        [reply] = sent(net.wire.send("p", "b", Forward(2, "p", start, requests)), ForwardReply)
        assert reply == ForwardReply(2, expected_next, True)
    reference = KVStore(CONFIG.limits)
    for request in (a0, b0, a1):
        reference.execute(request)
    assert b.store.data == reference.data == {"k": "abc"}
    # The exactly-once table is identical too (re-executing would reorder its LRU).
    assert b.store.session_records() == reference.session_records()


def test_p5_lost_forward_is_resent_after_forward_retry_ticks() -> None:
    net = Net()
    _, b = net.serving_pair()
    net.request(0, Put("k", "v"))
    [lost] = net.wire.pending(Forward)
    net.wire.drop_where(Forward)
    assert not sent(net.tick("p", CONFIG.forward_retry_ticks - 1), Forward)
    assert sent(net.tick("p"), Forward, target="b") == [lost.message]
    net.wire.settle()
    assert net.replies() == [Reply("c1", 0, "ok")]
    assert b.store.data == {"k": "v"}
    assert not sent(net.tick("p", CONFIG.forward_retry_ticks * 2), Forward)


def test_p5_group_commit_sends_what_arrived_meanwhile_in_one_batch() -> None:
    net = Net(ReplicaConfig(forwards_in_flight_max=1))
    net.serving_pair()
    for seq in range(10):
        net.request(seq, Append("k", str(seq)))
    forwards = [e.message for e in net.wire.pending(Forward)]
    assert forwards == [Forward(2, "p", 0, (Request("c1", 0, 0, Append("k", "0")),))]
    net.wire.deliver_where(Forward)
    net.wire.deliver_where(ForwardReply)
    [batch] = [e.message for e in net.wire.pending(Forward)]
    assert isinstance(batch, Forward)
    assert batch.start_index == 1 and [r.seq for r in batch.requests] == list(range(1, 10))
    net.wire.settle()
    assert [r.seq for r in net.replies()] == list(range(10))
    assert net.r["b"].store.data == {"k": "0123456789"}


def test_p5_requests_handled_together_leave_in_one_forward() -> None:
    net = Net()
    p, _ = net.serving_pair()
    batch = [("c1", Request("c1", seq, 0, Append("k", str(seq)))) for seq in range(5)]
    batch.insert(2, ("c2", Request("c2", 0, 0, Get("k"))))
    out = Outbox()
    p.on_messages(batch, out)
    net.wire.collect("p", out)
    [forward] = _forwards(net)  # the writes, and the read's round (P2), in one forward
    assert (forward.start_index, len(forward.requests), forward.read_round) == (0, 5, 1)
    assert not net.replies() and not net.replies("c2")  # P2: nothing answered before the backup
    net.wire.settle()
    assert [r.seq for r in net.replies()] == list(range(5))
    assert net.replies("c2")[0].value == "01"  # read when it arrived, not at the batch's end
    assert net.r["b"].store.data == {"k": "01234"}


def test_p5_batches_are_bounded_and_in_flight_forwards_too() -> None:
    net = Net(ReplicaConfig(forwards_in_flight_max=2, forward_batch_requests_max=3))
    net.serving_pair()
    net.request(0, Put("k", "0"))
    for seq in range(1, 10):
        net.request(seq, Append("k", str(seq)))
    assert [(f.start_index, len(f.requests)) for f in _forwards(net)] == [(0, 1), (1, 1)]
    net.wire.deliver_where(Forward)
    net.wire.deliver_where(ForwardReply)  # two in flight at most, 3 requests each at most
    assert [(f.start_index, len(f.requests)) for f in _forwards(net)] == [(2, 3), (5, 3)]
    net.wire.settle()
    assert len(net.replies()) == 10
    assert net.r["b"].store.data == {"k": "0123456789"}


def _forwards(net: Net) -> list[Forward]:
    return [e.message for e in net.wire.pending(Forward) if isinstance(e.message, Forward)]


def test_p5_reversed_forwards_are_applied_in_stream_order() -> None:
    """DSLabs DP18 at unit level: two clients' forwards reach the backup in reverse order."""
    net = Net()
    p, b = net.serving_pair()
    net.request(0, Append("k", "x"), client="c1")
    net.request(0, Append("k", "y"), client="c2")
    for envelope in reversed(net.wire.pending(Forward)):
        net.wire.deliver(envelope)
    net.wire.settle()
    assert net.replies("c1") == [Reply("c1", 0, "ok")]
    assert net.replies("c2") == []  # its forward came too early; resent after the retry time
    net.tick("p", CONFIG.forward_retry_ticks)
    net.wire.settle()
    assert net.replies("c2") == [Reply("c2", 0, "ok")]
    assert b.store.data == p.store.data == {"k": "xy"}


# --- bounds, roles, introspection --------------------------------------------------------------


def test_queue_during_transfer_is_bounded() -> None:
    net = Net(ReplicaConfig(requests_queued_max=2))
    net.serving_alone()
    net.announce(V2)
    for seq in range(3):
        net.request(seq, Put("k", str(seq)))
    [busy] = net.replies()
    assert (busy.seq, busy.status, busy.detail) == (2, "busy", "state transfer")
    net.wire.settle()
    assert [(r.seq, r.status) for r in net.replies()] == [(2, "busy"), (0, "ok"), (1, "ok")]


def test_replication_backlog_is_bounded() -> None:
    net = Net(ReplicaConfig(log_entries_max=3))
    net.serving_pair()
    net.wire.drop_where()
    for seq in range(4):
        net.request(seq, Put("k", str(seq)))
    [busy] = net.replies()
    assert (busy.seq, busy.status, busy.detail) == (3, "busy", "replication backlog")
    assert net.r["p"].store.data == {"k": "2"}  # the refused write was not executed


def test_p7_fresh_server_told_it_is_primary_of_a_later_view_refuses_to_serve() -> None:
    net = Net()
    p = net.r["p"]
    effects = net.announce(View(3, "p", ("b",)), "p")
    assert p.phase is Phase.UNSYNCED and not p.synced
    assert not sent(effects, StateTransfer)
    net.request(0, Put("k", "v"))
    assert net.replies()[0].status == "wrong_server"
    pings = sent(net.tick("p", CONFIG.ping_interval_ticks * 3), Ping)
    assert pings and {ping.view_number for ping in pings} == {0}  # never acknowledges
    net.announce(View(4, "p"), "p")
    assert p.phase is Phase.UNSYNCED  # not even alone


def test_p7_fresh_primary_of_view_1_serves() -> None:
    net = Net()
    p = net.serving_alone()
    assert p.synced and p.role is Role.PRIMARY
    assert sent(net.request(0, Put("k", "v")), Reply) == [Reply("c1", 0, "ok")]
    assert sent(net.tick("p", CONFIG.ping_interval_ticks), Ping)[-1].view_number == 1


def test_p7_restart_of_view_1_primary_does_not_take_the_role_formed_with_its_predecessor() -> None:
    net = Net()
    p = net.r["p"]
    net.wire.send("vs", "p", PingReply(V1, p.incarnation + 1))  # the view names another process
    assert p.phase is Phase.UNSYNCED
    assert net.request(0, Get("k")) and net.replies()[0].status == "wrong_server"
    fresh = Net()
    fresh.wire.send("vs", "p", PingReply(V1, fresh.r["p"].incarnation))
    assert fresh.r["p"].phase is Phase.SERVING


def test_synced_backup_promoted_to_primary_serves_its_state() -> None:
    net = Net()
    _, b = net.serving_pair()
    net.put("k", "v", seq=0)
    net.announce(View(3, "b"), "b")
    assert (b.role, b.phase) == (Role.PRIMARY, Phase.SERVING)
    assert sent(net.request(1, Get("k"), target="b"), Reply) == [Reply("c1", 1, "ok", "v")]


def test_non_primary_answers_wrong_server() -> None:
    net = Net()
    net.serving_pair()
    net.announce(V2, "c")  # c is idle in view 2
    for target in ("b", "c"):
        [reply] = sent(net.request(0, Get("k"), target=target), Reply)
        assert reply.status == "wrong_server"
        assert f"{target} is " in reply.detail and "view 2" in reply.detail
    assert net.r["b"].store.data == {}


def test_dump_pages_through_the_store() -> None:
    net = Net()
    p = net.serving_alone()
    for i in range(25):
        net.request(i, Put(f"k{i:02}", str(i)), completed=i)
    [page] = sent(net.wire.send("op", "p", Dump(offset=10, limit=5)), DumpReply)
    assert page.items == tuple((f"k{i:02}", str(i)) for i in range(10, 15))
    assert (page.total_keys, page.offset, page.role, page.phase) == (25, 10, "primary", "serving")
    assert page.view == V1 and page.synced and page.sessions == 1
    [capped] = sent(net.wire.send("op", "p", Dump(offset=20, limit=100)), DumpReply)
    assert len(capped.items) == 5
    [full] = sent(net.wire.send("op", "p", Dump(offset=0, limit=100)), DumpReply)
    assert len(full.items) == CONFIG.dump_page_max
    [past] = sent(net.wire.send("op", "p", Dump(offset=99)), DumpReply)
    assert past.items == () and past.total_keys == 25
    assert len(p.store.data) == 25


def test_too_large_requests_are_refused_with_a_clear_detail() -> None:
    net = Net()
    p = net.serving_alone()
    [key] = sent(net.request(0, Put("k" * 17, "v")), Reply)
    assert (key.status, key.detail) == ("too_large", "key exceeds 16 bytes")
    net.request(1, Put("k", "v" * 60))
    [value] = sent(net.request(2, Append("k", "v" * 5)), Reply)
    assert (value.status, value.detail) == ("too_large", "value exceeds 64 bytes")
    assert p.store.data == {"k": "v" * 60}


def test_check_invariants_catches_a_broken_replica() -> None:
    net = Net()
    p, _ = net.serving_pair()
    p.acked_index = p.next_index + 1
    with pytest.raises(AssertionError):
        p.check_invariants()
