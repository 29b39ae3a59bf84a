"""The view service: decides, from pings alone, which server is primary and which are backups.

Theory of operation. Servers ping every ``ping_interval``; a server silent for
``dead_after_ticks`` is dead. The service holds one current view and moves to the next only when
the configuration must change (V2) and only in ways that keep every acknowledged write on the new
primary:

* the first server ever to ping becomes primary of view 1 (V3);
* normally the view changes only after its primary acknowledged it, that is pinged with its
  number (V4). A primary acknowledges only once its backup holds the complete state;
* the only server that may become primary is the backup of the current view (V5), and only if
  the view was acknowledged, or the backup itself reported (``synced_view``) that its state
  transfer for this view completed (V6: no liveness trap when the primary dies between the
  transfer and the acknowledgement);
* a view whose backup failed may be replaced keeping the same primary even before the primary
  acknowledged it (V7), because no state moves to anyone; otherwise a backup dying during its
  own state transfer would block the service forever;
* with K backups (``backups_max``) views are filled from idle servers up to K; promotion picks
  the first healthy backup known to hold every acknowledged write: any, if the view was
  acknowledged; else one that reported synced (V6) or was carried complete from the view
  before (V14); the other healthy backups stay;
* a member that restarted (new incarnation, or view number 0 from a member whose incarnation the
  service does not know) counts as failed in its old role (V8) and may come back as a new backup.

Every decision runs after each ping and each tick, in ``maybe_change_view``. The view service is a
single point of failure by design; with a data directory its host persists ``PersistView``
effects so a restart resumes the same view (V9).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from pbkv.core.admission import (
    accept_incarnation,
    draw_cluster_id,
    exclusion,
    foreign,
    malformed,
)
from pbkv.core.effects import Outbox, PersistView
from pbkv.core.leases import LeaseGrants
from pbkv.core.messages import (
    INITIAL_VIEW,
    NO_VIEW_NUMBER,
    AnyMessage,
    Dump,
    GetView,
    Ping,
    PingReply,
    Request,
    StatusRequest,
    View,
    ViewReply,
    ViewServiceStatus,
    wrong_node,
)
from pbkv.core.rescue import (
    NO_BASIS,
    RescueBasis,
    fence_reply,
    pending_rescuer,
    request_fence,
    rescue_view,
)
from pbkv.core.sizes import NAME_BYTES_MAX
from pbkv.core.view_service_report import log_silent_backups_replaced, status, waiting
from pbkv.core.view_service_state import (
    BACKUPS_MAX,
    HEALTH_CHARS_MAX,
    RESTARTED_INCARNATION,
    UNKNOWN_INCARNATION,
    ServerInfo,
    ViewServiceConfig,
)

__all__ = [
    "BACKUPS_MAX",
    "UNKNOWN_INCARNATION",
    "ServerInfo",
    "ViewService",
    "ViewServiceConfig",
]


class ViewService:
    """Pure state machine; feed it ``on_message`` and ``on_tick``, execute its effects."""

    def __init__(
        self,
        name: str,
        config: ViewServiceConfig | None = None,
        view: View = INITIAL_VIEW,
        acknowledged: bool = False,
        incarnations: Mapping[str, int] | None = None,
        basis: RescueBasis = NO_BASIS,
        cluster_id: int = 1,
    ) -> None:
        self.name = name
        self.cluster_id = cluster_id
        """The cluster this service serves (V16): drawn when it first starts, saved with the
        view, taken over from the chosen server by ``force_new_cluster``."""
        self.cluster_id_saved = False
        self.config = config or ViewServiceConfig()
        settings_error = self.config.check()
        if settings_error is not None:
            raise ValueError(settings_error)
        self.view = view
        self.acknowledged = acknowledged
        self.synced_backups: set[str] = set()
        """Backups of the current view that reported their transfer for it complete (V6)."""
        self.carried: set[str] = set()
        """Backups of the current view that held every acknowledged write when it was formed:
        complete backups of the view before, kept in this one (V14)."""
        self.basis = basis
        """The last acknowledged view's backups, which may rescue the cluster (V15)."""
        self.fence_requested = NO_VIEW_NUMBER
        """The last view whose fence was requested (pushed and logged once, V15)."""
        self.now = 0
        self.servers: dict[str, ServerInfo] = {}
        # Incarnation of each member when it entered the current view (None: unknown, e.g.
        # after a restart from a view persisted without it).
        known = incarnations or {}
        self.member_incarnations: dict[str, int | None] = {
            member: known.get(member) for member in view.members()
        }
        for member in view.members():  # a restored view's members: a dead interval to ping
            self.servers[member] = ServerInfo(UNKNOWN_INCARNATION, 0)
        self.views_created = 0
        self.servers_declared_dead = 0
        self.highest_reported = NO_VIEW_NUMBER
        """With no view: the highest view any server reported holding (V1, V11)."""
        self.refused: dict[str, int] = {}
        self.refused_log_tick: dict[str, int] = {}
        self.leases = LeaseGrants(
            self.config.lease_ticks(), self.config.dead_after_ticks, view.number > 0
        )

    @classmethod
    def restore(
        cls,
        name: str,
        config: ViewServiceConfig | None,
        saved: PersistView | None,
        rng: random.Random | None = None,
    ) -> ViewService:
        """A view service resuming from its last ``PersistView`` (V9); a fresh one if None. A
        cluster id not saved (a fresh service, or state saved before ids) is drawn from
        ``rng`` (1 without one) and saved at the first tick that has a view (V16)."""
        cluster_id = 1 if rng is None else draw_cluster_id(rng)
        if saved is None:
            return cls(name, config, cluster_id=cluster_id)
        basis = RescueBasis(saved.rescue_view, saved.rescuers)
        incarnations = dict(saved.incarnations)
        cluster_id = saved.cluster_id or cluster_id
        service = cls(name, config, saved.view, saved.acknowledged, incarnations, basis, cluster_id)
        service.cluster_id_saved = saved.cluster_id != 0
        # V14 across a restart: only a backup whose incarnation was saved can be recognised as
        # the same process (V8) when it pings again.
        service.carried = {
            backup
            for backup in saved.carried
            if backup in saved.view.backups and service.member_incarnations.get(backup) is not None
        }
        return service

    def persist(self, out: Outbox) -> None:
        known = tuple(
            (member, incarnation)
            for member, incarnation in self.member_incarnations.items()
            if incarnation is not None and incarnation >= 0
        )
        carried = tuple(backup for backup in self.view.backups if backup in self.carried)
        basis = self.basis
        saved = (self.view, self.acknowledged, known, carried, basis.view_number, basis.backups)
        out.persist(PersistView(*saved, self.cluster_id))
        self.cluster_id_saved = True

    # --- entry points ------------------------------------------------------------------------

    def on_message(self, source: str, message: AnyMessage, out: Outbox) -> None:
        match message:
            case Ping():
                self.on_ping(source, message, out)
            case GetView():
                out.send(source, ViewReply(self.view))
            case StatusRequest():
                out.send(source, self.status())
            case Request() | Dump():  # meant for a server: say so at once
                out.send(source, wrong_node(self.name, "the view service"))
            case _:
                out.log("message_ignored", self.view.number, type=type(message).__name__)
        self.check_invariants()

    def on_tick(self, out: Outbox) -> None:
        self.now += 1
        if not self.cluster_id_saved and self.view.number > NO_VIEW_NUMBER:
            self.persist(out)  # V16: servers may record this id from now on
        self.note_deaths(out)
        self.maybe_change_view(out)
        self.forget_departed(out)
        self.check_invariants()

    # --- pings -------------------------------------------------------------------------------

    def on_ping(self, source: str, ping: Ping, out: Outbox) -> None:
        if malformed(ping):
            self.note_refused("ping_malformed", ping.name, out)
            return
        info = self.servers.get(ping.name)
        if info is None:
            if len(self.servers) >= self.config.servers_max:
                self.note_refused("ping_refused_table_full", ping.name, out)
                return
            info = self.servers[ping.name] = ServerInfo(ping.incarnation, self.now)
        elif not self.accept_incarnation(info, ping, out):
            return
        if info.declared_dead:
            out.log("server_returned", self.view.number, server=ping.name)
            info.declared_dead = False
        self.record_ping(info, source, ping)
        excluded = exclusion(self, ping.name, self.view.primary)
        if excluded is not None:
            self.note_refused(excluded, ping.name, out)
        self.learn_member_incarnation(ping)
        self.record_acknowledgements(ping, out)
        self.maybe_change_view(out)
        formed_with = self.member_incarnations.get(ping.name)
        out.send(source, self.leases.reply(ping, self.ping_reply(ping), formed_with, self.now))

    def accept_incarnation(self, info: ServerInfo, ping: Ping, out: Outbox) -> bool:
        return accept_incarnation(self, info, ping, out)  # V10, core/admission.py

    def record_ping(self, info: ServerInfo, source: str, ping: Ping) -> None:
        info.last_ping_tick = self.now
        info.source = source
        info.view_number = ping.view_number
        info.synced_view = ping.synced_view
        info.holds_state = ping.holds_state
        info.backup_silent_view = ping.backup_silent_view
        info.backup_silent_ticks = ping.backup_silent_ticks
        info.backup_silent = ping.backup_silent[:NAME_BYTES_MAX]
        info.health = ping.health[:HEALTH_CHARS_MAX]
        info.durable_view = ping.durable_view
        info.durable_index = ping.durable_index
        info.held_view = ping.held_view
        info.retained_view = ping.retained_view
        info.fenced_view = ping.fenced_view
        info.cluster_id = ping.cluster_id
        info.limits = ping.limits
        if self.view.number == NO_VIEW_NUMBER:
            reported = max(ping.view_number, ping.durable_view, ping.held_view)
            self.highest_reported = max(self.highest_reported, reported)

    def note_refused(self, event: str, server: str, out: Outbox) -> None:
        """Count a refused ping; log each kind at most once per dead interval, with the count
        of what was not logged (a flood of pings cannot flood the log)."""
        self.refused[event] = self.refused.get(event, 0) + 1
        last = self.refused_log_tick.get(event)
        if last is not None and self.now - last < self.config.dead_after_ticks:
            return
        self.refused_log_tick[event] = self.now
        count, self.refused[event] = self.refused[event], 0
        out.log(event, self.view.number, server=server[:NAME_BYTES_MAX], count=count)

    def ping_reply(self, ping: Ping) -> PingReply:
        """The view, with the pinger's incarnation echoed only if the view was formed with that
        very process, and the backups' incarnations for the view's own primary (P7, P8)."""
        if self.member_incarnations.get(ping.name) != ping.incarnation:
            return PingReply(self.view, cluster_id=self.announced_cluster_id())
        if ping.name in self.view.backups and self.rescue_pending() is not None:
            return fence_reply(self, ping.name)  # V15: fenced before anyone else takes over
        return self.member_reply(ping.name)

    def lease_blocks(self, proposal: View) -> bool:
        """``proposal`` lets another process serve (a new primary, or the primary's name after
        its process failed: V8, V12) while the primary may still hold a read lease (R3)."""
        view = self.view
        same = proposal.primary == view.primary and self.member_ok(view.primary)
        return self.leases.blocks(self.now, view.number != NO_VIEW_NUMBER and not same)

    def member_reply(self, member: str) -> PingReply:
        view = self.view
        incarnation = self.named_incarnation(member)
        cluster_id = self.announced_cluster_id()
        if member != view.primary:
            return PingReply(view, incarnation, cluster_id=cluster_id)
        backups = tuple(self.named_incarnation(backup) for backup in view.backups)
        return PingReply(view, incarnation, backups, cluster_id=cluster_id)

    def announced_cluster_id(self) -> int:
        """The id replies carry (V16): none until this service has a view and saved the id
        (a server may record it at once: a restart must not draw another)."""
        saved = self.view.number > NO_VIEW_NUMBER and self.cluster_id_saved
        return self.cluster_id if saved else 0

    def named_incarnation(self, name: str) -> int:
        """The incarnation of ``name`` the current view holds (0: not a member, or unknown)."""
        known = self.member_incarnations.get(name)
        return 0 if known is None or known < 0 else known

    def learn_member_incarnation(self, ping: Ping) -> None:
        """Adopt an unknown member's incarnation, unless its ping shows it restarted (V8)."""
        if self.member_incarnations.get(ping.name, 0) is not None:
            return
        if ping.view_number == NO_VIEW_NUMBER:
            self.member_incarnations[ping.name] = RESTARTED_INCARNATION
        else:
            self.member_incarnations[ping.name] = ping.incarnation

    def record_acknowledgements(self, ping: Ping, out: Outbox) -> None:
        view = self.view
        if not self.member_ok(ping.name):
            return
        if ping.name == view.primary and ping.view_number == view.number and not self.acknowledged:
            self.acknowledged = True
            self.basis = RescueBasis.of(view, self.member_incarnations)
            self.persist(out)
            out.log("view_acknowledged", view.number, primary=view.primary)
        if ping.name in view.backups and ping.synced_view == view.number:
            self.synced_backups.add(ping.name)

    @property
    def backup_synced(self) -> bool:
        """Every backup of the view reported its transfer for this view complete."""
        return bool(self.view.backups) and self.synced_backups.issuperset(self.view.backups)

    # --- liveness ----------------------------------------------------------------------------

    def alive(self, name: str) -> bool:
        info = self.servers.get(name)
        return info is not None and self.now - info.last_ping_tick < self.config.dead_after_ticks

    def heard_since_restore(self, name: str | None) -> bool:
        info = None if name is None else self.servers.get(name)
        return info is not None and info.incarnation != UNKNOWN_INCARNATION

    def member_ok(self, name: str | None) -> bool:  # alive, the process that joined (V8)
        if name is None or not self.alive(name):
            return False
        known = self.member_incarnations.get(name)
        current = self.servers[name].incarnation
        # UNKNOWN: restored and not pinged yet; the grace period (V9) judges its liveness.
        return known is None or current in (UNKNOWN_INCARNATION, known)

    def note_deaths(self, out: Outbox) -> None:
        for name, info in self.servers.items():
            if not info.declared_dead and not self.alive(name):
                info.declared_dead = True
                self.servers_declared_dead += 1
                out.log("server_declared_dead", self.view.number, server=name)

    def forget_departed(self, out: Outbox) -> None:
        """Bound the table: drop servers silent for ``forget_after_ticks`` that hold no role
        (a member stays, dead or not: the rules of §4 still need it). A forgotten server that
        pings again is a new server to this service."""
        members = self.view.members()
        limit = self.config.forget_after_ticks
        now = self.now
        departed = [
            name
            for name, info in self.servers.items()
            if now - info.last_ping_tick > limit and name not in members
        ]
        for name in departed:
            silent_ticks = now - self.servers.pop(name).last_ping_tick
            out.log("server_forgotten", self.view.number, server=name, silent_ticks=silent_ticks)

    # --- view changes ------------------------------------------------------------------------

    def maybe_change_view(self, out: Outbox) -> None:
        proposal = self.next_view()
        if proposal is not None and not self.lease_blocks(proposal):
            self.install_view(proposal, out)
        else:
            request_fence(self, out)

    def next_view(self) -> View | None:
        """The view the rules call for now, or None to keep the current one (V2-V7, V10, V11)."""
        view = self.view
        if view.number == NO_VIEW_NUMBER:
            return self.first_view()
        if self.reported_view_number() > view.number:
            return None
        primary_ok = self.member_ok(view.primary)
        if primary_ok and not self.heard_since_restore(view.primary):
            return None  # restored, not heard yet: no view may assume it serves (V9, V12)
        healthy = [b for b in view.backups if self.backup_ok(b)]
        if not primary_ok:
            if any(not self.heard_since_restore(b) for b in healthy):
                # Restored, not heard yet: the process behind the name may have restarted with
                # a disk, and promoting its predecessor would wedge the view (V9, V12).
                return None
            return self.failover_view(healthy)
        unfenced = [b for b in healthy if not self.fenced(b)]
        if len(unfenced) < len(view.backups):
            # V7: a failed backup leaves, and so does one fenced (V15) while the primary was
            # judged failed: it can serve this view no more.
            return self.make_view(view.primary, unfenced)
        if len(healthy) < self.config.backups_max and self.acknowledged:
            filled = self.make_view(view.primary, healthy)
            return filled if len(filled.backups) > len(healthy) else None
        return None

    def failover_view(self, healthy: list[str]) -> View | None:
        """The primary failed: promote a backup holding every acknowledged write (V5, V6,
        V14), else a member recovered from its disk (V12), else the backup the last
        acknowledged view lost, once this view is fenced (V15); else wait (None)."""
        promotable = [b for b in healthy if self.promotable(b)]
        if promotable:
            chosen = promotable[0]
            return self.make_view(chosen, [b for b in healthy if b != chosen])
        recovered = self.recovered_member()
        if recovered is not None:
            return self.make_view(recovered, [])
        return self.rescue_view()

    def fenced(self, backup: str) -> bool:  # reported this view fenced (V15): takes no more
        return self.servers[backup].fenced_view >= self.view.number

    def rescue_pending(self) -> str | None:  # V15: who may rescue once this view is fenced
        return pending_rescuer(self)

    def rescue_view(self) -> View | None:  # V15: once a backup reported the fence unsynced
        return rescue_view(self)

    def promotable(self, backup: str) -> bool:
        """A backup that holds every acknowledged write (V6, V14): the view was acknowledged
        (every backup was synced, P4, and confirmed every answered write since, P2), or it
        reported its transfer for this view complete, or it was carried complete from the
        view before (nothing is answered in a view before it is acknowledged)."""
        return self.acknowledged or backup in self.synced_backups or backup in self.carried

    def backup_ok(self, backup: str) -> bool:  # a healthy member not reported silent (V10)
        return self.member_ok(backup) and not self.backup_reported_unreachable(backup)

    def recovered_member(self) -> str | None:
        """V12: a member of the current view whose process restarted with a disk complete for
        this view (``durable_view``): as primary it held every acknowledged write; as backup,
        its transfer for this view was installed, and every later acknowledgement passed
        through it (as for V6). The longest stream wins; the primary on a tie."""
        view = self.view
        candidates = [
            member
            for member in view.members()
            if self.alive(member) and self.complete_for_view(member) and not foreign(self, member)
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda member: self.servers[member].durable_index)

    def complete_for_view(self, member: str) -> bool:
        """Its disk holds every write acknowledged up to now (V12): complete for this view, or
        this view's primary complete for the view before (it never entered this view: a
        primary records entering before it answers, D1, so nothing was acknowledged in it)."""
        view = self.view
        durable_view = self.servers[member].durable_view
        if durable_view == view.number:
            return True
        return member == view.primary and durable_view == view.number - 1 > NO_VIEW_NUMBER

    def first_view(self) -> View | None:
        """View 1 for the first live server, after listening for ``first_view_grace_ticks``,
        and only if no server ever reported a view: otherwise this service lost its state and
        must not reuse those numbers (V1, V11); only the operator's ``force_new_cluster`` goes
        on, above them."""
        grace = self.config.first_view_grace_ticks
        if self.now < (self.config.dead_after_ticks if grace is None else grace):
            return None
        if self.highest_reported > NO_VIEW_NUMBER:
            return self.new_cluster_view()
        first = next(
            (n for n in self.servers if self.alive(n) and exclusion(self, n, None) is None), None
        )
        return None if first is None else View(1, first, ())

    def reported_view_number(self) -> int:
        """The highest view number a server that counts reports holding: any server ever, while
        this service has no view; only healthy members once it has one (V11). Above our own
        number, it means this service lost its state: it must not reuse those numbers (V1)."""
        view = self.view
        if view.number == NO_VIEW_NUMBER:
            return self.highest_reported
        members = [m for m in view.members() if self.member_ok(m)]
        return max((self.servers[m].view_number for m in members), default=NO_VIEW_NUMBER)

    def new_cluster_view(self) -> View | None:
        """With ``force_new_cluster`` (V11): after a dead interval of listening, the live server
        that holds state and reports the highest view becomes primary, alone, of a view
        numbered above every reported one. Without it, or with no such server: wait."""
        if not self.config.force_new_cluster:
            return None
        holders = [n for n, i in self.servers.items() if self.alive(n) and i.holds_state]
        if not holders:
            return None
        chosen = max(holders, key=lambda name: self.servers[name].view_number)
        return View(self.reported_view_number() + 1, chosen, ())

    def live_reporters(self) -> list[str]:
        return [
            name
            for name, info in self.servers.items()
            if self.alive(name) and max(info.view_number, info.held_view, info.durable_view) > 0
        ]

    def backup_reported_unreachable(self, backup: str) -> bool:
        """The healthy primary reports that ``backup`` (named in the ping; the first backup if
        unnamed, as a K=1 primary may) has not answered it for a dead interval while it
        waited (V10)."""
        primary = self.view.primary
        if primary is None or not self.member_ok(primary):
            return False
        info = self.servers[primary]
        return (
            (info.backup_silent or self.view.backup) == backup
            and info.backup_silent_view == self.view.number
            and info.backup_silent_ticks >= self.config.dead_after_ticks
        )

    def waiting(self) -> str:  # why the needed view cannot be reached ("" if it can), for status
        return waiting(self)

    def make_view(self, primary: str | None, kept: list[str]) -> View:
        """The next view: ``primary``, the backups ``kept`` from this view, then idle servers
        up to ``backups_max`` (V7: a failed or silent backup is replaced, the primary kept)."""
        assert primary is not None
        backups = list(kept)
        while len(backups) < self.config.backups_max:
            idle = self.pick_idle(primary, exclude=backups)
            if idle is None:
                break
            backups.append(idle)
        return View(self.view.number + 1, primary, tuple(backups))

    def pick_idle(self, primary: str, exclude: list[str]) -> str | None:
        """First live server (in order of first ping) that is not ``primary``, not in
        ``exclude``, not a healthy member of the current view, and may join ``primary`` (V11,
        V16, V17)."""
        for name in self.servers:
            if name == primary or name in exclude or not self.alive(name):
                continue
            if exclusion(self, name, primary) is not None:
                continue
            if name in self.view.members() and self.member_ok(name):
                continue
            return name
        return None

    def install_view(self, view: View, out: Outbox) -> None:
        previous = self.view
        jump = previous.number == NO_VIEW_NUMBER and self.config.force_new_cluster
        assert view.number == previous.number + 1 or jump, "V1: view numbers grow by one"
        assert view.primary is not None and view.primary not in view.backups
        assert (
            previous.number == NO_VIEW_NUMBER
            or view.primary in previous.members()
            or view.primary == self.rescue_pending()
        ), "V5, V15"
        log_silent_backups_replaced(self, view, out)  # why a backup that still pings leaves
        self.view = view
        if jump:  # V16: a forced new cluster goes on with the state (and id) of its primary
            self.cluster_id = self.servers[view.primary].cluster_id or self.cluster_id
        # The same processes only (V8): a restarted backup's report speaks for its predecessor.
        complete = {b for b in previous.backups if self.backup_ok(b) and self.promotable(b)}
        self.carried = complete.intersection(view.backups)
        self.acknowledged = False
        self.synced_backups = set()
        # A restored member that has not pinged yet stays unknown (None), not the placeholder.
        incarnations = {m: self.servers[m].incarnation for m in view.members()}
        self.member_incarnations = {
            m: None if known == UNKNOWN_INCARNATION else known for m, known in incarnations.items()
        }
        self.views_created += 1
        self.persist(out)
        out.log(
            "view_change",
            view.number,
            primary=view.primary,
            backup=",".join(view.backups) or "-",
            previous_primary=previous.primary or "-",
            previous_backup=",".join(previous.backups) or "-",
        )
        if previous.number != NO_VIEW_NUMBER and view.primary not in previous.members():
            basis = self.basis.view_number
            out.log("view_rescued", view.number, primary=view.primary, retained_view=basis)
        for member in view.members():
            source = self.servers[member].source
            if source is not None:  # where its pings come from: a reply path it trusts (V10)
                out.send(source, self.member_reply(member))

    # --- introspection -----------------------------------------------------------------------

    def status(self) -> ViewServiceStatus:
        return status(self)

    def check_invariants(self) -> None:
        view = self.view
        assert len(view.backups) <= BACKUPS_MAX
        assert len(set(view.backups)) == len(view.backups)
        if view.number == NO_VIEW_NUMBER:
            assert view.primary is None and not self.acknowledged
        else:
            assert view.primary is not None and view.primary not in view.backups
