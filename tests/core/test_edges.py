"""Regression tests for the edge review (issue #8): sizes, restarts, stale and forged messages.

Each test names the finding it pins and the invariant it restores (docs/protocol.md). Every one
of them failed on the code before the fix.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from pbkv.core.client_session import ClientConfig, ClientSession
from pbkv.core.effects import Deliver, Log, Outbox
from pbkv.core.kv_store import KVStore, Limits
from pbkv.core.messages import (
    WRONG_NODE_PREFIX,
    Append,
    Dump,
    DumpReply,
    ErrorReply,
    Forward,
    ForwardReply,
    Get,
    GetView,
    Ping,
    PingReply,
    Put,
    Reply,
    Request,
    StateTransfer,
    StateTransferReply,
    StatusRequest,
    View,
    ViewReply,
    ViewServiceStatus,
)
from pbkv.core.replica import Phase, Replica, ReplicaConfig, Role
from pbkv.core.sizes import check_size_settings
from pbkv.core.view_service import ViewService, ViewServiceConfig
from tests.core.harness import logged, sent
from tests.core.test_replica import CONFIG, V1, V2, Net

ENCODER = msgspec.msgpack.Encoder()
SMALL_LIMITS = Limits(key_bytes_max=16, value_bytes_max=2048, client_id_bytes_max=32, window=64)
SMALL_FRAME = 8192


# --- finding 1: one request must never wedge the stream (L1, L4) --------------------------------


def test_oversized_put_is_refused_before_it_enters_the_stream() -> None:
    net = Net()
    p, _ = net.serving_pair()
    effects = net.request(0, Put("k", "v" * (CONFIG.limits.value_bytes_max + 1)))
    [reply] = sent(effects, Reply)
    assert reply.status == "too_large"
    assert not sent(effects, Forward) and p.next_index == 0 and not p.log


def test_oversized_append_value_is_refused_before_it_enters_the_stream() -> None:
    net = Net()
    p, _ = net.serving_pair()
    effects = net.request(0, Append("k", "v" * (CONFIG.limits.value_bytes_max + 1)))
    assert [r.status for r in sent(effects, Reply)] == ["too_large"]
    assert p.next_index == 0


def test_client_id_over_its_cap_is_refused_and_never_recorded() -> None:
    net = Net()
    p, _ = net.serving_pair()
    long_id = "c" * (CONFIG.limits.client_id_bytes_max + 1)
    effects = net.wire.send("c1", "p", Request(long_id, 0, 0, Put("k", "v")))
    [reply] = sent(effects, Reply)
    assert reply.status == "invalid" and "client id" in reply.detail
    assert long_id not in p.store.sessions and p.next_index == 0


def test_forwards_are_cut_to_fit_the_frame_whatever_the_batch_setting() -> None:
    """Two maximal requests used to leave in one forward over the frame limit, dropped by the
    receiver and re-cut identically on every retransmit: replication stopped for good."""
    config = ReplicaConfig(
        limits=SMALL_LIMITS, frame_bytes_max=SMALL_FRAME, forward_batch_bytes_max=1 << 30
    )
    net = Net(config)
    p, b = net.serving_pair()
    for seq in range(12):
        net.request(seq, Put(f"k{seq}", "x" * SMALL_LIMITS.value_bytes_max))
    forwards: list[Forward] = []
    for _ in range(40):
        pending = net.wire.pending(Forward)
        if not pending:
            break
        forwards += [envelope.message for envelope in pending]  # type: ignore[misc]
        net.wire.deliver_where(Forward)
        net.wire.deliver_where(ForwardReply)
    assert len(forwards) >= 4
    assert all(len(ENCODER.encode(forward)) <= SMALL_FRAME for forward in forwards)
    assert b.store.data == p.store.data and len(p.store.data) == 12


def test_dump_pages_fit_the_frame() -> None:
    config = ReplicaConfig(limits=SMALL_LIMITS, frame_bytes_max=SMALL_FRAME, dump_page_max=1000)
    net = Net(config)
    p = net.serving_alone()
    for seq in range(10):
        net.put(f"k{seq}", "y" * SMALL_LIMITS.value_bytes_max, seq)
    [reply] = sent(net.wire.send("op", "p", Dump(0, 1000)), DumpReply)
    assert 0 < len(reply.items) < 10 and reply.total_keys == 10
    assert len(ENCODER.encode(reply)) <= SMALL_FRAME
    assert p.store.data[reply.items[0][0]] == reply.items[0][1]


# --- finding 2: size settings are checked against each other ------------------------------------


def test_value_limit_over_the_frame_limit_is_refused_at_start() -> None:
    limits = Limits(value_bytes_max=24 * 1024 * 1024)
    with pytest.raises(ValueError, match="--frame-bytes-max"):
        Replica("s", "vs", random.Random(1), ReplicaConfig(limits=limits))


def test_size_settings_name_what_does_not_fit() -> None:
    error = check_size_settings(1 << 20, 1024, 1 << 20, 128, 4096)
    assert error is not None and "--value-bytes-max 1048576" in error
    assert check_size_settings(1 << 24, 1024, 1 << 20, 128, 4096) is None
    window_error = check_size_settings(16_384, 16, 64, 32, 4096)
    assert window_error is not None and "exactly-once record" in window_error


# --- finding 3: a view service without its state never splits the brain (V1, V11) --------------


def fresh_vs(**config: object) -> ViewService:
    settings: dict[str, object] = {"first_view_grace_ticks": 0, **config}
    return ViewService("vs", ViewServiceConfig(dead_after_ticks=5, **settings))  # type: ignore[arg-type]


def ping(vs: ViewService, name: str, number: int, incarnation: int, **fields: object) -> Outbox:
    out = Outbox()
    vs.on_message(name, Ping(name, number, incarnation, **fields), out)  # type: ignore[arg-type]
    return out


def status(vs: ViewService) -> ViewServiceStatus:
    out = Outbox()
    vs.on_message("op", StatusRequest(), out)
    [reply] = sent(out.effects, ViewServiceStatus)
    return reply


def test_fresh_view_service_issues_no_view_while_a_server_holds_a_newer_one() -> None:
    vs = fresh_vs()
    ping(vs, "old-primary", 7, 11, holds_state=True)
    ping(vs, "fresh", 0, 12)  # a just-restarted server: it must not get view 1
    for _ in range(3):
        vs.on_tick(Outbox())
    assert vs.view.number == 0
    assert "servers hold view 7" in status(vs).waiting


def test_force_new_cluster_numbers_above_every_reported_view() -> None:
    vs = fresh_vs(force_new_cluster=True, first_view_grace_ticks=5)
    for tick in range(6):
        ping(vs, "idle", 9, 21)
        ping(vs, "holder", 7, 22, holds_state=True)
        out = Outbox()
        vs.on_tick(out)
        if tick < 4:
            assert vs.view.number == 0  # listens for a dead interval first
    assert vs.view == View(10, "holder", ())


def test_view_service_never_reuses_a_number_a_member_reports() -> None:
    vs = fresh_vs()
    ping(vs, "s1", 0, 31)
    ping(vs, "s1", 1, 31)
    ping(vs, "s2", 0, 32)
    assert vs.view == View(2, "s1", ("s2",))
    for _ in range(10):
        ping(vs, "s1", 5, 31)  # this service's view is behind what its primary holds
        ping(vs, "s3", 0, 33)
        vs.on_tick(Outbox())
    assert vs.view.number == 2 and "servers hold view 5" in status(vs).waiting


# --- finding 4: a ping from a dead incarnation changes nothing (V8, V10) ------------------------


def serving_view(vs: ViewService) -> None:
    ping(vs, "s1", 0, 41)
    ping(vs, "s1", 1, 41)
    ping(vs, "s2", 0, 42)
    ping(vs, "s1", 2, 41)
    assert vs.view == View(2, "s1", ("s2",)) and vs.acknowledged


def test_ping_from_a_retired_incarnation_is_ignored() -> None:
    vs = fresh_vs(restart_quiet_ticks=2)
    serving_view(vs)
    for _ in range(3):
        vs.on_tick(Outbox())
        ping(vs, "s1", 2, 41)
    out = ping(vs, "s2", 0, 43)  # s2 restarted: its old process 42 is silent long enough
    assert vs.view == View(3, "s1", ("s2",))
    views = vs.views_created
    late = ping(vs, "s2", 2, 42)  # a ping the dead process sent before it crashed
    assert not sent(late.effects, PingReply) and logged(
        late.effects, "ping_from_retired_incarnation"
    )
    assert vs.servers["s2"].incarnation == 43 and vs.views_created == views
    assert sent(out.effects, PingReply)


def test_a_retired_incarnation_stays_ignored_for_a_whole_dead_interval() -> None:
    """V10: a retired incarnation is taken back only once the current one has been silent for
    a whole dead interval, not after the shorter ``restart_quiet_ticks`` that admits a new one:
    a late ping of the dead process while its successor is alive changes nothing."""
    vs = fresh_vs(restart_quiet_ticks=2)
    serving_view(vs)
    for _ in range(3):
        vs.on_tick(Outbox())
        ping(vs, "s1", 2, 41)
    ping(vs, "s2", 0, 43)  # s2 restarted
    for _ in range(3):  # quiet for longer than restart_quiet_ticks, shorter than dead (5)
        vs.on_tick(Outbox())
        ping(vs, "s1", 3, 41)
    assert vs.alive("s2")
    late = ping(vs, "s2", 2, 42)  # the dead process's ping, delivered late
    assert not sent(late.effects, PingReply) and logged(
        late.effects, "ping_from_retired_incarnation"
    )
    assert vs.servers["s2"].incarnation == 43


def test_forged_restart_ping_cannot_displace_a_live_server() -> None:
    vs = fresh_vs(restart_quiet_ticks=2)
    serving_view(vs)
    views = vs.views_created
    for forged in range(11):
        out = ping(vs, "s1", 0, 9000 + forged)
        assert not sent(out.effects, PingReply)
        vs.on_tick(Outbox())
        ping(vs, "s1", 2, 41)
        ping(vs, "s2", 2, 42, synced_view=2)
    assert vs.views_created == views and vs.view.primary == "s1"


def test_malformed_pings_are_refused_and_logged_once_per_interval() -> None:
    vs = fresh_vs()
    logs = []
    for index in range(100):
        out = ping(vs, "n" * 300 + str(index), 0, 1)
        logs += logged(out.effects, "ping_malformed")
    assert len(logs) == 1 and not vs.servers
    assert not sent(ping(vs, "s1", 1 << 63, 5).effects, PingReply)


def test_a_ping_with_incarnation_zero_is_refused() -> None:
    """V10: an incarnation is drawn above 0 (0 means "unknown" in a ``PingReply``, P7): a ping
    naming 0 is malformed, gets no reply and records nothing."""
    vs = fresh_vs()
    out = ping(vs, "s1", 0, 0)
    assert not sent(out.effects, PingReply) and logged(out.effects, "ping_malformed")
    assert not vs.servers


# --- finding 5: replies count only from the peer they answer (V10) ------------------------------


def test_ping_reply_from_a_stranger_is_ignored() -> None:
    net = Net()
    p = net.serving_alone()
    net.wire.send("mallory", "p", PingReply(View((1 << 63) - 1, "p"), p.incarnation))
    net.wire.send("mallory", "p", PingReply(View(2)))
    assert p.view == V1 and p.phase is Phase.SERVING
    assert p.counters["messages_untrusted"] == 2


def test_forward_reply_from_a_stranger_confirms_nothing() -> None:
    net = Net()
    p, b = net.serving_pair()
    net.request(0, Put("k", "v"))
    net.wire.drop_where(Forward)  # the backup never sees it
    effects = net.wire.send("mallory", "p", ForwardReply(V2.number, 1, True))
    assert not sent(effects, Reply) and p.acked_index == 0
    effects = net.wire.send("mallory", "p", ForwardReply(V2.number, 0, False))
    assert p.phase is Phase.SERVING  # a forged refusal does not stall it either
    assert p.counters["messages_untrusted"] == 2  # counted as untrusted (V10), not just unused
    net.tick("p", CONFIG.forward_retry_ticks)
    net.wire.settle()
    assert net.replies() == [Reply("c1", 0, "ok")] and b.store.data == {"k": "v"}


def test_state_transfer_reply_from_a_stranger_is_ignored() -> None:
    net = Net()
    p = net.serving_alone()
    net.announce(V2)
    net.wire.drop_where(StateTransfer)
    net.wire.send("mallory", "p", StateTransferReply(2, 0, True))
    assert p.phase is Phase.TRANSFERRING
    net.wire.send("mallory", "p", StateTransferReply(2, 0, False))
    assert p.phase is Phase.TRANSFERRING
    assert p.counters["messages_untrusted"] == 2  # counted as untrusted (V10), not just unused


def test_state_transfer_never_moves_a_replica_to_a_newer_view() -> None:
    net = Net()
    p = net.serving_alone()
    net.tick("p")
    forged = StateTransfer(View(99, "mallory", ("p",)), "mallory", 0, (("k", "bad"),), True)
    effects = net.wire.send("mallory", "p", forged)
    assert p.view == V1 and p.role is Role.PRIMARY and "k" not in p.store.data
    assert sent(effects, Ping, target="vs")  # it asks the view service instead


def test_client_session_takes_views_only_from_the_view_service() -> None:
    session = ClientSession("vs", random.Random(1), ClientConfig())
    out = Outbox()
    session.on_message("mallory", ViewReply(View(50, "mallory")), out)
    assert session.view is None
    session.on_message("vs", ViewReply(View(2, "p")), out)
    assert session.view == View(2, "p")


# --- finding 6: smaller holes -------------------------------------------------------------------


def test_ping_replies_never_name_a_negative_incarnation() -> None:
    vs = fresh_vs()
    serving_view(vs)
    restored = ViewService("vs", vs.config, vs.view, True)  # incarnations unknown
    out = ping(restored, "s1", 0, 77)  # reads as a restart of the primary (V8)
    assert all(reply.incarnation >= 0 for reply in sent(out.effects, PingReply))


def test_chunk_for_another_process_at_the_same_address_is_ignored() -> None:
    net = Net()
    net.serving_alone()
    net.announce(V2, "b")
    b = net.r["b"]
    stale = StateTransfer(V2, "p", 0, (("k", "old"),), True, (), 0, b.incarnation + 1)
    assert not sent(net.wire.send("p", "b", stale), StateTransferReply)
    assert b.phase is Phase.UNSYNCED and not b.store.data


def test_primary_names_its_backup_process_in_every_chunk() -> None:
    net = Net()
    p = net.serving_alone()
    b = net.r["b"]
    net.wire.send("vs", "p", PingReply(V2, p.incarnation, (b.incarnation,)))
    [envelope] = net.wire.pending(StateTransfer)
    chunk = envelope.message
    assert isinstance(chunk, StateTransfer) and chunk.target_incarnation == b.incarnation


def test_acknowledged_view_number_resets_when_no_longer_primary() -> None:
    net = Net()
    p = net.serving_alone()
    assert p.acknowledged_view_number == 1
    net.announce(View(3, "b", ("p",)), "p")
    assert p.acknowledged_view_number == 0


def test_a_backup_idle_for_long_is_not_reported_silent_on_the_next_write() -> None:
    """V10: the silence clock starts when the primary starts waiting. Measured from the last
    reply before an idle spell, the first slow forward after it made the view service replace a
    healthy backup at once (seen in CI: the primary died right after, wedging the view, V4)."""
    net = Net()
    net.serving_pair()
    net.tick("p", 3 * CONFIG.backup_silent_ticks)  # idle: nothing to forward, nothing heard
    net.request(0, Put("k", "v"))
    net.wire.drop_where(Forward)
    pings = sent(net.tick("p", CONFIG.backup_silent_ticks - 1), Ping, target="vs")
    assert pings and all(p.backup_silent_ticks < CONFIG.backup_silent_ticks for p in pings)
    assert pings[-1].backup_silent_view == 2 and pings[-1].health == ""
    later = sent(net.tick("p", 1), Ping, target="vs") or pings
    assert later[-1].backup_silent_ticks <= CONFIG.backup_silent_ticks


def test_a_backup_that_never_echoes_a_read_round_is_reported_silent() -> None:
    """V10 for reads: a backup cut off from the primary while only reads wait (rounds, no
    stream position) is reported after the dead interval like one that owes writes. The
    resends of the round every ``forward_retry_ticks`` do not start its silence afresh, or
    the reads would wait for a view change that never comes (seen 2026-12-01: the reported
    silence cycled between 1 and ``forward_retry_ticks``)."""
    net = Net()
    net.serving_pair()
    net.request(0, Get("k"))
    net.wire.drop_where(Forward)
    pings = sent(net.tick("p", 2 * CONFIG.backup_silent_ticks), Ping, target="vs")
    assert pings[-1].backup_silent_view == 2 and "no stream progress" in pings[-1].health
    assert pings[-1].backup_silent_ticks >= CONFIG.backup_silent_ticks


def test_primary_reports_a_silent_backup_and_the_view_service_replaces_it() -> None:
    """N5 narrowed: a backup the primary cannot reach is reported in its pings and replaced by
    an idle server (V10; as safe as V7: nobody is promoted)."""
    net = Net()
    net.serving_pair()
    net.request(0, Put("k", "v"))
    net.wire.drop_where(Forward)
    pings = sent(net.tick("p", CONFIG.backup_silent_ticks), Ping, target="vs")
    assert pings[-1].backup_silent_view == 2 and "no stream progress" in pings[-1].health
    assert pings[-1].backup_silent_ticks >= CONFIG.backup_silent_ticks
    vs = fresh_vs()
    serving_view(vs)
    ping(vs, "s3", 0, 45)
    ping(vs, "s2", 2, 42, synced_view=2)
    ping(vs, "s1", 2, 41, backup_silent_view=2, backup_silent_ticks=4)
    assert vs.view == View(2, "s1", ("s2",))  # not yet a dead interval (5 ticks)
    out = ping(vs, "s1", 2, 41, backup_silent_view=2, backup_silent_ticks=5)
    assert vs.view == View(3, "s1", ("s3",))
    # the cause is logged before the view change (a dead backup has server_declared_dead)
    events = [(e.event, e.fields) for e in out.effects if isinstance(e, Log)]
    assert events[0] == (
        "backup_reported_silent",
        {"backup": "s2", "primary": "s1", "silent_ticks": 5},
    )
    assert events[1][0] == "view_change"


def test_a_silence_report_from_an_older_view_does_not_replace_the_new_backup() -> None:
    """V10: a primary's report of a silent backup counts for the view it names only. A K=1
    primary may leave the backup unnamed (the first backup is meant); its last report, for view
    2, must not condemn the backup of view 3 that replaced the silent one before the primary
    pinged again."""
    vs = fresh_vs()
    serving_view(vs)
    ping(vs, "s3", 0, 45)
    ping(vs, "s1", 2, 41, backup_silent_view=2, backup_silent_ticks=5)
    assert vs.view == View(3, "s1", ("s3",))
    ping(vs, "s2", 0, 42)  # the replaced backup is alive, idle: a candidate if s3 left
    ping(vs, "s3", 0, 45)
    vs.on_tick(Outbox())
    assert vs.view == View(3, "s1", ("s3",))


# --- finding 7: an operator sees why nothing moves ----------------------------------------------


def test_status_says_when_no_server_holds_the_state() -> None:
    """Silent members may be down or only cut off from the view service: status says both
    (review: 'cannot recover' while the view service was merely isolated); once they ping
    again as new processes without the state, it is certain (N1)."""
    vs = fresh_vs(restart_quiet_ticks=2)
    ping(vs, "s1", 0, 51)
    for _ in range(6):
        vs.on_tick(Outbox())
    waiting = status(vs).waiting
    assert "s1 stopped pinging" in waiting and "cut off from this view service" in waiting
    assert "(N1)" in waiting and "cannot recover" not in waiting
    ping(vs, "s1", 0, 52)  # restarted, empty
    waiting = status(vs).waiting
    assert waiting.startswith("cannot recover: s1 restarted without the state (N1)"), waiting


def test_status_says_the_state_is_lost_when_the_awaited_primary_restarts_empty() -> None:
    """V4 waits for a primary whose backup never held the state; once that primary pings as a
    new process without the state, there is nothing left to wait for (review: status still
    said 'waiting for s1 (V4)')."""
    vs = fresh_vs(restart_quiet_ticks=2)
    serving_view(vs)
    ping(vs, "s3", 0, 43)
    for _ in range(6):  # s2 falls silent: view 3 = s1 with s3, whose transfer never completes
        vs.on_tick(Outbox())
        ping(vs, "s1", 2, 41)  # it never acknowledges view 3 (its backup is not synced)
        ping(vs, "s3", 0, 43)
    assert vs.view == View(3, "s1", ("s3",)) and not vs.acknowledged
    for _ in range(6):  # then s1 falls silent too
        vs.on_tick(Outbox())
        ping(vs, "s3", 3, 43)
    assert status(vs).waiting.endswith("waiting for s1 (V4)")
    ping(vs, "s1", 0, 44)  # restarted, empty
    waiting = status(vs).waiting
    assert waiting.startswith("cannot recover: s1 restarted without the state; s3 never held")
    assert vs.view.number == 3  # and nothing was promoted (V5, V6)


def test_status_never_calls_a_silent_backup_restarted_while_it_may_return_with_the_state() -> None:
    """K = 2: the primary restarted empty and one backup never held the state, but the other
    backup, complete from the view before, is only silent: it may come back (review of the
    N1 wording: all three were named 'restarted without the state')."""
    vs = fresh_vs(restart_quiet_ticks=2, backups_max=2)
    for name, incarnation in (("s1", 41), ("s1", 41), ("s2", 42), ("s3", 43)):
        ping(vs, name, vs.view.number if name == "s1" else 0, incarnation)
    for _ in range(3):
        number = vs.view.number
        for name, incarnation in (("s1", 41), ("s2", 42), ("s3", 43)):
            ping(vs, name, number, incarnation, synced_view=number)
    assert vs.view == View(3, "s1", ("s2", "s3")) and vs.acknowledged
    for _ in range(6):  # s3 falls silent: view 4 keeps s2 (carried complete) and adds s4
        vs.on_tick(Outbox())
        ping(vs, "s1", 3, 41)
        ping(vs, "s2", 3, 42, synced_view=3)
        ping(vs, "s4", 0, 44)
    assert vs.view == View(4, "s1", ("s2", "s4")) and not status(vs).acknowledged
    for _ in range(6):  # s1 and s2 fall silent; s4 never held the state
        vs.on_tick(Outbox())
        ping(vs, "s4", 4, 44)
    ping(vs, "s1", 0, 45)  # s1 restarted, empty
    waiting = status(vs).waiting
    assert waiting.startswith("s2 stopped pinging"), waiting
    assert "restarted without" not in waiting


def test_primary_refusing_to_serve_says_why_in_its_pings() -> None:
    net = Net()
    p = net.r["p"]
    net.announce(View(5, "p", ("b",)), "p")  # it never held the state (P7)
    [ping_sent] = sent(net.tick("p", CONFIG.ping_interval_ticks), Ping)
    assert "holds no replica state" in ping_sent.health and not ping_sent.holds_state
    vs = fresh_vs()
    ping(vs, "p", 0, p.incarnation, health=ping_sent.health)
    assert status(vs).servers[0].health == ping_sent.health


def test_client_timeout_names_the_last_refusal() -> None:
    session = ClientSession("vs", random.Random(2), ClientConfig(timeout_ticks=5))
    out = Outbox()
    session.on_message("vs", ViewReply(View(3, "p")), out)
    seq = session.submit(Get("k"), out)
    session.on_message("p", Reply(session.client_id, seq, "wrong_server", detail="p is idle"), out)
    for _ in range(6):
        session.on_tick(out)
    [result] = [e for e in out.effects if isinstance(e, Deliver)]
    assert result.status == "unavailable" and "p is idle" in result.detail


# --- 9.5: the exactly-once table evicts in O(1) and within its byte budget (C3) ----------------


def test_session_table_is_bounded_by_bytes() -> None:
    store = KVStore(Limits(sessions_bytes_max=64 * 1024))
    for index in range(2000):
        store.execute(Request(f"client-{index:05}", 0, 0, Put("k", "v")))
    assert store.session_bytes <= 64 * 1024 and store.evictions > 1500
    assert list(store.sessions)[-1] == "client-01999"  # the most recent survive


def test_session_eviction_keeps_the_least_recently_active_order() -> None:
    store = KVStore(Limits(sessions_max=3))
    for client in ("a", "b", "c"):
        store.execute(Request(client, 0, 0, Put("k", client)))
    store.execute(Request("a", 1, 1, Get("k")))  # a is now the most recent
    store.execute(Request("d", 0, 0, Get("k")))
    assert list(store.sessions) == ["c", "a", "d"]


def test_an_append_refused_as_too_large_is_never_applied_by_a_late_copy() -> None:
    """Found by the simulator's size workload: the refusal was final for the client, but a late
    copy of the same request was applied once a put had made room (C1)."""
    store = KVStore(Limits(value_bytes_max=16))
    assert store.execute(Request("w", 0, 0, Put("k", "x" * 12))).status == "ok"
    late = Request("c", 0, 0, Append("k", "<late>"))
    assert store.execute(late).status == "too_large"
    assert store.execute(Request("w", 1, 1, Put("k", "short"))).status == "ok"
    assert store.execute(late).status == "too_large"
    assert store.data["k"] == "short"
    copy = KVStore(Limits(value_bytes_max=16))
    copy.install(dict(store.data), store.session_records())  # the refusal travels too (P4)
    assert copy.execute(late).status == "too_large" and copy.data["k"] == "short"


# --- holes the simulator's edge faults found (issue-8-sim branch) --------------------------------


def test_a_forged_transfer_for_any_backup_installs_nothing() -> None:
    """A chunk naming no process (target 0) was accepted by a backup awaiting its transfer: a
    forger could install an empty state. Only the backup's own incarnation counts (P8)."""
    net = Net()
    net.serving_alone()
    net.announce(V2, "b")
    forged = StateTransfer(V2, "p", 0, (), True, (), 0, 0)
    assert not sent(net.wire.send("mallory", "b", forged), StateTransferReply)
    assert net.r["b"].phase is Phase.UNSYNCED


def test_primary_names_the_backup_once_the_view_service_learns_it() -> None:
    net = Net()
    p = net.serving_alone()
    b = net.r["b"]
    net.wire.send("vs", "p", PingReply(V2, p.incarnation, (0,)))  # backup not known yet
    net.wire.drop_where(StateTransfer)
    net.wire.send("vs", "p", PingReply(V2, p.incarnation, (b.incarnation,)))
    net.announce(V2, "b")
    net.tick("p", CONFIG.transfer_retry_ticks)
    net.wire.settle()
    assert b.phase is Phase.SYNCED and p.phase is Phase.SERVING


def test_a_forged_restart_ping_does_not_lock_the_real_server_out() -> None:
    """The real server was quiet (but not dead) when a forged restart ping came: it was
    retired, and its pings were refused for good. Now it is back after a dead interval."""
    vs = fresh_vs(restart_quiet_ticks=2)
    serving_view(vs)
    for _ in range(3):
        vs.on_tick(Outbox())
        ping(vs, "s1", 2, 41)
    ping(vs, "s2", 0, 9999)  # forged: s2 has been quiet for 3 ticks
    assert vs.servers["s2"].incarnation == 9999
    for _ in range(6):
        vs.on_tick(Outbox())
        ping(vs, "s1", 2, 41)
        ping(vs, "s2", 2, 42, synced_view=2)  # the real s2 keeps pinging
    assert vs.servers["s2"].incarnation == 42 and vs.alive("s2")


def test_a_stateless_view_service_never_reissues_a_number_it_heard() -> None:
    """It waited (V11) while servers reported view 5; they restarted empty (ping 0). It must
    not start again at view 1 (V1): it waits and says the data is gone (N1)."""
    vs = fresh_vs()
    ping(vs, "s1", 5, 61, holds_state=True)
    vs.on_tick(Outbox())
    for _ in range(10):
        ping(vs, "s1", 0, 62)
        ping(vs, "s2", 0, 63)
        vs.on_tick(Outbox())
    assert vs.view.number == 0
    assert "restart this service to start an empty cluster" in status(vs).waiting


def test_a_new_view_service_listens_before_forming_view_one() -> None:
    """A server holding view 5 may ping after a fresh one: the service hears every live server
    for a dead interval before it forms view 1 (V11)."""
    vs = ViewService("vs", ViewServiceConfig(dead_after_ticks=5))
    ping(vs, "fresh", 0, 71)
    vs.on_tick(Outbox())
    ping(vs, "old", 5, 72, holds_state=True)
    for _ in range(6):
        ping(vs, "fresh", 0, 71)
        ping(vs, "old", 5, 72, holds_state=True)
        vs.on_tick(Outbox())
    assert vs.view.number == 0
    quiet = ViewService("vs", ViewServiceConfig(dead_after_ticks=5))
    for tick in range(6):
        ping(quiet, "fresh", 0, 71)
        quiet.on_tick(Outbox())
        assert (quiet.view.number == 0) == (tick < 4)


def test_an_unsynced_backup_holding_a_view_also_stops_a_fresh_service() -> None:
    """Found by the simulator (seed 200 probing): a backup awaiting its transfer pings view 0,
    so a fresh view service formed view 1 over it, and the server, holding view 7, ignored
    every lower view: a new primary's forwards were refused for good. It reports the view it
    holds (``held_view``) and the service waits, naming it (V11)."""
    vs = fresh_vs()
    ping(vs, "unsynced", 0, 81, held_view=7)
    ping(vs, "fresh", 0, 82)
    for _ in range(6):
        vs.on_tick(Outbox())
        ping(vs, "unsynced", 0, 81, held_view=7)
    assert vs.view.number == 0
    assert "servers hold view 7 (unsynced)" in status(vs).waiting


def test_a_client_message_at_the_wrong_kind_of_node_is_answered_at_once() -> None:
    """Review: a GetView or StatusRequest sent to a server, or a Request or Dump sent to the
    view service, was ignored, so the caller waited out its whole timeout and was told the
    operation may have taken effect. Each now gets an ErrorReply a client recognises."""
    replica = Replica("s1", "vs", random.Random(1), CONFIG)
    service = ViewService("vs")
    for node, message in (
        (replica, GetView()),
        (replica, StatusRequest()),
        (service, Request("c", 0, 0, Put("k", "v"))),
        (service, Dump()),
    ):
        out = Outbox()
        node.on_message("conn:1", message, out)
        [answer] = sent(out.take(), ErrorReply, target="conn:1")
        assert answer.reason.startswith(WRONG_NODE_PREFIX)
    assert service.view.number == 0 and replica.store.data == {}
    out = Outbox()
    replica.on_message("conn:1", ErrorReply("wrong node: a loop must not start"), out)
    assert not sent(out.take(), ErrorReply)  # an error is never answered
