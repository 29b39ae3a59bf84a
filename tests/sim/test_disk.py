"""The simulated disk (issue 10): what a crash keeps, what a restart reads, and whole-cluster
crashes, slow syncs and damaged logs in scripted scenarios."""

from __future__ import annotations

import random

import pytest

from pbkv.core.durable import Snapshot, StreamRecord, ViewRecord
from pbkv.core.kv_store import Limits
from pbkv.core.messages import Put, Request
from pbkv.sim import Overrides, World, draw_params, make_world, run_simulation
from pbkv.sim.disk import Disk, DiskDamaged, DiskHost, DiskParams
from pbkv.sim.invariants import unavailable_as_documented
from tests.sim.harness import append, assert_linearizable, get, put, wait_view

ALWAYS = DiskParams(durable=True, fsync="always")
SNAPSHOT = Snapshot({}, (), 0, 1, 0)


def write(index: int) -> tuple[StreamRecord]:
    return (StreamRecord(index, 1, Request("c", index, index, Put("k", str(index)))),)


def disk_with(synced: int, unsynced: int) -> Disk:
    disk = Disk()
    disk.append((ViewRecord(1),))
    for index in range(synced):
        disk.append(write(index))
    disk.sync(0)
    for index in range(synced, synced + unsynced):
        disk.append(write(index))
    return disk


# --- the disk alone -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_a_crash_loses_only_unsynced_frames(seed: int) -> None:
    disk = disk_with(synced=3, unsynced=4)
    disk.crash(random.Random(seed), torn_rate=1.0)
    state, _ = disk.recover(Limits())
    assert 3 <= state.next_index <= 7 and state.durable_view == 1
    assert state.store.data["k"] == str(state.next_index - 1)


def test_a_torn_last_frame_is_truncated() -> None:
    disk = disk_with(synced=2, unsynced=1)
    disk.frames[-1] = disk.frames[-1][:5]
    state, torn = disk.recover(Limits())
    assert torn and state.next_index == 2 and len(disk.frames) == 3


def test_damage_in_the_middle_of_the_log_is_refused() -> None:
    disk = disk_with(synced=4, unsynced=0)
    index = disk.damage(random.Random(1))
    assert index is not None and index < len(disk.frames) - 1
    with pytest.raises(DiskDamaged, match=f"frame {index} "):
        disk.recover(Limits())


def test_a_slow_sync_is_durable_only_when_it_completes() -> None:
    disk = disk_with(synced=1, unsynced=0)
    disk.append(write(1))
    disk.sync(now=10, latency=5)
    disk.tick(14)
    assert disk.synced == 2  # ViewRecord and write 0; write 1 still in flight
    disk.tick(15)
    assert disk.synced == 3


def test_syncs_asked_for_during_a_slow_sync_share_the_next_one() -> None:
    """Group commit, as a host blocked in fdatasync: the writes of every handler that ran
    meanwhile are made durable by one sync, so a busy node on a slow disk waits for at most
    two syncs, not for a queue that grows with its load (a false liveness violation)."""
    disk = disk_with(synced=1, unsynced=0)
    disk.append(write(1))
    assert disk.sync(now=10, latency=5) == 15  # in progress from 10
    disk.append(write(2))
    assert disk.sync(now=11, latency=30) == 45  # waits for the first: 15 + 30
    for index in range(3, 10):
        disk.append(write(index))
        assert disk.sync(now=12, latency=30) == 45  # joins the waiting one
    disk.tick(44)
    assert disk.synced == 3
    disk.tick(45)
    assert disk.synced == len(disk.frames)
    disk.append(write(10))
    assert disk.sync(now=46, latency=2) == 48  # idle again: starts at once


def test_the_liveness_phase_caps_slow_syncs_without_moving_the_draws() -> None:
    """Faults stop at the heal (L4), the disk's too: a slow sync then takes at most the cap,
    and the random stream is consumed as before, so no later draw moves."""
    params = DiskParams(durable=True, fsync="always", slow_rate=1.0, latency_ticks_max=40)
    free, capped = DiskHost(params, random.Random(7)), DiskHost(params, random.Random(7))
    capped.cap_latency(7)
    drawn = [free.install("s1", SNAPSHOT, 0) for _ in range(50)]
    limited = [capped.install("s1", SNAPSHOT, 0) for _ in range(50)]
    assert max(drawn) > 7 and limited == [min(d, 7) for d in drawn]
    assert free.rng.random() == capped.rng.random()


def test_a_disk_slower_than_the_dead_interval_no_longer_stalls_the_liveness_phase() -> None:
    """Seed 22008 (leases, lasting cut, syncs up to 40 ticks against a dead interval of 30):
    the only server that could replace the cut-off backup had its pings held behind its syncs
    and was judged dead again and again, through the liveness phase (N6). With the disk's
    fault stopped at the heal, like the network's, the run completes."""
    result = run_simulation(22008, Overrides(read_leases=True, lasting_cut=True))
    assert not result.failed, (result.check, result.detail)
    assert result.stats.lasting_cut


# --- scenarios ----------------------------------------------------------------------------------


def durable_world(disk: DiskParams = ALWAYS, servers: int = 2) -> World:
    world = make_world(servers=servers, clients=1, disk=disk)
    wait_view(world, "s1", "s2" if servers > 1 else None)
    return world


def test_a_whole_cluster_crash_keeps_every_acknowledged_write() -> None:
    world = durable_world()
    for index in range(8):
        append(world, "c1", "log", f"<c1.{index}>")
    assert sorted(world.crash_cluster()) == ["s1", "s2", "vs"]
    for name in ("s2", "vs", "s1"):  # the backup first: nothing waits for the primary
        assert world.restart(name)
    view_service = world.view_service()
    assert view_service is not None
    assert unavailable_as_documented(view_service, world.replicas()) is None  # V12, not N1
    assert get(world, "c1", "log", ticks_max=3000) == "".join(f"<c1.{i}>" for i in range(8))
    assert_linearizable(world)


def test_a_slow_sync_holds_the_reply_and_a_crash_inside_it_sends_nothing() -> None:
    slow = DiskParams(durable=True, fsync="always", slow_rate=1.0, latency_ticks_max=40)
    world = durable_world(slow, servers=1)
    record = world.submit("c1", Put("k", "v"))
    node = world.nodes["s1"]
    assert world.run_until(lambda _: bool(node.held), 200), "the reply was never held"
    assert record.status is None and node.busy_until > world.now
    world.crash("s1")
    assert not node.held
    world.run(60)
    assert record.status is None, "a reply of the crashed process left after its crash"


def test_a_damaged_log_refuses_to_start_unless_the_operator_wipes_it() -> None:
    damaged = DiskParams(durable=True, fsync="always", damage_rate=1.0, wipe_rate=0.0)
    world = durable_world(damaged)
    for index in range(4):
        put(world, "c1", "k", str(index))
    world.crash("s2")
    assert not world.restart("s2") and not world.is_up("s2")
    assert any("s2 refuses to start: damaged log" in line for line in world.trace.recent())
    wiped = DiskParams(durable=True, fsync="always", damage_rate=1.0, wipe_rate=1.0)
    world = durable_world(wiped)
    for index in range(4):
        put(world, "c1", "k", str(index))
    world.crash("s2")
    assert world.restart("s2")
    replica = world.replica("s2")
    assert replica is not None and replica.store.data == {} and replica.durable_view == 0


def test_fsync_no_loses_writes_only_as_documented() -> None:
    """Seed 103 draws fsync no and whole-cluster crashes: a disk that lost unsynced writes
    is made primary, the history really is not linearizable, and the run ends as ``lost`` (D1),
    not as a violation. The same run with ``always`` loses nothing."""
    lost = run_simulation(103)
    assert lost.params.disk.fsync == "no" and lost.outcome == "lost"
    assert lost.stats.linearizability == "violation"
    always = run_simulation(103, Overrides(disk="always"))
    assert always.outcome in ("ok", "unavailable") and always.stats.linearizability != "violation"


def test_non_durable_runs_keep_no_disk() -> None:
    result = run_simulation(1)
    assert not result.params.disk.durable and not result.params.replica.durable
    assert result.params.faults.cluster_crash_rate == 0.0


def test_the_disk_appears_in_the_replay_line() -> None:
    result = run_simulation(3, Overrides(disk="everysec", cluster_crash_rate=0.5))
    assert result.replay == "pbkv sim --seed 3 --cluster-crash-rate 0.5 --disk everysec"


def test_the_wipe_rate_override_reaches_the_disk_and_the_replay_line() -> None:
    overrides = Overrides(disk="always", disk_damage_rate=1.0, disk_wipe_rate=1.0)
    assert draw_params(5, overrides).disk.wipe_rate == 1.0
    result = run_simulation(5, overrides)
    assert result.replay.endswith("--disk always --disk-damage-rate 1 --disk-wipe-rate 1")
    assert result.stats.wiped > 0 and result.stats.refused_starts == 0
