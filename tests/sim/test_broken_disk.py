"""The disk checkers bite (issue 10): broken durability is caught, the real core is not.

Each variant of ``tests/sim/broken_disk.py`` is run on a pinned seed whose drawn run (with the
disk and the whole-cluster crash forced on by overrides, so it is in the replay line) catches it,
and the real core on the same run must pass. The slow test searches from seed 1 with the
default draws, within a fixed budget, as ``test_broken_variants`` does.
"""

from __future__ import annotations

from typing import Any

import pytest

from pbkv.check import check_history
from pbkv.core.messages import Get, Put
from pbkv.core.replica import Replica
from pbkv.sim import Overrides, RunResult, make_world, run_simulation
from pbkv.sim.cluster import ReplicaFactory
from pbkv.sim.disk import DiskParams
from tests.sim import broken_disk
from tests.sim.harness import get, put, until, wait_view

POWER_CUTS = Overrides(disk="always", cluster_crash_rate=1.5)
SLOW_POWER_CUTS = Overrides(disk="always", cluster_crash_rate=5.0, disk_slow_rate=1.0)
SEED_BUDGET = 100


def caught_and_clean(seed: int, overrides: Overrides, checks: set[str], **factories: Any) -> None:
    broken = run_simulation(seed, overrides, **factories)
    assert broken.failed and broken.check in checks, (broken.outcome, broken.check, broken.detail)
    real = run_simulation(seed, overrides)
    assert not real.failed, (real.check, real.detail)


def test_acknowledging_before_fsync_is_caught() -> None:
    # pbkv sim --seed 1 --cluster-crash-rate 1.5 --disk always
    caught_and_clean(
        1, POWER_CUTS, {"linearizability"}, replica_factory=broken_disk.AcknowledgesBeforeFsync
    )


def test_promoting_a_server_that_is_behind_after_a_total_outage_is_caught() -> None:
    # pbkv sim --seed 15 --cluster-crash-rate 1.5 --disk always
    caught_and_clean(
        15,
        POWER_CUTS,
        {"linearizability", "liveness"},
        view_service_factory=broken_disk.PromotesBehindServer.restore,
    )


def test_sending_before_the_persist_is_caught_on_a_slow_disk() -> None:
    # The reply leaves while the sync is in progress; a power cut must land inside that window
    # on both members: every sync slow, 10 power cuts per run.
    # pbkv sim --seed 69 --cluster-crash-rate 5 --disk always --disk-slow-rate 1
    caught_and_clean(
        69, SLOW_POWER_CUTS, {"linearizability"}, replica_factory=broken_disk.SendsBeforePersist
    )


def power_cut_after_an_echoed_write(factory: ReplicaFactory, seed: int) -> tuple[str, str]:
    """Slow syncs everywhere: c1 writes while c2 reads, so one forward carries the write and a
    read round; the moment the write is acknowledged the power goes, and the operator wipes the
    primary's disk. What the backup's disk held decides what a read finds (V12 promotes it)."""
    slow = DiskParams(durable=True, fsync="always", slow_rate=1.0, latency_ticks_max=40)
    world = make_world(servers=2, clients=2, disk=slow, seed=seed, replica_factory=factory)
    wait_view(world, "s1", "s2")
    put(world, "c1", "k", "old")
    write = world.submit("c1", Put("k", "new"))
    world.submit("c2", Get("x"))
    until(world, lambda _: write.status is not None, 400)
    world.crash_cluster()
    assert world.disks is not None
    world.disks.disk("s1").wipe()
    for name in ("s2", "vs", "s1"):
        assert world.restart(name)
    value = get(world, "c2", "k", ticks_max=3000)
    return value or "", check_history(world.history.operations()).verdict


@pytest.mark.parametrize("seed", [2, 7])
def test_an_early_echo_that_confirms_unsynced_positions_is_caught(seed: int) -> None:
    """D1 with P2's early echo: the real backup echoes the round before its sync but confirms
    the write only after it; the broken one's echo confirms the write too, and the power cut
    takes it back (seeds 2 and 7 of 0-9; the real core is clean on all ten)."""
    assert power_cut_after_an_echoed_write(Replica, seed) == ("new", "ok")
    stale = power_cut_after_an_echoed_write(broken_disk.EchoConfirmsPositions, seed)
    assert stale == ("old", "violation")


def first_caught(budget: int, overrides: Overrides | None, **factories: Any) -> RunResult | None:
    for seed in range(1, budget + 1):
        result = run_simulation(seed, overrides, **factories)
        if result.failed:
            return result
    return None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("factories", "overrides", "budget"),
    [
        ({"replica_factory": broken_disk.AcknowledgesBeforeFsync}, None, SEED_BUDGET),
        ({"view_service_factory": broken_disk.PromotesBehindServer.restore}, None, SEED_BUDGET),
        ({"replica_factory": broken_disk.SendsBeforePersist}, SLOW_POWER_CUTS, 2 * SEED_BUDGET),
    ],
    ids=["acks-before-fsync", "promotes-behind", "sends-before-persist"],
)
def test_broken_durability_is_caught_by_a_sweep(
    factories: dict[str, Any], overrides: Overrides | None, budget: int
) -> None:
    """From seed 1, default draws (the disk and its faults as drawn): caught within budget."""
    result = first_caught(budget, overrides, **factories)
    assert result is not None, f"not caught in {budget} seeds"
