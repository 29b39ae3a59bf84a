"""ViewService driven by hand: one test per rule (V1-V9), and ports of the course suites.

The MIT 6.824 ``viewservice`` Test1 scenarios ([V0]-[V9]) and the DSLabs ``ViewServerTest``
([DV01]-[DV12]) are cataloged in /work/shared/design/peer-tests.md. Our semantics: a server is
dead once it has not pinged for ``dead_after_ticks`` ticks (one tick here stands for one ping
interval); a restart is a ping with a new ``incarnation`` whose first ping carries view number 0.
Where our rules deliberately differ from a course test, the test says so and checks ours.
"""

from __future__ import annotations

from pbkv.core.effects import Effect, Log, Outbox, PersistView, Send
from pbkv.core.messages import (
    INITIAL_VIEW,
    GetView,
    Ping,
    PingReply,
    StatusRequest,
    View,
    ViewReply,
    ViewServiceStatus,
)
from pbkv.core.view_service import ViewService, ViewServiceConfig
from tests.core.harness import logged, sent

DEAD = 5
CONFIG = ViewServiceConfig(
    dead_after_ticks=DEAD,
    servers_max=4,
    forget_after_ticks=40,
    restart_quiet_ticks=0,
    first_view_grace_ticks=0,
)


class Driver:
    """Sends pings and ticks to one view service and remembers every effect."""

    def __init__(
        self,
        view: View = INITIAL_VIEW,
        acknowledged: bool = False,
        config: ViewServiceConfig = CONFIG,
    ) -> None:
        self.vs = ViewService("vs", config, view, acknowledged)
        self.incarnations: dict[str, int] = {}
        self.effects: list[Effect] = []
        self.last: list[Effect] = []

    def handle(self, source: str, message: Ping | GetView | StatusRequest) -> list[Effect]:
        out = Outbox()
        self.vs.on_message(source, message, out)
        self.last = out.take()
        self.effects += self.last
        return self.last

    def ping(self, name: str, view_number: int, synced_view: int = 0) -> View:
        """``name`` pings; returns the view in the reply to it."""
        incarnation = self.incarnations.setdefault(name, 100 * (len(self.incarnations) + 1))
        effects = self.handle(name, Ping(name, view_number, incarnation, synced_view))
        replies = sent(effects, PingReply, target=name)
        assert replies, f"no reply to {name}'s ping"
        return replies[-1].view

    def restart(self, name: str) -> None:
        """The next pings from ``name`` come from a new process."""
        self.incarnations[name] = self.incarnations.get(name, 0) + 1

    def tick(self, count: int = 1) -> list[Effect]:
        effects: list[Effect] = []
        for _ in range(count):
            out = Outbox()
            self.vs.on_tick(out)
            effects += out.take()
        self.effects += effects
        self.last = effects
        return effects

    def get_view(self) -> View:
        replies = sent(self.handle("tester", GetView()), ViewReply, target="tester")
        assert len(replies) == 1
        return replies[0].view

    def check(self, primary: str | None, backup: str | None, number: int | None = None) -> None:
        view = self.get_view()
        assert (view.primary, view.backup) == (primary, backup), view.describe()
        if number is not None:
            assert view.number == number, view.describe()

    def keep_alive(
        self, *names: str, ticks: int = 2 * DEAD, view_number: int | None = None
    ) -> None:
        """For ``ticks`` ticks only ``names`` ping (the number read now, or ``view_number``), so
        every other server is dead at the end (DSLabs' ``timeoutFully``)."""
        number = self.vs.view.number if view_number is None else view_number
        for _ in range(ticks):
            for name in names:
                self.ping(name, number)
            self.tick()

    def setup_view(self, primary: str, backup: str | None = None, ack: bool = True) -> None:
        """DSLabs ``setupView``: primary of view 1, then backup of view 2, optionally acked."""
        self.ping(primary, 0)
        self.check(primary, None, 1)
        if backup is not None:
            self.ping(primary, 1)
            self.ping(backup, 0)
            self.check(primary, backup, 2)
        if ack:
            self.ping(primary, self.vs.view.number)
            assert self.vs.acknowledged

    def persisted(self) -> list[PersistView]:
        return [effect for effect in self.effects if isinstance(effect, PersistView)]


# --- MIT 6.824 viewservice Test1 -----------------------------------------------------------------


def test_v0_no_primary_before_any_ping() -> None:
    d = Driver()
    assert d.get_view() == View(0)
    d.tick(3 * DEAD)
    assert d.get_view() == View(0)


def test_v1_first_pinging_server_becomes_primary_of_view_1() -> None:
    d = Driver()
    assert d.ping("ck1", 0) == View(1, "ck1")
    d.check("ck1", None, 1)


def test_v2_second_server_becomes_backup_once_view_1_is_acknowledged() -> None:
    d = Driver()
    d.ping("ck1", 0)
    d.ping("ck1", 1)
    assert d.ping("ck2", 0) == View(2, "ck1", ("ck2",))


def test_v3_backup_takes_over_when_primary_stops_pinging() -> None:
    d = Driver()
    d.setup_view("ck1", "ck2")
    # ck1 pinged at tick 0: alive until dead_after_ticks have passed, then dead.
    for _ in range(DEAD - 1):
        d.ping("ck2", 2)
        d.tick()
        d.check("ck1", "ck2", 2)
    d.ping("ck2", 2)
    d.tick()
    d.check("ck2", None, 3)


def test_v4_restarted_server_becomes_backup() -> None:
    d = Driver()
    d.setup_view("ck1", "ck2")
    d.keep_alive("ck2")
    d.check("ck2", None, 3)
    d.ping("ck2", 3)
    d.restart("ck1")
    assert d.ping("ck1", 0) == View(4, "ck2", ("ck1",))


def test_v5_idle_server_becomes_backup_in_the_same_view_change_that_promotes() -> None:
    d = Driver()
    d.setup_view("ck1", "ck2")
    d.ping("ck3", 0)  # idle
    d.keep_alive("ck2", "ck3")
    d.check("ck2", "ck3", 3)
    # No backup-less view in between: one view change did both.
    assert [p.view for p in d.persisted() if not p.acknowledged][-1] == View(3, "ck2", ("ck3",))


def test_v6_restarted_primary_is_treated_as_dead_even_though_it_keeps_pinging() -> None:
    d = Driver()
    d.setup_view("ck1", "ck3")
    d.restart("ck1")
    # The restarted ck1 keeps pinging (with 0): ping recency alone would keep it primary.
    view = d.ping("ck1", 0)
    assert view.primary == "ck3"
    # It may come back, as the backup of the next view (a new process, needing a transfer).
    assert view == View(3, "ck3", ("ck1",))
    assert d.vs.member_incarnations["ck1"] == d.incarnations["ck1"]


def test_v7_dead_backup_is_removed_from_the_view() -> None:
    d = Driver()
    d.setup_view("ck3", "ck1")
    for _ in range(3 * DEAD):
        d.ping("ck3", d.vs.view.number)
        d.tick()
    d.check("ck3", None, 3)


def test_v8_view_service_waits_for_primary_to_acknowledge_before_promoting() -> None:
    d = Driver()
    d.setup_view("ck3")
    d.ping("ck1", 0)
    d.check("ck3", "ck1", 2)
    # ck3 acknowledged only view 1; now only ck1 pings (not reporting a completed transfer).
    for _ in range(3 * DEAD):
        d.ping("ck1", 2)
        d.tick()
    d.check("ck3", "ck1", 2)


def test_v9_uninitialized_server_can_never_become_primary() -> None:
    d = Driver()
    d.setup_view("ck3", "ck1")
    for _ in range(2 * DEAD):
        d.ping("ck1", 2)
        d.ping("ck2", 0)
        d.ping("ck3", 2)
        d.tick()
    d.keep_alive("ck2", view_number=0)
    assert d.get_view().primary != "ck2"
    d.check("ck3", "ck1", 2)  # stuck on purpose: nobody else holds the data


def test_mit_6824_test1_scenarios_in_sequence() -> None:
    """The whole of 6.824 Test1 as one run, as the course runs it (each step on the last)."""
    d = Driver()
    assert d.get_view().primary is None  # [V0]
    assert d.ping("ck1", 0).primary == "ck1"  # [V1]
    d.check("ck1", None, 1)
    d.ping("ck1", 1)  # [V2]
    d.ping("ck2", 0)
    d.check("ck1", "ck2", 2)
    d.ping("ck1", 2)  # [V3]
    d.keep_alive("ck2")
    d.check("ck2", None, 3)
    d.ping("ck2", 3)  # [V4]
    d.restart("ck1")
    d.ping("ck1", 0)
    d.check("ck2", "ck1", 4)
    d.ping("ck2", 4)  # [V5]: ck2's last ping acknowledges view 4; ck3 appears
    for _ in range(2 * DEAD):
        d.ping("ck3", 0)
        d.ping("ck1", 4)
        d.tick()
    d.check("ck1", "ck3", 5)
    d.ping("ck1", 5)  # [V6]
    d.restart("ck1")
    d.ping("ck1", 0)
    d.ping("ck3", 5)
    assert d.get_view().primary == "ck3"
    for _ in range(3 * DEAD):  # [V7]: ck1 stops; ck3 acknowledges whatever is current
        d.ping("ck3", d.vs.view.number)
        d.tick()
    d.check("ck3", None, 7)
    for _ in range(2):  # [V8]: ck1 returns; ck3 keeps acknowledging only view 7
        d.ping("ck1", 0)
        d.ping("ck3", 7)
        d.tick()
    d.check("ck3", "ck1", 8)
    d.keep_alive("ck1", ticks=3 * DEAD)
    d.check("ck3", "ck1", 8)
    for _ in range(2 * DEAD):  # [V9]
        d.ping("ck1", 8)
        d.ping("ck2", 0)
        d.ping("ck3", 8)
        d.tick()
    d.keep_alive("ck2", view_number=0)
    assert d.get_view().primary != "ck2"


# --- DSLabs ViewServerTest ----------------------------------------------------------------------


def test_dv01_startup_view_is_number_0_with_no_members() -> None:
    assert Driver().get_view() == View(0, None, ())


def test_dv02_first_ping_makes_primary_immediately() -> None:
    d = Driver()
    d.ping("s1", 0)
    d.check("s1", None, 1)


def test_dv03_backup_added_immediately_after_acknowledgement() -> None:
    d = Driver()
    d.setup_view("s1", "s2", ack=False)
    d.check("s1", "s2", 2)


def test_dv04_backup_pinging_first_waits_for_the_acknowledgement() -> None:
    d = Driver()
    d.ping("s1", 0)
    d.ping("s2", 0)
    d.check("s1", None, 1)
    d.ping("s1", 1)
    d.check("s1", "s2", 2)


def test_dv05_backup_takes_over_exactly_when_primary_is_dead() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.keep_alive("s2", ticks=DEAD - 1)
    d.check("s1", "s2", 2)
    d.keep_alive("s2", ticks=1)
    d.check("s2", None, 3)


def test_dv06_old_primary_returns_as_backup_whatever_number_it_pings() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.keep_alive("s2")
    d.check("s2", None, 3)
    d.ping("s2", 3)
    d.ping("s1", 2)  # same process, stale view number
    d.check("s2", "s1", 4)


def test_dv07_idle_server_becomes_backup_in_one_step() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.keep_alive("s2", "s3")  # s3 pings 2, not 0
    d.check("s2", "s3", 3)


def test_dv08_no_promotion_when_primary_never_acknowledged() -> None:
    d = Driver()
    d.ping("s1", 0)
    d.ping("s2", 0)
    d.check("s1", None, 1)
    d.ping("s1", 1)
    d.check("s1", "s2", 2)
    d.ping("s2", 1)
    d.keep_alive("s2")
    d.check("s1", "s2", 2)


def test_dv09_dead_backup_removed() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.keep_alive("s1")
    d.check("s1", None, 3)


def test_dv10_uninitialized_backup_not_made_primary() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.keep_alive("s2", "s3")
    d.check("s2", "s3", 3)
    d.keep_alive("s3")  # s2 silent, never acknowledged view 3; s3 reports no transfer
    d.check("s2", "s3", 3)


def test_dv11_dead_idle_server_does_not_become_backup() -> None:
    d = Driver()
    d.ping("s1", 0)
    d.ping("s2", 0)
    d.keep_alive()
    d.ping("s1", 1)
    assert d.vs.acknowledged
    d.check("s1", None, 1)


def test_dv12_consecutive_views_differ_and_no_backup_for_a_dead_primary() -> None:
    """DSLabs DV12 expects ``(2, s1, s2)`` as soon as s2 pings even though s1 is considered
    dead. Our rule (V2/V5) differs: a view is changed for a dead primary only to promote its
    backup, so s2 joins only once s1 is alive again. The view-number part is the same: no new
    number without a new configuration."""
    d = Driver()
    d.ping("s1", 0)
    d.keep_alive("s1")
    d.check("s1", None, 1)
    d.keep_alive()
    d.check("s1", None, 1)
    d.ping("s1", 1)
    d.keep_alive("s1")
    d.keep_alive()
    d.check("s1", None, 1)
    d.ping("s2", 0)
    d.check("s1", None, 1)  # DSLabs: (2, s1, s2) here
    d.ping("s1", 1)
    d.check("s1", "s2", 2)
    d.ping("s1", 2)
    d.keep_alive("s1", "s2")
    d.check("s1", "s2", 2)
    d.keep_alive()
    d.check("s1", "s2", 2)  # both dead: stuck, and no view-number bump


# --- our rules beyond the courses -----------------------------------------------------------------


def test_v1_view_numbers_grow_by_one_and_each_number_names_one_view() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.ping("s3", 0)
    d.keep_alive("s2", "s3")
    d.ping("s2", 3)
    d.keep_alive("s2")
    installed = [p.view for p in d.persisted() if not p.acknowledged]
    assert [v.number for v in installed] == list(range(1, len(installed) + 1))
    assert len(installed) == 4
    assert d.vs.views_created == 4


def test_v6_synced_backup_is_promoted_without_the_primary_acknowledgement() -> None:
    """6.824 [V8] and DSLabs [DV08]/[DV10] keep an unacknowledged view forever once its primary
    dies. We also promote a backup that itself reported (``synced_view``) a completed state
    transfer for this very view: it holds everything, so waiting would be a liveness trap."""
    d = Driver()
    d.setup_view("s1", "s2", ack=False)  # s1 never acknowledges view 2
    d.ping("s2", 2, synced_view=2)
    assert d.vs.backup_synced
    d.keep_alive("s2", ticks=DEAD)
    d.check("s2", None, 3)


def test_v6_transfer_reported_for_an_older_view_does_not_count() -> None:
    d = Driver()
    d.setup_view("s1", "s2", ack=False)
    d.ping("s2", 2, synced_view=1)
    assert not d.vs.backup_synced
    d.keep_alive("s2", ticks=3 * DEAD)
    d.check("s1", "s2", 2)


def test_v6_transfer_reported_by_a_previous_incarnation_does_not_count() -> None:
    d = Driver()
    d.setup_view("s1", "s2", ack=False)
    d.ping("s2", 2, synced_view=2)
    assert d.vs.backup_synced
    d.restart("s2")
    d.ping("s2", 0)
    # s1 is alive: the restarted backup is replaced (it is itself the new candidate).
    d.check("s1", "s2", 3)
    assert not d.vs.status().backup_synced
    d.keep_alive("s2", ticks=3 * DEAD)
    d.check("s1", "s2", 3)


def test_v7_failed_backup_of_an_unacknowledged_view_is_replaced_keeping_the_primary() -> None:
    """6.824 [V8] / DSLabs [DV08] never change an unacknowledged view. We replace its failed
    backup (no state moves to anyone, the primary stays): otherwise a backup dying during its
    own state transfer would block the service forever."""
    d = Driver()
    d.setup_view("s1", "s2", ack=False)
    d.ping("s3", 0)
    d.keep_alive("s1", "s3", view_number=1)  # s1 still acknowledges only view 1
    d.check("s1", "s3", 3)
    assert not d.vs.acknowledged


def test_v7_unacknowledged_view_without_backup_does_not_gain_one() -> None:
    d = Driver()
    d.ping("s1", 0)
    d.ping("s2", 0)
    d.keep_alive("s1", "s2", view_number=0)
    d.check("s1", None, 1)


def test_v8_restarted_backup_is_replaced_and_may_return_as_the_new_backup() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    old = d.incarnations["s2"]
    d.restart("s2")
    d.ping("s2", 0)
    d.check("s1", "s2", 3)
    assert d.vs.member_incarnations["s2"] == d.incarnations["s2"] != old
    assert logged(d.effects, "server_restarted")


def test_v8_restarted_primary_without_backup_leaves_the_service_stuck() -> None:
    d = Driver()
    d.setup_view("s1")
    d.ping("s2", 0)
    d.check("s1", "s2", 2)
    d.keep_alive("s1", view_number=2)
    d.check("s1", None, 3)
    d.restart("s1")
    d.keep_alive("s1", view_number=0)
    d.check("s1", None, 3)  # a fresh process may not serve the acknowledged writes it lost
    assert not d.vs.member_ok("s1")


def named(effects: list[Effect]) -> list[tuple[str, int]]:
    """(receiver, incarnation named) of every PingReply among ``effects``."""
    return [
        (e.target, e.message.incarnation)
        for e in effects
        if isinstance(e, Send) and isinstance(e.message, PingReply)
    ]


def test_v8_ping_replies_and_pushes_name_the_incarnation_the_view_was_formed_with() -> None:
    d = Driver()
    d.ping("s1", 0)
    s1 = d.incarnations["s1"]
    assert named(d.last) == [("s1", s1), ("s1", s1)]  # the push, then the reply
    d.ping("s2", 0)
    assert named(d.last) == [("s2", 0)]  # not a member
    d.ping("s1", 1)
    assert named(d.last) == [("s1", s1), ("s2", d.incarnations["s2"]), ("s1", s1)]
    d.restart("s1")
    d.ping("s1", 0)
    # View 2 is unacknowledged, so s2 cannot be promoted and view 2 stays; the restarted s1
    # is not named (0), so it must not serve that role (P7), and it never learns another
    # process's incarnation (V10: that is what a forged ping would need).
    assert named(d.last) == [("s1", 0)]
    assert d.get_view().number == 2


def test_same_incarnation_pinging_zero_is_not_a_restart() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.ping("s2", 0)
    d.check("s1", "s2", 2)


def test_persist_view_on_every_view_change_and_on_acknowledgement() -> None:
    d = Driver()
    d.ping("s1", 0)
    s1 = ("s1", d.incarnations["s1"])
    assert d.persisted() == [PersistView(View(1, "s1"), False, (s1,), cluster_id=1)]
    d.ping("s2", 0)
    assert len(d.persisted()) == 1
    effects = d.handle("s1", Ping("s1", 1, d.incarnations["s1"]))
    two = View(2, "s1", ("s2",))
    both = (s1, ("s2", d.incarnations["s2"]))
    persists = [e for e in effects if isinstance(e, PersistView)]
    # The acknowledged view is also the basis of V15 (view 1 has no backup to rescue it).
    assert persists == [
        PersistView(View(1, "s1"), True, (s1,), (), 1, cluster_id=1),
        PersistView(two, False, both, (), 1, cluster_id=1),
    ]
    # Durable before anything that reveals the new view leaves the service.
    first_send = next(i for i, e in enumerate(effects) if isinstance(e, Send))
    assert effects.index(PersistView(two, False, both, (), 1, cluster_id=1)) < first_send
    d.ping("s1", 2)
    s2 = ("s2", d.incarnations["s2"])
    assert d.persisted()[-1] == PersistView(two, True, both, (), 2, (s2,), 1)
    d.ping("s1", 2)
    assert len(d.persisted()) == 4  # a repeated acknowledgement is not persisted again


def test_restore_keeps_member_incarnations_so_a_restart_is_still_recognised() -> None:
    """V8/V9: the persisted view names the incarnations it was formed with. After a restore, the
    same process pinging 0 (it never heard of the view) is accepted; a new process is not."""
    d = Driver()
    d.ping("s1", 0)
    saved = d.persisted()[-1]
    same = ViewService.restore("vs", ViewServiceConfig(dead_after_ticks=DEAD), saved)
    out = Outbox()
    same.on_message("s1", Ping("s1", 0, d.incarnations["s1"]), out)
    assert same.member_ok("s1")
    other = ViewService.restore("vs", ViewServiceConfig(dead_after_ticks=DEAD), saved)
    other.on_message("s1", Ping("s1", 0, d.incarnations["s1"] + 1), Outbox())
    assert not other.member_ok("s1")


def test_view_change_is_pushed_to_every_member() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.ping("s3", 0)
    pushes: list[tuple[str, View]] = []
    for _ in range(DEAD):
        d.ping("s2", 2)
        d.ping("s3", 2)
        # A change made on a tick answers no ping: the members learn it only by push.
        pushes += [
            (e.target, e.message.view)
            for e in d.tick()
            if isinstance(e, Send) and isinstance(e.message, PingReply)
        ]
    three = View(3, "s2", ("s3",))
    assert pushes == [("s2", three), ("s3", three)]


def test_get_view_and_status_requests_are_answered() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.tick(2)
    effects = d.handle("op", StatusRequest())
    [status] = sent(effects, ViewServiceStatus, target="op")
    assert status.view == View(2, "s1", ("s2",))
    assert status.acknowledged and not status.backup_synced
    assert status.views_created == 2 and status.now_ticks == 2
    assert [(s.name, s.view_number, s.alive) for s in status.servers] == [
        ("s1", 2, True),
        ("s2", 0, True),
    ]
    assert status.servers[0].last_ping_age_ticks == 2
    # Incarnations are not published (V10): a forged ping would need one.
    assert not any(str(incarnation) in repr(status) for incarnation in d.incarnations.values())
    assert d.get_view() == status.view


def test_idle_server_choice_is_the_first_that_pinged() -> None:
    d = Driver()
    d.setup_view("s1", ack=False)
    d.ping("s3", 0)
    d.ping("s2", 0)
    d.ping("s1", 1)
    d.check("s1", "s3", 2)
    d.ping("s1", 2)
    d.keep_alive("s1", "s2")  # s3 dies: the next idle server in order of first ping
    d.check("s1", "s2", 3)


def test_server_declared_dead_once_and_logged_when_it_returns() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.keep_alive("s1", ticks=3 * DEAD)
    assert len(logged(d.effects, "server_declared_dead")) == 1
    assert d.vs.servers_declared_dead == 1
    d.ping("s1", 3)
    d.ping("s2", 3)
    assert logged(d.last, "server_returned")
    d.check("s1", "s2", 4)


def test_server_table_is_bounded() -> None:
    d = Driver()
    for name in ("s1", "s2", "s3", "s4"):
        d.ping(name, 0)
    effects = d.handle("s5", Ping("s5", 0, 5))
    assert not sent(effects, PingReply)
    assert logged(effects, "ping_refused_table_full")
    assert "s5" not in d.vs.servers


def test_departed_servers_are_forgotten_but_members_are_kept() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    for name in ("s3", "s4"):
        d.ping(name, 0)
    d.keep_alive("s1", ticks=CONFIG.forget_after_ticks + 1)
    # s2 (a member until it died) was replaced by s3, which died too; all departed are gone.
    assert list(d.vs.servers) == ["s1", *d.vs.view.backups]
    forgotten = logged(d.effects, "server_forgotten")
    assert sorted(log.fields["server"] for log in forgotten) == sorted(
        {"s2", "s3", "s4"} - set(d.vs.view.backups)
    )
    # Each is logged once, on the first tick it is past the limit, with how long it was silent.
    assert {log.fields["silent_ticks"] for log in forgotten} == {CONFIG.forget_after_ticks + 1}
    d.handle("s5", Ping("s5", 0, 5))
    assert "s5" in d.vs.servers


def test_a_server_silent_just_under_the_limit_is_kept() -> None:
    d = Driver()
    d.setup_view("s1")
    d.ping("s2", d.vs.view.number)
    d.keep_alive("s1", ticks=CONFIG.forget_after_ticks)
    assert "s2" in d.vs.servers and d.vs.servers["s2"].declared_dead
    assert not logged(d.effects, "server_forgotten")
    d.keep_alive("s1", ticks=1)
    assert "s2" not in d.vs.servers
    assert len(logged(d.last, "server_forgotten")) == 1


def test_forgetting_sooner_than_4_dead_intervals_is_refused() -> None:
    config = ViewServiceConfig(dead_after_ticks=50, forget_after_ticks=199)
    assert "sooner than 4 dead intervals" in (config.check() or "")
    assert ViewServiceConfig(dead_after_ticks=50, forget_after_ticks=200).check() is None


def test_departed_member_is_not_forgotten() -> None:
    d = Driver()
    d.setup_view("s1", "s2")
    d.keep_alive(ticks=CONFIG.forget_after_ticks + 5)
    assert list(d.vs.servers) == ["s1", "s2"]
    d.check("s1", "s2", 2)


def test_messages_other_than_ping_get_view_status_are_logged_and_ignored() -> None:
    d = Driver()
    out = Outbox()
    d.vs.on_message("x", PingReply(View(9, "x")), out)
    assert [type(e) for e in out.effects] == [Log]
    assert d.vs.view == INITIAL_VIEW


# --- a view service restarted from its persisted view (V9) --------------------------------------

RESTORED = View(5, "a", ("b",))


def test_v9_restored_service_keeps_the_view_and_gives_members_one_dead_interval() -> None:
    d = Driver(RESTORED, acknowledged=True)
    d.check("a", "b", 5)
    # b pings at once, a has not pinged yet: not a reason to promote b.
    for _ in range(DEAD - 1):
        d.ping("b", 5)
        d.tick()
    d.check("a", "b", 5)
    d.ping("a", 5)
    d.keep_alive("a", "b")
    d.check("a", "b", 5)
    assert d.vs.member_incarnations == {"a": d.incarnations["a"], "b": d.incarnations["b"]}


def test_v9_restored_primary_that_never_pings_is_replaced_by_its_backup() -> None:
    d = Driver(RESTORED, acknowledged=True)
    d.keep_alive("b", ticks=DEAD)
    d.check("b", None, 6)


def test_v9_restored_unacknowledged_view_still_needs_its_acknowledgement() -> None:
    d = Driver(RESTORED, acknowledged=False)
    d.keep_alive("b", ticks=3 * DEAD)
    d.check("a", "b", 5)
    d.ping("a", 5)
    assert d.vs.acknowledged


def test_v8_unknown_member_pinging_zero_after_service_restart_counts_as_restarted() -> None:
    d = Driver(RESTORED, acknowledged=True)
    d.ping("b", 5)
    view = d.ping("a", 0)  # a's incarnation is unknown; view 0 means a fresh process
    assert view == View(6, "b", ("a",))


def test_v8_unknown_backup_pinging_zero_after_service_restart_is_replaced() -> None:
    d = Driver(RESTORED, acknowledged=True)
    d.ping("a", 5)
    assert d.ping("b", 0) == View(6, "a", ("b",))
    assert d.vs.member_incarnations["b"] == d.incarnations["b"]


def test_v9_restored_member_that_has_not_pinged_keeps_its_role_across_a_view_change() -> None:
    """Bug found: a view installed before a restored member pinged recorded the placeholder
    incarnation for it, so its first ping looked like a restart and its acknowledgement was
    ignored: a spurious failover of a healthy primary."""
    d = Driver(View(5, "a"), acknowledged=True)
    # c pings before a does: no view may assume the restored primary serves until it pinged
    # (a restarted one might have come back from its disk, V12).
    assert d.ping("c", 0) == View(5, "a")
    assert d.ping("a", 5) == View(6, "a", ("c",))
    assert d.vs.member_ok("a")
    d.ping("a", 6)
    assert d.vs.acknowledged
    d.keep_alive("a", "c", ticks=3 * DEAD)
    d.check("a", "c", 6)


def test_a_server_holding_a_newer_view_than_the_service_gets_no_role() -> None:
    """Review: a view service that lost its directory formed view 1 over an empty server that
    restarted first, then made the servers whose disks held view 2 its backups, and the state
    transfer from the empty primary wiped their disks. A server reporting a view (held or on
    its disk) above the service's own means the service lost its state (V11): it stays idle,
    its disk untouched, and the service says why."""
    d = Driver()
    d.setup_view("empty")  # view 1, the empty server alone, acknowledged
    held = d.handle("full-held", Ping("full-held", 0, 7, held_view=2))
    assert sent(held, PingReply, target="full-held")
    assert logged(held, "server_holds_newer_view")  # rate-limited: once per dead interval
    d.handle("full-disk", Ping("full-disk", 0, 8, durable_view=2))
    for _ in range(3):
        d.ping("empty", d.vs.view.number)
        d.tick()
    assert not d.vs.view.backups, d.vs.view.describe()
    d.ping("fresh", 0)  # a server that holds nothing may still become the backup
    d.ping("empty", d.vs.view.number)
    assert d.vs.view.backups == ("fresh",)
