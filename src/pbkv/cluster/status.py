"""A snapshot of a running cluster: every process's state, role, view, keys and last ping.

Theory of operation: the view service is asked for its status (the current view, whether it is
acknowledged, and each server's last ping); every live server is asked for a one-key ``Dump``
page (its own role, view and key count) in parallel, with a short timeout, because a paused or
partitioned server simply does not answer and that must not stall the table. Failovers are
counted from the view service's own log: a ``view_change`` whose primary differs from the
previous, non-empty primary. A loop that asks again and again (``status --watch``, the
dashboard) keeps a ``FailoverCounter``, which reads each log only where it grew since it last
asked (and parses only its ``view_change`` lines): reading the whole log at every refresh would
cost the log's size each time, quadratic in it over a long run.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pbkv.cluster import processes, rotation
from pbkv.cluster.logs import LogEvent, LogFollower
from pbkv.cluster.rpc import NoAnswer, dump_page, viewserver_status
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.core.messages import (
    NO_CLUSTER,
    NO_VIEW_NUMBER,
    DumpReply,
    View,
    ViewServiceStatus,
    cluster_label,
)
from pbkv.runtime.config import TICK_INTERVAL_S

STATUS_TIMEOUT_S: Final = 0.5
FAILOVER_EVENTS: Final = ("view_change",)
"""The only events of a view service log that failovers are counted from."""
NO_VIEW_YET: Final = "no view yet"
"""What a node whose own view is number 0 (it has learned none since it started) holds."""


def view_note(own_view: int | None, kind: str, restarts: int | None, health: str = "") -> str:
    """Words for an own view that is no view (number 0), "" for a real one or no answer.

    A view number 0 means the node has not learned a view since it started (restarted, just
    added, or its view service silent): "0" is no number a reader should compare.

    Args:
        own_view: the view number the node answered with, None if it did not answer.
        kind: ``server`` or ``viewserver``.
        restarts: how many times the cluster manager restarted it (None: not known).
        health: the view service's complaint about it; it already says why (no guess added).
    """
    if own_view != NO_VIEW_NUMBER:
        return ""
    if kind == "viewserver":
        return NO_VIEW_YET  # what forms view 1 is the summary's to say (render)
    if health or restarts is None:
        return NO_VIEW_YET
    return f"{NO_VIEW_YET} ({'restarting' if restarts else 'starting'})"


def view_summary_note(view: View, viewserver: str, service: ViewServiceStatus | None) -> str:
    """``no_view_summary`` for a view numbered 0 (none formed yet), "" for a real view: the
    ``note`` beside a view's number in every ``--json`` and on the dashboard."""
    return no_view_summary(viewserver, service) if view.number == NO_VIEW_NUMBER else ""


def no_view_summary(viewserver: str, service: ViewServiceStatus | None) -> str:
    """Words for a current view numbered 0: the view service has formed no view yet (during
    ``up``), and what forms view 1 or why it cannot. ``pbkv cluster status``, ``pbkv status``
    and the dashboard say it with these words.

    Args:
        viewserver: the view service's address (its members' addresses, with etcd).
        service: its status (None when it did not answer); a fresh service listens for a dead
            interval before it forms view 1 (V11), and says why it waits when it does.
    """
    if service is not None and service.waiting:
        return f"{NO_VIEW_YET}: {service.waiting}"
    if service is None or not service.servers:
        return (
            f"{NO_VIEW_YET}: no server has pinged the view service ({viewserver}); the first "
            "one to ping becomes primary of view 1, once the service has listened for a dead "
            "interval since it started (V11)"
        )
    return (
        f"{NO_VIEW_YET}: the view service ({viewserver}) forms view 1, with the first server "
        "that pinged it as primary, once it has listened for a dead interval since it started "
        "(V11)"
    )


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One process as seen right now.

    Attributes:
        record: what the manager recorded about it.
        state: ``alive``, ``paused`` or ``dead`` (from the operating system).
        role: ``viewserver``, or for a server its role in the view service's current view
            (``primary``, ``backup``, ``idle``), ``-`` when dead.
        own_view: the view number the node itself holds (None if it did not answer).
        own_role: the role the node itself believes it has (None if it did not answer).
        phase: its replica phase (``serving``, ``synced``, ``stalled`` ...) or None.
        keys: keys it holds, or None.
        last_ping_age_s: seconds since the view service last heard from it (servers only).
        health: why the server cannot serve or make progress, as the view service heard it or
            judged it (e.g. another cluster's disk, V16); "" when fine or not known.
    """

    record: ProcessRecord
    state: str
    role: str
    own_view: int | None = None
    own_role: str | None = None
    phase: str | None = None
    keys: int | None = None
    last_ping_age_s: float | None = None
    health: str = ""

    @property
    def own_view_note(self) -> str:
        """``no view yet (restarting)`` and the like when ``own_view`` is 0, else ""."""
        return view_note(self.own_view, self.record.kind, self.record.restarts, self.health)

    def to_json(self) -> dict[str, Any]:
        record = self.record
        return {
            "name": record.name,
            "kind": record.kind,
            "address": record.address,
            "pid": record.pid,
            "role": self.role,
            "state": self.state,
            "own_view": self.own_view,
            "own_view_note": self.own_view_note,
            "own_role": self.own_role,
            "phase": self.phase,
            "keys": self.keys,
            "last_ping_age_s": self.last_ping_age_s,
            "health": self.health,
            "admin_port": record.admin_port,
            "metrics_port": record.metrics_port,
            "log_file": record.log_file,
            "restarts": record.restarts,
        }


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The whole cluster as seen right now; ``view`` is None when the view service is down.

    Attributes:
        service: the view service's own status (None when it did not answer).
    """

    directory: Path
    viewserver: str
    view: View | None
    acknowledged: bool
    nodes: tuple[NodeStatus, ...]
    failovers: int
    views_created: int
    service: ViewServiceStatus | None = None
    rotation: str = ""
    """A secret rotation that stopped part way (``pbkv cluster rotate-secret``): what to do;
    "" when none did."""

    @property
    def cluster_id(self) -> int:
        """The cluster the view service serves (V16; 0 while it has no view or no answer)."""
        return self.service.cluster_id if self.service is not None else NO_CLUSTER

    def to_json(self) -> dict[str, Any]:
        view = self.view
        return {
            "directory": str(self.directory),
            "viewserver": self.viewserver,
            "cluster": cluster_label(self.cluster_id),
            "view": None
            if view is None
            else {
                "number": view.number,
                "note": view_summary_note(view, self.viewserver, self.service),
                "primary": view.primary,
                "backup": view.backup,
                "backups": list(view.backups),
                "acknowledged": self.acknowledged,
            },
            "failovers": self.failovers,
            "nodes": [node.to_json() for node in self.nodes],
            "secret_rotation": self.rotation,
        }


def count_failovers(events: Iterable[LogEvent]) -> int:
    """View changes that replaced a primary (the view service's ``view_change`` lines)."""
    count = 0
    for event in events:
        if event.event != "view_change":
            continue
        previous = str(event.fields.get("previous_primary", "-"))
        if previous not in ("-", "", "None") and previous != str(event.fields.get("primary")):
            count += 1
    return count


@dataclass(slots=True)
class _FollowedLog:
    """One view service log: its reader, which file it is, and the failovers read so far."""

    follower: LogFollower
    identity: tuple[int, int]
    failovers: int = 0


class FailoverCounter:
    """Failovers counted from view service logs, each read only where it grew since the
    previous count (see the module docstring). Not thread-safe: one loop asks."""

    SOURCE: Final = "viewserver"

    def __init__(self) -> None:
        self._logs: dict[Path, _FollowedLog] = {}
        self._created_at: float | None = None

    def count(self, state: ClusterState) -> int:
        """The failovers the view service logs of ``state`` record (with etcd, each leader
        logged the view changes it made), reading what they gained since the last count.

        A new cluster in the directory (another ``created_at``: ``up`` started its logs
        anew) and a log replaced or truncated otherwise are read again from their start; a
        log no longer named is forgotten.
        """
        if state.created_at != self._created_at:
            self._logs, self._created_at = {}, state.created_at
        paths = [Path(record.log_file) for record in state.viewservers()]
        followed = {path: self._caught_up(path) for path in paths}
        self._logs = {path: log for path, log in followed.items() if log is not None}
        return sum(log.failovers for log in self._logs.values())

    def _caught_up(self, path: Path) -> _FollowedLog | None:
        try:
            info = path.stat()
        except OSError:
            return None
        identity = (info.st_dev, info.st_ino)
        log = self._logs.get(path)
        if (
            log is None
            or log.identity != identity
            or info.st_size < log.follower.offsets.get(self.SOURCE, 0)
        ):
            follower = LogFollower({self.SOURCE: path}, events=FAILOVER_EVENTS)
            log = _FollowedLog(follower, identity)
        log.failovers += count_failovers(log.follower.catch_up())
        return log


def collect(state: ClusterState, failovers: FailoverCounter | None = None) -> ClusterStatus:
    """Ask every process about itself; never raises for a node that does not answer.

    Args:
        state: the cluster's record.
        failovers: the counter a loop keeps from one call to the next, so that each call reads
            only what the view service logs gained; None: they are read once, from the start.

    Returns:
        The cluster as seen now.
    """
    states = {p.name: processes.process_state(p.pid, p.argv) for p in state.processes}
    vs_status: ViewServiceStatus | None = None
    viewservers = state.viewservers()
    if any(states[p.name] == "alive" for p in viewservers):
        try:
            vs_status = viewserver_status(state.viewserver, STATUS_TIMEOUT_S)
        except NoAnswer:
            vs_status = None
    leader = leader_of(state) if len(viewservers) > 1 and vs_status is not None else None
    askable = [p for p in state.servers() if states[p.name] == "alive"]
    dumps: dict[str, DumpReply | None] = {}
    if askable:
        with ThreadPoolExecutor(max_workers=len(askable)) as pool:
            for record, reply in zip(askable, pool.map(_dump_header, askable), strict=True):
                dumps[record.name] = reply
    view = vs_status.view if vs_status else None
    nodes = tuple(
        _node(p, states[p.name], view, vs_status, dumps.get(p.name), leader)
        for p in state.processes
    )
    counter = failovers if failovers is not None else FailoverCounter()
    return ClusterStatus(
        directory=state.directory,
        viewserver=state.viewserver,
        view=view,
        acknowledged=bool(vs_status and vs_status.acknowledged),
        nodes=nodes,
        failovers=counter.count(state),
        views_created=vs_status.views_created if vs_status else 0,
        service=vs_status,
        rotation=rotation.stopped_note(state.directory),
    )


def leader_of(state: ClusterState) -> str | None:
    """The address of the view service member that leads now, if one answers."""
    from pbkv.core.messages import StatusRequest
    from pbkv.runtime.group import call_view_service_blocking, split_members
    from pbkv.wire import MESSAGES

    try:
        members = split_members(state.viewserver)
        return call_view_service_blocking(members, StatusRequest(), MESSAGES, STATUS_TIMEOUT_S)[0]
    except OSError:
        return None


def _dump_header(record: ProcessRecord) -> DumpReply | None:
    try:
        return dump_page(record.address, 0, limit=0, timeout_s=STATUS_TIMEOUT_S)
    except NoAnswer:
        return None


def _node(
    record: ProcessRecord,
    state: str,
    view: View | None,
    vs_status: ViewServiceStatus | None,
    dump: DumpReply | None,
    leader: str | None = None,
) -> NodeStatus:
    if record.kind == "etcd":
        return NodeStatus(record, state, "etcd")
    if record.kind == "viewserver":
        role = "viewserver"
        if leader is not None:
            role = "vs-leader" if record.address == leader else "vs-follower"
            role = "-" if state == "dead" else role
        knows = state != "dead" and role != "vs-follower"  # a dead member knows no view now
        own_view = view.number if view and knows else None
        return NodeStatus(record, state, role, own_view=own_view)
    role = "-"
    if view is not None and (state != "dead" or record.address in view.members()):
        role = (
            "primary"
            if record.address == view.primary
            else "backup"
            if record.address in view.backups
            else "idle"
        )
    age: float | None = None
    health = ""
    if vs_status is not None:
        for server in vs_status.servers:
            if server.name == record.address:
                age = round(server.last_ping_age_ticks * TICK_INTERVAL_S, 2)
                health = server.health
    return NodeStatus(
        record,
        state,
        role,
        own_view=dump.view.number if dump else None,
        own_role=dump.role if dump else None,
        phase=dump.phase if dump else None,
        keys=dump.total_keys if dump else None,
        last_ping_age_s=age,
        health=health,
    )
