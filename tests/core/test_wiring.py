"""End to end in process: view service, replicas and clients wired by hand (``harness.Cluster``).

Ports of the MIT 6.824 pbservice and DSLabs PrimaryBackupTest scenarios that fit a tiny
deterministic delivery loop ([P1], [P3], [P9], [P10], [DP02], [DP05], [DP07], [DP09], [DP18],
[DP19]); the randomized ones belong to the simulator (``pbkv.sim``).
"""

from __future__ import annotations

import random

from pbkv.core.messages import (
    Append,
    Delete,
    Forward,
    Get,
    GetView,
    Operation,
    Ping,
    Put,
    Reply,
    Request,
    StateTransfer,
    View,
)
from pbkv.core.replica import Phase
from tests.core.harness import FAST_VIEW_SERVICE, VIEW_SERVICE, Cluster, Faults

DEAD = FAST_VIEW_SERVICE.dead_after_ticks


def cluster(*servers: str, clients: tuple[str, ...] = ("c1",)) -> Cluster:
    """Servers started one by one (the first becomes primary, the second its backup)."""
    c = Cluster()
    for client in clients:
        c.client(client)
    for index, server in enumerate(servers):
        c.start(server)
        if index == 0:
            c.wait_for_view(server, None)
        elif index == 1:
            c.wait_for_view(servers[0], server)
    return c


def same_state(c: Cluster, *servers: str) -> None:
    first = c.replicas[servers[0]].store
    for server in servers[1:]:
        other = c.replicas[server].store
        assert other.data == first.data, server
        assert other.session_records() == first.session_records(), server


def test_dp02_simple_operations_on_a_single_server() -> None:
    c = cluster("s1")
    script: list[tuple[Operation, str | None]] = [
        (Put("key1", "v1a"), None),
        (Get("key1"), "v1a"),
        (Put("key2", "v2a"), None),
        (Get("key2"), "v2a"),
        (Put("key1", "v1b"), None),
        (Get("key1"), "v1b"),
        (Append("key3", "v3a"), None),
        (Get("key3"), "v3a"),
        (Put("key3", "v3b"), None),
        (Append("key3", "v3c"), None),
        (Append("key3", "v3d"), None),
        (Get("key3"), "v3bv3cv3d"),
        (Delete("key3"), None),
        (Get("key3"), None),
        (Get("key5"), None),
    ]
    for op, expected in script:
        result = c.call("c1", op)
        assert (result.status, result.value) == ("ok", expected), op


def test_operations_are_replicated_to_the_backup() -> None:
    c = cluster("s1", "s2")
    for i in range(20):
        assert c.call("c1", Append(f"k{i % 3}", str(i))).status == "ok"
    assert c.call("c1", Delete("k2")).status == "ok"
    same_state(c, "s1", "s2")
    assert c.replicas["s2"].store.data == {"k0": "0369121518", "k1": "14710131619"}


def test_dp05_client_and_servers_do_not_ask_the_view_service_per_request() -> None:
    """6.824 [P1] "Count RPCs" and DSLabs [DP05]: the view service hears pings, not requests."""
    c = cluster("s1", "s2")
    before = len(c.wire.history)
    start = c.view_service.now
    for i in range(100):
        assert c.call("c1", Put(f"xk{i}", str(i))).status == "ok"
        c.run(1)
    at_vs = [e for e in c.wire.history[before:] if e.target == VIEW_SERVICE]
    ticks = c.view_service.now - start
    pings_expected = 2 * (ticks // c.replica_config.ping_interval_ticks + 1)
    assert len([e for e in at_vs if isinstance(e.message, GetView)]) <= 1  # the first lookup
    assert len(at_vs) <= pings_expected + 20


def test_p3_put_right_after_backup_failure_and_idle_server_becomes_backup() -> None:
    """6.824 [P3] / DSLabs [DP09], first half."""
    c = cluster("s1", "s2", "s3")
    for key in "abc":
        assert c.call("c1", Put(key, key * 2)).status == "ok"
    c.crash("s2")
    assert c.call("c1", Put("a", "aaa")).status == "ok"
    assert c.call("c1", Get("a")).value == "aaa"
    c.wait_for_view("s1", "s3")
    same_state(c, "s1", "s3")
    assert c.replicas["s3"].store.data == {"a": "aaa", "b": "bb", "c": "cc"}


def test_p3_put_right_after_primary_failure_is_served_by_the_promoted_backup() -> None:
    """6.824 [P3] / DSLabs [DP09], second half; DSLabs [DP06]."""
    c = cluster("s1", "s2", "s3")
    for key in "abc":
        c.call("c1", Put(key, key * 2))
    c.crash("s1")
    assert c.call("c1", Put("b", "bbb")).status == "ok"
    view = c.wait_for_view("s2", "s3")
    assert view.number == 3  # promotion and the new backup in one step
    for key, value in (("a", "aa"), ("b", "bbb"), ("c", "cc")):
        assert c.call("c1", Get(key)).value == value
    same_state(c, "s2", "s3")


def test_restarted_backup_rejoins_with_a_new_incarnation_and_full_state() -> None:
    c = cluster("s1", "s2")
    c.call("c1", Put("k", "v"))
    old = c.replicas["s2"].incarnation
    c.start("s2")  # crash and restart at once: empty memory, new incarnation
    # The restart counts once the old process has been silent for restart_quiet_ticks (V10).
    c.run(c.view_service_config.restart_quiet_ticks + 2 * c.replica_config.ping_interval_ticks)
    view = c.wait_for_view("s1", "s2")
    assert view.number == 3 and c.replicas["s2"].incarnation != old
    assert c.replicas["s2"].store.data == {"k": "v"}
    c.call("c1", Append("k", "w"))
    same_state(c, "s1", "s2")


def test_restarted_primary_is_replaced_by_its_backup_and_rejoins_as_backup() -> None:
    """6.824 [V6] end to end: the restarted primary keeps pinging but must not stay primary."""
    c = cluster("s1", "s2")
    c.call("c1", Put("k", "v"))
    c.start("s1")
    view = c.wait_for_view("s2", "s1")
    assert view.number == 3
    assert c.call("c1", Get("k")).value == "v"
    same_state(c, "s1", "s2")


def test_dp07_new_server_after_all_others_died_never_serves() -> None:
    """6.824 [P1] last scenario / DSLabs [DP07]."""
    c = cluster("s1", "s2")
    c.call("c1", Put("foo", "bar"))
    c.crash("s1")
    c.crash("s2")
    c.start("s3")
    seq = c.wire.submit("c1", Get("foo"))
    c.run(20 * DEAD)
    assert c.wire.result("c1", seq) is None
    assert c.view.primary in ("s1", "s2")
    assert c.replicas["s3"].phase is Phase.IDLE


def appends_forwarded(c: Cluster) -> tuple[int, int]:
    """DSLabs DP18 set-up: c1 appends x, c2 appends y; both requests reach the primary s1,
    whose two forwards are then in flight to s2. Returns the two operations' numbers."""
    c.call("c1", Get("warm-up"))  # both clients know the view
    c.call("c2", Get("warm-up"))
    x = c.wire.submit("c1", Append("foo", "x"))
    y = c.wire.submit("c2", Append("foo", "y"))
    assert c.wire.deliver_where(Request, target="s1") == 2
    assert len(c.wire.pending(Forward, target="s2")) == 2
    return x, y


def test_dp18_forwards_delivered_to_the_backup_in_reverse_order() -> None:
    c = cluster("s1", "s2", clients=("c1", "c2"))
    x, y = appends_forwarded(c)
    for envelope in reversed(c.wire.pending(Forward, target="s2")):
        c.wire.deliver(envelope)
    c.run_until(lambda: None not in (c.wire.result("c1", x), c.wire.result("c2", y)))
    assert c.replicas["s1"].store.data["foo"] == "xy"  # the primary's order
    same_state(c, "s1", "s2")
    c.crash("s1")
    assert c.call("c2", Get("foo")).value == "xy"


def test_dp18_only_the_second_forward_reaches_the_backup() -> None:
    c = cluster("s1", "s2", clients=("c1", "c2"))
    x, y = appends_forwarded(c)
    first, second = c.wire.pending(Forward, target="s2")
    c.wire.in_flight.remove(first)
    c.wire.deliver(second)
    c.run_until(lambda: None not in (c.wire.result("c1", x), c.wire.result("c2", y)))
    same_state(c, "s1", "s2")
    assert c.replicas["s2"].store.data["foo"] == "xy"


def test_dp19_transfer_carries_writes_committed_while_the_primary_was_alone() -> None:
    c = cluster("s1", "s2", clients=("c1", "c2"))
    c.wire.isolate("s2")
    c.wait_for_view("s1", None)
    assert c.call("c1", Append("foo", "x")).status == "ok"  # committed at s1 alone
    c.wire.heal()
    c.wait_for_view("s1", "s2")
    c.crash("s1")
    c.wait_for_view("s2", None)
    assert c.call("c2", Append("foo", "y")).status == "ok"
    assert c.call("c2", Get("foo")).value == "xy"


def test_dp19_synced_backup_promoted_although_the_acknowledgement_was_lost() -> None:
    """V6 end to end: the primary dies after the transfer but before the view service heard
    its acknowledgement; the backup reported the completed transfer and takes over."""
    c = cluster("s1", "s2", clients=("c1", "c2"))
    c.wire.isolate("s2")
    c.wait_for_view("s1", None)
    c.call("c1", Append("foo", "x"))
    c.wire.heal()
    c.wire.cuts.add(("s1", VIEW_SERVICE))  # s1 hears views but its acknowledgement is lost
    c.run_until(lambda: c.view_service.backup_synced)
    assert c.view.number == 4 and not c.view_service.acknowledged
    c.crash("s1")
    c.wait_for_view("s2", None)
    assert c.call("c2", Append("foo", "y")).status == "ok"
    assert c.call("c2", Get("foo")).value == "xy"


def test_p9_old_primary_cut_from_the_view_service_does_not_serve_stale_reads() -> None:
    c = cluster("s1", "s2", clients=("c1", "c2"))
    assert c.call("c1", Put("a", "1")).status == "ok"  # c1 now caches s1 as primary
    c.wire.cut("s1", VIEW_SERVICE)
    cut_at = len(c.wire.history)
    c.wait_for_view("s2", None)
    assert c.call("c2", Put("a", "111")).status == "ok"
    # c1 still sends to s1, which forwards to s2, which refuses: s1 must not answer "1".
    result = c.call("c1", Get("a"))
    assert (result.status, result.value) == ("ok", "111")
    assert c.replicas["s1"].phase is Phase.STALLED
    after_cut = [e.message for e in c.wire.history[cut_at:] if e.source == "s1"]
    assert not [m for m in after_cut if isinstance(m, Reply) and m.status == "ok"]


def test_p10_partitioned_old_primary_does_not_complete_reads_when_its_backup_dies() -> None:
    c = cluster("s1", "s2", "s3", clients=("c1", "c2"))
    c.call("c1", Put("a", "1"))
    c.wire.cut("s1", VIEW_SERVICE)
    c.wait_for_view("s2", "s3")
    assert c.call("c2", Put("a", "2")).status == "ok"
    c.crash("s2")
    seq = c.wire.submit("c1", Get("a"))
    c.run(3)  # s1's forward to s2 goes nowhere: it must not conclude "backup dead, answer alone"
    assert c.wire.result("c1", seq) is None
    c.run_until(lambda: c.wire.result("c1", seq) is not None)
    result = c.wire.result("c1", seq)
    assert result is not None and (result.status, result.value) == ("ok", "2")
    assert c.view.primary == "s3"


def test_p2_at_most_once_over_an_unreliable_network() -> None:
    """6.824 [P2] / DSLabs [DP08]: lost requests and lost replies; every append applied once."""
    c = cluster("s1", "s2")
    servers = {"s1", "s2"}
    c.wire.faults = Faults(
        random.Random(5), drop=0.15, duplicate=0.1, applies=lambda e: e.target in servers
    )
    expected = ""
    for i in range(40):
        assert c.call("c1", Append("counter", str(i)), ticks_max=2000).status == "ok"
        expected += str(i)
    c.wire.faults = None
    assert c.call("c1", Get("counter")).value == expected
    same_state(c, "s1", "s2")


def test_p6_concurrent_appends_same_key_unreliable_then_fail_over() -> None:
    """6.824 [P5]/[P6], DSLabs [DP11]/[DP13]: three clients append to one key, each waiting for
    its previous append; every token exactly once and in its client's order, and the backup's
    value byte-identical to the primary's."""
    clients = ("c1", "c2", "c3")
    rounds = 12
    c = cluster("s1", "s2", clients=clients)
    c.wire.faults = Faults(random.Random(9), drop=0.1, duplicate=0.1)
    sent = dict.fromkeys(clients, 0)
    current = {client: c.wire.submit(client, Append("k", f"x {client} 0 y")) for client in clients}
    for _ in range(3000):
        for client in clients:
            result = c.wire.result(client, current[client])
            if result is not None and sent[client] < rounds - 1:
                assert result.status == "ok"
                sent[client] += 1
                token = f"x {client} {sent[client]} y"
                current[client] = c.wire.submit(client, Append("k", token))
        if all(c.wire.result(cl, seq) is not None for cl, seq in current.items()):
            break
        c.run(1)
    assert sent == dict.fromkeys(clients, rounds - 1)
    c.wire.faults = None
    value = c.call("c1", Get("k")).value
    assert value is not None
    for client in clients:
        tokens = [f"x {client} {n} y" for n in range(rounds)]
        assert all(value.count(token) == 1 for token in tokens)
        offsets = [value.index(token) for token in tokens]
        assert offsets == sorted(offsets)
    same_state(c, "s1", "s2")
    c.crash("s1")
    c.wait_for_view("s2", None)
    assert c.call("c2", Get("k")).value == value


def test_view_service_restart_mid_transfer_keeps_the_promoted_primary() -> None:
    """With the replica bug fixed in 47a251e: the promoted s2, still transferring to s3, pings the
    view it synced in, not 0, so the restarted view service does not take it for a restarted
    process and can replace the failed new backup (V7) instead of blocking forever."""
    c = cluster("s1", "s2", "s3")
    c.call("c1", Put("k", "v"))
    c.wire.cut("s2", "s3")  # the transfer to s3 will not get through
    c.crash("s1")
    c.run_until(lambda: c.view == View(3, "s2", ("s3",)))
    assert c.replicas["s2"].phase is Phase.TRANSFERRING
    c.restart_view_service()
    c.crash("s3")
    view = c.wait_for_view("s2", None)
    assert view.number == 4
    assert c.call("c1", Get("k")).value == "v"


def test_view_service_restart_then_a_newcomer_pings_first() -> None:
    """With the view service bug fixed in 8948b6c: s2 pings the restarted service before s1
    does; s1 must stay primary, and no failover to s2 may follow."""
    c = cluster("s1", clients=("c1",))
    c.call("c1", Put("k", "v"))
    c.restart_view_service()
    c.start("s2")
    c.wire.tick(["s2"])
    c.wire.settle(keep=lambda e: isinstance(e.message, Ping) and e.source == "s1")
    assert c.view == View(1, "s1")  # nothing assumes the restored primary serves until it pings
    c.wait_for_view("s1", "s2")
    assert c.view == View(2, "s1", ("s2",))
    c.run(5 * DEAD)
    assert c.view == View(2, "s1", ("s2",))
    assert c.call("c1", Get("k")).value == "v"


def test_lost_transfer_chunks_are_resent_end_to_end() -> None:
    c = cluster("s1")
    for i in range(30):
        c.call("c1", Put(f"k{i}", "v" * 50))
    c.start("s2")
    dropped = 0
    while dropped < 3:
        c.wire.tick()
        c.wire.settle(keep=lambda e: isinstance(e.message, StateTransfer))
        dropped += c.wire.drop_where(StateTransfer)
    assert c.replicas["s1"].phase is Phase.TRANSFERRING
    c.wait_for_view("s1", "s2")
    same_state(c, "s1", "s2")


def test_view_service_restart_does_not_take_a_restarted_unsynced_backup_for_the_original() -> None:
    """Bug found by a randomized run of this harness (L4): both members went silent; the backup
    restarted and learned the (unchanged) view from the old view service, so as a fresh,
    unsynced backup it pinged the view's number. The restarted view service, not knowing the
    incarnations, took that for the original synced backup; the primary, back and holding all
    the data, had its forwards refused and stalled forever in a view nobody would change."""
    c = cluster("s1", "s2")
    assert c.call("c1", Put("k", "v")).status == "ok"
    c.wire.cut("s1", VIEW_SERVICE)
    c.wire.cut("s2", VIEW_SERVICE)
    c.run(2 * DEAD)  # both declared dead: no view change is possible
    c.start("s2")
    c.wire.heal()
    c.wire.cut("s1", VIEW_SERVICE)
    c.run(3)
    assert c.replicas["s2"].view == c.view == View(2, "s1", ("s2",))  # fresh, in the old view
    c.restart_view_service()
    c.wire.heal()
    assert c.call("c1", Get("k")).value == "v"
    c.wait_for_view("s1", "s2")
    same_state(c, "s1", "s2")


def test_view_service_restart_before_view_1_reached_its_primary() -> None:
    """Found by a randomized run of this harness: the view service installs and persists view 1
    on s1's first ping, then restarts before s1 hears of it. s1, the same process, keeps pinging
    0. Before the fix the restored service took it for a restart of view 1's primary and nothing
    ever served; now the persisted view names the incarnation it was formed with (V9)."""
    c = Cluster()
    c.client("c1")
    c.start("s1")
    c.wire.tick(["s1"])
    c.wire.settle(keep=lambda e: e.target == "s1")
    assert c.view == View(1, "s1")
    c.wire.drop_where(target="s1")  # the view never reaches s1
    c.restart_view_service()
    assert c.call("c1", Put("k", "v"), ticks_max=20 * DEAD).status == "ok"


def test_a_maximal_value_larger_than_a_forward_batch_travels_alone() -> None:
    """Values may be as large as the forward batch bound (1 MiB both, by default), so a request
    carrying one is larger than a batch. Review: the primary asserted it fit a batch and
    crashed, then the promoted backup crashed the same way on the client's retry."""
    c = cluster("s1", "s2")
    limits = c.replica_config.limits
    assert limits.value_bytes_max >= c.replica_config.forward_batch_bytes_max
    big = "x" * limits.value_bytes_max
    assert c.call("c1", Put("small", "before")).status == "ok"
    assert c.call("c1", Put("big", big)).status == "ok"
    assert c.call("c1", Append("small", "-after")).status == "ok"
    assert c.call("c1", Get("big")).value == big
    same_state(c, "s1", "s2")
    assert c.replicas["s2"].store.data["small"] == "before-after"
