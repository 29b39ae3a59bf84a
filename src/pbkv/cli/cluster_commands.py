"""``pbkv cluster``: a local cluster of real processes, and every fault as a command.

State, ports and logs live in ``--dir`` (default ``./.pbkv``, or ``$PBKV_CLUSTER_DIR``). Exit
codes (``pbkv.cli.exits``): 0 done, 2 bad usage, 3 a node did not answer, 4 the cluster refused
(the message says why), 5 a process did not start.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pbkv.cli.cluster_fault_commands import FAULT_COMMANDS
from pbkv.cli.cluster_observe_commands import OBSERVE_COMMANDS
from pbkv.cli.exits import EXIT_FAILED, EXIT_REFUSED, EXIT_UNAVAILABLE
from pbkv.cli.names import cluster_dir_option
from pbkv.cli.node_commands import ADDRESS, FORGET_AFTER_OPTION
from pbkv.cli.params import (
    DEAD_PINGS,
    INTERVAL_S_MAX,
    PING_INTERVAL_S_MAX,
    SECONDS_MAX,
    FiniteFloat,
)
from pbkv.cluster import manager, reloads, rotation, web
from pbkv.cluster import targets as cluster_targets
from pbkv.cluster.render import processes_table, status_text
from pbkv.cluster.resume import resume as resume_cluster
from pbkv.cluster.state import ClusterState, load_state, stopped_path
from pbkv.cluster.status import FailoverCounter, collect
from pbkv.core.view_service import BACKUPS_MAX
from pbkv.errors import PbkvError
from pbkv.runtime.config import (
    DEAD_PINGS_DEFAULT,
    PING_INTERVAL_S_DEFAULT,
    VIEWSERVER_DEFAULT,
    ConfigError,
)

DASHBOARD_LISTEN_DEFAULT = web.LISTEN_DEFAULT
RESUME_CONFLICTS = (
    "servers", "backups", "base_port", "ping_interval", "dead_pings", "log_format", "fsync",
    "fresh", "etcd", "tls", "read_leases", "forget_after_s",
)  # fmt: skip
"""The options of ``up`` that would change the cluster ``up --resume`` starts as recorded."""
WATCH_INTERVAL_S = 1.0


def timing_options(ping_interval_s: float, base_port: int) -> Callable[[Any], Any]:
    """``--base-port``, ``--ping-interval`` and ``--dead-pings`` (shared with ``pbkv demo``)."""
    options = [
        click.option(
            "--base-port",
            type=click.IntRange(0, 65000),
            default=base_port,
            show_default=True,
            help="View service on P, server sK on P+K, admin P+100+K, metrics P+200+K; "
            "0: free ports.",
        ),
        click.option(
            "--ping-interval",
            type=FiniteFloat(0.01, PING_INTERVAL_S_MAX),
            default=ping_interval_s,
            show_default=True,
            help="Seconds between a server's pings; a failover takes --dead-pings of them.",
        ),
        click.option(
            "--dead-pings",
            type=DEAD_PINGS,
            default=DEAD_PINGS_DEFAULT,
            show_default=True,
            help="Missed pings before the view service declares a server dead.",
        ),
    ]

    def decorate(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _load(directory: Path) -> ClusterState:
    return load_state(directory)


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        click.echo(click.style(f"  {message}", dim=True), err=True)


def _roles(state: ClusterState) -> dict[str, str]:
    view = cluster_targets.current_view(state)
    roles: dict[str, str] = {}
    for record in state.processes:
        if record.kind in ("viewserver", "etcd"):
            roles[record.name] = record.kind
        elif view is not None:
            roles[record.name] = (
                "primary"
                if record.address == view.primary
                else "backup"
                if record.address in view.backups
                else "idle"
            )
    return roles


@click.group("cluster")
def cluster() -> None:
    """Run a local cluster (a view service and N servers) and break it on purpose.

    \b
    Example:
      pbkv cluster up --servers 3
      pbkv cluster status
      pbkv cluster kill primary
      pbkv cluster logs
      pbkv cluster down
    """


@cluster.command("up")
@cluster_dir_option
@click.option(
    "--servers",
    type=click.IntRange(1, manager.SERVERS_MAX),
    default=3,
    show_default=True,
    help="Number of servers.",
)
@click.option(
    "--backups",
    type=click.IntRange(1, BACKUPS_MAX),
    default=1,
    show_default=True,
    help="K: how many backups a view names (survives K failures; needs K+1 servers).",
)
@timing_options(PING_INTERVAL_S_DEFAULT, manager.BASE_PORT_DEFAULT)
@click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    default="human",
    show_default=True,
    help="Event line format of every process.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=FiniteFloat(0.1, SECONDS_MAX),
    default=manager.STARTUP_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for a serving view.",
)
@click.option(
    "--durable",
    is_flag=True,
    help="Servers keep their state on disk (DIR/data/sN) and recover it when restarted: "
    "a cluster killed all at once comes back with every acknowledged write.",
)
@click.option(
    "--fsync",
    type=click.Choice(["always", "everysec", "no"]),
    default="always",
    show_default=True,
    help="With --durable: the servers' fsync policy (see `pbkv server --help`).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Delete what a previous cluster left in --dir (its servers' data in --dir/data, its "
    "view, its logs) and start empty. Without it, up refuses a --dir that holds a durable "
    "cluster's data.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Start the durable cluster `down` stopped in --dir again: the same processes, command "
    "lines, ports and data, so every key it held is there. Takes only --dir, --timeout and "
    "--dashboard; never deletes anything.",
)
@click.option(
    "--dashboard",
    is_flag=True,
    help="Also start the live web dashboard (stopped by `down`) and print its URL.",
)
@click.option(
    "--dashboard-listen",
    type=ADDRESS,
    default=DASHBOARD_LISTEN_DEFAULT,
    show_default=True,
    metavar="HOST:PORT",
    help="Address of the dashboard's page (port 0: any free port).",
)
@click.option(
    "--etcd",
    is_flag=True,
    help="Replicate the view service: start 3 etcd members and 3 view services "
    "(needs etcd: scripts/ensure_etcd.sh).",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Generate a CA and certificates in --dir/tls and run every connection over mutual TLS.",
)
@click.option(
    "--read-leases",
    is_flag=True,
    help="The primary answers reads alone while it holds a lease (pbkv viewserver "
    "--read-leases; assumes clock rates within 1 %).",
)
@FORGET_AFTER_OPTION
def up_command(
    directory: Path,
    servers: int,
    backups: int,
    base_port: int,
    ping_interval: float,
    dead_pings: int,
    log_format: str,
    timeout_s: float,
    durable: bool,
    fsync: str,
    fresh: bool,
    resume: bool,
    dashboard: bool,
    dashboard_listen: str,
    etcd: bool,
    tls: bool,
    read_leases: bool,
    forget_after_s: float | None,
) -> None:
    """Start a view service and N servers in the background; wait until they serve.

    Refuses (exit 4) if a cluster already runs in --dir, a port is taken, or --dir holds the
    data of a previous --durable cluster (add --fresh to delete it, or --resume to start that
    cluster again). A new cluster starts empty: new logs, a new view. On failure everything it
    started is stopped again. The cluster's secret is --dir/auth-token (created once, mode
    0600): every process and every pbkv command run on this directory uses it.

    With --resume it starts the durable cluster that `down` stopped (its record:
    --dir/cluster.stopped.json; or a cluster whose processes all died, after a reboot) with
    the same command lines on the same data and ports, and waits for it to serve. It refuses
    (exit 4) when a cluster runs in --dir, there is no stopped durable cluster, or a port is
    taken; options that would change the cluster (--servers, --fresh ...) are a usage error.

    \b
    Example:
      pbkv cluster up --servers 3 --base-port 7000
      pbkv cluster up --dir /tmp/lab --base-port 0 --ping-interval 0.05
      pbkv cluster up --dashboard     # then open the URL it prints
      pbkv cluster up --etcd          # 3 etcd members, 3 view services, 3 servers
      pbkv cluster up --durable       # servers on disk: survives killing everything
      pbkv cluster up --durable --fresh   # delete the previous durable cluster's data first
      pbkv cluster down; pbkv cluster up --resume   # the same durable cluster, every key
      pbkv cluster up --servers 4 --backups 2   # survives losing any 2 of a view's 3
      pbkv cluster up --ping-interval 0.05 --forget-after-s 2   # a dead spare leaves in 2 s
    """
    context = click.get_current_context()
    if resume:
        _refuse_resume_conflicts(context)
    else:  # what the view service would refuse at start, refused before anything starts
        try:
            manager.check_forget_after(ping_interval, dead_pings, forget_after_s)
        except ConfigError as error:
            raise click.UsageError(str(error), context) from None
    if dashboard:
        web.check_listen(dashboard_listen)  # before anything starts
    started = time.monotonic()
    if resume:
        state = resume_cluster(directory, timeout_s, _progress)
    else:
        config = manager.ClusterConfig(
            directory=directory,
            servers=servers,
            base_port=base_port,
            ping_interval_s=ping_interval,
            dead_pings=dead_pings,
            log_format=log_format,
            startup_timeout_s=timeout_s,
            etcd=etcd,
            tls=tls,
            fsync=fsync if durable else None,
            backups=backups,
            read_leases=read_leases,
            fresh=fresh,
            forget_after_s=forget_after_s,
        )
        state = manager.up(config, _progress)
    _report_up(state, directory, time.monotonic() - started)
    if dashboard:
        _start_dashboard(directory, dashboard_listen)


def _refuse_resume_conflicts(context: click.Context) -> None:
    """``--resume`` starts the cluster as recorded: an option that would change it, given on
    the command line, is a usage error (one from the environment is a default: ignored)."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in RESUME_CONFLICTS
        if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        raise click.UsageError(
            f"--resume starts the stopped cluster as it was recorded: it takes no "
            f"{', '.join(given)} (only --dir, --timeout and --dashboard)",
            context,
        )


def _report_up(state: ClusterState, directory: Path, elapsed: float) -> None:
    """What ``up`` prints once the cluster serves: its processes, where to reach it."""
    click.echo(processes_table(state.processes, _roles(state)))
    click.echo(
        f"cluster up in {elapsed:.1f}s; view service {state.viewserver}; "
        f"logs in {directory / 'logs'}"
    )
    if state.viewserver != VIEWSERVER_DEFAULT:
        click.echo(f"clients: export PBKV_VIEWSERVER={state.viewserver}")
    click.echo(f"secret: {directory / 'auth-token'} (export PBKV_AUTH_TOKEN=$(cat it) elsewhere)")


def _start_dashboard(directory: Path, listen: str) -> None:
    """Start the cluster's dashboard; if it fails, stop the cluster again (``up`` leaves
    nothing running on failure) and say so."""
    argv = manager.pbkv_argv("dashboard", "--dir", str(directory.resolve()))
    try:
        url = web.start(directory, argv, listen)
    except PbkvError as error:
        manager.down(directory, _progress)
        raise web.DashboardError(f"{error}; the cluster was stopped again") from None
    click.echo(f"dashboard: {url}")


@cluster.command("down")
@cluster_dir_option
def down_command(directory: Path) -> None:
    """Stop every process this cluster started (by pid); logs stay in --dir/logs.

    A durable cluster (up --durable) keeps its data and its record (--dir/cluster.stopped.json):
    `pbkv cluster up --resume` starts the same cluster again.

    \b
    Example:
      pbkv cluster down
      pbkv cluster up --resume    # a durable cluster: again, with every key
    """
    stopped = manager.down(directory, _progress)
    names = ", ".join(f"{r.name} (pid {r.pid})" for r in stopped) or "nothing was running"
    click.echo(f"stopped: {names}")
    if stopped_path(directory).exists():
        click.echo(
            f"kept the durable cluster's data and record: start it again with "
            f"`pbkv cluster up --resume --dir {directory}`"
        )


@cluster.command("status")
@cluster_dir_option
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option(
    "--interval",
    type=FiniteFloat(0.1, INTERVAL_S_MAX),
    default=WATCH_INTERVAL_S,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: view, cluster id, failovers, nodes."
)
def status_command(directory: Path, watch: bool, interval: float, as_json: bool) -> None:
    """Every process: state (alive/paused/dead), role, view, keys, last ping; the failovers so
    far, the cluster id, and why a server cannot serve if it cannot.

    \b
    Example:
      pbkv cluster status --watch
      pbkv cluster status --json | jq '.view.primary'
    """
    import json

    state = _load(directory)
    tty = sys.stdout.isatty()
    if watch and tty and not as_json:
        _watch_live(directory, state, interval)
        return
    failovers = FailoverCounter()  # each refresh reads only what the logs gained
    while True:
        status = collect(state, failovers)
        if as_json:
            click.echo(json.dumps(status.to_json(), sort_keys=True))
        else:
            click.echo(status_text(status))
        if not watch:
            return
        time.sleep(interval)
        state = _load(directory)
        if not as_json and not tty:
            click.echo()


def _watch_live(directory: Path, state: ClusterState, interval: float) -> None:
    """Redraw the status table in place on a terminal (rich Live: no clearing, no flicker)."""
    from rich.live import Live
    from rich.text import Text

    failovers = FailoverCounter()
    with Live(auto_refresh=False, transient=False) as live:
        while True:
            live.update(Text.from_ansi(status_text(collect(state, failovers))), refresh=True)
            time.sleep(interval)
            state = _load(directory)


@cluster.command("kill")
@cluster_dir_option
@click.argument("target")
@click.option(
    "--signal",
    "signal_name",
    type=click.Choice(["KILL", "TERM", "STOP"], case_sensitive=False),
    default="KILL",
    show_default=True,
    help="KILL crashes it, TERM stops it cleanly, STOP pauses it (resume with `resume`).",
)
def kill_command(directory: Path, target: str, signal_name: str) -> None:
    """Crash, stop or pause one process. TARGET: s1.., an address, primary, backup, viewserver.

    \b
    Example:
      pbkv cluster kill primary
      pbkv cluster kill backup --signal STOP
    """
    state = _load(directory)
    record = cluster_targets.resolve(state, target)
    after = manager.kill(state, record, signal_name)
    click.echo(
        f"sent SIG{signal_name.upper()} to {record.name} {record.address} "
        f"(pid {record.pid}): now {after}"
    )


@cluster.command("resume")
@cluster_dir_option
@click.argument("target")
def resume_command(directory: Path, target: str) -> None:
    """Continue a process paused with `kill --signal STOP` (SIGCONT).

    \b
    Example:
      pbkv cluster resume s1
    """
    state = _load(directory)
    record = cluster_targets.resolve_stopped(state, target, "paused")
    manager.resume(record, state)
    click.echo(f"sent SIGCONT to {record.name} {record.address} (pid {record.pid})")


@cluster.command("restart")
@cluster_dir_option
@click.argument("target")
@click.option(
    "--force", is_flag=True, help="Restart even the last server holding the data (loses it)."
)
@click.option(
    "--repair",
    is_flag=True,
    help="This start only: a durable server whose log is damaged keeps its valid prefix "
    "(`pbkv server --repair`); use it when another member still holds the data.",
)
def restart_command(directory: Path, target: str, force: bool, repair: bool) -> None:
    """Start a process again with its original command line (stopping it first if it runs).

    A restarted server has empty memory: it rejoins as a new idle server (or backup). The last
    running server that holds the data is refused (exit 4) unless --force.

    \b
    Example:
      pbkv cluster restart s2
      pbkv cluster restart s2 --repair    # its log was damaged: keep the valid prefix
    """
    state = _load(directory)
    record = cluster_targets.resolve_stopped(state, target, "dead")
    if not force:
        manager.refuse_losing_data(state, record)
    state, started = manager.restart(state, record, repair=repair)
    click.echo(f"restarted {started.name} {started.address} (pid {started.pid}, was {record.pid})")


@cluster.command("add")
@cluster_dir_option
def add_command(directory: Path) -> None:
    """Start one more server; it joins idle (or as backup if the view has none).

    \b
    Example:
      pbkv cluster add
    """
    state = _load(directory)
    state, started = manager.add(state)
    click.echo(processes_table([started], _roles(state)))


@cluster.command("reload")
@cluster_dir_option
@click.argument("target", required=False)
def reload_command(directory: Path, target: str | None) -> None:
    """Make processes read their secret and TLS files again (SIGHUP), without a restart.

    TARGET: s1.., an address, primary, backup, viewserver; none: every server and view
    service. Each says whether it took the files (its `credentials_reloaded` line) or kept
    what it had and why; exit 5 when one failed, 3 when one did not answer.

    \b
    Example:
      pbkv cluster reload
      pbkv cluster reload primary
    """
    state = _load(directory)
    if target is None:
        records = [r for r in state.processes if r.kind in ("server", "viewserver")]
    else:
        records = [cluster_targets.resolve(state, target)]
    outcomes = reloads.reload_processes(state, records)
    for outcome in outcomes:
        detail = f": {outcome.detail}" if outcome.detail else ""
        click.echo(f"{outcome.name}: {outcome.outcome}{detail}")
    said = {outcome.outcome for outcome in outcomes}
    if "failed" in said:
        sys.exit(EXIT_FAILED)
    if "no answer" in said:
        sys.exit(EXIT_UNAVAILABLE)
    if target is not None and said & {"not running", "not reloadable"}:
        sys.exit(EXIT_REFUSED)


@cluster.command("rotate-secret")
@cluster_dir_option
@click.option(
    "--continue",
    "continuing",
    is_flag=True,
    help="finish a rotation that stopped at a step some process did not take",
)
def rotate_secret_command(directory: Path, continuing: bool) -> None:
    """Replace the cluster's secret with a new one, without a restart.

    The guide's three steps (§12b), each written to the files and reloaded by every running
    server and view service before the next: accept the new secret; present it, still
    accepting the old; refuse the old. The cluster serves throughout. A step some process
    does not take stops the rotation there, safely (exit 5 when its reload failed, 3 when it
    did not answer); mend the cause, then `--continue`.

    \b
    Example:
      pbkv cluster rotate-secret
    """
    state = _load(directory)

    def report(step: rotation.StepReport) -> None:
        click.echo("\n".join(step.lines()))

    reports = rotation.rotate_secret(state, continuing, report)
    last = reports[-1]
    if last.taken:
        click.echo("rotated: every process presents and accepts the new secret alone")
        return
    click.echo(
        f"stopped at step {last.step}: no process went past it, so every one still accepts "
        "what the others present; mend the cause, then `pbkv cluster rotate-secret --continue`",
        err=True,
    )
    outcomes = {outcome.outcome for outcome in last.outcomes}
    sys.exit(EXIT_FAILED if "failed" in outcomes else EXIT_UNAVAILABLE)


for fault_command in (*FAULT_COMMANDS, *OBSERVE_COMMANDS):
    cluster.add_command(fault_command)

COMMANDS = [cluster]
