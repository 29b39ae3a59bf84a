"""The edges bite: each fix of issue 8, undone in ``tests/sim/broken_edges.py``, is caught.

A sweep from seed 1 (stopping at the first catch) with the one edge fault that reaches the
broken path turned on for every seed (an override, part of each replay line); finding 4, whose
damage is extra views rather than a broken promise, by the scripted scenario that counts them.
"""

from __future__ import annotations

from typing import Any

import pytest

from pbkv.core.kv_store import Limits
from pbkv.core.messages import Put, View
from pbkv.core.replica import Replica, ReplicaConfig
from pbkv.sim import Invocation, Overrides, RunResult, make_world, one_way, params, run_simulation
from pbkv.sim.cluster import ReplicaFactory
from pbkv.sim.params import draw_params
from tests.sim import broken_edges as broken
from tests.sim.harness import wait_view
from tests.sim.test_adversaries import acknowledged_by_a_forger, stale_backup_pings

SEED_BUDGET = 100


def first_caught(overrides: Overrides, **factories: Any) -> RunResult | None:
    for seed in range(1, SEED_BUDGET + 1):
        result = run_simulation(seed, overrides, **factories)
        if result.failed:
            return result
    return None


def assert_caught(checks: set[str], overrides: Overrides, **factories: Any) -> RunResult:
    result = first_caught(overrides, **factories)
    assert result is not None, f"not caught in {SEED_BUDGET} seeds"
    assert result.check in checks, (result.replay, result.check, result.detail)
    real = run_simulation(result.seed, overrides)
    assert not real.failed, ("the real core fails the same run", real.check, real.detail)
    return result


def test_finding_1_admission_removed_is_caught_by_a_sweep() -> None:
    assert_caught(
        {"hostile-admitted", "core-assertion", "liveness"},
        Overrides(hostile_rate=30.0),
        replica_factory=broken.AdmitsOversizedRequests,
    )


def big_writes_after_a_cut(replica_factory: ReplicaFactory) -> tuple[list[Invocation], View]:
    """Ten clients each put 8 KiB while the primary cannot reach its backup; then the link
    heals and the primary resends everything unconfirmed (64 KiB frames). Returns the writes
    and the view at the end."""
    frame = 64 * 1024
    config = ReplicaConfig(
        frame_bytes_max=frame,
        forward_batch_bytes_max=frame // 4,
        limits=Limits(value_bytes_max=8 * 1024),
    )
    world = make_world(
        servers=2,
        clients=10,
        frame_bytes_max=frame,
        replica=config,
        replica_factory=replica_factory,
    )
    wait_view(world, "s1", "s2")
    world.partition(one_way("cut", "s1", "s2"))
    writes = [world.submit(f"c{i}", Put(f"k{i}", "v" * 8000)) for i in range(1, 11)]
    world.run(20)
    world.heal("cut")
    world.run_until(lambda _: all(write.status is not None for write in writes), 1000)
    return writes, world.current_view()


def test_finding_1_batches_cut_without_the_frame_limit_wedge_the_stream() -> None:
    """The real replica cuts the resent positions into batches that fit and keeps its backup;
    the broken one sends one forward of every position, the frame limit drops it every time,
    and the stream moves again only because the primary reports its backup silent and the view
    service drops it (V10): the backup is replaced, its state transferred again."""
    writes, kept = big_writes_after_a_cut(Replica)
    assert all(write.status == "ok" for write in writes)
    _, changed = big_writes_after_a_cut(broken.CutsBatchesWithoutTheFrameLimit)
    assert (kept.number, kept.backup) == (2, "s2")
    assert changed.number > kept.number  # s2 dropped (view 3), then taken back as new backup


def test_finding_3_a_view_service_without_state_reissuing_views_is_caught() -> None:
    assert_caught(
        {"view-issued-once", "one-primary-per-view", "linearizability"},
        Overrides(view_service_crash_rate=1.5, view_service_disk_loss=1.0, probe_open_holes=True),
        view_service_factory=broken.ForgetsReportedViews.restore,
    )


def test_finding_4_accepting_a_retired_incarnation_is_caught_by_counting_views() -> None:
    assert stale_backup_pings() == 0
    assert stale_backup_pings(broken.AcceptsRetiredIncarnations.restore) > 0


def test_finding_5_trusting_any_source_is_caught_by_a_sweep() -> None:
    assert_caught(
        {"linearizability", "one-primary-per-view", "liveness", "view-number-monotonic"},
        Overrides(forge_rate=60.0),
        replica_factory=broken.TrustsAnySource,
    )


def test_finding_5_trusting_any_source_is_caught_by_the_forged_ack_scenario() -> None:
    from pbkv.check import check_history

    assert check_history(acknowledged_by_a_forger(Replica).history.operations()).verdict == "ok"
    world = acknowledged_by_a_forger(broken.TrustsAnySource)
    assert check_history(world.history.operations()).verdict == "violation"


@pytest.mark.parametrize("seed", [1])
def test_the_edge_faults_are_clean_on_the_real_core(seed: int) -> None:
    overrides = Overrides(hostile_rate=30.0, forge_rate=60.0, stale_restart_rate=2.0)
    assert not run_simulation(seed, overrides).failed


def test_appends_judged_in_characters_are_caught_only_with_wide_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Limits are UTF-8 bytes. A store that lets a value grow by appends up to the limit in
    characters is caught (a read over ``value_bytes_max`` bytes), on a seed whose values are
    padded with a character wider than a byte; with every seed's padding one byte wide, the
    same variant passes the same seeds: the drawn padding is what reaches the bug."""
    caught = assert_caught(
        {"value-size", "client-status"},
        Overrides(),
        replica_factory=broken.JudgesAppendsInCharacters,
    )
    assert len(draw_params(caught.seed).sizes.pad.encode()) > 1
    monkeypatch.setattr(params, "draw_pad", lambda rng: ".")
    result = run_simulation(
        caught.seed, Overrides(), replica_factory=broken.JudgesAppendsInCharacters
    )
    assert not result.failed, (result.check, result.detail)


def test_a_primary_that_assumes_requests_fit_a_batch_is_caught_only_with_tight_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In one seed of four the simulator draws forward batches smaller than a maximal request,
    as production has them (1 MiB each); the variant that assumes a request fits a batch is
    caught there, and passes the same seed with the batch bound above every request."""
    caught = assert_caught(
        {"core-assertion"}, Overrides(), replica_factory=broken.AssumesRequestsFitABatch
    )
    drawn = draw_params(caught.seed).sizes
    assert drawn.batch_bytes_max < drawn.value_bytes_max
    monkeypatch.setattr(params, "draw_batch_bytes", lambda seed, sizes: sizes.batch_bytes_max)
    result = run_simulation(
        caught.seed, Overrides(), replica_factory=broken.AssumesRequestsFitABatch
    )
    assert not result.failed, (result.check, result.detail)
