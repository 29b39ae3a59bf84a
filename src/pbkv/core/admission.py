"""Which servers the view service may give a role to, and which pings it refuses outright.

Theory of operation. A ping is first checked for fields no server sends (``malformed``, V10):
it is dropped. Then for the process it speaks for (``accept_incarnation``, V10): a late ping from
a retired incarnation, or a restart announced too soon after the current one last pinged, is
dropped. A well-formed ping is recorded, but the server it speaks for may still be
*excluded* from every role this service hands out, for one of three reasons, each logged (at most
once per dead interval) under its own event name:

* ``server_holds_newer_view`` (V11): it reports a view above this service's, or a disk complete
  for one. This service lost its state; a transfer would overwrite the disk holding the history.
* ``server_of_another_cluster`` (V16): its disk holds the state of another cluster (the
  ``cluster_id`` recorded with its views differs from this service's). A role would either
  serve that other cluster's data here (as a recovered primary, V12) or overwrite its disk (as
  a backup). A server whose disk holds no cluster's state reports 0 and is never excluded for it.
* ``server_limits_differ`` (V17): it executes requests under other size limits than the
  primary it would join. Replicas apply the same requests in the same order (P5) only if
  every outcome that depends on a limit (an append refused for growing past the value limit, a
  session evicted) is the same on each: a backup with other limits would diverge silently.

The rules are pure functions of the service's records (``ServerInfo``); ``ViewService`` calls
them when it picks a backup, a recovered primary (V12) or view 1's primary.
"""

from __future__ import annotations

import dataclasses
import random
from typing import TYPE_CHECKING, Final

from pbkv.core.effects import Outbox
from pbkv.core.kv_store import Limits
from pbkv.core.messages import CLUSTER_ID_LIMIT, NO_CLUSTER, NO_VIEW_NUMBER, Ping
from pbkv.core.sizes import NAME_BYTES_MAX, text_bytes
from pbkv.core.view_service_state import UNKNOWN_INCARNATION, VIEW_NUMBER_LIMIT, ServerInfo

if TYPE_CHECKING:
    from pbkv.core.view_service import ViewService

LIMITS_FIELDS_MAX: Final = 16
"""The most numbers a ping's ``limits`` may carry (``Limits`` has fewer): longer is malformed."""


def draw_cluster_id(rng: random.Random) -> int:
    """A new cluster's id (V16), drawn from the host's randomness."""
    return rng.randrange(1, CLUSTER_ID_LIMIT)


def reported_limits(limits: Limits) -> tuple[int, ...]:
    """``limits`` as a ping reports them (V17): its fields' values, in declaration order."""
    return dataclasses.astuple(limits)


def malformed(ping: Ping) -> bool:
    """Fields no server sends: an over-long name, an impossible view number or id (V10)."""
    views = (
        ping.view_number,
        ping.synced_view,
        ping.durable_view,
        ping.held_view,
        ping.retained_view,
        ping.fenced_view,
    )
    return (
        text_bytes(ping.name) > NAME_BYTES_MAX
        or not all(NO_VIEW_NUMBER <= number < VIEW_NUMBER_LIMIT for number in views)
        or ping.incarnation <= 0
        or ping.durable_index < 0
        or not NO_CLUSTER <= ping.cluster_id < CLUSTER_ID_LIMIT
        or len(ping.limits) > LIMITS_FIELDS_MAX
    )


def accept_incarnation(service: ViewService, info: ServerInfo, ping: Ping, out: Outbox) -> bool:
    """Whether ``ping`` speaks for ``info``'s server (V10). A retired incarnation is a late
    ping from a dead process; a new one is a restart only once the current one has been
    silent for ``restart_quiet_ticks``, so a forged restart ping cannot displace it."""
    if info.incarnation in (UNKNOWN_INCARNATION, ping.incarnation):
        info.incarnation = ping.incarnation
        return True
    silent = service.now - info.last_ping_tick
    if ping.incarnation in info.retired:
        # A late ping from a dead process, unless the current incarnation died too (a
        # forged restart displaced a quiet server: it is back after a dead interval).
        if silent < service.config.dead_after_ticks:
            service.note_refused("ping_from_retired_incarnation", ping.name, out)
            return False
    elif silent < service.config.restart_quiet_ticks:
        service.note_refused("ping_refused_restart_too_soon", ping.name, out)
        return False
    out.log("server_restarted", service.view.number, server=ping.name)
    keep = service.config.retired_incarnations_max
    retired = tuple(i for i in info.retired if i != ping.incarnation)
    info.retired = (*retired, info.incarnation)[-keep:]
    info.incarnation = ping.incarnation
    return True


def ahead(service: ViewService, name: str) -> bool:
    """``name`` holds a view above this service's, or a disk complete for one (V11)."""
    info = service.servers[name]
    return max(info.view_number, info.durable_view, info.held_view) > service.view.number


def foreign(service: ViewService, name: str) -> bool:
    """``name``'s disk holds the state of another cluster than this service's (V16)."""
    cluster_id = service.servers[name].cluster_id
    return cluster_id not in (NO_CLUSTER, service.cluster_id)


def limits_differ(service: ViewService, name: str, primary: str | None) -> bool:
    """``name`` reports other size limits than ``primary`` (V17; unreported: no judgement)."""
    if primary is None or primary == name or primary not in service.servers:
        return False
    mine, theirs = service.servers[name].limits, service.servers[primary].limits
    return bool(mine) and bool(theirs) and mine != theirs


def exclusion(service: ViewService, name: str, primary: str | None) -> str | None:
    """Why ``name`` may take no role in a view whose primary is ``primary`` (the event logged),
    or None when it may."""
    if service.view.number > NO_VIEW_NUMBER and ahead(service, name):
        return "server_holds_newer_view"
    if foreign(service, name):
        return "server_of_another_cluster"
    if limits_differ(service, name, primary):
        return "server_limits_differ"
    return None
