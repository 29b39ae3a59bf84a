"""The simulator's verdict rules, one at a time: the per-step safety checks, when a stalled
cluster is excused (N1, N2, N5, V12, V14, V16), and what the checked history keeps.

The sweeps in the other files catch broken variants by any of several checks, so a rule that
stopped firing could hide behind another; each case here breaks exactly one rule, on real
``ViewService`` and ``Replica`` objects put into the state the rule reads.
"""

from __future__ import annotations

import random

import pytest

from pbkv.check import check_history
from pbkv.core.effects import Outbox
from pbkv.core.kv_store import ClientRecord, KVStore, Outcome
from pbkv.core.messages import Append, Forward, Get, Put, Request, View
from pbkv.core.replica import Replica
from pbkv.core.view_service import ViewService
from pbkv.core.view_service_state import ServerInfo
from pbkv.sim import InvariantViolation, Overrides, make_world, run_simulation
from pbkv.sim.history import History
from pbkv.sim.invariants import (
    SafetyMonitor,
    duplicated_tokens,
    lost_members,
    primary_cut_off,
    unavailable_as_documented,
)
from pbkv.sim.sessions import EvictionWatch
from tests.sim.broken_edges import _ReplicaWithStore
from tests.sim.harness import call, wait_view

VIEW = View(3, "s1", ("s2",))
FAR_LATER = 1_000_000  # ticks: every server not heard from since 0 is judged dead


# --- per-step checks -----------------------------------------------------------------------


def test_one_primary_per_view_and_only_the_issued_one() -> None:
    monitor = SafetyMonitor()
    monitor.view_issued(VIEW)
    monitor.view_issued(VIEW)  # the same view again is no news
    monitor.primary_answered("s1", 3)
    monitor.primary_answered("s1", 3)
    with pytest.raises(InvariantViolation, match="one-primary-per-view: s1 and s2 both"):
        monitor.primary_answered("s2", 3)
    with pytest.raises(InvariantViolation, match="view-issued-once"):
        monitor.view_issued(View(3, "s2", ("s1",)))


def test_an_answer_from_a_backup_or_in_a_view_never_issued_is_caught() -> None:
    monitor = SafetyMonitor()
    monitor.view_issued(VIEW)
    with pytest.raises(InvariantViolation, match="s2 answered a client in view 3, but view 3"):
        monitor.primary_answered("s2", 3)
    with pytest.raises(InvariantViolation, match="in view 4, but no such view was issued"):
        SafetyMonitor().primary_answered("s1", 4)


def test_duplicated_tokens_counts_each_appended_value() -> None:
    assert duplicated_tokens("<c1.1><c2.1>") == []
    assert duplicated_tokens("<c1.1><c1.1>") == ["<c1.1>"]
    assert duplicated_tokens("<c2.1>x<c1.1><c2.1><c1.1><c1.1>") == ["<c1.1>", "<c2.1>"]


class BackupAppliesAppendsTwice(Replica):
    """Breaks C1 at the backups only: each forwarded append is applied there a second time.
    The primary's store, and so every read, stays right; only the end-of-run look at every
    replica's store can see it."""

    def on_forward(self, source: str, forward: Forward, out: Outbox) -> None:
        applied = self.backup_next_index
        super().on_forward(source, forward, out)
        if forward.start_index > applied or self.backup_next_index == applied:
            return
        data = self.store.data
        for request in forward.requests[applied - forward.start_index :]:
            if isinstance(request.op, Append):
                data[request.op.key] = data.get(request.op.key, "") + request.op.value


def test_a_duplicate_only_in_a_backups_store_is_caught_at_the_end() -> None:
    results = [
        run_simulation(seed, Overrides(no_faults=True), replica_factory=BackupAppliesAppendsTwice)
        for seed in range(1, 6)
    ]
    caught = [result for result in results if result.failed]
    assert caught, "no seed appended anything"
    for result in caught:
        assert result.check == "append-at-most-once", result.detail
        assert "'s store holds" in result.detail


class _CallsPutsOfXStale(KVStore):
    def execute(self, request: Request) -> Outcome:
        if isinstance(request.op, Put) and request.op.value == "x":
            return Outcome("stale", detail="operation already finished at the client")
        return super().execute(request)


class AnswersAFreshWriteStale(_ReplicaWithStore):
    """Tells a client that a write it is still waiting for was finished long ago (``stale``),
    and drops it: a lost write reported as an error no client of the simulation can cause."""

    store_class = _CallsPutsOfXStale


def test_a_stale_answer_to_a_fresh_write_is_caught() -> None:
    world = make_world(servers=2, clients=1, replica_factory=AnswersAFreshWriteStale)
    wait_view(world, "s1", "s2")
    assert call(world, "c1", Put("k", "y")).status == "ok"
    with pytest.raises(InvariantViolation, match=r"client-status: c1#.* stale"):
        call(world, "c1", Put("k", "x"))


def test_a_view_number_going_back_is_caught_at_the_next_step() -> None:
    world = make_world(servers=2, clients=1)
    view = wait_view(world, "s1", "s2")
    backup = world.replica("s2")
    assert backup is not None and view.number >= 2
    # As if it adopted the view before: a backup synced for it, one number lower.
    backup.view = View(view.number - 1, "s1", ("s2",))
    backup.synced_view = view.number - 1
    with pytest.raises(InvariantViolation, match="view-number-monotonic"):
        world.run(5)


# --- unavailable as documented (N1, N2, N5) --------------------------------------------------


def service(
    view: View = VIEW, incarnations: dict[str, int] | None = None, acknowledged: bool = False
) -> ViewService:
    """A view service holding ``view``, which has not heard from anyone for a long time."""
    known = {"s1": 11, "s2": 22} if incarnations is None else incarnations
    vs = ViewService("vs", view=view, acknowledged=acknowledged, incarnations=known)
    vs.now = FAR_LATER
    return vs


def replica(name: str, incarnation: int) -> Replica:
    server = Replica(name, "vs", random.Random(0))
    server.incarnation = incarnation
    return server


def servers(s1: int | None = 11, s2: int | None = 22) -> dict[str, Replica | None]:
    """s1 and s2 running as the given incarnations (None: not running)."""
    return {
        name: None if incarnation is None else replica(name, incarnation)
        for name, incarnation in (("s1", s1), ("s2", s2))
    }


def test_a_stall_with_the_primary_still_running_is_not_excused() -> None:
    """s1 runs as the process the view named: the service judging it dead (waiting for it,
    not N2) and a backup that refused to start excuse nothing; L4 promises liveness."""
    vs = service()
    assert vs.waiting() and "(N2)" not in vs.waiting()
    assert unavailable_as_documented(vs, servers()) is None
    assert unavailable_as_documented(vs, servers(s2=None)) is None


def test_no_view_and_no_server_running_is_n1() -> None:
    vs = service(View(0), incarnations={})
    assert lost_members(vs, servers()) is None
    assert unavailable_as_documented(vs, servers()) is None
    why = unavailable_as_documented(vs, servers(s1=None, s2=None))
    assert why == "no server runs: each one refused to start (N1)"


def test_members_the_service_knows_no_incarnation_of_are_not_lost() -> None:
    """Restored from a view persisted without incarnations: whatever runs may be the member."""
    vs = service(incarnations={})
    assert lost_members(vs, servers(s1=99, s2=98)) is None


EVERY_MEMBER_LOST = f"every member of {VIEW.describe()} was lost (N1)"
BACKUP_HELD_NOTHING = f"the primary of {VIEW.describe()} was lost and no backup held the state (N1)"


def test_members_not_running_or_running_as_another_process_are_lost() -> None:
    vs = service()
    assert lost_members(vs, servers(s1=None, s2=None)) == EVERY_MEMBER_LOST
    assert lost_members(vs, servers(s1=12, s2=23)) == EVERY_MEMBER_LOST


def primary_lost_backup_running() -> tuple[dict[str, Replica | None], Replica]:
    """s1 restarted (another incarnation), s2 still the process the view named."""
    running = servers(s1=12)
    backup = running["s2"]
    assert backup is not None
    return running, backup


@pytest.mark.parametrize("how", ["acknowledged", "synced", "carried"])
def test_a_running_backup_that_held_the_state_is_not_lost(how: str) -> None:
    vs = service(acknowledged=how == "acknowledged")
    running, backup = primary_lost_backup_running()
    if how == "synced":
        backup.synced_view = VIEW.number
    if how == "carried":
        vs.carried.add("s2")
    assert lost_members(vs, running) is None


def test_a_running_backup_that_held_nothing_is_n1() -> None:
    vs = service()
    running, backup = primary_lost_backup_running()
    backup.synced_view = VIEW.number - 1  # synced for an earlier view only
    assert lost_members(vs, running) == BACKUP_HELD_NOTHING


def test_a_lost_backup_is_not_a_holder_whatever_its_old_process_did() -> None:
    vs = service()
    successor = replica("s2", 23)  # another process under s2's name
    successor.synced_view = VIEW.number
    assert lost_members(vs, {"s1": None, "s2": successor}) == EVERY_MEMBER_LOST


def test_only_a_disk_complete_for_this_view_and_this_cluster_takes_over() -> None:
    """V12: a member restarted with a disk complete for the view is not lost; a disk complete
    for an earlier view, or holding another cluster's state (V16), is no such disk."""
    vs = service()
    running, backup = primary_lost_backup_running()
    backup.durable = True
    backup.durable_view = VIEW.number - 1
    assert lost_members(vs, running) == BACKUP_HELD_NOTHING
    backup.durable_view = VIEW.number
    assert lost_members(vs, running) is None
    backup.cluster_id = vs.cluster_id + 1
    assert lost_members(vs, running) == BACKUP_HELD_NOTHING


def test_a_primary_cut_off_is_n5_only_while_it_runs_and_no_backup_reaches_the_service() -> None:
    vs = service()
    cut = frozenset({"s1"})
    assert primary_cut_off(vs, servers(), frozenset()) is None  # merely late, not cut off
    assert primary_cut_off(vs, servers(), cut) is not None
    assert primary_cut_off(vs, servers(s1=12), cut) is None  # lost, not cut off: N1 decides
    vs.servers["s2"] = ServerInfo(22, FAR_LATER)  # s2 pings the service
    assert primary_cut_off(vs, servers(), cut) is None


# --- what the checked history keeps ----------------------------------------------------------


def test_a_refused_write_is_left_out_unless_a_late_copy_may_apply_it() -> None:
    """A refused write took no effect, so a read of its value is a read of a value nobody
    wrote; under N3 (its client evicted since) a late copy may apply it: indeterminate."""
    history = History()
    history.invoke("c1", 1, Put("k", "refused"), 1.0)
    history.complete("c1", 1, "too_large", None, 2.0)
    history.invoke("c2", 1, Get("k"), 3.0)
    history.complete("c2", 1, "ok", "refused", 4.0)
    assert [op.op for op in history.operations()] == ["get"]
    assert check_history(history.operations()).verdict == "violation"
    late = history.operations(may_apply_late=lambda record: record.client == "c1")
    assert [(op.op, op.complete) for op in late] == [("put", None), ("get", 4.0)]
    assert check_history(late).verdict == "ok"


def test_an_eviction_counts_for_appends_invoked_before_it_to_the_history_event() -> None:
    """Times are the history clock's (tick + a step per event): an append invoked later in the
    eviction's tick came after it and is not excused (once, the whole tick was: lenient by up
    to a tick)."""
    watch = EvictionWatch(sessions_max=1)
    watch.client_started("c1", "id-1")
    store = KVStore()
    store.sessions["id-1"] = ClientRecord()
    watch.observe("s1", store, 3.0)
    store.sessions["id-1"] = ClientRecord()  # a new record, but the eviction count did not move
    watch.observe("s1", store, 4.0)
    assert not watch.evicted_since("c1", 0.0), "no eviction without the counter moving"
    store.evictions += 1
    store.sessions["id-1"] = ClientRecord()  # evicted and created again within one call
    watch.observe("s1", store, 5.000002)
    assert watch.evicted_since("c1", 5.000002)  # the last event before the eviction
    assert watch.evicted_since("c1", 2.0)
    assert not watch.evicted_since("c1", 5.000003)  # invoked after it, in the same tick
    assert not watch.evicted_since("c1", 6.0)
    assert not watch.evicted_since("c2", 0.0)


def test_a_check_that_runs_out_of_time_is_not_a_violation() -> None:
    """Thousands of operations on one key: its search reads the clock, and with no budget
    the check ends ``unknown``, which the run reports and does not call a violation."""
    overrides = Overrides(keys=1, clients=6, ops=2000, no_faults=True)
    result = run_simulation(1, overrides, check_budget_s=0.0)
    assert result.stats.linearizability == "unknown"
    assert result.outcome == "ok", result.detail
