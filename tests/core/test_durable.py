"""Durability in the core (issue #10): persist before answering (D1), recover from the disk,
and after a total outage re-form service only from a member whose disk is complete (V12)."""

from __future__ import annotations

import dataclasses
import random

import msgspec
import pytest

from pbkv.core.durable import (
    DurableRecord,
    LimitsChanged,
    LimitsRecord,
    RecoveredState,
    RecoveryError,
    Snapshot,
    StreamRecord,
    ViewRecord,
    holds_nothing,
    limits_to_record,
    needs_sync,
)
from pbkv.core.effects import Effect, Outbox, Persist, PersistSnapshot, Send
from pbkv.core.kv_store import Limits
from pbkv.core.messages import (
    Append,
    Forward,
    Get,
    Ping,
    PingReply,
    Put,
    Reply,
    Request,
    StateTransfer,
    View,
)
from pbkv.core.replica import Phase, Replica, ReplicaConfig
from pbkv.core.view_service import ViewService, ViewServiceConfig
from tests.core.harness import FAST_REPLICA, Cluster, replay_disk, sent
from tests.core.test_replica import Net

DURABLE = dataclasses.replace(FAST_REPLICA, durable=True)


def durable_net() -> Net:
    return Net(ReplicaConfig(ping_interval_ticks=5, forward_retry_ticks=4, durable=True))


def order(effects: list[Effect]) -> list[str]:
    """The kinds of effects, in order (``Persist``, ``Reply``, ``Forward`` ...)."""
    return [type(e.message).__name__ if isinstance(e, Send) else type(e).__name__ for e in effects]


def durable_cluster(*servers: str) -> Cluster:
    c = Cluster(replica_config=DURABLE)
    c.client("c1")
    for index, server in enumerate(servers):
        c.start(server)
        c.wait_for_view(servers[0], server if index else None)
    return c


# --- D1: nothing is answered before it is durable -----------------------------------------------


def test_primary_alone_persists_before_it_answers() -> None:
    net = durable_net()
    net.serving_alone()
    effects = net.request(0, Put("k", "v"))
    kinds = [k for k in order(effects) if k in ("Persist", "Reply")]
    assert kinds == ["Persist", "Reply"]
    [persist] = [e for e in effects if isinstance(e, Persist)]
    assert persist.sync and persist.records == (
        StreamRecord(0, 1, Request("c1", 0, 0, Put("k", "v"))),
    )


def test_backup_persists_before_it_confirms() -> None:
    net = durable_net()
    net.serving_pair()
    net.request(0, Put("k", "v"))
    [forward] = net.wire.pending(Forward)
    effects = net.wire.deliver(forward)
    kinds = [k for k in order(effects) if k in ("Persist", "ForwardReply")]
    assert kinds == ["Persist", "ForwardReply"]


def test_reads_write_nothing_to_either_disk() -> None:
    """P2: a read takes no stream position, so no member logs it (until 2026-12-01 every read
    was a record on every member's log)."""
    net = durable_net()
    net.serving_pair()
    net.put("k", "v", 0)
    logged = {name: len(net.wire.disks.get(name, [])) for name in ("p", "b")}
    for seq in range(1, 21):
        net.request(seq, Get("k"))
        net.wire.settle()
    assert [r.value for r in net.replies()[1:]] == ["v"] * 20
    assert {name: len(net.wire.disks.get(name, [])) for name in ("p", "b")} == logged


def test_reads_alone_need_no_sync() -> None:
    read = StreamRecord(0, 1, Request("c", 0, 0, Get("k")))
    write = StreamRecord(1, 1, Request("c", 1, 0, Put("k", "v")))
    assert not needs_sync([read]) and needs_sync([read, write]) and needs_sync([ViewRecord(2)])


def test_installed_transfer_is_a_snapshot_persisted_before_the_last_confirmation() -> None:
    net = durable_net()
    net.serving_alone()
    net.put("k", "v", 0)
    net.announce(View(2, "p", ("b",)))
    net.wire.pass_probe("b")
    [chunk] = net.wire.pending(StateTransfer, target="b")
    effects = net.wire.deliver(chunk)
    kinds = [k for k in order(effects) if k in ("PersistSnapshot", "StateTransferReply")]
    assert kinds == ["PersistSnapshot", "StateTransferReply"]
    [snapshot] = [e.snapshot for e in effects if isinstance(e, PersistSnapshot)]
    assert snapshot.data == {"k": "v"} and snapshot.durable_view == 2
    assert net.r["b"].durable_view == 2


def test_not_durable_replicas_emit_no_disk_effects() -> None:
    net = Net()
    net.serving_pair()
    effects = net.request(0, Put("k", "v"))
    net.wire.settle()
    assert not any(isinstance(e, Persist | PersistSnapshot) for e in effects)
    assert not net.wire.disks


# --- recovery -----------------------------------------------------------------------------------


def test_replaying_a_disk_rebuilds_the_same_store_and_table() -> None:
    c = durable_cluster("s1", "s2")
    for index in range(20):
        c.call("c1", Append(f"k{index % 3}", str(index)))
        c.call("c1", Get("k0"))
    for name in ("s1", "s2"):
        state = replay_disk(c.wire.disks[name], DURABLE.limits)
        live = c.replicas[name]
        assert state.store.data == live.store.data
        assert state.store.session_records() == live.store.session_records()
    assert replay_disk(c.wire.disks["s1"], DURABLE.limits).durable_view == 2


def test_a_gap_in_the_stream_is_refused() -> None:
    records = [StreamRecord(0, 1, Request("c", 0, 0, Put("k", "v")))]
    records.append(StreamRecord(2, 1, Request("c", 1, 0, Put("k", "w"))))
    with pytest.raises(RecoveryError, match="follows position 0"):
        RecoveredState.replay(None, records, Limits())


def test_a_position_already_applied_is_skipped_not_executed_again() -> None:
    """Replay's contract (P5): a record of a position the state already holds (the snapshot's
    or an earlier record's) is skipped; executed again, an acknowledged append would be applied
    twice (C1)."""
    append = StreamRecord(1, 1, Request("c", 1, 0, Append("k", "b")))
    snapshot = Snapshot({"k": "ab"}, (), 2, 1, 1, Limits())
    state = RecoveredState.replay(snapshot, [append], Limits())
    assert (state.store.data, state.next_index) == ({"k": "ab"}, 2)
    first = StreamRecord(0, 1, Request("c", 0, 0, Append("k", "a")))
    state = RecoveredState.replay(None, [first, append, append], Limits())
    assert (state.store.data, state.next_index) == ({"k": "ab"}, 2)


SMALL = Limits(value_bytes_max=8)


def growing_appends() -> list[StreamRecord]:
    """Under ``SMALL`` the third append would grow the value past 8 bytes: refused there."""
    return [StreamRecord(i, 1, Request("c", i, 0, Append("k", "abc"))) for i in range(3)]


def test_replay_uses_the_limits_the_disk_recorded_not_the_servers() -> None:
    """Review: a server restarted with a smaller --value-bytes-max replayed its log under the
    new limit and silently lost acknowledged writes. Outcomes depend on the limits (an
    append refused for growing past the value limit), so replay follows the recorded ones."""
    records: list[DurableRecord] = [LimitsRecord(SMALL), *growing_appends()]
    recovered = RecoveredState.replay(None, records, SMALL)
    assert recovered.store.data == {"k": "abcabc"} and recovered.limits == SMALL
    under_default = RecoveredState.replay(None, growing_appends(), Limits())
    assert under_default.store.data == {"k": "abcabcabc"}  # what an unrecorded disk would do


@pytest.mark.parametrize("where", ["record", "snapshot"])
def test_a_server_started_with_other_limits_than_its_disk_is_refused(where: str) -> None:
    records: list[DurableRecord]
    if where == "record":
        snapshot, records = None, [LimitsRecord(SMALL), *growing_appends()]
    else:
        snapshot, records = Snapshot({"k": "abc"}, (), 1, 1, 1, SMALL), [*growing_appends()[1:]]
    with pytest.raises(LimitsChanged, match=r"value_bytes_max 8 \(this server: 1048576\)"):
        RecoveredState.replay(snapshot, records, Limits())
    assert RecoveredState.replay(snapshot, records, SMALL).store.data == {"k": "abcabc"}


def test_a_disk_that_holds_nothing_but_limits_takes_new_ones() -> None:
    """Nothing was executed under the old limits, so nothing can come out differently: a
    server that never held state may restart with other limits (the simulator's operator
    restarted every server of a fresh cluster so, and they all stayed down for good)."""
    state = RecoveredState.replay(None, [LimitsRecord(SMALL)], Limits())
    assert holds_nothing(state)
    assert limits_to_record(state, Limits()) == LimitsRecord(Limits())
    assert limits_to_record(state, SMALL) is None
    assert limits_to_record(None, SMALL) == LimitsRecord(SMALL)


def test_a_compaction_snapshot_carries_the_limits_through_msgpack() -> None:
    recovered = RecoveredState.replay(None, [LimitsRecord(SMALL), *growing_appends()], SMALL)
    blob = msgspec.msgpack.encode(recovered.snapshot())
    assert msgspec.msgpack.decode(blob, type=Snapshot).limits == SMALL
    assert needs_sync([LimitsRecord(SMALL)])


def test_a_snapshot_restores_the_lineage_tag_of_its_last_position() -> None:
    """P10 across a restart: a disk whose newest state is a snapshot recovers the tag of the
    position before ``next_index`` from it, so the recovered replica's probe answer can match
    the primary's backlog (a catch-up, not the complete state) and, as primary, it tags its
    own backlog start right."""
    snapshot = Snapshot({"k": "v"}, (), 5, 3, last_view_tag=3, limits=Limits())
    state = RecoveredState.replay(snapshot, [], Limits())
    assert (state.next_index, state.durable_view, state.last_view_tag) == (5, 3, 3)
    replica = Replica("s1", "vs", random.Random(1), DURABLE, state)
    assert (replica.applied_index, replica.applied_tag) == (5, 3)


# --- V12: a total outage is repaired only from a complete disk ----------------------------------


def test_whole_cluster_killed_comes_back_with_every_acknowledged_write() -> None:
    c = durable_cluster("s1", "s2")
    for index in range(10):
        assert c.call("c1", Append("log", f"{index};")).status == "ok"
    c.crash("s1")
    c.crash("s2")
    c.restart_view_service()
    c.recover("s2")
    c.recover("s1")
    assert c.call("c1", Get("log"), ticks_max=2000).value == "".join(f"{i};" for i in range(10))
    assert c.view.number >= 3 and c.view.primary in ("s1", "s2")


def test_a_restarted_primary_with_its_disk_replaces_itself_when_it_was_alone() -> None:
    """View 1, primary alone, acknowledged writes: before V12 a restart lost everything (N1)."""
    c = durable_cluster("s1")
    c.call("c1", Put("k", "kept"))
    c.crash("s1")
    c.recover("s1")
    assert c.call("c1", Get("k"), ticks_max=2000).value == "kept"
    assert c.view == View(c.view.number, "s1", ()) and c.view.number >= 2


def test_a_server_that_is_behind_is_never_promoted() -> None:
    """s3 was the backup of an older view: its disk is complete for view 2, not for view 4."""
    vs = ViewService("vs", ViewServiceConfig(dead_after_ticks=5))
    vs = ViewService("vs", vs.config, View(4, "s1", ("s2",)), True, {"s1": 1, "s2": 2})

    def ping(name: str, number: int, incarnation: int, durable_view: int, index: int) -> None:
        message = Ping(name, number, incarnation, durable_view=durable_view, durable_index=index)
        vs.on_message(name, message, Outbox())

    for _ in range(12):
        ping("s3", 0, 33, 2, 99)
        vs.on_tick(Outbox())
    assert vs.view == View(4, "s1", ("s2",))
    ping("s2", 0, 22, 4, 7)
    assert vs.view == View(5, "s2", ("s3",))


def restart_from_disk(net: Net, name: str) -> Replica:
    """A new process of ``name`` recovered from what its predecessor persisted (V12)."""
    state = replay_disk(net.wire.disks[name], net.r[name].config.limits)
    reborn = Replica(name, "vs", random.Random(99), net.r[name].config, state)
    net.r[name] = reborn
    net.wire.remove(name)
    net.wire.add(name, reborn)
    return reborn


def test_recovered_server_takes_no_role_in_a_view_formed_with_its_predecessor() -> None:
    net = durable_net()
    net.serving_alone()
    net.put("k", "v", 0)
    reborn = restart_from_disk(net, "p")
    net.wire.send("vs", "p", PingReply(View(1, "p"), 0))  # view 1 names its predecessor
    assert (reborn.phase, reborn.synced, reborn.store.data) == (Phase.IDLE, True, {"k": "v"})
    net.wire.send("vs", "p", PingReply(View(2, "p"), reborn.incarnation))
    assert net.r["p"].phase == Phase.SERVING
    effects = net.request(1, Get("k"))
    replies = [e.message for e in effects if isinstance(e, Send) and isinstance(e.message, Reply)]
    assert replies == [Reply("c1", 1, "ok", "v")]


def test_recovered_server_pings_view_0_until_a_view_is_formed_with_it() -> None:
    """V12, V8: a process recovered from its disk that learned a view formed with its
    predecessor pings view 0 (it holds no role there). Pinging that view's number would make
    a restored view service, which does not know the member's incarnation, take it for the
    process the view was formed with, and the primary's ping for an acknowledgement by a
    server that never serves in that view."""
    net = durable_net()
    net.serving_alone()
    net.put("k", "v", 0)
    restart_from_disk(net, "p")
    net.wire.send("vs", "p", PingReply(View(3, "p", ("b",)), 0))  # formed with its predecessor
    pings = sent(net.tick("p", 2 * net.r["p"].config.ping_interval_ticks), Ping, target="vs")
    assert pings and all(ping.view_number == 0 for ping in pings)
    assert (pings[-1].held_view, pings[-1].durable_view) == (3, 1)


def restored_view_service(view: View) -> ViewService:
    """A view service restarted from its disk (V9) holding ``view``, acknowledged."""
    config = ViewServiceConfig(dead_after_ticks=5)
    incarnations = {member: 1 + index for index, member in enumerate(view.members())}
    return ViewService("vs", config, view, True, incarnations)


def recovered_ping(vs: ViewService, name: str, durable_view: int, index: int) -> None:
    """A ping of a new incarnation of ``name`` that recovered from its disk (reports view 0)."""
    message = Ping(name, 0, 100 + len(name), durable_view=durable_view, durable_index=index)
    vs.on_message(name, message, Outbox())


def test_after_a_power_cut_an_unheard_backup_is_not_promoted() -> None:
    """Whole cluster down, view service restored: the primary's restart is heard first. The
    backup has not pinged since the restore, so it may have restarted too: promoting the process
    it was stranded the cluster (a sim finding, issue 10); wait for it instead (V12)."""
    vs = restored_view_service(View(4, "s1", ("s2",)))
    recovered_ping(vs, "s1", 4, 18)
    assert vs.view.number == 4, "promoted a backup it had not heard since its restore"
    recovered_ping(vs, "s2", 4, 13)
    assert vs.view == View(5, "s1", ("s2",))  # the longest disk, among complete ones


def test_a_primary_that_never_entered_its_view_recovers_from_the_view_before() -> None:
    """View 5 (s1 alone) was formed, then the power went before s1 learned it: its disk is
    complete for view 4 and nothing can have been acknowledged in view 5 (it records entering
    a view before answering in it, D1). Before the fix the cluster stayed down for good."""
    vs = restored_view_service(View(5, "s1", ()))
    recovered_ping(vs, "s1", 4, 12)
    assert vs.view == View(6, "s1", ())


def test_a_backup_complete_only_for_the_view_before_is_still_behind() -> None:
    """The exception is for the view's primary only: a backup of view 5 that is complete for
    view 4 missed what the primary acknowledged in view 5 after it was removed."""
    vs = restored_view_service(View(5, "s1", ("s2",)))
    for _ in range(12):
        recovered_ping(vs, "s1", 3, 5)
        recovered_ping(vs, "s2", 4, 99)
        vs.on_tick(Outbox())
    assert vs.view.number == 5
