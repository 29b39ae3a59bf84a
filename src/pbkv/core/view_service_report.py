"""What the view service tells operators: its status, and why it waits when it does.

Theory of operation. ``status`` is a snapshot of the service's table (no incarnations: V10);
``waiting`` names the rule that keeps the cluster from the view it needs (V4, V11, V12, V15,
R3, N1, N2), so ``pbkv status`` can say what an operator may do; a server the service keeps out
of every role (V11, V16, V17) shows why as its health. Both only read the service;
``log_silent_backups_replaced`` adds to a view change the log line of its cause when no death
explains it (V10).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbkv.core.admission import exclusion
from pbkv.core.effects import Outbox
from pbkv.core.messages import (
    NO_VIEW_NUMBER,
    ServerStatus,
    View,
    ViewServiceStatus,
    cluster_label,
)

if TYPE_CHECKING:
    from pbkv.core.view_service import ViewService


def waiting(service: ViewService) -> str:
    """Why the service cannot reach the view the cluster needs ("" when it can), for status."""
    view = service.view
    reported = service.reported_view_number()
    if reported > view.number:
        advice = (
            "restart this view service with its data directory, or with --force-new-cluster"
            if view.number == NO_VIEW_NUMBER
            else "this view service lost its state; restart it with the right data directory"
        )
        if service.config.force_new_cluster:
            advice = "--force-new-cluster: waiting for a live server that holds the state"
        elif view.number == NO_VIEW_NUMBER and not service.live_reporters():
            advice = (
                "the servers that held it are gone; if none comes back with its state the "
                "data is lost (N1): restart this service to start an empty cluster"
            )
        holders = ", ".join(service.live_reporters()[:3])
        held = f" ({holders})" if holders else ""
        return f"servers hold view {reported}{held}, newer than this service's ({advice}) (N2)"
    if view.number == NO_VIEW_NUMBER or service.member_ok(view.primary):
        return ""
    left = service.leases.left(service.now)
    if left:
        return f"primary {view.primary} failed: waiting {left} ticks for its read lease (R3)"
    rescuer = service.rescue_pending()
    if rescuer is not None:
        return (
            f"primary {view.primary} failed before its backups held the state: fencing view "
            f"{view.number} at its backups before {rescuer}, the backup of view "
            f"{view.number - 1} it replaced, takes over (V15)"
        )
    live = [b for b in view.backups if service.member_ok(b)]
    if live and not restarted_without_state(service, view.primary):
        return (
            f"primary {view.primary} failed before backup {', '.join(live)} held the "
            f"state: waiting for {view.primary} (V4)"
        )
    others = [m for m in view.members() if m not in live]
    silent = [m for m in others if not restarted_without_state(service, m)]
    if not silent:
        never = f"; {', '.join(live)} never held it" if live else ""
        return (
            f"cannot recover: {', '.join(others)} restarted without the state{never} (N1); "
            "only a member restarted with a data directory complete for this view brings it "
            "back (V12), otherwise start a new cluster"
        )
    return (
        f"{', '.join(silent)} stopped pinging: if they are down without their data, the "
        "state is lost (N1) unless a member comes back with its data directory (V12); if they "
        "are only cut off from this view service, the view goes on when their pings return"
    )


def restarted_without_state(service: ViewService, member: str | None) -> bool:
    """``member`` pings again, as another process than the one in the view (V8), and its disk,
    if any, cannot continue the view (V12): what it held is gone."""
    if member is None or not service.alive(member) or service.member_ok(member):
        return False
    return not service.complete_for_view(member)


def log_silent_backups_replaced(service: ViewService, view: View, out: Outbox) -> None:
    """Before ``view`` replaces the service's view: a line for each backup that leaves it while
    it still pings, because its primary reported it silent (V10). A backup that died has its
    ``server_declared_dead`` line; without this one a cut between the primary and its backup
    showed as a view change with no cause."""
    previous = service.view
    for backup in previous.backups:
        if (
            backup not in view.members()
            and service.member_ok(backup)
            and service.backup_reported_unreachable(backup)
        ):
            silent_ticks = service.servers[str(previous.primary)].backup_silent_ticks
            out.log(
                "backup_reported_silent",
                previous.number,
                backup=backup,
                primary=previous.primary,
                silent_ticks=silent_ticks,
            )


def status(service: ViewService) -> ViewServiceStatus:
    """The service as ``pbkv status`` shows it."""
    servers = tuple(
        ServerStatus(
            name=name,
            last_ping_age_ticks=service.now - info.last_ping_tick,
            view_number=info.view_number,
            synced_view=info.synced_view,
            alive=service.alive(name),
            holds_state=info.holds_state,
            health=info.health or excluded_health(service, name),
        )
        for name, info in service.servers.items()
    )
    return ViewServiceStatus(
        view=service.view,
        acknowledged=service.acknowledged,
        backup_synced=service.backup_synced,
        servers=servers,
        views_created=service.views_created,
        servers_declared_dead=service.servers_declared_dead,
        now_ticks=service.now,
        waiting=waiting(service),
        lease_ticks=service.config.lease_ticks(),
        lease_clear_ticks=service.leases.left(service.now),
        cluster_id=service.announced_cluster_id(),
    )


def excluded_health(service: ViewService, name: str) -> str:
    """Why the service gives ``name`` no role ("" when it may have one), for status."""
    reason = exclusion(service, name, service.view.primary)
    if reason == "server_holds_newer_view":
        return "holds a view newer than this view service's: no role (V11)"
    if reason == "server_of_another_cluster":
        theirs = cluster_label(service.servers[name].cluster_id)
        return f"its disk holds cluster {theirs}, not this one: no role (V16)"
    if reason == "server_limits_differ":
        return f"runs under other size limits than primary {service.view.primary}: no role (V17)"
    return ""
