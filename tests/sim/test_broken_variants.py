"""The checkers bite: deliberately broken replicas and view services are caught.

Each variant in ``tests/sim/broken.py`` breaks one rule. A randomized sweep of the real
simulator must catch it within a fixed budget of seeds (the search stops at the first catch, so
the cost is the first catching seed's, not the budget's). The deposed-primary variants are also
caught by a specific scenario (P9) in a few hundred ticks.
"""

from __future__ import annotations

from typing import Any

import pytest

from pbkv.check import check_history
from pbkv.core.messages import Get
from pbkv.core.replica import Replica
from pbkv.sim import Overrides, RunResult, World, make_world, run_simulation, split
from pbkv.sim.cluster import ReplicaFactory
from tests.sim import broken
from tests.sim.harness import put, wait_view

SEED_BUDGET = 200


def first_caught(
    budget: int = SEED_BUDGET, overrides: Overrides | None = None, **factories: Any
) -> RunResult | None:
    """The first of seeds 1..budget whose run is a violation with these factories."""
    for seed in range(1, budget + 1):
        result = run_simulation(seed, overrides, **factories)
        if result.failed:
            return result
    return None


def assert_caught(checks: set[str], overrides: Overrides | None = None, **factories: Any) -> None:
    result = first_caught(SEED_BUDGET, overrides, **factories)
    assert result is not None, f"not caught in {SEED_BUDGET} seeds"
    assert result.check in checks, (result.check, result.detail)


def test_answering_before_the_backup_applied_is_caught_by_a_sweep() -> None:
    assert_caught({"linearizability"}, replica_factory=broken.AnswersBeforeBackup)


def test_transfer_without_the_exactly_once_table_is_caught_by_a_sweep() -> None:
    assert_caught(
        {"append-at-most-once", "linearizability"}, replica_factory=broken.TransferWithoutSessions
    )


def test_a_resend_restarting_the_silence_clock_is_caught_by_a_lasting_cut() -> None:
    """V10 / N5 for reads: the read rounds as first shipped are caught as a liveness failure
    once a cut between the primary and a backup outlasts the heal (``--lasting-cut``; 1 run in
    5 draws it); the real core completes the same run. Without lasting cuts, no sweep could see
    it: every partition healed before the liveness phase."""
    cut = Overrides(lasting_cut=True)
    result = run_simulation(1, cut, replica_factory=broken.ResendRestartsSilence)
    assert result.failed and result.check == "liveness", (result.check, result.detail)
    real = run_simulation(1, cut)
    assert not real.failed and real.stats.lasting_cut, "the cut was applied, and survived"
    assert_caught({"liveness"}, replica_factory=broken.ResendRestartsSilence)


def test_view_service_promoting_an_idle_server_is_caught_by_a_sweep() -> None:
    # The core's own assertion (V5 in install_view) fires first; the sim reports it by seed.
    assert_caught({"core-assertion"}, view_service_factory=broken.PromotesIdleServer.restore)


def test_view_service_promoting_an_unsynced_backup_is_caught_by_a_sweep() -> None:
    assert_caught(
        {"liveness", "linearizability"}, view_service_factory=broken.PromotesUnsyncedBackup.restore
    )


def test_reads_answered_without_the_backup_are_caught_by_a_sweep() -> None:
    """With four clients and replicas in memory: a stale read needs another client whose
    write it misses, and with the drawn parameters the first catch was seed 123 (25 s of the
    suite's time); with four it is seed 4."""
    fast = Overrides(clients=4, disk="none")
    assert_caught({"linearizability"}, fast, replica_factory=broken.ReadsWithoutBackup)


def test_backup_accepting_a_stale_primary_is_caught_by_a_sweep() -> None:
    assert_caught({"linearizability"}, replica_factory=broken.AcceptsStalePrimary)


def deposed_primary_read(replica_factory: ReplicaFactory) -> World:
    """P9: s1 is cut from the view service, s2 takes over and a new value is written through it;
    then a client that still caches the old view reads through s1."""
    world = make_world(servers=3, clients=2, replica_factory=replica_factory)
    wait_view(world, "s1", "s2")
    put(world, "c1", "a", "1")
    world.partition(split("vs-s1", ["s1"], ["vs", "c2"]))
    wait_view(world, "s2", "s3")
    put(world, "c2", "a", "111")
    read = world.submit("c1", Get("a"))
    world.run_until(lambda _: read.status is not None, 1000)
    return world


@pytest.mark.parametrize("replica_factory", [broken.ReadsWithoutBackup, broken.AcceptsStalePrimary])
def test_deposed_primary_variants_are_caught_by_the_p9_scenario(
    replica_factory: ReplicaFactory,
) -> None:
    world = deposed_primary_read(replica_factory)
    verdict = check_history(world.history.operations())
    assert verdict.verdict == "violation", "the stale read went unnoticed"


def test_the_p9_scenario_is_clean_on_the_real_replica() -> None:
    world = deposed_primary_read(Replica)
    assert check_history(world.history.operations()).verdict == "ok"


def test_a_tampered_read_in_a_clean_history_is_reported() -> None:
    """The wiring from the world's history to the checker: change one read's result."""
    world = deposed_primary_read(Replica)
    records = world.history.records
    last_read = next(r for r in reversed(records) if isinstance(r.op, Get) and r.status == "ok")
    last_read.result = "1"
    assert check_history(world.history.operations()).verdict == "violation"
