"""Naming the processes of a local cluster and finding their logs: what ``pbkv cluster kill
primary``, ``logs s2`` or the dashboard's buttons resolve before they act.

Theory of operation. A target is a manager name (``s1``), an address, ``viewserver`` (on a view
service replicated on etcd: whichever member leads now, asked with a status request; for
``restart`` and ``resume``, the one member that is down), or a role
(``primary`` / ``backup``) looked up in the view the view service holds at this moment: the
manager never decides roles, it asks. Logs are files in ``DIR/logs`` named after the process,
readable after ``down`` too; the cluster layer's own events (the faults it injected) go to
``logs/cluster.log`` so that they show in the same timeline as their effects.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from pbkv.cluster import processes
from pbkv.cluster.logs import CLUSTER_LOG_NAME, CLUSTER_SOURCE, record_cluster_event
from pbkv.cluster.processes import ProcessState
from pbkv.cluster.rpc import NoAnswer, get_view
from pbkv.cluster.state import VIEWSERVER_NAME, ClusterState, ProcessRecord, logs_dir
from pbkv.core.messages import StatusRequest, View
from pbkv.errors import PbkvError

ROLE_TARGETS: Final = ("primary", "backup")
VIEWSERVER_ALIASES: Final = ("viewserver", "vs")


class ClusterError(PbkvError):
    """A cluster command cannot do what was asked; the message says why and what to do
    (exit 4, refused)."""

    exit_code = 4


class ClusterUnavailable(ClusterError):
    """What a target names cannot be told now: the view service (or every member of a
    replicated one) did not answer in time (exit 3, unavailable, as for any command; the command
    may be repeated)."""

    exit_code = 3


class ClusterFailed(ClusterError):
    """A process did not start or did not become ready (exit 5, failed)."""

    exit_code = 5


def resolve(state: ClusterState, target: str) -> ProcessRecord:
    """The process ``target`` names: a manager name (``s1``), an address, ``viewserver`` (or
    ``vs``), or ``primary`` / ``backup`` of the view the view service holds now.

    Raises:
        ClusterError: unknown name, or no such role in the current view;
            ``ClusterUnavailable`` when the view service does not answer.
    """
    if target in VIEWSERVER_ALIASES:
        target = VIEWSERVER_NAME
        if "," in state.viewserver:
            return _leader(state)
    if target in ROLE_TARGETS:
        try:
            view = get_view(state.viewserver)
        except NoAnswer as error:
            raise ClusterUnavailable(f"cannot tell who is {target}: {error}") from None
        address = view.primary if target == "primary" else view.backup
        if address is None:
            raise ClusterError(f"view {view.number} has no {target}")
        found = state.find(address)
        if found is None:
            raise ClusterError(f"the {target} {address} is not a process of this cluster")
        return found
    found = state.find(target)
    if found is None:
        names = ", ".join(p.name for p in state.processes)
        raise ClusterError(
            f"unknown target {target!r}: expected one of {names}, an address, primary or backup"
        )
    return found


def resolve_stopped(state: ClusterState, target: str, stopped: ProcessState) -> ProcessRecord:
    """``resolve`` for the commands that bring a stopped process back (``restart``: a dead one,
    ``resume``: a paused one). On a view service replicated on etcd, ``viewserver`` names a
    member in that state when there is one, the first if several (``kill viewserver`` stopped
    it: another leads by now, and restarting that one would stop the only member serving), and
    the leader otherwise.

    Raises:
        ClusterError: as ``resolve``.
    """
    if target in VIEWSERVER_ALIASES and "," in state.viewserver:
        members = [
            record
            for record in state.viewservers()
            if processes.process_state(record.pid, record.argv) == stopped
        ]
        if members:
            return members[0]
    return resolve(state, target)


def _leader(state: ClusterState) -> ProcessRecord:
    """The view service member that leads now (``viewserver`` on a replicated one)."""
    from pbkv.runtime.group import call_view_service_blocking, split_members
    from pbkv.wire import MESSAGES

    members = split_members(state.viewserver)
    try:
        member, _ = call_view_service_blocking(members, StatusRequest(), MESSAGES, 1.0)
    except OSError as error:
        raise ClusterUnavailable(f"no view service member leads now: {error}") from None
    found = state.find(member)
    if found is None:
        raise ClusterError(f"the leader {member} is not a process of this cluster")
    return found


def current_view(state: ClusterState, timeout_s: float = 1.0) -> View | None:
    try:
        return get_view(state.viewserver, timeout_s)
    except NoAnswer:
        return None


def record_event(state: ClusterState, event: str, **fields: object) -> None:
    """Write a fault the cluster layer is about to inject into ``logs/cluster.log``, so that
    ``pbkv cluster logs`` shows it in the same timeline as its effects."""
    record_cluster_event(logs_dir(state.directory), event, time.time(), **fields)


def logs_on_disk(directory: Path) -> dict[str, Path]:
    """``{name: log file}`` of every log in ``DIR/logs`` (also after ``down``), view service
    first, then servers in name order."""
    files = sorted(
        logs_dir(directory).glob("*.log"),
        key=lambda p: (p.stem != VIEWSERVER_NAME, len(p.stem), p.stem),
    )
    return {path.stem: path for path in files}


def names_on_disk(directory: Path, logs: dict[str, Path], targets: Iterable[str]) -> list[str]:
    """``targets`` of ``pbkv cluster logs`` after ``down`` (``logs``: ``logs_on_disk``): a
    process's name, ``vs``, or an address (``HOST:PORT``, matched against what the lines say).

    Raises:
        ClusterError: a role (no view to name its holder now that the cluster is down), or a
            name with no log: one line naming the logs there are (a typo used to print
            nothing at all, exit 0).
    """
    names = []
    for target in targets:
        name = VIEWSERVER_NAME if target in VIEWSERVER_ALIASES else target
        known = ", ".join(logs)
        if target in ROLE_TARGETS:
            raise ClusterError(
                f"the cluster in {directory} is down, so no view names its {target}: name a "
                f"process ({known}) or an address"
            )
        if name not in logs and name != CLUSTER_SOURCE and ":" not in name:
            raise ClusterError(f"no log of {target} in {logs_dir(directory)} (there are: {known})")
        names.append(name)
    return names


def log_files(state: ClusterState) -> dict[str, Path]:
    """``{name: log file}`` of every process, view service first, then the cluster layer's own
    event log (the faults it injected) when there is one."""
    files = {p.name: Path(p.log_file) for p in state.processes}
    events = logs_dir(state.directory) / CLUSTER_LOG_NAME
    if events.exists():
        files[CLUSTER_SOURCE] = events
    return files
