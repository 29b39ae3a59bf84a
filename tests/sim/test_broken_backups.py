"""K backups (issue 11): the checkers catch a primary that answers after a subset of its backups
(P2) and one that confirms a read with one backup (P3), on a pinned seed and by a sweep."""

from __future__ import annotations

import pytest

from pbkv.core.replica import Replica
from pbkv.sim import run_simulation
from pbkv.sim.cluster import ReplicaFactory
from pbkv.sim.params import Overrides
from tests.sim import broken

K2 = Overrides(backups=2)
SWEEP_BUDGET = 250
"""ConfirmsReadsWithOneBackup needs the rarest schedule: a deposed primary with its last
backup (faults.py), a read of a key the new view wrote; its first catch is seed 218."""


@pytest.mark.parametrize(
    ("factory", "seed"),
    [
        # pbkv sim --seed 11 --backups 2  (with broken.AnswersAfterOneOfTheBackups)
        (broken.AnswersAfterOneOfTheBackups, 11),
        # pbkv sim --seed 218 --backups 2  (with broken.ConfirmsReadsWithOneBackup: a deposed
        # primary that kept its last backup answers a read the new view overwrote)
        (broken.ConfirmsReadsWithOneBackup, 218),
    ],
)
def test_a_broken_k_backup_variant_is_caught_on_its_pinned_seed(
    factory: ReplicaFactory, seed: int
) -> None:
    assert not run_simulation(seed, K2).failed, "the real core must be clean on this seed"
    result = run_simulation(seed, K2, replica_factory=factory)
    assert result.failed and result.check == "linearizability", (result.check, result.detail)


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory", [broken.AnswersAfterOneOfTheBackups, broken.ConfirmsReadsWithOneBackup]
)
@pytest.mark.parametrize("backups", [2, 3])
def test_a_broken_k_backup_variant_is_caught_by_a_sweep(
    factory: ReplicaFactory, backups: int
) -> None:
    overrides = Overrides(backups=backups)
    for seed in range(1, SWEEP_BUDGET + 1):
        if run_simulation(seed, overrides, replica_factory=factory).failed:
            return
    pytest.fail(f"not caught in {SWEEP_BUDGET} seeds with {backups} backups")


@pytest.mark.parametrize("seed", [11, 218])
def test_the_real_core_with_three_backups_is_clean_on_the_pinned_seeds(seed: int) -> None:
    assert not run_simulation(seed, Overrides(backups=3), replica_factory=Replica).failed


def test_a_backup_that_skipped_an_unacknowledged_view_serves_when_promoted() -> None:
    """V14, replica side: found by the sweep with K=2 and leases (liveness before the fix)."""
    # pbkv sim --seed 98 --backups 2 --read-leases
    assert not run_simulation(98, Overrides(backups=2, read_leases=True)).failed
