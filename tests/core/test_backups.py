"""K backups (issue 11): one test per rule of protocol.md V5-V7, V10, V14 and P2/P3 with K > 1.

The view service is driven by hand (``test_view_service.Driver``) for the view rules; the
primary's fan-out and per-backup confirmation run end to end on ``harness.Cluster`` with
``backups_max=2``.
"""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from pbkv.core.messages import Forward, Get, Ping, Put, Reply, Request, View
from pbkv.core.view_service import BACKUPS_MAX, ViewService, ViewServiceConfig
from tests.core.harness import FAST_VIEW_SERVICE, Cluster, Recorder
from tests.core.test_view_service import CONFIG, DEAD, Driver

K2 = dataclasses.replace(CONFIG, backups_max=2)
FAST_K2 = dataclasses.replace(FAST_VIEW_SERVICE, backups_max=2)


def k2_view(d: Driver, ack: bool = True) -> None:
    """View 2: s1 primary with backups s2 and s3 (both idle when view 1 was acknowledged)."""
    d.ping("s1", 0)
    d.ping("s2", 0)
    d.ping("s3", 0)
    d.ping("s1", 1)
    assert d.vs.view == View(2, "s1", ("s2", "s3"))
    if ack:
        d.ping("s1", 2)
        assert d.vs.acknowledged


def keep(d: Driver, *names: str, ticks: int = 2 * DEAD, synced: int = 0) -> None:
    """Only ``names`` ping for ``ticks`` ticks (primaries acknowledge nothing new)."""
    for _ in range(ticks):
        for name in names:
            d.ping(name, 0, synced_view=synced)
        d.tick()


@pytest.mark.parametrize("value", [0, BACKUPS_MAX + 1, -1])
def test_backups_max_out_of_range_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="backups must be between 1 and"):
        ViewServiceConfig(backups_max=value)


def test_a_view_names_up_to_k_backups_filled_from_idle_servers() -> None:
    d = Driver(config=K2)
    k2_view(d)
    d.ping("s4", 0)
    d.tick()
    assert d.vs.view.number == 2, "V2: a full view does not change for a new idle server"


def test_a_view_with_fewer_than_k_backups_is_filled_only_once_acknowledged() -> None:
    d = Driver(config=K2)
    d.setup_view("s1", "s2", ack=False)  # view 2 (s1, s2): K=2 but only two servers then
    d.ping("s3", 0)
    assert d.vs.view.number == 2, "V4: no change before the primary acknowledged"
    d.ping("s1", 2)
    assert d.vs.view == View(3, "s1", ("s2", "s3"))


def test_v7_a_failed_backup_leaves_keeping_the_primary_and_the_other_backup() -> None:
    d = Driver(config=K2)
    k2_view(d)
    d.ping("s4", 0)
    d.keep_alive("s1", "s3", "s4", view_number=2)
    assert d.vs.view == View(3, "s1", ("s3", "s4"))


def test_v10_the_backup_the_primary_names_silent_is_the_one_replaced() -> None:
    d = Driver(config=K2)
    k2_view(d)
    d.ping("s4", 0)
    inc = d.incarnations["s1"]
    silent = Ping("s1", 2, inc, backup_silent_view=2, backup_silent_ticks=DEAD, backup_silent="s3")
    d.handle("s1", silent)
    assert d.vs.view == View(3, "s1", ("s2", "s4"))


def test_v6_the_primary_of_an_unacknowledged_view_is_replaced_by_a_backup_that_synced() -> None:
    d = Driver(config=K2)
    k2_view(d, ack=False)
    d.ping("s3", 0, synced_view=2)  # s3 completed its transfer for view 2, s2 did not
    for _ in range(2 * DEAD):
        d.ping("s2", 0)
        d.ping("s3", 0, synced_view=2)
        d.tick()
    view = d.vs.view
    assert view.number == 3 and view.primary == "s3", view.describe()
    assert view.backups == ("s2",)


def test_v6_no_backup_synced_and_no_acknowledgement_means_waiting() -> None:
    d = Driver(config=K2)
    k2_view(d, ack=False)
    keep(d, "s2", "s3")
    assert d.vs.view.number == 2, "V4: neither backup is known to hold the state"


def test_v5_an_acknowledged_view_promotes_its_first_live_backup_and_keeps_the_other() -> None:
    d = Driver(config=K2)
    k2_view(d)
    d.ping("s4", 0)
    keep(d, "s2", "s3", "s4", ticks=DEAD + 1)
    assert d.vs.view == View(3, "s2", ("s3", "s4"))


def test_v14_a_backup_carried_complete_into_the_next_view_can_be_promoted_before_its_ack() -> None:
    """Primary and one backup die at once, noticed one after the other: view 3 (s2; s3, s4) is
    never acknowledged, but s3 held every acknowledged write in view 2, so it takes over."""
    d = Driver(config=K2)
    k2_view(d)
    d.ping("s4", 0)
    keep(d, "s2", "s3", "s4", ticks=DEAD + 1)
    assert d.vs.view == View(3, "s2", ("s3", "s4"))
    assert d.vs.carried == {"s3"}
    keep(d, "s3", "s4", ticks=DEAD + 1)
    assert d.vs.view == View(4, "s3", ("s4",)), d.vs.view.describe()


def three_of_k2_restored(carried: bool, s3_restarts: bool = False) -> Driver:
    """View 3 (s2; s3, s4) formed as in the test above, then the view service restarts from
    what it persisted (with or without V14's carried set) and s2 stays dead."""
    d = Driver(config=K2)
    k2_view(d)
    d.ping("s4", 0)
    keep(d, "s2", "s3", "s4", ticks=DEAD + 1)
    saved = d.persisted()[-1]
    assert saved.view == View(3, "s2", ("s3", "s4")) and saved.carried == ("s3",)
    if not carried:
        saved = msgspec.structs.replace(saved, carried=())
    d.vs = ViewService.restore("vs", K2, saved)
    if s3_restarts:
        d.restart("s3")
    keep(d, "s3", "s4", ticks=2 * DEAD, synced=2)
    return d


def test_v14_the_carried_backup_is_promoted_after_the_view_service_restarted() -> None:
    d = three_of_k2_restored(carried=True)
    assert d.vs.view == View(4, "s3", ("s4",)), d.vs.view.describe()


def test_v14_without_the_carried_set_saved_a_restarted_service_waits_forever() -> None:
    """The variant that forgets V14 on restart: s3 holds every acknowledged write, yet the
    cluster stays without a primary (liveness, not safety: nothing is lost)."""
    d = three_of_k2_restored(carried=False)
    assert d.vs.view.number == 3


def test_v14_a_carried_backup_that_restarted_is_not_promoted_after_a_restore() -> None:
    """V8: the saved incarnation tells the process that was carried from a new one."""
    d = three_of_k2_restored(carried=True, s3_restarts=True)
    assert d.vs.view.primary != "s3"


def test_v14_a_new_backup_is_not_carried() -> None:
    d = Driver(config=K2)
    k2_view(d)
    d.ping("s4", 0)
    keep(d, "s2", "s3", "s4", ticks=DEAD + 1)
    keep(d, "s4", ticks=2 * DEAD)
    assert d.vs.view.number == 3, "s4 never held the state: wait for s2 (V4)"


# --- end to end: fan-out, confirmation by every backup --------------------------------------


def k2_cluster() -> Cluster:
    c = Cluster(view_service_config=FAST_K2)
    c.client("c1")
    for server in ("s1", "s2", "s3"):
        c.start(server)
    c.run_until(
        lambda: (
            c.view.backups == ("s2", "s3")
            and c.view_service.acknowledged
            and c.replicas["s1"].view.number == c.view.number
        )
    )
    return c


def test_p2_every_backup_receives_the_stream_and_holds_the_state() -> None:
    c = k2_cluster()
    for key in "abc":
        assert c.call("c1", Put(key, key)).status == "ok"
    c.run(5)
    for server in ("s2", "s3"):
        assert c.replicas[server].store.data == {"a": "a", "b": "b", "c": "c"}


def test_p2_a_write_is_answered_only_once_every_backup_confirmed_it() -> None:
    c = k2_cluster()
    c.wire.cut("s1", "s3")  # s3 sees nothing; s2 confirms everything
    seq = c.wire.submit("c1", Put("k", "v"))
    c.run(5)
    assert c.wire.result("c1", seq) is None, "answered with one backup of two"
    c.wire.heal()
    c.run_until(lambda: c.wire.result("c1", seq) is not None)
    assert c.replicas["s3"].store.data == {"k": "v"}


def test_p3_a_read_needs_every_backup_a_deposed_primary_cannot_use_a_stale_one() -> None:
    """s1 and s3 are cut from the service and s2; the service makes s2 primary of view 3
    without s3, and s2 takes a write. s3 still holds view 2 and confirms s1's forwards; s2,
    in view 3, refuses them, so s1 never answers the stale value."""
    c = k2_cluster()
    assert c.call("c1", Put("k", "old")).status == "ok"
    c.start("s4")
    c.run(2)
    c.wire.cut("s1", "vs", "s2")
    c.wire.cut("s3", "vs", "s2")
    c.run_until(lambda: c.view.primary == "s2" and c.view_service.acknowledged)
    assert "s3" not in c.view.backups
    assert c.call("c1", Put("k", "new")).status == "ok"
    reader = Recorder()
    c.wire.add("c9", reader)
    c.wire.send("c9", "s1", Request("c9", 1, 0, Get("k")))
    c.run(20)
    assert c.replicas["s3"].view.number == 2, "s3 still confirms s1's forwards"
    assert all(reply.value != "old" for reply in reader.of(Reply)), "stale read answered"


def test_primary_and_one_backup_killed_at_once_lose_no_acknowledged_write() -> None:
    c = k2_cluster()
    c.start("s4")
    written = {f"k{i}": f"v{i}" for i in range(20)}
    for key, value in written.items():
        assert c.call("c1", Put(key, value)).status == "ok"
    c.crash("s1")
    c.crash("s2")
    c.run_until(lambda: c.view.primary == "s3" and c.view_service.acknowledged, 1000)
    for key, value in written.items():
        assert c.call("c1", Get(key), ticks_max=1000).value == value


def test_fan_out_sends_each_batch_to_every_backup_at_once() -> None:
    c = k2_cluster()
    seq = c.wire.submit("c1", Put("k", "v"))
    for _ in range(20):
        c.wire.tick()
        c.wire.settle(keep=lambda e: isinstance(e.message, Forward))
        if c.wire.pending(Forward):
            break
    targets = {e.target for e in c.wire.pending(Forward)}
    assert targets == {"s2", "s3"}
    c.run_until(lambda: c.wire.result("c1", seq) is not None)
