"""A snapshot of a running cluster: every process's state, role, view, keys and last ping.

Theory of operation: the view service is asked for its status (the current view, whether it is
acknowledged, and each server's last ping); every live server is asked for a one-key ``Dump``
page (its own role, view and key count) in parallel, with a short timeout, because a paused or
partitioned server simply does not answer and that must not stall the table. Failovers are
counted from the view service's own log: a ``view_change`` whose primary differs from the
previous, non-empty primary.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pbkv.cluster import processes
from pbkv.cluster.logs import LogEvent, read_log
from pbkv.cluster.rpc import NoAnswer, dump_page, viewserver_status
from pbkv.cluster.state import ClusterState, ProcessRecord
from pbkv.core.messages import DumpReply, View, ViewServiceStatus
from pbkv.runtime.config import TICK_INTERVAL_S

STATUS_TIMEOUT_S: Final = 0.5


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
    """

    record: ProcessRecord
    state: str
    role: str
    own_view: int | None = None
    own_role: str | None = None
    phase: str | None = None
    keys: int | None = None
    last_ping_age_s: float | None = None

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
            "own_role": self.own_role,
            "phase": self.phase,
            "keys": self.keys,
            "last_ping_age_s": self.last_ping_age_s,
            "admin_port": record.admin_port,
            "metrics_port": record.metrics_port,
            "log_file": record.log_file,
            "restarts": record.restarts,
        }


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The whole cluster as seen right now; ``view`` is None when the view service is down."""

    directory: Path
    viewserver: str
    view: View | None
    acknowledged: bool
    nodes: tuple[NodeStatus, ...]
    failovers: int
    views_created: int

    def to_json(self) -> dict[str, Any]:
        view = self.view
        return {
            "directory": str(self.directory),
            "viewserver": self.viewserver,
            "view": None
            if view is None
            else {
                "number": view.number,
                "primary": view.primary,
                "backup": view.backup,
                "backups": list(view.backups),
                "acknowledged": self.acknowledged,
            },
            "failovers": self.failovers,
            "nodes": [node.to_json() for node in self.nodes],
        }


def count_failovers(events: list[LogEvent]) -> int:
    """View changes that replaced a primary (the view service's ``view_change`` lines)."""
    count = 0
    for event in events:
        if event.event != "view_change":
            continue
        previous = str(event.fields.get("previous_primary", "-"))
        if previous not in ("-", "", "None") and previous != str(event.fields.get("primary")):
            count += 1
    return count


def collect(state: ClusterState) -> ClusterStatus:
    """Ask every process about itself; never raises for a node that does not answer."""
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
    failovers = 0
    for record in viewservers:  # with etcd, each leader logged the view changes it made
        failovers += count_failovers(read_log(Path(record.log_file), "viewserver"))
    return ClusterStatus(
        directory=state.directory,
        viewserver=state.viewserver,
        view=view,
        acknowledged=bool(vs_status and vs_status.acknowledged),
        nodes=nodes,
        failovers=failovers,
        views_created=vs_status.views_created if vs_status else 0,
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
        own_view = view.number if view and role != "vs-follower" else None
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
    if vs_status is not None:
        for server in vs_status.servers:
            if server.name == record.address:
                age = round(server.last_ping_age_ticks * TICK_INTERVAL_S, 2)
    return NodeStatus(
        record,
        state,
        role,
        own_view=dump.view.number if dump else None,
        own_role=dump.role if dump else None,
        phase=dump.phase if dump else None,
        keys=dump.total_keys if dump else None,
        last_ping_age_s=age,
    )
