"""Session eviction (N3): the one double apply the protocol allows is allowed, and only that."""

from __future__ import annotations

import pytest

from pbkv.core.kv_store import Limits
from pbkv.core.messages import Append, Reply
from pbkv.core.replica import Replica, ReplicaConfig
from pbkv.sim import InvariantViolation, World, draw_params, make_world, run_simulation
from pbkv.sim.cluster import ReplicaFactory
from tests.sim import broken_edges as broken
from tests.sim.harness import get, holding, put, until, wait_view

SEED_BUDGET = 200


def retried_append(sessions_max: int, replica_factory: ReplicaFactory = Replica) -> World:
    """c1 appends ``<a>``; its answer is lost, so it retries; meanwhile c2 writes another key
    (with a table of one session, that evicts c1; a read would not: reads take no stream
    position and leave the table alone, P2)."""
    config = ReplicaConfig(limits=Limits(sessions_max=sessions_max))
    world = make_world(servers=2, clients=2, replica=config, replica_factory=replica_factory)
    wait_view(world, "s1", "s2")
    get(world, "c2", "k")
    answers = holding(world, lambda s, t, m: t == "c1" and isinstance(m, Reply))
    record = world.submit("c1", Append("k", "<a>"))
    until(world, lambda _: bool(answers))
    world.network.hold_filter = None
    world.network.discard_held()
    put(world, "c2", "other", "x")
    until(world, lambda _: record.status is not None)
    return world


def test_a_retry_applied_again_after_its_clients_eviction_is_permitted_by_n3() -> None:
    world = retried_append(sessions_max=1)
    assert get(world, "c2", "k") == "<a><a>"  # N3: applied twice, and no violation raised
    assert world.monitor.n3_copies == {"<a>"}


def test_the_same_retry_without_an_eviction_is_applied_once() -> None:
    world = retried_append(sessions_max=100)
    assert get(world, "c2", "k") == "<a>"
    assert not world.monitor.n3_copies


def test_a_retry_applied_again_without_an_eviction_is_caught() -> None:
    world = retried_append(sessions_max=100, replica_factory=broken.AppliesRetriesAgain)
    with pytest.raises(InvariantViolation, match="append-at-most-once"):
        get(world, "c2", "k")


def test_a_replica_applying_retries_again_is_caught_by_a_sweep_of_evicting_seeds() -> None:
    """Only seeds whose drawn table evicts (N3 permits some double applies there): the check
    must still tell the broken replica's double applies from N3's."""
    evicting = [s for s in range(1, 4 * SEED_BUDGET) if draw_params(s).sizes.sessions_max < 100]
    for seed in evicting[:SEED_BUDGET]:
        result = run_simulation(seed, replica_factory=broken.AppliesRetriesAgain)
        if result.failed:
            assert result.check in {"append-at-most-once", "linearizability"}, result.detail
            return
    pytest.fail(f"not caught in {SEED_BUDGET} evicting seeds")
