"""V15: a cluster whose primary is lost just after the service replaced its backup.

Theory of operation. The view service replaces a backup it judges dead keeping the primary
(V7). If the primary is then lost before the new view's backups synced, no rule of V5/V6/V14
can promote anyone: the new backups never held the state, and the replaced backup, which
confirmed every write of the last acknowledged view, is no longer a member. This module lets the
service promote that replaced backup (the **rescuer**) after proving that nothing was answered
in the view that replaced it.

* The **basis** is recorded when a view is acknowledged: its number ``a`` and its backups with
  the incarnation each had (V8). Every write answered up to the end of ``a`` was confirmed by
  every one of them (P2), and every earlier one was in the transfer they synced (P4).
* Rescue is considered only while the current view ``c`` is ``a + 1`` (one unacknowledged view
  since the basis: the service does not keep older views' backups, so it cannot fence more),
  ``c`` has backups, the primary of ``c`` failed and no backup of ``c`` may be promoted.
* A rescuer is a backup of ``a`` that is not a member of ``c``, alive, the same process, and
  reports ``retained_view == a``: it left ``a`` as a synced backup and, idle since, has
  accepted nothing (an idle replica takes no forward and no transfer).
* **Fencing** ``c``: the service asks the backups of ``c`` (pushed once on their ping
  connections, then in every ping reply) to accept nothing more for views up to ``c``. A
  backup reporting ``fenced_view >= c`` can no longer sync for ``c``, so the ``synced_view``
  of that very ping is final for ``c``. If it is below ``c``,
  no write or read was answered in ``c`` (each needs every backup of ``c``, synced, P2, P4) nor
  will be. Then the rescuer holds every acknowledged write and becomes primary of ``c + 1``, with
  the live backups of ``c`` kept as its backups (they hold nothing acknowledged; they get a
  transfer). A fenced backup that synced for ``c`` before its fence holds every answered write
  itself, and V6 promotes it instead.
* Without the fence the rule is unsafe: over a one-way cut the primary of ``c`` learns ``c``,
  syncs its backup and answers writes in it while its pings are lost (the simulator's variant
  ``RescuesWithoutFence`` loses them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pbkv.core.effects import Outbox
from pbkv.core.messages import NO_VIEW_NUMBER, PingReply, View

if TYPE_CHECKING:
    from pbkv.core.view_service import ViewService


@dataclass(frozen=True, slots=True)
class RescueBasis:
    """The last acknowledged view's number and its backups, each with its incarnation."""

    view_number: int
    backups: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, view: View, incarnations: Mapping[str, int | None]) -> RescueBasis:
        """The basis for ``view``, just acknowledged: backups whose process is known."""
        known = tuple(
            (backup, incarnation)
            for backup in view.backups
            if (incarnation := incarnations.get(backup)) is not None and incarnation > 0
        )
        return cls(view.number, known)


NO_BASIS: Final = RescueBasis(NO_VIEW_NUMBER, ())
"""No view acknowledged yet (or none saved): nobody can rescue."""


def pending_rescuer(service: ViewService) -> str | None:
    """The rescuer, when the current view is the one right after the basis and has backups,
    its primary failed and no backup may be promoted; None otherwise. The view's backups are
    then asked to fence it. The rescuer is the first backup of the basis that is idle in the
    view, alive, the same process, its store untouched since it was complete for the basis."""
    view, basis = service.view, service.basis
    if view.number != basis.view_number + 1 or not view.backups:
        return None
    if service.member_ok(view.primary):
        return None
    if any(service.member_ok(b) and service.promotable(b) for b in view.backups):
        return None
    members = view.members()
    for name, incarnation in basis.backups:
        info = service.servers.get(name)
        if (
            info is not None
            and name not in members
            and service.alive(name)
            and info.incarnation == incarnation
            and info.retained_view == basis.view_number
        ):
            return name
    return None


def rescue_view(service: ViewService) -> View | None:
    """The rescuer as primary, the live backups of the view kept, once one of them (the process
    the view was formed with) reported the view fenced without having synced for it: nothing
    was or will be answered in it."""
    chosen = pending_rescuer(service)
    if chosen is None:
        return None
    view = service.view
    kept = [b for b in view.backups if service.member_ok(b)]
    if not any(service.fenced(b) and service.servers[b].synced_view < view.number for b in kept):
        return None
    return service.make_view(chosen, kept)


def fence_reply(service: ViewService, backup: str) -> PingReply:
    """The view, asking ``backup`` to fence it."""
    view = service.view
    incarnation = service.named_incarnation(backup)
    cluster_id = service.announced_cluster_id()
    return PingReply(view, incarnation, fence_view=view.number, cluster_id=cluster_id)


def request_fence(service: ViewService, out: Outbox) -> None:
    """Once per view: log that a rescue waits for the fence, and push the request to each
    backup of the view on its ping connection (a trusted path, V10) instead of waiting for
    its next ping."""
    view = service.view
    if service.fence_requested >= view.number:
        return
    chosen = pending_rescuer(service)
    if chosen is None:
        return
    service.fence_requested = view.number
    out.log("view_fence_requested", view.number, rescuer=chosen, backups=",".join(view.backups))
    for backup in view.backups:
        source = service.servers[backup].source if backup in service.servers else None
        if source is not None and service.member_ok(backup):
            out.send(source, fence_reply(service, backup))
