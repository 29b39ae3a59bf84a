"""Scripted fault sequences on the simulated cluster: the peer suites' scenarios (peer-tests.md
§2-§5) at the simulator level, and one named test per bug the simulator found.

Every scenario runs the unchanged core on a reliable network with a one-tick delay, unless it
says otherwise, and ends by checking the whole client history for linearizability.
"""

from __future__ import annotations

import random

from pbkv.core.messages import Append, Forward, Get, PingReply, Put, StateTransfer
from pbkv.core.replica import Phase
from pbkv.sim import Envelope, Invocation, World, isolate, make_world, one_way, split
from tests.sim.harness import (
    append,
    assert_linearizable,
    assert_no_duplicate_appends,
    call,
    get,
    holding,
    put,
    serving,
    until,
    view_is,
    wait_view,
)


def first_primary_alone(clients: int = 1) -> World:
    """A world where s1 alone serves view 1 (servers added later with ``add_node``)."""
    world = make_world(servers=0, clients=clients)
    world.add_node("s1", "replica")
    wait_view(world, "s1")
    return world


# --- peer-suite scenarios --------------------------------------------------------------------


def test_backup_takes_over_with_every_acknowledged_write_when_primary_fails() -> None:
    """DP06 / P1: writes made alone and with a backup survive the primary's crash."""
    world = first_primary_alone()
    put(world, "c1", "foo1", "bar1")
    world.add_node("s2", "replica")
    wait_view(world, "s1", "s2")
    put(world, "c1", "foo2", "bar2")
    world.crash("s1")
    assert get(world, "c1", "foo1") == "bar1"
    assert get(world, "c1", "foo2") == "bar2"
    wait_view(world, "s2", None)
    assert_linearizable(world)


def test_sequential_failures_keep_every_acknowledged_write() -> None:
    """P3 / DP09: a put right after the backup fails, then right after the primary fails."""
    world = make_world(servers=3, clients=1)
    wait_view(world, "s1", "s2")
    for key, value in (("a", "aa"), ("b", "bb"), ("c", "cc")):
        put(world, "c1", key, value)
    world.crash("s2")
    put(world, "c1", "a", "aaa")
    assert get(world, "c1", "a") == "aaa"
    wait_view(world, "s1", "s3")
    world.crash("s1")
    put(world, "c1", "b", "bbb")
    wait_view(world, "s3", None)
    assert [get(world, "c1", key) for key in "abc"] == ["aaa", "bbb", "cc"]
    assert_linearizable(world)


def test_restarted_primary_with_the_same_name_is_treated_as_failed() -> None:
    """V6 / V8 / P7: a primary that crashed and came back before the view service noticed pings
    with a new incarnation; the backup is promoted, the empty restart never serves."""
    world = make_world(servers=3, clients=1)
    wait_view(world, "s1", "s2")
    put(world, "c1", "a", "1")
    world.crash("s1")
    world.restart("s1")
    assert get(world, "c1", "a") == "1"
    assert world.current_view().primary == "s2"
    put(world, "c1", "a", "2")
    until(world, lambda w: w.current_view().backup is not None and serving(w, "s2"))
    world.crash("s2")
    assert get(world, "c1", "a") == "2"
    assert_linearizable(world)


def test_deposed_primary_cut_from_the_view_service_never_serves_a_stale_read() -> None:
    """P9: s1 cannot ping (nor reach c2), so s2 is promoted and c2 writes a new value through
    it; c1, which still caches the old view, asks s1 and must not read the old value."""
    world = make_world(servers=3, clients=2)
    wait_view(world, "s1", "s2")
    put(world, "c1", "a", "1")
    world.partition(split("vs-s1", ["s1"], ["vs", "c2"]))
    wait_view(world, "s2", "s3")
    put(world, "c2", "a", "111")
    assert get(world, "c1", "a") == "111"
    assert_linearizable(world)


def test_deposed_primary_whose_backup_died_does_not_answer_alone() -> None:
    """P10: as P9, then the new primary s2 crashes; s1's forward to it goes unanswered and s1
    must not conclude "no backup, answer alone"."""
    world = make_world(servers=4, clients=2)
    wait_view(world, "s1", "s2")
    put(world, "c1", "a", "1")
    world.partition(split("vs-s1", ["s1"], ["vs", "c2"]))
    wait_view(world, "s2", "s3")
    put(world, "c2", "a", "2")
    until(world, lambda w: w.replica("s3") is not None and w.replica("s3").phase is Phase.SYNCED)  # type: ignore[union-attr]
    world.crash("s2")
    assert get(world, "c1", "a", ticks_max=3000) == "2"
    assert_linearizable(world)


def test_reads_complete_when_the_backup_is_cut_off_from_the_primary_for_good() -> None:
    """N5 / V10 for reads: s2 reaches the view service but never the primary again, and the
    clients only read. Each read waits for a round s2 cannot echo; the primary reports s2
    silent after the dead interval and the view service replaces it with s3, then the reads
    are answered. (Until 2026-12-01 each resend of the round restarted s2's silence, so it was
    never reported and the reads waited for good.)"""
    world = make_world(servers=3, clients=1)
    wait_view(world, "s1", "s2")
    put(world, "c1", "a", "1")
    world.partition(split("s1-s2", ["s1"], ["s2"]))
    assert get(world, "c1", "a", ticks_max=1500) == "1"
    assert view_is(world, "s1", "s3")
    assert_linearizable(world)


def two_appends_with_held_forwards() -> tuple[World, list[Invocation], list[Envelope]]:
    """DP18 set-up: c1 appends "<x>" and c2 "<y>" to foo at once; both forwards are held."""
    world = make_world(servers=2, clients=2)
    wait_view(world, "s1", "s2")
    get(world, "c1", "foo")
    get(world, "c2", "foo")
    held = holding(world, lambda s, t, m: s == "s1" and t == "s2" and isinstance(m, Forward))
    appends = [world.submit("c1", Append("foo", "<x>")), world.submit("c2", Append("foo", "<y>"))]
    until(world, lambda _: len(held) == 2)
    world.network.hold_filter = None
    return world, appends, held


def test_concurrent_appends_with_forwards_delivered_in_reverse_order() -> None:
    """DP18: two appends reach the primary together; their forwards reach the backup in
    reverse order. The backup applies the stream in order (P5); the replicas agree."""
    world, appends, held = two_appends_with_held_forwards()
    world.network.release(world.now, list(reversed(held)))
    until(world, lambda _: all(record.status == "ok" for record in appends))
    value = get(world, "c1", "foo")
    assert value == "<x><y>"
    world.crash("s1")
    assert get(world, "c2", "foo") == value
    assert_no_duplicate_appends(world)
    assert_linearizable(world)


def test_concurrent_appends_when_only_the_second_forward_arrives() -> None:
    """DP18 variant: the first forward is lost, the second arrives; the primary retransmits and
    neither append is applied out of order or twice."""
    world, appends, held = two_appends_with_held_forwards()
    world.network.discard_held([held[0]])
    world.network.release(world.now)
    until(world, lambda _: all(record.status == "ok" for record in appends))
    world.crash("s1")
    assert get(world, "c2", "foo") == "<x><y>"
    assert_no_duplicate_appends(world)
    assert_linearizable(world)


def test_multiple_failures_to_backup_keep_a_write_made_alone() -> None:
    """DP19: "x" is committed by s1 alone (view 3), s2 returns as backup (view 4, transfer),
    s1 fails (view 5): s2 must hold "x" and "y" appends after it."""
    world = make_world(servers=2, clients=2)
    wait_view(world, "s1", "s2")
    world.partition(isolate("s2-away", "s2", world.names))
    wait_view(world, "s1", None)
    append(world, "c1", "foo", "<x>")
    world.heal("s2-away")
    wait_view(world, "s1", "s2")
    world.crash("s1")
    wait_view(world, "s2", None)
    append(world, "c2", "foo", "<y>")
    assert get(world, "c2", "foo") == "<x><y>"
    assert_linearizable(world)


def test_repeated_crashes_with_new_servers_keep_every_write_and_bound_waits() -> None:
    """DP14: every 150 ticks a brand-new server joins and a random running server crashes;
    clients put then read back their own keys. Every result is right, no wait exceeds 500
    ticks (DP14: 5 s), and the history is linearizable."""
    world = make_world(servers=3, clients=3, seed=14)
    rng = random.Random(14)
    state = dict.fromkeys(world.clients(), 0)

    def drive(w: World) -> None:
        for client, count in state.items():
            if w.session(client).in_flight or count >= 60:
                continue
            key = f"{client}-{count // 2 % 5}"
            op = Put(key, f"{client}.{count}") if count % 2 == 0 else Get(key)
            state[client] = count + 1
            w.submit(client, op)

    world.after_tick.append(drive)
    servers = 3
    for _ in range(12):
        world.run(150)
        servers += 1
        world.add_node(f"s{servers}", "replica")
        running = [name for name in world.servers() if world.is_up(name)]
        world.crash(rng.choice(running))
    until(world, lambda w: all(n >= 60 for n in state.values()) and not w.history.open, 5000)
    for record in world.history.records:
        assert record.status == "ok", record.describe()
        assert record.complete is not None and record.complete - record.invoke < 500
        if isinstance(record.op, Get):
            assert record.result is not None and record.result.startswith(record.client)
    assert_linearizable(world)


def test_backup_is_promoted_when_the_primary_dies_after_the_transfer_before_its_ack() -> None:
    """V6, the no-liveness-trap case: the backup completed its state transfer but the primary's
    acknowledgement never reached the view service; the primary dies; the backup, which
    reported ``synced_view``, must be promoted with the data."""
    world = first_primary_alone()
    put(world, "c1", "a", "1")
    world.add_node("s2", "replica")
    until(world, lambda w: view_is(w, "s1", "s2"))
    world.partition(one_way("no-ack", "s1", "vs"))
    until(world, lambda w: w.view_service().backup_synced)  # type: ignore[union-attr]
    view_service = world.view_service()
    assert view_service is not None and not view_service.acknowledged
    world.crash("s1")
    wait_view(world, "s2", None)
    assert get(world, "c1", "a") == "1"
    assert_linearizable(world)


def test_backup_dying_during_its_own_state_transfer_is_replaced_keeping_the_primary() -> None:
    """V7: the new backup dies before its transfer completes (view unacknowledged); the view
    service replaces it with an idle server under the same primary instead of waiting."""
    world = first_primary_alone()
    put(world, "c1", "a", "1")
    held = holding(world, lambda s, t, m: t == "s2" and isinstance(m, StateTransfer))
    world.add_node("s2", "replica")
    until(world, lambda w: view_is(w, "s1", "s2") and bool(held))
    world.add_node("s3", "replica")
    world.crash("s2")
    wait_view(world, "s1", "s3")
    assert get(world, "c1", "a") == "1"
    put(world, "c1", "a", "2")
    world.crash("s1")
    assert get(world, "c1", "a") == "2"
    assert_linearizable(world)


def test_view_service_restarted_from_its_disk_resumes_the_view_without_failover() -> None:
    """V9: the view service crashes and restarts from its persisted view; the healthy members
    keep their roles (no spurious failover), and writes go on."""
    world = make_world(servers=3, clients=1)
    view = wait_view(world, "s1", "s2")
    put(world, "c1", "a", "1")
    world.crash("vs")
    world.run(30)
    world.restart("vs")
    world.run(200)
    assert world.current_view() == view
    put(world, "c1", "a", "2")
    world.crash("s1")
    assert get(world, "c1", "a") == "2"
    assert_linearizable(world)


# --- bugs found by the simulator -------------------------------------------------------------


def test_restarted_first_primary_does_not_serve_an_empty_store() -> None:
    """Bug (pbkv sim seed 114): the primary of view 1 (no backup) answered a write, crashed and
    restarted under the same name; the restart was told "you are primary of view 1" and served
    as a fresh first primary with an empty store, losing the write. Now the view service names
    the incarnation the view was formed with and the restart refuses (V8, P7): the cluster
    waits (N1) instead of answering from nothing."""
    world = first_primary_alone()
    put(world, "c1", "a", "1")
    world.crash("s1")
    world.restart("s1")
    read = world.submit("c1", Get("a"))
    world.run(500)
    assert read.status is None, read.describe()
    restarted = world.replica("s1")
    assert restarted is not None and restarted.phase is not Phase.SERVING
    assert_linearizable(world)


def test_restarted_first_primary_ignores_a_view_announcement_meant_for_its_predecessor() -> None:
    """The same bug through the other door: the view service's announcement of view 1 to its
    primary is delayed; the primary learns the view from its ping reply, answers a write,
    crashes and restarts; the delayed announcement then reaches the restart, which must not
    take it as "you are the fresh first primary"."""
    world = make_world(servers=0, clients=1)
    held = holding(world, lambda s, t, m: t == "s1" and isinstance(m, PingReply))
    world.add_node("s1", "replica")
    until(world, lambda _: len(held) >= 2)
    world.network.hold_filter = None
    world.network.release(world.now, held[1:])
    announcement = held[0]
    wait_view(world, "s1")
    put(world, "c1", "a", "1")
    world.crash("s1")
    world.restart("s1")
    world.network.push(world.now + 1, announcement)
    held.clear()
    read = world.submit("c1", Get("a"))
    world.run(500)
    assert read.status is None, read.describe()
    assert_linearizable(world)


def test_harness_records_a_finished_operation() -> None:
    """The harness itself: an open operation shows up as open, a finished one as finished."""
    world = make_world(servers=2, clients=1)
    record = call(world, "c1", Put("k", "v"))
    assert record.status == "ok" and not world.history.open
