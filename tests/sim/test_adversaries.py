"""Scripted adversaries (issue 8): stale messages of a dead incarnation, forged replies, hostile
requests. Each scenario is the smallest story of one finding; the broken variants of
``tests/sim/broken.py`` show that each also fails when the fix is undone."""

from __future__ import annotations

from pbkv.core.kv_store import Limits
from pbkv.core.messages import ForwardReply, Get, Ping, PingReply, Put, Request, View
from pbkv.core.replica import Replica, ReplicaConfig
from pbkv.sim import World, make_world, one_way
from pbkv.sim.adversary import FORGER_NAME, HOSTILE_NAME
from pbkv.sim.cluster import ReplicaFactory, ViewServiceFactory, default_view_service
from tests.sim.harness import assert_linearizable, get, put, until, wait_view


def views_created(world: World) -> int:
    view_service = world.view_service()
    assert view_service is not None
    return view_service.views_created


def stale_backup_pings(view_service_factory: ViewServiceFactory = default_view_service) -> int:
    """s2 (backup) sends pings that are delayed; it crashes and restarts; once the view service
    has replaced it, the pings of the dead incarnation arrive. Returns the views created after
    they arrived."""
    world = make_world(servers=3, clients=1, view_service_factory=view_service_factory)
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "1")
    world.network.capture("s2")
    until(world, lambda w: len(w.network.captures["s2"]) >= 2)
    captured = world.network.stop_capture("s2")
    assert any(isinstance(world_message(e), Ping) for e in captured)
    world.crash("s2")
    world.restart("s2")
    until(world, lambda w: w.current_view().number > 2 and w.current_view().backup is not None)
    wait_view(world, "s1", world.current_view().backup)
    settled = views_created(world)
    world.release_captured(captured)
    world.run(300)
    assert get(world, "c1", "k") == "1"
    assert_linearizable(world)
    return views_created(world) - settled


def world_message(envelope: object) -> object:
    from pbkv.sim.network import decode

    return decode(envelope)  # type: ignore[arg-type]


def test_pings_of_a_dead_incarnation_change_no_view() -> None:
    """Finding 4: the pings of s2's previous process are ignored (retired incarnation)."""
    assert stale_backup_pings() == 0


def acknowledged_by_a_forger(replica_factory: ReplicaFactory = Replica) -> World:
    """s1 cannot reach its backup s2; a forger tells s1 that s2 applied everything. s1 then
    crashes and s2 takes over: every write s1 acknowledged must be on s2."""
    world = make_world(servers=3, clients=1, replica_factory=replica_factory)
    world.add_node(FORGER_NAME, "adversary")
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "before")
    world.partition(one_way("cut", "s1", "s2"))
    write = world.submit("c1", Put("k", "forged-ack"))
    world.run(5)
    view = world.current_view()
    primary = world.replica("s1")
    assert primary is not None
    for _ in range(3):
        reply = ForwardReply(view.number, primary.next_index, True, view.number)
        world.inject(FORGER_NAME, "s1", reply)
        world.run(3)
    world.crash("s1")
    world.heal("cut")
    until(world, lambda _: write.status is not None, 3000)
    get(world, "c1", "k", ticks_max=3000)
    return world


def test_a_forged_forward_reply_acknowledges_nothing() -> None:
    """Finding 5: only the view's backup confirms stream positions."""
    world = acknowledged_by_a_forger()
    assert_linearizable(world)


def test_a_forged_ping_reply_moves_no_server_to_another_view() -> None:
    """Finding 5: only the view service announces views (a forged view numbered near 2^63
    naming the primary alone would let it serve without its backup)."""
    world = make_world(servers=3, clients=1)
    world.add_node(FORGER_NAME, "adversary")
    wait_view(world, "s1", "s2")
    before = world.current_view()
    for target in ("s1", "s2", "s3"):
        world.inject(FORGER_NAME, target, PingReply(View(2**63 - 1, "s1"), 0))
        world.inject(FORGER_NAME, target, PingReply(View(before.number + 1), 0))
    world.run(50)
    for name in ("s1", "s2", "s3"):
        replica = world.replica(name)
        assert replica is not None and replica.view.number <= before.number + 1
    put(world, "c1", "k", "after")
    assert get(world, "c1", "k") == "after"


def test_hostile_requests_are_refused_and_replication_goes_on() -> None:
    """Finding 1: a client id of kilobytes and values over the limit, sent raw to the primary,
    are refused; the stream keeps moving."""
    frame = 64 * 1024
    config = ReplicaConfig(frame_bytes_max=frame, limits=Limits(value_bytes_max=8 * 1024))
    world = make_world(servers=2, clients=1, frame_bytes_max=frame, replica=config)
    world.add_node(HOSTILE_NAME, "adversary")
    wait_view(world, "s1", "s2")
    hostile = world.adversary(HOSTILE_NAME)
    assert hostile is not None
    requests = [
        Request("i" * 30_000, 1, 1, Put("x0", "v")),
        Request("i" * 30_000, 2, 2, Get("x0")),
        Request("j" * 16, 3, 3, Put("x0", "v" * 60_000)),
    ]
    for request in requests:
        hostile.sent(request, "an oversized field")
        world.inject(HOSTILE_NAME, "s1", request)
    world.run(100)
    assert not hostile.admitted
    put(world, "c1", "k", "after")
    assert get(world, "c1", "k") == "after"
