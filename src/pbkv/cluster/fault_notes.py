"""What a network fault command did and what to expect from it, in plain words.

Theory of operation: ``pbkv cluster partition/isolate/heal`` act through admin orders
(``pbkv.cluster.faults``); these functions only word the result for the person at the terminal:
a line saying who can no longer hear whom, a line saying what the cluster will do about it
(which depends on the roles of the view the view service held just before the cut), and a line
saying where to watch it happen. Pure: the caller resolves the processes and asks for the view.
The expectations are what the protocol promises (docs/protocol.md), not a prediction of timing
beyond the dead interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.core.messages import NO_VIEW_NUMBER, View

WATCH: Final = "watch: pbkv cluster status --watch, pbkv cluster logs --follow"
UNDO: Final = "undo: pbkv cluster heal"
UNKNOWN: Final = "whatever the view service decides; pbkv cluster status shows it"


def role_of(record: ProcessRecord, view: View | None) -> str | None:
    """``primary``, ``backup`` or ``idle`` in ``view``; None for the view service, an etcd
    member, or when no view is known."""
    if record.kind != "server" or view is None or view.number == NO_VIEW_NUMBER:
        return None
    if record.address == view.primary:
        return "primary"
    return "backup" if record.address in view.backups else "idle"


def label(record: ProcessRecord, view: View | None) -> str:
    """``s1 (primary, 127.0.0.1:7001)``, or ``viewserver (127.0.0.1:7000)``."""
    role = role_of(record, view)
    return f"{record.name} ({role + ', ' if role else ''}{record.address})"


def dead_interval(state: ClusterState) -> str:
    """The time without pings after which the view service declares a server dead."""
    return f"{state.ping_interval_s * state.dead_pings:g} s"


def partition_notes(
    state: ClusterState, a: ProcessRecord, b: ProcessRecord, one_way: bool, view: View | None
) -> list[str]:
    """The lines ``pbkv cluster partition A B [--one-way]`` prints once the cut is in place.

    Args:
        state: the cluster (for the dead interval).
        a, b: the two processes, as resolved.
        one_way: only what A sends to B is lost.
        view: the view the view service held just before the cut (None: not known).

    Returns:
        What was cut, what to expect, where to watch.
    """
    if one_way:
        done = (
            f"cut: what {label(a, view)} sends to {label(b, view)} is lost; "
            f"{b.name} still reaches {a.name}, and clients still reach both"
        )
    else:
        done = (
            f"cut: {label(a, view)} and {label(b, view)} no longer hear each other; "
            "clients still reach both"
        )
    expect, events = _partition_expectation(state, a, b, one_way, view)
    return [done, f"expect: {expect}", _watch(events)]


def isolate_notes(state: ClusterState, a: ProcessRecord, view: View | None) -> list[str]:
    """The lines ``pbkv cluster isolate A`` prints once A is cut from every other process."""
    others = ", ".join(p.name for p in state.processes if p.name != a.name)
    done = f"cut: {label(a, view)} no longer hears {others} (nor they it); clients still reach it"
    if a.kind == "server":
        expect, events = _pings_lost(state, a, view)
    elif a.kind != "viewserver" or len(state.viewservers()) > 1:
        expect, events = UNKNOWN, ()
    else:
        expect = (
            f"no ping reaches {a.name}: after about {dead_interval(state)} it declares every "
            "server dead and drops the backups from its view, but never replaces the primary "
            "(V5), which hears nothing of it and keeps serving, with its backup, the clients "
            "that already know it"
        )
        events = ("server_declared_dead", "view_change")
    return [done, f"expect: {expect}", _watch(events)]


def heal_notes(
    state: ClusterState, healed: Sequence[ProcessRecord], dead: Sequence[ProcessRecord]
) -> list[str]:
    """The lines ``pbkv cluster heal`` prints: who was healed (and who is dead, so was not),
    what happens next, where to watch."""
    names = ", ".join(p.name for p in healed) or "no process"
    done = f"healed {names}: every cut, lossy link and slow disk is undone"
    if dead:
        done += f"; {', '.join(p.name for p in dead)} not running (nothing to heal)"
    expect = (
        "servers cut off from the view service ping it again within "
        f"{state.ping_interval_s:g} s; one replaced meanwhile learns the current view and "
        "waits as an idle server; nothing acknowledged is lost"
    )
    return [
        done,
        f"expect: {expect}",
        f"{WATCH} (server_returned, view_learned)",
    ]


def _watch(events: Sequence[str]) -> str:
    shown = f" ({', '.join(events)})" if events else ""
    return f"{WATCH}{shown}; {UNDO}"


def _partition_expectation(
    state: ClusterState, a: ProcessRecord, b: ProcessRecord, one_way: bool, view: View | None
) -> tuple[str, tuple[str, ...]]:
    """What the cluster does about the cut, and the log events that show it."""
    kinds = (a.kind, b.kind)
    if "viewserver" in kinds and len(state.viewservers()) > 1:
        return (UNKNOWN, ())  # one member of several (on etcd): only the leader's links count
    if kinds == ("server", "viewserver"):
        return _pings_lost(state, a, view)
    if kinds == ("viewserver", "server"):
        if not one_way:
            return _pings_lost(state, b, view)
        return (
            f"{b.name}'s pings still arrive, so the view service counts it alive; {b.name} "
            "hears no answer and learns no new view until heal",
            (),
        )
    if kinds == ("server", "server"):
        return _servers_cut(state, a, b, view)
    return (UNKNOWN, ())


def _pings_lost(
    state: ClusterState, server: ProcessRecord, view: View | None
) -> tuple[str, tuple[str, ...]]:
    """The view service no longer hears ``server``'s pings."""
    name, after = server.name, dead_interval(state)
    start = f"the view service stops hearing {name}: after about {after} it declares it dead"
    match role_of(server, view):
        case "primary" if view is not None and view.backups:
            return (
                f"{start} and promotes a backup. {name} runs on and still believes it is "
                "primary, but completes nothing: its backup has moved on, so it refuses "
                f"clients (try pbkv cluster probe {name} KEY)",
                ("server_declared_dead", "view_change", "client_refused"),
            )
        case "primary":
            return (
                f"{start}, but there is no backup to promote (N1): the view stays until heal",
                ("server_declared_dead",),
            )
        case "backup":
            return (
                f"{start} and names an idle server backup in its place, if there is one; the "
                "primary sends it the state and serves on",
                ("server_declared_dead", "view_change", "state_transfer_done"),
            )
        case "idle":
            return (
                f"{start}, so it will not pick it as a backup; the view does not change",
                ("server_declared_dead",),
            )
        case _:
            return (f"{start} and, if it is in the view, replaces it", ("server_declared_dead",))


def _servers_cut(
    state: ClusterState, a: ProcessRecord, b: ProcessRecord, view: View | None
) -> tuple[str, tuple[str, ...]]:
    """Two servers no longer hear each other (either direction lost is enough)."""
    roles = {role_of(a, view), role_of(b, view)}
    replaced = (
        "nothing changes until there is work: the next write or read waits for the backup, "
        f"the primary reports it silent, and after {dead_interval(state)} the view service "
        "replaces the backup with an idle server (V10)"
    )
    events = ("backup_reported_silent", "view_change")
    if roles == {"primary", "backup"}:
        return (replaced, events)
    if None in roles:
        return (f"if they are the primary and its backup, {replaced}", events)
    return (
        f"{a.name} and {b.name} exchange nothing in the current view, so nothing changes "
        "unless they become the primary and a backup of one view",
        (),
    )
