"""Read leases (R1-R5 in docs/protocol.md), one test per rule; each fails without its rule.

The cluster tests run the real view service, replicas and client sessions on the in-memory
wire of ``harness.py``; "cut" loses every message between two nodes.
"""

from __future__ import annotations

from dataclasses import replace

import msgspec

from pbkv.core.effects import Outbox
from pbkv.core.kv_store import Outcome
from pbkv.core.messages import AnyMessage, Get, Ping, PingReply, Put, Request, View
from pbkv.core.replica_base import LogEntry
from pbkv.core.sizes import request_bytes_bound
from pbkv.core.view_service import ViewService, ViewServiceConfig
from pbkv.wire import Codec
from tests.core.harness import FAST_VIEW_SERVICE, Cluster, sent
from tests.core.test_replica import V2, Net

LEASES = replace(FAST_VIEW_SERVICE, dead_after_ticks=20, read_leases=True)


def leased_cluster() -> Cluster:
    """p primary, b backup, a value written, p holding a lease; client c."""
    cluster = Cluster(view_service_config=LEASES)
    cluster.start("p")
    cluster.run(1)
    cluster.start("b")
    cluster.client("c")
    cluster.client("d")
    cluster.wait_for_view("p", "b")
    assert cluster.call("c", Put("k", "1")).status == "ok"
    cluster.run(4)  # a ping round trip in the view: the lease is granted
    assert cluster.replicas["p"].lease_remaining_ticks() > 0
    return cluster


def read_within(cluster: Cluster, client: str, ticks: int) -> str | None:
    """Submit a read of ``k`` and run ``ticks``: its value, or None if it is unanswered."""
    seq = cluster.wire.submit(client, Get("k"))
    cluster.wire.settle()
    for _ in range(ticks):
        result = cluster.wire.result(client, seq)
        if result is not None:
            assert result.status == "ok"
            return result.value or ""
        cluster.wire.tick(["p", "b", client])
        cluster.wire.settle()
    return None


def test_r1_the_lease_is_shorter_than_the_dead_interval_by_the_drift_margin() -> None:
    config = ViewServiceConfig(dead_after_ticks=50, read_leases=True, clock_drift_max=0.01)
    lease = config.lease_ticks()
    assert lease == 42
    assert lease / (1 - 0.01) < (50 - 1) / (1 + 0.01) - 1  # survives both clocks' drift
    assert ViewServiceConfig(dead_after_ticks=50).lease_ticks() == 0  # off by default
    assert replace(config, clock_drift_max=0.1).lease_ticks() < lease
    assert ViewServiceConfig(dead_after_ticks=3, read_leases=True).check() is not None


def test_r2_a_leased_primary_answers_reads_without_its_backup() -> None:
    cluster = leased_cluster()
    cluster.wire.cut("p", "b")  # the confirmed path cannot answer now
    assert read_within(cluster, "d", 2) == "1"
    assert cluster.replicas["p"].counters["reads_leased"] == 1


def test_r2_a_read_waits_until_every_earlier_write_is_confirmed_by_the_backups() -> None:
    cluster = leased_cluster()
    cluster.wire.cut("p", "b")
    cluster.wire.submit("c", Put("k", "2"))  # executed at p, not confirmed by b yet
    cluster.wire.settle()
    seq = cluster.wire.submit("d", Get("k"))
    cluster.wire.settle()
    cluster.wire.submit("c", Put("k", "3"))  # after the read: not in what it shows
    cluster.wire.settle()
    primary = cluster.replicas["p"]
    assert len(primary.waiting_reads) == 1 and primary.counters["reads_leased"] == 1
    cluster.run(3)
    assert cluster.wire.result("d", seq) is None  # "2" could still be lost by a failover
    cluster.wire.heal()
    cluster.run_until(lambda: cluster.wire.result("d", seq) is not None, 100)
    answer = cluster.wire.result("d", seq)
    assert answer is not None and (answer.status, answer.value) == ("ok", "2")
    assert not primary.waiting_reads and primary.waiting_reads_bytes == 0


def test_r2_a_read_of_another_key_does_not_wait_for_an_unconfirmed_write() -> None:
    cluster = leased_cluster()
    assert cluster.call("c", Put("other", "x")).status == "ok"  # confirmed
    cluster.wire.cut("p", "b")
    cluster.wire.submit("c", Put("k", "2"))  # executed at p, not confirmed by b
    cluster.wire.settle()
    seq = cluster.wire.submit("d", Get("other"))
    cluster.wire.settle()
    answer = cluster.wire.result("d", seq)
    assert answer is not None and (answer.status, answer.value) == ("ok", "x")
    primary = cluster.replicas["p"]
    assert not primary.waiting_reads
    assert primary.unconfirmed_writes == {"k": primary.next_index - 1}
    assert read_within(cluster, "d", 3) is None  # k's own write still gates a read of k


def test_r2_the_table_of_unconfirmed_writes_stays_within_about_twice_the_log() -> None:
    cluster = leased_cluster()
    primary = cluster.replicas["p"]
    assert not primary.unconfirmed_writes  # the log emptied when the first put was confirmed
    out = Outbox()
    for index in range(300):  # writes to many keys, then only the last few confirmed late
        primary.unconfirmed_writes[f"key{index}"] = primary.acked_index + index
    primary.log.append(primary.log[0] if primary.log else _entry())
    primary.forget_confirmed_writes(primary.acked_index + 299)
    assert primary.unconfirmed_writes == {"key299": primary.acked_index + 299}
    primary.log.clear()
    primary.forget_confirmed_writes(primary.acked_index)
    assert primary.unconfirmed_writes == {} and not out.effects


def _entry() -> LogEntry:
    request = Request("c", 99, 0, Put("k", "v"))
    return LogEntry(request, "c", Outcome("ok"), request_bytes_bound(request))


def test_r2_waiting_reads_are_bounded_with_the_log_and_dropped_with_the_stream() -> None:
    cluster = leased_cluster()
    primary = cluster.replicas["p"]
    primary.config = replace(primary.config, log_entries_max=3)
    cluster.wire.cut("p", "b")
    cluster.wire.submit("c", Put("k", "2"))
    for client in ("d", "e", "f"):
        cluster.client(client)
        cluster.wire.submit(client, Get("k"))
    cluster.wire.settle()
    assert len(primary.waiting_reads) == 2  # the third would pass log_entries_max
    primary.reset_stream(primary.next_index)  # a view change that drops the stream
    assert not primary.waiting_reads and primary.waiting_reads_bytes == 0


def test_r2_without_a_lease_reads_take_the_confirmed_path() -> None:
    cluster = leased_cluster()
    cluster.wire.cut("p", "vs")  # no renewal: the lease runs out
    cluster.run(LEASES.lease_ticks() + 1)
    assert cluster.replicas["p"].lease_remaining_ticks() == 0
    cluster.wire.cut("p", "b")
    assert read_within(cluster, "d", 3) is None


def test_r4_a_jump_of_the_clock_after_a_pause_ends_the_lease() -> None:
    cluster = leased_cluster()
    primary = cluster.replicas["p"]
    primary.observe_clock(primary.clock + 10 * LEASES.dead_after_ticks)  # resumed after SIGSTOP
    cluster.wire.cut("p", "b")
    cluster.wire.cut("p", "vs")
    assert read_within(cluster, "d", 1) is None


def test_r1_only_the_views_primary_process_is_granted_a_lease() -> None:
    vs = ViewService("vs", replace(LEASES, restart_quiet_ticks=0))
    out = Outbox()
    vs.on_message("p", Ping("p", 0, 7, clock_tick=3), out)
    push, reply = sent(out.take(), PingReply)  # view 1 pushed, then the reply to the ping
    assert push.ping_clock == -1  # a push answers no ping: no lease
    assert (reply.lease_ticks, reply.ping_clock) == (LEASES.lease_ticks(), 3)
    vs.on_message("b", Ping("b", 1, 8, clock_tick=5), out)
    [reply] = sent(out.take(), PingReply)
    assert reply.ping_clock == -1  # not the primary
    vs.on_message("p", Ping("p", 0, 9, clock_tick=6), out)  # a new process under p's name
    [reply] = sent(out.take(), PingReply)
    assert reply.view.primary == "p" and reply.ping_clock == -1


def grant(net: Net, view: View, ping_clock: int, lease: int = 30) -> None:
    """The view service answers p's ping sent at ``ping_clock`` naming it primary of ``view``,
    with a lease of ``lease`` ticks (R1)."""
    reply = PingReply(view, net.r["p"].incarnation, lease_ticks=lease, ping_clock=ping_clock)
    net.wire.send("vs", "p", reply)


def test_r1_a_reply_echoing_a_clock_the_primary_has_not_reached_grants_nothing() -> None:
    """R1: the lease runs from when the primary sent its ping, on its own clock; a reply naming
    a later clock answers no ping of this process (a confused or foreign reply) and grants
    nothing, or the lease would outlast what the view service waits for (R3)."""
    net = Net()
    p, _ = net.serving_pair()
    grant(net, V2, p.clock + 5)
    assert p.lease_remaining_ticks() == 0
    grant(net, V2, p.clock)
    assert p.lease_remaining_ticks() == 30


def test_r2_a_learned_view_ends_the_lease() -> None:
    """R2: a lease holds for the view it was granted in only; learning a view ends it (the next
    reply in the new view grants a new one)."""
    net = Net()
    p, _ = net.serving_pair()
    grant(net, V2, p.clock)
    assert p.lease_remaining_ticks() == 30
    net.announce(View(3, "p", ("c",)))  # V7: same primary, new backup
    assert p.view.number == 3 and p.lease_remaining_ticks() == 0


def test_r2_a_late_reply_of_an_older_view_grants_no_lease() -> None:
    """R2: only a reply naming the view the primary holds grants a lease: a reply of the view
    before, delivered late, is for a view whose lease has ended."""
    net = Net()
    p, _ = net.serving_pair()
    net.announce(View(3, "p", ("c",)))
    grant(net, V2, p.clock)
    assert p.view.number == 3 and p.lease_remaining_ticks() == 0


def restarted_primary(config: ViewServiceConfig) -> tuple[ViewService, int]:
    """p (granted a lease at tick 0) and b in an acknowledged view; p's name pings from a new
    process at once: the backup could be promoted now. Returns the service and the tick of
    the promotion."""
    vs = ViewService("vs", config, View(1, "p", ("b",)), acknowledged=True, incarnations={})
    out = Outbox()
    vs.on_message("p", Ping("p", 1, 7, clock_tick=0), out)
    vs.on_message("b", Ping("b", 1, 8, synced_view=1), out)
    vs.on_message("p", Ping("p", 0, 9), out)  # restarted (V8)
    for _ in range(100):
        if vs.view.primary == "b":
            return vs, vs.now
        vs.on_message("b", Ping("b", 1, 8, synced_view=1), out)
        vs.on_tick(out)
    raise AssertionError("b never promoted")


def test_r3_no_new_primary_before_the_old_primarys_lease_ran_out() -> None:
    config = replace(LEASES, restart_quiet_ticks=0)
    _, promoted = restarted_primary(config)
    assert promoted >= config.dead_after_ticks  # the lease granted at tick 0 had run out
    _, without = restarted_primary(replace(config, read_leases=False))
    assert without < config.dead_after_ticks  # the restart alone would have allowed it


def test_r3_a_restored_view_service_waits_a_dead_interval_before_promoting() -> None:
    config = replace(LEASES, restart_quiet_ticks=0)
    vs = ViewService("vs", config, View(3, "p", ("b",)), acknowledged=True, incarnations={})
    out = Outbox()
    vs.on_message("b", Ping("b", 3, 8, synced_view=3), out)
    vs.on_message("p", Ping("p", 0, 9), out)  # p's process restarted: promote b, later
    for _ in range(config.dead_after_ticks - 1):
        vs.on_tick(out)
        vs.on_message("b", Ping("b", 3, 8, synced_view=3), out)
        assert vs.view.number == 3, "promoted while the old primary may hold a lease"
    for _ in range(2):
        vs.on_tick(out)
    assert vs.view.primary == "b"


def test_r3_replacing_a_failed_backup_is_not_delayed() -> None:
    vs = ViewService("vs", LEASES, View(1, "p", ("b",)), acknowledged=True, incarnations={})
    out = Outbox()
    vs.on_message("p", Ping("p", 1, 7, clock_tick=0), out)
    vs.on_message("i", Ping("i", 0, 5), out)
    for _ in range(LEASES.dead_after_ticks):
        vs.on_tick(out)
        vs.on_message("p", Ping("p", 1, 7, clock_tick=vs.now), out)
        vs.on_message("i", Ping("i", 0, 5), out)
    assert vs.view == View(2, "p", ("i",))  # V7: same primary, new backup, while leased


class OldPingReply(msgspec.Struct, frozen=True, array_like=True, tag_field="t", tag="pgr"):
    view: View
    incarnation: int = 0
    backup_incarnations: tuple[int, ...] = ()


def test_r5_a_reply_from_an_older_view_service_decodes_without_a_lease() -> None:
    codec: Codec[AnyMessage] = Codec(AnyMessage)
    decoded = codec.decode(msgspec.msgpack.encode(OldPingReply(View(1, "p", ()))))
    assert isinstance(decoded, PingReply)
    assert (decoded.lease_ticks, decoded.ping_clock) == (0, -1)
