"""``pbkv cluster up --resume``: start a stopped durable cluster again, as it was.

Theory of operation. The ``down`` of a durable cluster (``up --durable``) keeps its state file
as the stopped record ``DIR/cluster.stopped.json`` (``pbkv.cluster.state.keep_stopped``): each
process's name, kind, address and ports, its exact command line (data directory, fsync policy,
secret and TLS files, etcd endpoints and prefix) and the ``PBKV_<COMMAND>_*`` settings it was
first started with. ``resume`` starts those processes again in the recorded order, through the
path ``up`` takes (``manager.start_and_wait``: etcd members, the view service, then each server
once the one before pinged, then a serving view), on the same data directories and ports. Each
server recovers its disk and the view service its view (``DIR/viewserver.data``, or etcd's
members' data in ``DIR/etcd``), so the cluster serves every key it held. A state file whose
processes all died (a host reboot, a power cut) is a stopped cluster too: it becomes the stopped
record first.

Resuming never deletes nor rewrites data: logs are appended to, the secret and certificates are
used as they are. The stopped record goes only once the cluster serves; a failed resume stops
what it started (as a failed ``up`` does) and keeps the record, so it can be tried again.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pbkv.cluster import credentials, data_dirs, manager, processes
from pbkv.cluster.state import (
    STOPPED_FILE_NAME,
    ClusterState,
    ProcessRecord,
    keep_stopped,
    load_state,
    load_stopped,
    remove_stopped,
    state_path,
    stopped_path,
)
from pbkv.cluster.targets import ClusterError


def _quiet(_: str) -> None:
    pass


def resume(
    directory: Path,
    timeout_s: float = manager.STARTUP_TIMEOUT_S,
    progress: manager.Progress = _quiet,
) -> ClusterState:
    """Start the durable cluster stopped in ``directory`` again: the same processes with the
    same command lines, data directories and ports; return once a view serves, as ``up`` does.

    Args:
        directory: the cluster directory ``up --durable`` and ``down`` used.
        timeout_s: how long to wait for a serving view.
        progress: called with one line per step.

    Returns:
        The state of the running cluster (also in ``DIR/cluster.json``).

    Raises:
        ClusterError: a cluster runs in ``directory``; it holds no stopped durable cluster, or
            one whose servers kept no data; a recorded port is taken; or the cluster did not
            come up in time (what was started is stopped again; the stopped record and every
            data file stay).
        StateError: a state file or the stopped record is damaged.
    """
    stopped = stopped_cluster(directory)
    plans = [_planned(record) for record in stopped.processes]
    _refuse_taken_ports(plans)
    manager.renew_certificates(stopped, ca_too=True)
    state = manager.start_and_wait(replace(stopped, processes=()), plans, timeout_s, progress)
    remove_stopped(directory)
    return state


def stopped_cluster(directory: Path) -> ClusterState:
    """The stopped durable cluster of ``directory`` (a state file whose processes all died is
    kept as the stopped record first).

    Raises:
        ClusterError: a cluster runs in ``directory``, or there is no stopped durable cluster
            with data to resume.
    """
    manager.refuse_if_running(directory)
    if state_path(directory).exists():
        _refuse_in_memory(load_state(directory))
        keep_stopped(directory)  # every process of it died: it is a stopped cluster
    if not stopped_path(directory).exists():
        raise ClusterError(
            f"no stopped durable cluster in {directory} (no {STOPPED_FILE_NAME}): nothing to "
            f"resume; start one with `pbkv cluster up --durable --dir {directory}`"
        )
    stopped = load_stopped(directory)
    _refuse_in_memory(stopped)
    if not data_dirs.data_holders(directory):
        raise ClusterError(
            f"{data_dirs.servers_data_dir(directory)} holds no server's data: nothing to resume; "
            f"start a new cluster with `pbkv cluster up --durable --fresh --dir {directory}`"
        )
    return stopped


def _refuse_in_memory(state: ClusterState) -> None:
    if state.fsync is None:
        raise ClusterError(
            f"the cluster recorded in {state.directory} kept its data in memory only (it was "
            "not started with --durable) and none of its processes runs: nothing to resume; "
            f"start a new one with `pbkv cluster up --dir {state.directory}`"
        )


def _planned(record: ProcessRecord) -> ProcessRecord:
    """``record`` to start again: no pid yet, and without the ``--repair`` that ``restart
    --repair`` gives one start only."""
    argv = tuple(arg for arg in record.argv if arg != manager.REPAIR_FLAG)
    return replace(record, pid=0, started_at=0.0, argv=credentials.with_accept_file(argv))


def _refuse_taken_ports(plans: list[ProcessRecord]) -> None:
    """Before anything starts: every recorded port is free (a process's address is its name in
    the protocol, so a resumed cluster cannot move)."""
    for record in plans:
        for port in manager.ports_of(record):
            if port and not processes.port_free(manager.HOST, port):
                raise ClusterError(
                    f"port {port} (of {record.name}) is already in use, and a resumed cluster "
                    "listens where it did: stop what holds it and resume again"
                )
