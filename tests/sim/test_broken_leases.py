"""Read leases (R1-R5): the checkers catch a lease that outlives the dead interval, a primary
that does not re-check its lease after a pause, and clocks drifting beyond the assumed bound.

Each broken variant (``tests/sim/broken.py``) is caught as a stale read by the
linearizability checker in a scripted scenario: a client that still caches the old view reads
through the old primary after the new view overwrote the key. The same scenarios are clean on
the real core. The long lease is also caught by the random simulator (a pinned seed, and a
slow sweep from seed 1); the missing re-check after a pause and drift beyond the bound are not
caught by random runs within 600 and 400 seeds (a stale read there needs a client whose read
reaches the old primary in the few ticks after it resumes, or partitioned with clocks at
opposite ends of the drift range): the scripted scenarios pin them.
"""

from __future__ import annotations

import pytest

from pbkv.check import check_history
from pbkv.core.messages import Get
from pbkv.core.replica import Replica
from pbkv.core.view_service import ViewService, ViewServiceConfig
from pbkv.sim import World, make_world, run_simulation, split
from pbkv.sim.cluster import ReplicaFactory, ViewServiceFactory
from pbkv.sim.params import Overrides
from tests.sim import broken
from tests.sim.harness import put, wait_view

LEASES = ViewServiceConfig(read_leases=True)
SWEEP_SEEDS = 400
PINNED_SEED = 139
SWEEP = Overrides(read_leases=True, partition_rate=6.0, pause_rate=6.0, ops=80)


def stale_read_after(
    fault: str,
    replica_factory: ReplicaFactory = Replica,
    view_service_factory: ViewServiceFactory = ViewService.restore,
    view_service: ViewServiceConfig = LEASES,
) -> World:
    """s1 primary holding a lease, s2 backup; ``fault`` ("partition": s1 cut from the view
    service and c2; "pause": s1 frozen, and cut from c2) until s2 took over and c2 overwrote
    ``a``; then c1, whose cached view still names s1, reads ``a`` through s1."""
    world = make_world(
        servers=3,
        clients=2,
        replica_factory=replica_factory,
        view_service_factory=view_service_factory,
        view_service=view_service,
    )
    wait_view(world, "s1", "s2")
    put(world, "c1", "a", "1")
    world.run(20)  # pings: s1's lease is renewed
    if fault == "partition":
        world.partition(split("vs-s1", ["s1"], ["vs", "c2"]))
    else:
        world.pause("s1")
        world.partition(split("c2-s1", ["s1"], ["c2"]))  # c2's write waits in no inbox of s1
    wait_view(world, "s2", "s3")
    put(world, "c2", "a", "111")
    read = world.submit("c1", Get("a"))
    if fault == "pause":
        world.run(1)  # the read waits in s1's inbox
        world.resume("s1")
    world.run_until(lambda _: read.status is not None, 1000)
    return world


def verdict(world: World) -> str:
    return check_history(world.history.operations()).verdict


@pytest.mark.parametrize("fault", ["partition", "pause"])
def test_the_lease_scenarios_are_clean_on_the_real_core(fault: str) -> None:
    assert verdict(stale_read_after(fault)) == "ok"


def test_a_lease_outliving_the_dead_interval_is_caught_as_a_stale_read() -> None:
    world = stale_read_after(
        "partition", view_service_factory=broken.LeaseOutlivesDeadInterval.restore
    )
    assert verdict(world) == "violation"


def test_no_lease_recheck_after_a_pause_is_caught_as_a_stale_read() -> None:
    world = stale_read_after("pause", replica_factory=broken.NoLeaseRecheckAfterPause)
    assert verdict(world) == "violation"


DRIFT = 0.4


def skew(world: World, view_service_rate: float, primary_rate: float) -> None:
    """Clocks at the worst: the view service's fast, the primary's slow."""
    world.nodes["vs"].clock_rate = view_service_rate
    world.nodes["s1"].clock_rate = primary_rate


def drifting_stale_read(drift: float) -> World:
    """The partition scenario with s1's clock slow and the view service's fast by ``drift``,
    while the view service assumes the default bound (1 %)."""
    world = make_world(servers=3, clients=2, view_service=LEASES)
    skew(world, 1.0 + drift, 1.0 - drift)
    wait_view(world, "s1", "s2")
    put(world, "c1", "a", "1")
    world.run(20)
    world.partition(split("vs-s1", ["s1"], ["vs", "c2"]))
    wait_view(world, "s2", "s3")
    put(world, "c2", "a", "111")
    read = world.submit("c1", Get("a"))
    world.run_until(lambda _: read.status is not None, 1000)
    return world


def test_drift_within_the_bound_keeps_reads_linearizable() -> None:
    assert verdict(drifting_stale_read(LEASES.clock_drift_max)) == "ok"


def test_drift_beyond_the_bound_shows_a_stale_read() -> None:
    """What the clock assumption buys (protocol.md R1): with the view service's clock 40 %
    fast and the primary's 40 % slow, the old primary's lease outlives the view service's
    wait, and it answers a read the new view overwrote."""
    assert verdict(drifting_stale_read(DRIFT)) == "violation"


def first_caught(overrides: Overrides, **factories: object) -> int | None:
    for seed in range(1, SWEEP_SEEDS + 1):
        if run_simulation(seed, overrides, **factories).failed:  # type: ignore[arg-type]
            return seed
    return None


def test_a_lease_outliving_the_dead_interval_is_caught_on_a_pinned_seed() -> None:
    # pbkv sim --seed 139 --ops 80 --pause-rate 6 --partition-rate 6 --read-leases
    factory = broken.LeaseOutlivesDeadInterval.restore
    result = run_simulation(PINNED_SEED, SWEEP, view_service_factory=factory)
    assert result.failed and result.check == "linearizability", result.detail
    assert not run_simulation(PINNED_SEED, SWEEP).failed  # the real core, same run


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_sweep_with_leases_catches_a_lease_outliving_the_dead_interval() -> None:
    factory = broken.LeaseOutlivesDeadInterval.restore
    assert first_caught(SWEEP, view_service_factory=factory) is not None


# Foreign disks off: seed 484 draws them, and the runs below were pinned before they existed.
CRASHES = Overrides(read_leases=True, crash_rate=6.0, ops=80, backups=1, disk_foreign_rate=0.0)


def test_a_leased_read_answered_before_earlier_writes_are_confirmed_is_caught() -> None:
    # pbkv sim --seed 113 --backups 1 --ops 80 --crash-rate 6 --read-leases --disk-foreign-rate 0
    factory = broken.LeasedReadBeforeEarlierWrites
    result = run_simulation(113, CRASHES, replica_factory=factory)
    assert result.failed and result.check == "linearizability", result.detail
    assert not run_simulation(113, CRASHES).failed  # the real core, same run


def test_a_leased_read_that_ignores_an_unconfirmed_delete_of_its_key_is_caught() -> None:
    # pbkv sim --seed 484 --backups 1 --ops 80 --crash-rate 6 --read-leases --disk-foreign-rate 0
    # (the first seed of 1-1500 that catches it since reads left the stream; 553 is the next)
    result = run_simulation(484, CRASHES, replica_factory=broken.UnconfirmedDeletesForgotten)
    assert result.failed and result.check == "linearizability", result.detail
    assert not run_simulation(484, CRASHES).failed  # the real core, same run
