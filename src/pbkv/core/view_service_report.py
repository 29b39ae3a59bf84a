"""What the view service tells operators: its status, and why it waits when it does.

Theory of operation. ``status`` is a snapshot of the service's table (no incarnations: V10);
``waiting`` names the rule that keeps the cluster from the view it needs (V4, V11, V12, V15,
R3, N1, N2), so ``pbkv status`` can say what an operator may do; a server the service keeps out
of every role (V11, V16, V17) shows why as its health. Both only read the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbkv.core.admission import exclusion
from pbkv.core.messages import NO_VIEW_NUMBER, ServerStatus, ViewServiceStatus, cluster_label

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
    if live:
        return (
            f"primary {view.primary} failed before backup {', '.join(live)} held the "
            f"state: waiting for {view.primary} (V4)"
        )
    return (
        f"cannot recover: primary {view.primary} failed and no other server holds the "
        "state (N1); waiting for a member to come back with its data directory (V12)"
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
