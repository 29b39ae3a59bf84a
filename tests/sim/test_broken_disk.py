"""The disk checkers bite (issue 10): broken durability is caught, the real core is not.

Each variant of ``tests/sim/broken_disk.py`` is run on a pinned seed whose drawn run (with the
disk and the whole-cluster crash forced on by overrides, so it is in the replay line) catches it,
and the real core on the same run must pass. The slow test searches from seed 1 with the
default draws, within a fixed budget, as ``test_broken_variants`` does.
"""

from __future__ import annotations

from typing import Any

import pytest

import pbkv.sim.disk
from pbkv.sim import Overrides, RunResult, run_simulation
from tests.sim import broken_disk

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
    # pbkv sim --seed 6 --cluster-crash-rate 5 --disk always --disk-slow-rate 1
    caught_and_clean(
        6, SLOW_POWER_CUTS, {"linearizability"}, replica_factory=broken_disk.SendsBeforePersist
    )


FOREIGN_DISKS = Overrides(disk="always", cluster_crash_rate=1.5, disk_foreign_rate=0.3)


def test_promoting_another_clusters_disk_is_caught() -> None:
    # V16 at the view service: it makes the foreign disk primary, whose server refuses the
    # view (its own check), so the cluster never serves again.
    # pbkv sim --seed 1 --cluster-crash-rate 1.5 --disk always --disk-foreign-rate 0.3
    caught_and_clean(
        1,
        FOREIGN_DISKS,
        {"liveness"},
        view_service_factory=broken_disk.PromotesAnotherClustersDisk.restore,
    )


def test_serving_another_clusters_disk_is_caught_as_values_never_written() -> None:
    # V16 broken on both sides: the other cluster's values are served here.
    caught_and_clean(
        1,
        FOREIGN_DISKS,
        {"linearizability"},
        view_service_factory=broken_disk.PromotesAnotherClustersDisk.restore,
        replica_factory=broken_disk.AdoptsAnyCluster,
    )


REPAIRS = Overrides(
    disk="always",
    cluster_crash_rate=1.5,
    disk_damage_rate=0.3,
    disk_wipe_rate=0.0,
    disk_repair_rate=1.0,
)


def test_trusting_a_repaired_disk_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The simulator's disks apply the hosts' rule after --repair (core.durable.repaired_view);
    # trusting the repaired history promotes a member that lost acknowledged writes.
    # pbkv sim --seed 19 --cluster-crash-rate 1.5 --disk always --disk-damage-rate 0.3
    #   --disk-wipe-rate 0 --disk-repair-rate 1
    real = run_simulation(19, REPAIRS)
    assert not real.failed and real.stats.repaired > 0, (real.check, real.detail)
    monkeypatch.setattr(pbkv.sim.disk, "repaired_view", broken_disk.trusts_repaired_disk)
    broken = run_simulation(19, REPAIRS)
    assert broken.failed and broken.check == "linearizability", broken.detail


OTHER_LIMITS = Overrides(other_limits_rate=0.5, crash_rate=3.0)


def test_a_backup_with_other_limits_is_caught() -> None:
    # V17: restarts with half the value limit; a backup that refuses what its primary stored
    # diverges and, promoted, loses acknowledged writes.
    # pbkv sim --seed 31 --crash-rate 3 --other-limits-rate 0.5 (2 of seeds 1-119 catch it)
    caught_and_clean(
        31,
        OTHER_LIMITS,
        {"linearizability"},
        view_service_factory=broken_disk.IgnoresLimits.restore,
    )


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
        (
            {"view_service_factory": broken_disk.PromotesAnotherClustersDisk.restore},
            None,
            8 * SEED_BUDGET,
        ),
    ],
    ids=["acks-before-fsync", "promotes-behind", "sends-before-persist", "another-cluster"],
)
def test_broken_durability_is_caught_by_a_sweep(
    factories: dict[str, Any], overrides: Overrides | None, budget: int
) -> None:
    """From seed 1, default draws (the disk and its faults as drawn): caught within budget."""
    result = first_caught(budget, overrides, **factories)
    assert result is not None, f"not caught in {budget} seeds"
