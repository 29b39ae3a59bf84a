"""The local cluster manager: start, inspect, break and stop a cluster of real processes.

Theory of operation: ``up`` starts a view service and N servers as detached processes, one at a
time, waiting for each server's first ping before starting the next, so the roles are
predictable (``s1`` becomes primary of view 1, ``s2`` its backup, the rest idle). It then waits
for a view with a primary and a backup that the primary has acknowledged (the backup holds the
state: the cluster serves). Everything it started is recorded in the state file
(``pbkv.cluster.state``) before anything else can go wrong, so ``down`` can always stop it by
pid; a failed ``up`` stops what it started itself. The manager never decides anything about the
protocol: ``primary`` and ``backup`` are whatever the view service says right now. The ``down`` of
a durable cluster keeps its state file as the stopped record that ``up --resume``
(``pbkv.cluster.resume``) starts the same processes again from, through ``start_and_wait``.

Security: every process gets the cluster's secret (``pbkv.cluster.credentials``: the file
``auth-token`` of the directory, created on the first ``up``), and with ``tls`` a certificate of
a CA generated for this cluster; the manager's own requests present the same.

Ports: with ``base_port`` P the view service listens on P and server ``sK`` on P+K; admin ports
are P+100+K (the view service's P+100) and metrics ports P+200+K. With ``base_port`` 0 every
port is picked free. Every port is checked before anything is spawned.

With ``etcd`` (``pbkv cluster up --etcd``) the view service is replicated: three etcd members
(``etcd1``..``etcd3``, free ports, data in ``DIR/etcd/``) start first, then three view service
processes (``viewserver``, ``viewserver2``, ``viewserver3``, ports P, P+50, P+51 and their admin
and metrics ports at +100 and +200) sharing the prefix ``/pbkv/cluster-P``; the cluster's view
service address is their list ``A,B,C``, and ``viewserver`` as a target names whichever leads.
"""

from __future__ import annotations

import datetime
import itertools
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from pbkv.cluster import credentials, processes, rotation, startup, web
from pbkv.cluster.data_dirs import (
    refuse_durable_data,
    server_data_dir,
    servers_data_dir,
    viewserver_data_dir,
)
from pbkv.cluster.etcd import (
    ETCD_DIR_NAME,
    ETCD_MEMBERS,
    endpoints_of,
    etcd_records,
    member_record,
    viewserver_on_etcd,
)
from pbkv.cluster.reloads import reload_running
from pbkv.cluster.state import (
    VIEWSERVER_NAME,
    ClusterState,
    ProcessRecord,
    StateError,
    keep_stopped,
    load_state,
    logs_dir,
    remove_state,
    remove_stopped,
    save_state,
    state_path,
)
from pbkv.cluster.targets import ClusterError, record_event
from pbkv.runtime.config import Timing

HOST: Final = "127.0.0.1"
BASE_PORT_DEFAULT: Final = 7000
ADMIN_PORT_OFFSET: Final = 100
METRICS_PORT_OFFSET: Final = 200
SERVERS_MAX: Final = 99
STARTUP_TIMEOUT_S: Final = 15.0
PORT_RACE_ATTEMPTS: Final = 3
ETCD_VIEWSERVERS: Final = 3
EXTRA_VIEWSERVER_OFFSET: Final = 50

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """How ``up`` starts a cluster.

    Attributes:
        directory: state, logs and everything else of this cluster.
        servers: how many servers to start (at least 1; 2 for a backup).
        base_port: first port of the range (see the module docstring), 0 for free ports.
        ping_interval_s: passed to every process (``--ping-interval``).
        dead_pings: passed to the view service (``--dead-pings``).
        log_format: ``human`` or ``json`` event lines.
        startup_timeout_s: how long ``up`` waits for a serving view.
        etcd: replicate the view service on a local 3-member etcd (see the module docstring).
        tls: also generate a CA and certificates, and run every connection over mutual TLS.
        fsync: keep every server's state on disk (``DIR/data/sN``) with this fsync policy;
            None keeps it in memory only.
        backups: K, the most backups a view names (the view service's ``--backups``).
        read_leases: the view service grants the primary read leases (``--read-leases``).
        fresh: delete the data a previous durable cluster left in the directory; without it
            ``up`` refuses to start over such data.
        forget_after_s: the view service drops a server silent this long that holds no role
            (``--forget-after-s``; see ``check_forget_after``); None: the view service's own
            default.
    """

    directory: Path
    servers: int = 3
    base_port: int = BASE_PORT_DEFAULT
    ping_interval_s: float = 0.1
    dead_pings: int = 5
    log_format: str = "human"
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    etcd: bool = False
    tls: bool = False
    fsync: str | None = None
    backups: int = 1
    read_leases: bool = False
    fresh: bool = False
    forget_after_s: float | None = None


def _quiet(_: str) -> None:
    pass


def check_forget_after(
    ping_interval_s: float, dead_pings: int, forget_after_s: float | None
) -> None:
    """Refuse a ``--forget-after-s`` the view service would refuse at start (shorter than
    ``FORGET_AFTER_DEAD_INTERVALS_MIN`` dead intervals), by the view service's own rule.

    Raises:
        ConfigError: the view service's one line (exit 2, usage).
    """
    if forget_after_s is not None:
        Timing(
            ping_interval_s=ping_interval_s, dead_pings=dead_pings, forget_after_s=forget_after_s
        )


def pbkv_argv(*args: str) -> tuple[str, ...]:
    """The command line of a pbkv subcommand run by this interpreter."""
    return (sys.executable, "-m", "pbkv", *args)


# --- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ports:
    listen: int
    admin: int
    metrics: int


def _planned_ports(base_port: int, index: int, taken: set[int]) -> _Ports:
    """Ports of process ``index`` (0 = view service, K = server sK)."""
    if base_port:
        return _Ports(
            base_port + index,
            base_port + ADMIN_PORT_OFFSET + index,
            base_port + METRICS_PORT_OFFSET + index,
        )
    listen, admin, metrics = processes.free_ports(HOST, 3, exclude=taken)
    return _Ports(listen, admin, metrics)


def _check_ports(ports: _Ports, name: str) -> None:
    for port, purpose in ((ports.listen, ""), (ports.admin, " admin"), (ports.metrics, " metrics")):
        if not 0 < port < 65536:
            raise ClusterError(
                f"port {port} for {name}{purpose} is out of range; lower --base-port"
            )
        if not processes.port_free(HOST, port):
            raise ClusterError(
                f"port {port} (for {name}{purpose}) is already in use; "
                "choose another --base-port, or --base-port 0 for free ports"
            )


def _record(
    state: ClusterState, name: str, index: int, role: str, ports: _Ports, log_format: str
) -> ProcessRecord:
    address = f"{HOST}:{ports.listen}"
    common = (
        "--listen",
        address,
        "--ping-interval",
        f"{state.ping_interval_s:g}",
        "--admin-port",
        str(ports.admin),
        "--metrics-port",
        str(ports.metrics),
        "--log-format",
        log_format,
    )
    if index == 0:
        argv = pbkv_argv("viewserver", *common, *_viewserver_options(state))
    else:
        durable: tuple[str, ...] = ()
        if state.fsync is not None:
            data_dir = str(server_data_dir(state.directory, name))
            durable = ("--data-dir", data_dir, "--fsync", state.fsync)
        argv = pbkv_argv("server", *common, "--viewserver", state.viewserver, *durable)
    argv += credentials.node_args(state.directory, name)
    log_file = logs_dir(state.directory) / f"{name}.log"
    return ProcessRecord(
        name=name,
        kind="viewserver" if index == 0 else "server",
        role_at_start=role,
        address=address,
        pid=0,
        admin_port=ports.admin,
        metrics_port=ports.metrics,
        log_file=str(log_file),
        argv=argv,
        started_at=0.0,
        env=command_settings("viewserver" if index == 0 else "server"),
    )


def _viewserver_options(state: ClusterState) -> tuple[str, ...]:
    """The view service's own options, as ``state`` records them (``restart`` and ``up
    --resume`` reuse the command line, so they keep them)."""
    leases = ("--read-leases",) if state.read_leases else ()
    forget = (
        () if state.forget_after_s is None else ("--forget-after-s", f"{state.forget_after_s!r}")
    )
    data_dir = str(viewserver_data_dir(state.directory))
    counts = ("--dead-pings", str(state.dead_pings), "--backups", str(state.backups))
    return (*counts, "--data-dir", data_dir, *leases, *forget)


def command_settings(command: str) -> tuple[tuple[str, str], ...]:
    """The ``PBKV_<COMMAND>_*`` variables set now (options of that command's processes)."""
    prefix = f"PBKV_{command.upper()}_"
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(prefix)))


def _start(record: ProcessRecord) -> ProcessRecord:
    """Start it with its recorded command line and the settings it was first started with."""
    env = {**os.environ, **dict(record.env)} if record.env else None
    pid = processes.spawn(record.argv, Path(record.log_file), env)
    return replace(record, pid=pid, started_at=time.time())


# --- up / down --------------------------------------------------------------------------------


def running_processes(state: ClusterState) -> list[ProcessRecord]:
    """The recorded processes that still run (alive or paused)."""
    return [p for p in state.processes if processes.process_state(p.pid, p.argv) != "dead"]


def refuse_if_running(directory: Path) -> None:
    """Raises ``ClusterError`` when a process the state file of ``directory`` records runs."""
    if not state_path(directory).exists():
        return
    try:
        state = load_state(directory)
    except StateError:
        return
    running = running_processes(state)
    if running:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in running)
        raise ClusterError(
            f"a cluster is already running in {directory}: {names}; "
            f"stop it with `pbkv cluster down --dir {directory}` or use another --dir"
        )


def up(config: ClusterConfig, progress: Progress = _quiet) -> ClusterState:
    """Start a view service and ``config.servers`` servers; return once a view with a primary
    and a synced backup serves (or with one server: once it is primary).

    Raises:
        ClusterError: a cluster already runs in the directory, it holds a durable cluster's
            data and ``fresh`` is off, a port is taken, or the cluster did not come up in time
            (everything started is stopped again, by pid).
        ConfigError: ``forget_after_s`` is shorter than the view service accepts (nothing is
            started).
    """
    if not 1 <= config.servers <= SERVERS_MAX:
        raise ClusterError(f"--servers must be between 1 and {SERVERS_MAX}")
    check_forget_after(config.ping_interval_s, config.dead_pings, config.forget_after_s)
    if config.etcd and config.servers >= EXTRA_VIEWSERVER_OFFSET:
        raise ClusterError(f"with --etcd, --servers must be below {EXTRA_VIEWSERVER_OFFSET}")
    refuse_if_running(config.directory)
    refuse_durable_data(config.directory, config.fresh)
    attempts = PORT_RACE_ATTEMPTS if config.base_port == 0 else 1
    for attempt in range(1, attempts + 1):
        try:
            return _up_once(config, progress)
        except startup.PortTaken as error:
            if attempt == attempts:
                raise ClusterError(str(error)) from None
            progress(f"{error.record.name} lost a port to another process; retrying with others")
    raise AssertionError("unreachable")


def _up_once(config: ClusterConfig, progress: Progress) -> ClusterState:
    directory = config.directory
    _prepare_credentials(config)
    state, plans = _plan(config)
    for record in plans:
        if record.kind != "etcd":  # etcd's ports were drawn free
            _check_ports(_Ports(*ports_of(record)), record.name)
    start_new_logs(directory, plans)
    shutil.rmtree(viewserver_data_dir(directory), ignore_errors=True)  # and a new view
    shutil.rmtree(directory / ETCD_DIR_NAME, ignore_errors=True)
    shutil.rmtree(servers_data_dir(directory), ignore_errors=True)  # and empty servers
    remove_stopped(directory)  # nothing is left to resume
    return start_and_wait(state, plans, config.startup_timeout_s, progress)


def start_new_logs(directory: Path, plans: list[ProcessRecord]) -> None:
    """A new cluster starts new logs: each planned process's log empty, and nothing kept of the
    previous cluster's (the faults in ``cluster.log``, the log of a server it had and this one
    has not), so that ``pbkv cluster logs`` and the dashboard's timeline show this cluster's
    events only (``up --resume`` appends instead: it is the same cluster)."""
    logs = logs_dir(directory)
    logs.mkdir(parents=True, exist_ok=True)
    planned = {Path(record.log_file).resolve() for record in plans}
    for stale in logs.glob("*.log"):
        if stale.resolve() not in planned:
            stale.unlink(missing_ok=True)
    for record in plans:
        Path(record.log_file).write_bytes(b"")


def start_and_wait(
    state: ClusterState, plans: list[ProcessRecord], timeout_s: float, progress: Progress
) -> ClusterState:
    """Start ``plans`` in order into ``state`` (recorded in its state file as they start) and
    wait for a serving view; on failure stop what was started and remove the state file (no
    data is touched)."""
    try:
        return _start_all(state, plans, timeout_s, progress)
    except BaseException:
        directory = state.directory
        current = load_state(directory) if state_path(directory).exists() else state
        processes.stop(p.pid for p in current.processes if p.pid)
        remove_state(directory)
        raise


def _prepare_credentials(config: ClusterConfig) -> None:
    """The cluster's secret (kept across clusters in one directory; a new cluster accepts no
    second one, whatever a rotation of the one before left), and with ``tls`` a new CA; the
    tools of this process use them from now on."""
    directory = config.directory
    credentials.ensure_token(directory)
    rotation.forget(directory)
    shutil.rmtree(credentials.tls_dir(directory), ignore_errors=True)
    if config.tls:
        credentials.create_ca(directory)
    credentials.install(directory)


def _plan(config: ClusterConfig) -> tuple[ClusterState, list[ProcessRecord]]:
    taken: set[int] = set()
    vs_ports = _planned_ports(config.base_port, 0, taken)
    taken.update((vs_ports.listen, vs_ports.admin, vs_ports.metrics))
    members = [vs_ports]
    if config.etcd:
        for extra in range(ETCD_VIEWSERVERS - 1):
            ports = _planned_ports(config.base_port, EXTRA_VIEWSERVER_OFFSET + extra, taken)
            taken.update((ports.listen, ports.admin, ports.metrics))
            members.append(ports)
    state = ClusterState(
        directory=config.directory,
        viewserver=",".join(f"{HOST}:{ports.listen}" for ports in members),
        ping_interval_s=config.ping_interval_s,
        dead_pings=config.dead_pings,
        base_port=config.base_port,
        created_at=time.time(),
        fsync=config.fsync,
        backups=config.backups,
        read_leases=config.read_leases,
        forget_after_s=config.forget_after_s,
    )
    plans = [_record(state, VIEWSERVER_NAME, 0, "viewserver", vs_ports, config.log_format)]
    etcd_plans: list[ProcessRecord] = []
    if config.etcd:
        etcd_plans = etcd_records(state, taken)
        endpoints = endpoints_of(etcd_plans, config.directory)
        plans = [viewserver_on_etcd(plans[0], endpoints, config.base_port or members[0].listen)]
        for index, ports in enumerate(members[1:], start=2):
            record = _record(state, f"{VIEWSERVER_NAME}{index}", 0, "viewserver", ports, "human")
            plans.append(member_record(plans[0], record))
    for index in range(1, config.servers + 1):
        ports = _planned_ports(config.base_port, index, taken)
        taken.update((ports.listen, ports.admin, ports.metrics))
        role = "primary" if index == 1 else "backup" if index <= 1 + config.backups else "idle"
        plans.append(_record(state, f"s{index}", index, role, ports, config.log_format))
    return state, etcd_plans + plans


def _start_all(
    state: ClusterState, plans: list[ProcessRecord], timeout_s: float, progress: Progress
) -> ClusterState:
    deadline = time.monotonic() + timeout_s
    for record in plans:
        log_offset = startup.log_size(record)  # a resumed cluster's logs are appended to
        started = _start(record)
        state = state.replace_process(started)
        save_state(state)  # recorded before anything can fail: `down` finds it
        progress(f"started {started.name} at {started.address} (pid {started.pid})")
        if started.name == f"etcd{ETCD_MEMBERS}":
            startup.wait_etcd(state, deadline)
        startup.wait_restarted(state, started, log_offset, deadline)
    want_backup = sum(record.kind == "server" for record in plans) >= 2
    progress("waiting for a view with a primary" + (" and a synced backup" if want_backup else ""))
    viewservice = state.viewservers()[0]  # as started (with its pid), not as planned (pid 0)
    startup.wait(
        lambda: startup.serving(state, want_backup), deadline, viewservice, "form a serving view"
    )
    return state


def down(directory: Path, progress: Progress = _quiet) -> list[ProcessRecord]:
    """Stop every process the cluster in ``directory`` started (by pid) and remove its state
    file, or keep it as the stopped record when the cluster is durable (``up --resume``
    starts it again); logs stay. Returns the processes that were still running."""
    state = load_state(directory)
    running = running_processes(state)
    if web.stop(directory) is not None:
        progress("stopped the dashboard")
    for record in running:
        progress(f"stopping {record.name} (pid {record.pid})")
    processes.stop(record.pid for record in running)
    if state.fsync is not None:
        keep_stopped(directory)
    else:
        remove_state(directory)
    return running


# --- faults on processes --------------------------------------------------------------------------


def _target_fields(record: ProcessRecord) -> dict[str, object]:
    return {"target": record.name, "address": record.address, "pid": record.pid}


def kill(state: ClusterState, record: ProcessRecord, signal_name: str = "KILL") -> str:
    """Send ``SIG<signal_name>``; for KILL/TERM wait until the process is gone. Returns its
    state afterwards."""
    signum = processes.SIGNALS.get(signal_name.upper())
    if signum is None:
        raise ClusterError(f"unknown signal {signal_name!r}: use KILL, TERM or STOP")
    if processes.process_state(record.pid, record.argv) == "dead":
        raise ClusterError(f"{record.name} (pid {record.pid}) is not running")
    event = "cluster_pause" if signum == signal.SIGSTOP else "cluster_kill"
    record_event(state, event, **_target_fields(record), signal=signal_name.upper())
    processes.send_signal(record.pid, signum)
    if signum in (signal.SIGKILL, signal.SIGTERM):
        if signum == signal.SIGTERM:
            processes.send_signal(record.pid, signal.SIGCONT)
        if not processes.wait_dead(record.pid, processes.STOP_GRACE_S + 1.0):
            raise ClusterError(f"{record.name} (pid {record.pid}) did not exit")
        return "dead"
    deadline = time.monotonic() + 1.0
    while processes.process_state(record.pid) != "paused" and time.monotonic() < deadline:
        time.sleep(startup.POLL_S)
    return processes.process_state(record.pid)


def resume(record: ProcessRecord, cluster: ClusterState | None = None) -> None:
    """SIGCONT a paused process (recorded in ``cluster``'s event log when given)."""
    state = processes.process_state(record.pid, record.argv)
    if state == "dead":
        raise ClusterError(f"{record.name} (pid {record.pid}) is not running; use restart")
    if cluster is not None:
        record_event(cluster, "cluster_resume", **_target_fields(record))
    processes.send_signal(record.pid, signal.SIGCONT)


DATA_PHASES: Final = ("serving", "synced")
"""Replica phases in which a server holds the cluster's data (primary serving, backup synced)."""


def refuse_losing_data(state: ClusterState, record: ProcessRecord) -> None:
    """Refuse to restart (empty) the last running server that holds the data.

    Raises:
        ClusterError: ``record`` holds the data and no other running server does.
    """
    from pbkv.cluster.status import collect

    if record.kind != "server" or state.fsync is not None:
        return  # durable servers restart with their disk
    nodes = collect(state).nodes
    holders = [n.record.name for n in nodes if n.state != "dead" and n.phase in DATA_PHASES]
    if record.name in holders and len(holders) == 1:
        raise ClusterError(
            f"{record.name} is the last server holding the data: a restart empties its memory "
            "and every key is lost; add --force to restart it anyway"
        )


REPAIR_FLAG: Final = "--repair"


def restart(
    state: ClusterState,
    record: ProcessRecord,
    timeout_s: float = STARTUP_TIMEOUT_S,
    repair: bool = False,
) -> tuple[ClusterState, ProcessRecord]:
    """Stop ``record`` if it still runs, start it again with the same command line (a new
    incarnation: its memory is empty, its disk kept when the cluster is durable) and wait until
    it pings or answers. ``repair``: this start only, ``--repair`` (a durable server whose log
    is damaged keeps its valid prefix, and is trusted as a fresh server with a disk)."""
    argv = credentials.with_accept_file(tuple(a for a in record.argv if a != REPAIR_FLAG))
    if repair:
        if record.kind != "server" or state.fsync is None:
            raise ClusterError(f"{record.name} keeps no data on disk: there is nothing to repair")
        argv += (REPAIR_FLAG,)
    renew_certificates(state)  # before the stop: an expired CA refuses with the process running
    record_event(state, "cluster_restart", **_target_fields(record), repair=repair)
    if processes.process_state(record.pid, record.argv) != "dead":
        processes.stop([record.pid])
    log_offset = startup.log_size(record)
    started = replace(_start(replace(record, argv=argv)), restarts=record.restarts + 1)
    state = state.replace_process(started)
    save_state(state)
    startup.wait_restarted(state, started, log_offset, time.monotonic() + timeout_s)
    return state, started


def add(
    state: ClusterState, timeout_s: float = STARTUP_TIMEOUT_S
) -> tuple[ClusterState, ProcessRecord]:
    """Start one more server (it joins idle, or as backup if the view lacks one)."""
    index = 1 + max((int(p.name[1:]) for p in state.servers() if p.name[1:].isdigit()), default=0)
    taken = {port for p in state.processes for port in ports_of(p)}
    ports = _planned_ports(state.base_port, index, taken)
    name = f"s{index}"
    _check_ports(ports, name)
    record = _record(state, name, index, "idle", ports, _log_format(state))
    Path(record.log_file).parent.mkdir(parents=True, exist_ok=True)
    record_event(state, "cluster_add", target=name, address=record.address)
    renew_certificates(state)
    started = _start(record)
    state = state.replace_process(started)
    save_state(state)
    deadline = time.monotonic() + timeout_s
    startup.wait(
        lambda: startup.has_pinged(state, started), deadline, started, "ping the view service"
    )
    return state, started


def renew_certificates(state: ClusterState, ca_too: bool = False) -> None:
    """Before a process of a ``--tls`` cluster starts: its certificates that expire within a
    day are issued again (``credentials.renew_certificates``; with ``ca_too``, every process
    stopped, an expiring CA too), recorded in ``cluster.log``.

    Raises:
        ClusterError: the CA has expired while processes run on it (``ca_too`` false).
    """
    directory = state.directory
    ca = credentials.tls_dir(directory) / credentials.CA_FILE
    if (
        not ca_too
        and credentials.uses_tls(directory)
        and credentials.expiring(ca, datetime.timedelta(0))
    ):
        raise ClusterError(
            f"the cluster's CA ({ca}) has expired: its processes cannot prove themselves to "
            f"each other; stop the cluster (`pbkv cluster down --dir {directory}`) and start it "
            "again (`up --resume` for a durable cluster, or `up --tls`), which makes a new CA"
        )
    renewed = credentials.renew_certificates(directory, ca_too)
    if renewed:
        record_event(state, "certificates_renewed", names=",".join(renewed))
        reload_running(state, set(renewed))


def _log_format(state: ClusterState) -> str:
    argv = state.processes[0].argv if state.processes else ()
    for flag, value in itertools.pairwise(argv):
        if flag == "--log-format":
            return value
    return "human"


def ports_of(record: ProcessRecord) -> tuple[int, int, int]:
    """Its listen, admin and metrics ports (an etcd member: client, peer and 0)."""
    return int(record.address.rsplit(":", 1)[1]), record.admin_port, record.metrics_port
