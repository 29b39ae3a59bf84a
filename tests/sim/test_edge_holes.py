"""Holes the simulator's edge faults found in the core after issue 8's first fixes, each as a
scripted story (all closed by the core in 0524b24; these are their regression tests), and N2
and V11 as they work.

A hole found and not yet closed is named in ``pbkv.sim.holes.OPEN_HOLES`` and its test here is
marked ``xfail(strict=True)`` until the fix lands (see docs/simulator.md, *Open holes*).
"""

from __future__ import annotations

import pytest

from pbkv.core.messages import Get, Ping, Request, StateTransfer
from pbkv.sim import World, make_world, split
from pbkv.sim.adversary import FORGER_NAME
from pbkv.sim.network import decode
from tests.sim.harness import get, put, until, wait_view


def forger_world(servers: int = 3) -> World:
    world = make_world(servers=servers, clients=1)
    world.add_node(FORGER_NAME, "adversary")
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "kept")
    return world


def test_a_forged_transfer_for_any_backup_installs_nothing() -> None:
    """s2 crashes; s3 becomes the backup of a new view and awaits its transfer. A forger sends
    an empty first chunk and then an empty last chunk "from" s1 for any backup (target 0)
    while the real chunk is delayed. Then s1 crashes: s3 must still hold ``k``."""
    world = forger_world()
    world.network.hold_filter = lambda s, t, m: isinstance(m, StateTransfer) and t == "s3"
    world.crash("s2")
    until(world, lambda w: w.current_view().backup == "s3")
    view = world.current_view()
    for index, last in ((0, False), (1, True)):
        chunk = StateTransfer(view, "s1", index, (), last, stream_index=0, target_incarnation=0)
        world.inject(FORGER_NAME, "s3", chunk)
        world.run(3)
    world.network.hold_filter = None
    world.network.release(world.now)
    until(world, lambda w: w.view_service() is not None and w.view_service().acknowledged)  # type: ignore[union-attr]
    world.crash("s1")
    assert get(world, "c1", "k", ticks_max=3000) == "kept"


def test_a_forged_restart_ping_does_not_lock_the_real_server_out() -> None:
    """The backup's pings are lost for a while (quieter than ``restart_quiet_ticks``, not yet
    dead); a forged restart ping in its name arrives. Once the real pings flow again the view
    service must hear the real server again."""
    world = forger_world()
    world.network.hold_filter = lambda s, t, m: s == "s2" and isinstance(m, Ping)
    world.run(30)
    world.inject(FORGER_NAME, "vs", Ping("s2", 0, 12345, 0))
    world.run(2)
    world.network.hold_filter = None
    world.network.discard_held()
    world.run(400)
    view_service = world.view_service()
    assert view_service is not None
    assert view_service.alive("s2"), "the real s2 is refused for good"


def stateless_view_service(world: World) -> None:
    """Restart the view service without its state while the servers hold a view."""
    world.crash("vs")
    world.restart("vs", lose_state=True)


def test_a_stateless_view_service_never_reissues_a_view_number() -> None:
    """It waits (N2) while s1 and s2 report their view; they crash and restart empty; the view
    number the cluster reached must still never be issued again (V1)."""
    world = make_world(servers=2, clients=1)
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "v")
    reached = world.current_view().number
    stateless_view_service(world)
    world.run(100)
    for name in ("s1", "s2"):
        world.crash(name)
        world.restart(name)
    world.run(300)  # the monitor raises view-issued-once if a number comes back
    assert world.current_view().number == 0 or world.current_view().number > reached


def test_a_stateless_view_service_waits_for_the_operator_n2() -> None:
    world = make_world(servers=3, clients=1)
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "v")
    stateless_view_service(world)
    world.run(300)
    view_service = world.view_service()
    assert view_service is not None
    assert view_service.view.number == 0
    assert "(N2)" in view_service.waiting()


def test_forcing_a_new_cluster_keeps_every_acknowledged_write_v11() -> None:
    world = make_world(servers=3, clients=1)
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "v")
    stateless_view_service(world)
    world.run(300)
    world.force_new_cluster()
    assert get(world, "c1", "k", ticks_max=3000) == "v"
    put(world, "c1", "k", "after")
    assert get(world, "c1", "k") == "after"


def test_requests_keep_their_meaning_through_the_codec() -> None:
    """Helper sanity: what the forger injects is what the receiver decodes."""
    world = make_world(servers=1, clients=1)
    world.add_node(FORGER_NAME, "adversary")
    request = Request("x" * 16, 1, 1, Get("k"))
    world.network.hold_filter = lambda s, t, m: s == FORGER_NAME
    world.inject(FORGER_NAME, "s1", request)
    assert decode(world.network.held[0]) == request


@pytest.mark.xfail(strict=True, reason="open hole: holes.STATELESS_VIEW_PARTITIONED")
def test_a_stateless_view_service_cut_off_from_the_state_never_reissues_a_view() -> None:
    """s1 and s2 hold view 2; s3 restarted empty. The view service restarts without its state
    while a partition keeps s1 and s2 away from it for longer than its listening period: it
    must still not issue a number the cluster used (V1)."""
    world = make_world(servers=3, clients=1)
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "v")
    world.partition(split("away", ["s1", "s2"], ["vs", "s3", "c1"]))
    world.crash("s3")
    world.run(10)  # pings sent before the partition or the crash land before the restarts
    world.restart("s3")
    stateless_view_service(world)
    world.run(300)  # the monitor raises view-issued-once if view 1 comes back
    world.heal("away")
    world.run(300)
