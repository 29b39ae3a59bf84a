"""The view service's settings and its record of each server it hears from.

``ViewServiceConfig`` holds what an operator chooses (the dead interval, K backups, read
leases and their drift bound) and checks it; ``ServerInfo`` is what the service remembers of
one server between pings: its incarnation (V8, V10), what it reported of its view and its
state (V6, V11, V14, V15, issue 10's durable state) and the backup silence it reported (V10).
``pbkv.core.view_service`` decides views from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pbkv.core.leases import lease_settings_error, lease_ticks
from pbkv.core.messages import NO_VIEW_NUMBER

BACKUPS_MAX = 4
"""The most backups a view may name (``ViewServiceConfig.backups_max`` is 1..this)."""
UNKNOWN_INCARNATION = -1
RESTARTED_INCARNATION = -2
VIEW_NUMBER_LIMIT = 1 << 62
"""Pings naming a view number at or above this are refused as malformed."""
HEALTH_CHARS_MAX = 200
FORGET_AFTER_DEAD_INTERVALS_MIN = 4
"""A silent non-member is forgotten no sooner than this many dead intervals: declared dead
first, and never sooner than the simulator sweeps (``sim/params.py`` draws 4 or 6,000 ticks)."""


@dataclass(frozen=True, slots=True)
class ViewServiceConfig:
    dead_after_ticks: int = 50
    servers_max: int = 1024
    forget_after_ticks: int = 6000
    restart_quiet_ticks: int = 20
    """A ping from a new incarnation counts as a restart only once the known incarnation has
    been silent this long (V10): a forged restart ping cannot displace a live server."""
    retired_incarnations_max: int = 8
    first_view_grace_ticks: int | None = None
    """A service with no view listens this long before forming view 1 (None: the dead
    interval), so it hears every live server that holds a newer view first (V11)."""
    force_new_cluster: bool = False
    """Without saved state, form a new cluster above every view the servers report (V11)."""
    backups_max: int = 1
    """K: how many backups a view names when enough servers are alive (1..``BACKUPS_MAX``);
    a view with K synced backups loses no acknowledged write while one member survives."""
    read_leases: bool = False
    """Grant the primary read leases (R1-R5): it may answer reads alone while its lease runs."""
    clock_drift_max: float = 0.01
    """The assumed bound on how far any process's clock rate strays from real time (R1)."""
    lease_gap_ticks: int = 5
    """Safety gap taken off the lease beyond the drift margin (a host's lateness in handing
    the clock to its core, R1)."""

    def __post_init__(self) -> None:
        if not 1 <= self.backups_max <= BACKUPS_MAX:
            raise ValueError(f"backups must be between 1 and {BACKUPS_MAX}")

    def lease_ticks(self) -> int:
        """The lease a primary is granted, on its own clock (R1); 0 when off."""
        if not self.read_leases:
            return 0
        return lease_ticks(self.dead_after_ticks, self.clock_drift_max, self.lease_gap_ticks)

    def check(self) -> str | None:
        """None when the settings are usable (else why not)."""
        intervals, dead = FORGET_AFTER_DEAD_INTERVALS_MIN, self.dead_after_ticks
        if self.forget_after_ticks < intervals * dead:
            return (
                f"forgetting a silent server after {self.forget_after_ticks} ticks is sooner than "
                f"{intervals} dead intervals ({dead} ticks each)"
            )
        return lease_settings_error(
            self.read_leases, self.dead_after_ticks, self.clock_drift_max, self.lease_gap_ticks
        )


@dataclass(slots=True)
class ServerInfo:
    incarnation: int
    last_ping_tick: int
    view_number: int = NO_VIEW_NUMBER
    synced_view: int = NO_VIEW_NUMBER
    declared_dead: bool = False
    source: str | None = None
    """Where this server's last accepted ping came from: new views are pushed there."""
    retired: tuple[int, ...] = ()
    """Incarnations this server had before, newest last (bounded): their pings are ignored."""
    holds_state: bool = False
    durable_view: int = NO_VIEW_NUMBER
    durable_index: int = 0
    held_view: int = NO_VIEW_NUMBER
    backup_silent_view: int = NO_VIEW_NUMBER
    backup_silent_ticks: int = 0
    backup_silent: str = ""
    health: str = ""
    retained_view: int = NO_VIEW_NUMBER
    fenced_view: int = NO_VIEW_NUMBER
    cluster_id: int = 0
    """The cluster whose state its disk holds (V16; 0: none)."""
    limits: tuple[int, ...] = ()
    """The size limits it reported (V17; empty: not reported)."""
