"""Catch-up instead of a full transfer (issue #10, P10): a backup whose state is a prefix of the
primary's stream receives only the positions it misses, when the primary's backlog still holds
them; another history, or a backlog that let them go, gets the complete state."""

from __future__ import annotations

import dataclasses

from pbkv.core.messages import Append, Get, Put, Request, StateTransfer, StateTransferReply, View
from pbkv.core.replica import Phase, ReplicaConfig
from tests.core.harness import FAST_REPLICA, Cluster
from tests.core.test_replica import V2, Net

DURABLE = dataclasses.replace(FAST_REPLICA, durable=True)


def cluster(config: ReplicaConfig = FAST_REPLICA, *servers: str) -> Cluster:
    c = Cluster(replica_config=config)
    c.client("c1")
    for index, server in enumerate(servers):
        c.start(server)
        c.wait_for_view(servers[0], server if index else None)
    return c


def events(c: Cluster, event: str, node: str | None = None) -> list[dict[str, object]]:
    return [log.fields for name, log in c.wire.logs if log.event == event and node in (None, name)]


def appends(c: Cluster, start: int, count: int) -> None:
    for index in range(start, start + count):
        assert c.call("c1", Append("log", f"{index};")).status == "ok"


def fill(c: Cluster, keys: int = 40) -> None:
    """A store larger than the suffixes below, so a suffix is the cheaper transfer."""
    for index in range(keys):
        assert c.call("c1", Put(f"key-{index:03d}", "v" * 60)).status == "ok"


def same_state(c: Cluster, a: str, b: str) -> None:
    ra, rb = c.replicas[a], c.replicas[b]
    assert ra.store.data == rb.store.data
    assert ra.store.session_records() == rb.store.session_records()
    assert ra.applied_index == rb.applied_index and ra.applied_tag == rb.applied_tag


def test_a_backup_restarting_with_its_disk_receives_only_what_it_missed() -> None:
    c = cluster(DURABLE, "s1", "s2")
    fill(c)
    appends(c, 0, 20)
    c.crash("s2")
    c.wait_for_view("s1", None)
    appends(c, 20, 7)
    missed = c.replicas["s1"].applied_index - c.replicas["s2"].applied_index
    c.recover("s2")
    c.wait_for_view("s1", "s2")
    c.run(5)
    [received] = events(c, "catch_up_received", "s2")
    assert received["positions"] == missed and missed >= 7
    assert not events(c, "state_transfer_received", "s2")[1:], "only the first join was full"
    same_state(c, "s1", "s2")
    assert c.replicas["s2"].durable_view == c.view.number
    appends(c, 27, 3)  # forwards continue where the suffix ended
    assert c.call("c1", Get("log")).value == "".join(f"{i};" for i in range(30))


def test_a_backup_cut_off_briefly_catches_up_from_memory() -> None:
    c = cluster(FAST_REPLICA, "s1", "s2")
    fill(c)
    appends(c, 0, 5)
    c.wire.isolate("s2")
    c.wait_for_view("s1", None)
    appends(c, 5, 5)
    c.wire.heal()
    c.wait_for_view("s1", "s2")
    c.run(5)
    [received] = events(c, "catch_up_received", "s2")
    positions = received["positions"]
    assert isinstance(positions, int) and positions >= 5
    same_state(c, "s1", "s2")


def test_a_whole_cluster_restart_with_disks_needs_no_transfer_at_all() -> None:
    c = cluster(DURABLE, "s1", "s2")
    appends(c, 0, 10)
    c.crash("s1")
    c.crash("s2")
    c.restart_view_service()
    c.recover("s1")
    c.recover("s2")
    assert c.call("c1", Get("log"), 2000).value == "".join(f"{i};" for i in range(10))
    c.run_until(lambda: len(c.view.backups) == 1 and c.view_service.acknowledged, 2000)
    starts = events(c, "catch_up_start")
    positions = starts[-1]["positions"] if starts else None
    assert isinstance(positions, int) and positions <= 1  # at most the read above
    assert not events(c, "state_transfer_start")[1:]


def test_a_backup_with_another_history_gets_the_complete_state() -> None:
    """s1 executed a write that never reached s2 and was replaced: its position k comes from
    view 2's primary, s2's from view 3's. The tags differ, so the suffix is refused (P10)."""
    c = cluster(FAST_REPLICA, "s1", "s2")
    appends(c, 0, 3)
    c.wire.cut("s1", "s2")
    seq = c.wire.submit("c1", Put("lost", "never acknowledged"))
    c.run(2)
    assert "lost" in c.replicas["s1"].store.data
    c.wire.isolate("s1")
    c.wait_for_view("s2", None)
    appends(c, 3, 2)
    c.wire.heal()
    c.wait_for_view("s2", "s1")
    c.run(5)
    [start] = events(c, "state_transfer_start", "s2")
    assert "another history" in str(start["reason"])
    same_state(c, "s1", "s2")
    result = c.wire.result("c1", seq)
    assert result is not None and result.status == "ok"  # the client's retry, at s2: once (C1)


def test_a_suffix_larger_than_the_state_gets_the_state() -> None:
    """Many overwrites of one key: the complete state is the smaller transfer."""
    c = cluster(FAST_REPLICA, "s1", "s2")
    appends(c, 0, 2)
    c.wire.isolate("s2")
    c.wait_for_view("s1", None)
    for index in range(30):
        assert c.call("c1", Put("one", f"overwrite {index}")).status == "ok"
    c.wire.heal()
    c.wait_for_view("s1", "s2")
    c.run(5)
    reasons = [e["reason"] for e in events(c, "state_transfer_start", "s1")]
    assert reasons[-1] == "the complete state is smaller than the suffix"
    same_state(c, "s1", "s2")


def test_a_backlog_that_let_the_position_go_means_a_full_transfer() -> None:
    small = dataclasses.replace(FAST_REPLICA, backlog_bytes_max=300)
    c = cluster(small, "s1", "s2")
    fill(c)
    appends(c, 0, 3)
    c.wire.isolate("s2")
    c.wait_for_view("s1", None)
    appends(c, 3, 20)
    c.wire.heal()
    c.wait_for_view("s1", "s2")
    c.run(5)
    reasons = [e["reason"] for e in events(c, "state_transfer_start", "s1")]
    assert reasons[-1] == "backlog no longer holds the backup's position"
    assert not events(c, "catch_up_received")
    same_state(c, "s1", "s2")
    assert c.replicas["s1"].backlog_bytes <= 300


def test_catch_up_off_always_sends_the_complete_state() -> None:
    c = cluster(dataclasses.replace(FAST_REPLICA, backlog_bytes_max=0), "s1", "s2")
    appends(c, 0, 3)
    c.wire.isolate("s2")
    c.wait_for_view("s1", None)
    c.wire.heal()
    c.wait_for_view("s1", "s2")
    c.run(5)
    assert [e["reason"] for e in events(c, "state_transfer_start", "s1")][-1] == "catch-up off"
    assert not events(c, "catch_up_start")


def test_a_suffix_that_does_not_start_where_the_backup_ends_is_refused() -> None:
    net = Net()
    p = net.serving_alone()
    net.put("k", "v", seq=0)
    net.announce(V2)
    b = net.r["b"]
    net.wire.pass_probe("b")
    net.wire.drop_where(StateTransfer)
    forged = StateTransfer(
        V2, "p", 1, (), True, stream_index=9, target_incarnation=b.incarnation,
        suffix_start=8, suffix=((1, Request("x", 0, 0, Put("k", "forged"))),),
    )  # fmt: skip
    [reply] = [e.message for e in net.wire.send("p", "b", forged) if hasattr(e, "message")]
    assert isinstance(reply, StateTransferReply) and not reply.accepted
    assert b.phase is Phase.UNSYNCED and "k" not in b.store.data
    assert p.phase is Phase.TRANSFERRING


def test_the_probe_answer_reports_the_backups_own_position_and_tag() -> None:
    net = Net()
    net.serving_alone()
    net.announce(View(2, "p", ("b",)))
    [probe] = net.wire.pending(StateTransfer, target="b")
    net.wire.deliver(probe)
    [answer] = net.wire.pending(StateTransferReply)
    assert isinstance(answer.message, StateTransferReply)
    assert (answer.message.chunk_index, answer.message.position) == (0, 0)
