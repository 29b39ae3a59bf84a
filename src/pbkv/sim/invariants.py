"""Safety and liveness checks the simulator applies to every run.

Theory of operation. Cheap checks run *during* the run, on every handler call, and raise
``InvariantViolation`` at the first step that breaks them, so the failing step is among the last
events printed:

* ``one-primary-per-view``: for each view number, every ``ok`` reply to a client comes from one
  and the same replica, and it is the primary the view service issued under that number;
* ``view-issued-once``: the view service (across its own restarts) never issues two different
  views with the same number (V1);
* ``view-number-monotonic``: no node's view number ever decreases within one incarnation (P1; a
  restarted node starts again from 0);
* ``append-at-most-once``: each unique appended value occurs at most once in every get result
  (and, at the end, in every replica's store), unless N3 permits it (``sessions.py``: its
  client was evicted from an exactly-once table after the append was invoked);
* ``client-status``: the clients of the simulation never get a final error they cannot cause,
  and never ``ok`` for what they sent over a limit (UTF-8 bytes; ``sizes.py``);
* ``value-size``: no read returns a value over ``value_bytes_max`` bytes.

At the end of a run, ``check_history`` (``pbkv.check``) decides whether everything the clients
observed, including a final read of every key by a fresh client after the liveness phase, is
linearizable: a write acknowledged to a client and later lost, a stale read or a duplicated write
all make the history non-linearizable. ``liveness`` holds when every operation completes within
the liveness bound once the cluster is healed, unless the run is ``unavailable`` as documented
(N1 in docs/protocol.md: every member of the current view that held the state was lost, and
none restarted with a disk complete for the view, V12; N2: a view service restarted without its
state heard of a newer view and waits for the operator).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Final

from pbkv.core.messages import NO_CLUSTER, View
from pbkv.core.replica import Replica
from pbkv.core.view_service import ViewService

APPEND_TOKEN: Final = re.compile(r"<[^<>]*>")
"""Appended values are ``<client.n>``: unique, and findable inside a concatenation."""


class InvariantViolation(Exception):
    """A safety or liveness check failed; ``check`` names it, ``detail`` explains it."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


def append_token(client: str, number: int) -> str:
    return f"<{client}.{number}>"


def duplicated_tokens(value: str) -> list[str]:
    """Appended values that occur more than once in ``value``, sorted."""
    if value.count("<") < 2:
        return []
    counts = Counter(APPEND_TOKEN.findall(value))
    return sorted(token for token, count in counts.items() if count > 1)


class SafetyMonitor:
    """The per-step checks; the world calls these hooks as effects happen."""

    __slots__ = ("answered", "n3_copies", "permits", "views")

    def __init__(self) -> None:
        self.views: dict[int, View] = {}
        self.answered: dict[int, str] = {}
        self.permits: Callable[[str], bool] = _never
        """Whether N3 permits a second copy of this appended value (the world decides)."""
        self.n3_copies: set[str] = set()

    def view_issued(self, view: View) -> None:
        known = self.views.setdefault(view.number, view)
        if known != view:
            raise InvariantViolation(
                "view-issued-once",
                f"view {view.number} issued twice: {known.describe()} and {view.describe()}",
            )

    def primary_answered(self, replica: str, view_number: int) -> None:
        first = self.answered.setdefault(view_number, replica)
        if first != replica:
            raise InvariantViolation(
                "one-primary-per-view",
                f"{first} and {replica} both answered clients as primary of view {view_number}",
            )
        issued = self.views.get(view_number)
        if issued is None or issued.primary != replica:
            what = "no such view was issued" if issued is None else issued.describe()
            raise InvariantViolation(
                "one-primary-per-view",
                f"{replica} answered a client in view {view_number}, but {what}",
            )

    def unpermitted(self, duplicates: list[str]) -> list[str]:
        """The duplicated tokens N3 does not permit (the permitted ones are remembered)."""
        if not duplicates:
            return duplicates
        permitted = [token for token in duplicates if self.permits(token)]
        self.n3_copies.update(permitted)
        return [token for token in duplicates if token not in permitted]

    def view_number_moved(self, node: str, before: int, after: int) -> None:
        raise InvariantViolation(
            "view-number-monotonic", f"{node}'s view number went from {before} back to {after}"
        )

    def value_observed(self, where: str, key: str, value: str | None) -> None:
        if value is None:
            return
        duplicates = self.unpermitted(duplicated_tokens(value))
        if duplicates:
            raise InvariantViolation(
                "append-at-most-once",
                f"{where}: key {key!r} holds {', '.join(duplicates)} more than once: {value!r}",
            )


def _never(token: str) -> bool:
    del token
    return False


def unavailable_as_documented(
    view_service: ViewService,
    replicas: dict[str, Replica | None],
    cut_off: frozenset[str] = frozenset(),
) -> str | None:
    """Why the cluster may legitimately stop (N1: ``lost_members``; N2: a view service that lost
    its state heard of a newer view and waits for the operator), or None if L4 promises
    liveness."""
    why = lost_members(view_service, replicas)
    if why is not None:
        return why
    if replicas and all(replica is None for replica in replicas.values()):
        return "no server runs: each one refused to start (N1)"
    why = primary_cut_off(view_service, replicas, cut_off)
    if why is not None:
        return why
    waiting = view_service.waiting()
    return waiting if "(N2)" in waiting else None


def primary_cut_off(
    view_service: ViewService, replicas: dict[str, Replica | None], cut_off: frozenset[str]
) -> str | None:
    """N5: the view's primary still runs, the same process, but the service judges it failed
    because it is cut off from it for good (``cut_off``: the servers a lasting cut keeps from
    the service; a primary merely late to ping is not excused), and no backup of the view
    reaches the service: none can be
    promoted or report the fence V15 needs, so nobody may take over until the cut heals (found
    with V17: an idle server with other limits may not fill the view the service formed when it
    replaced the backup, so that view had none)."""
    view = view_service.view
    if view.primary not in cut_off or view_service.member_ok(view.primary):
        return None
    replica = replicas.get(view.primary)
    known = view_service.member_incarnations.get(view.primary)
    if replica is None or (known is not None and known != replica.incarnation):
        return None  # lost, not cut off: N1 decides
    if any(view_service.member_ok(backup) for backup in view.backups):
        return None
    return (
        f"the primary of {view.describe()} is cut off from the view service and no backup "
        "of the view reaches it (N5)"
    )


def lost_members(view_service: ViewService, replicas: dict[str, Replica | None]) -> str | None:
    """Why the current view is unavailable as documented (N1), or None if L4 promises liveness.

    A member is *lost* when the process the view service put into the view is gone: nothing runs
    under its name, or what runs is another incarnation. The cluster may legitimately stop when
    the primary is lost and every backup is absent, lost, or not known to hold the state (not
    synced for this view, not carried complete from the view before (V14), and the view not
    acknowledged). A member that restarted with a disk complete for
    the view (``durable_view``) is not lost: the view service may make it primary (V12), unless
    that disk holds another cluster's state (V16).
    """
    view = view_service.view
    if view.primary is None:
        return None

    def lost(name: str) -> bool:
        replica = replicas.get(name)
        if replica is None:
            return True
        known = view_service.member_incarnations.get(name)
        return known is not None and known != replica.incarnation

    if not lost(view.primary):
        return None
    for member in view.members():
        replica = replicas.get(member)
        if (
            replica is not None
            and replica.durable
            and replica.durable_view == view.number
            and replica.cluster_id in (NO_CLUSTER, view_service.cluster_id)
        ):
            return None  # V12: restarted with a disk complete for the view, it can take over
    live = [backup for backup in view.backups if not lost(backup)]
    for backup in live:
        replica = replicas[backup]
        assert replica is not None
        if (
            view_service.acknowledged
            or replica.synced_view == view.number
            or backup in view_service.carried
        ):
            return None
    if live:
        return f"the primary of {view.describe()} was lost and no backup held the state (N1)"
    return f"every member of {view.describe()} was lost (N1)"
