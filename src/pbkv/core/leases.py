"""Read leases, the view service's side (protocol.md §14, R1-R5); opt-in.

Theory of operation. A reply to a ping from the primary of the current view, sent to the very
process the view was formed with, grants a lease: it echoes the ping's ``clock_tick`` (the
primary's own clock when it sent the ping) with ``lease_ticks``, and the primary may answer
reads alone until its clock reads ``clock_tick + lease_ticks`` (R1, R2). The view service, for
its part, remembers ``clear_tick = now + dead_after_ticks`` at every grant and installs no view
that lets another process serve before its own clock reaches it (R3). The primary's count
starts before the service's (the ping was sent before it was received), and the lease is
shorter than the dead interval by the drift margin and a gap, so the primary's lease has run
out in real time before the service's wait has, for any clock rates within the assumed bound
(``lease_ticks``). A restored service starts with ``clear_tick`` a dead interval away: its
predecessor may have granted a lease just before it stopped.
"""

from __future__ import annotations

import msgspec

from pbkv.core.messages import Ping, PingReply


def lease_ticks(dead_after_ticks: int, clock_drift_max: float, lease_gap_ticks: int) -> int:
    """The lease granted, on the primary's clock: the dead interval as the service's clock may
    measure it at the fastest drift, seen by a primary's clock at the slowest, less one tick of
    counting on each side and the gap (R1)."""
    span = (dead_after_ticks - 1) * (1.0 - clock_drift_max) / (1.0 + clock_drift_max)
    return max(0, int(span) - 1 - lease_gap_ticks)


def lease_settings_error(
    read_leases: bool, dead_after_ticks: int, clock_drift_max: float, lease_gap_ticks: int
) -> str | None:
    """Why these lease settings are unusable, or None."""
    if not 0.0 <= clock_drift_max < 0.5:
        return "--clock-drift-max must be at least 0 and below 0.5"
    if lease_gap_ticks < 0:
        return "the lease gap must not be negative"
    if read_leases and lease_ticks(dead_after_ticks, clock_drift_max, lease_gap_ticks) <= 0:
        return "read leases need a longer dead interval (--dead-pings, --ping-interval)"
    return None


class LeaseGrants:
    """Grants leases in ping replies and knows until when the primary may still hold one."""

    def __init__(self, lease: int, dead_after_ticks: int, restored: bool) -> None:
        self.lease = lease
        """Ticks granted (0: leases off)."""
        self.dead_after_ticks = dead_after_ticks
        self.clear_tick = dead_after_ticks if restored and lease else 0
        """Before this tick of the service's clock the primary may still hold a lease (R3)."""

    def reply(self, ping: Ping, reply: PingReply, formed_with: int | None, now: int) -> PingReply:
        """``reply`` to ``ping``, granting a lease if it names the pinger primary and the view
        was formed with this very process (``formed_with``: its incarnation, V8, V12)."""
        if not self.lease:
            return reply
        granted = (
            ping.clock_tick >= 0 and ping.name == reply.view.primary
        ) and formed_with == ping.incarnation
        if not granted:
            return msgspec.structs.replace(reply, lease_ticks=self.lease)
        self.clear_tick = max(self.clear_tick, now + self.dead_after_ticks)
        return msgspec.structs.replace(reply, lease_ticks=self.lease, ping_clock=ping.clock_tick)

    def blocks(self, now: int, another_process: bool) -> bool:
        """Whether a view letting ``another_process`` serve must wait (R3)."""
        return bool(self.lease) and another_process and now < self.clear_tick

    def left(self, now: int) -> int:
        """The most the primary's lease may have left, by the service's clock."""
        return max(0, self.clear_tick - now) if self.lease else 0
