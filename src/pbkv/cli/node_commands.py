"""``pbkv viewserver`` and ``pbkv server``: run one node process until SIGTERM/SIGINT.

Exit status: 0 after a clean stop, 2 for a bad argument, a port that cannot be bound, or a
data directory that cannot be used (read-only, full, locked by another view service, a corrupt
view file), 70 when a core handler raised (a bug; the traceback is in the log) or a view could
not be saved (one ``persist_failed`` line).

Limits on what clients can make a node hold are flags of both commands (docs/protocol.md
§11): ``--buffers-bytes-max``, ``--connections-max``, ``--idle-timeout-s`` and
``--frame-timeout-s``.

Security flags of both commands (docs/guide.md, "Running across hosts"): ``--auth-token-file``
(the peer secret; default ``$PBKV_AUTH_TOKEN``), ``--client-token-file`` (the clients' secret;
default: the peer secret), ``--tls-cert/--tls-key/--tls-ca/--tls-mutual``,
``--handshake-timeout-s``, ``--insecure`` (listen beyond loopback without a secret) and
``--admin-listen``. A token file that cannot be used stops the process with one line (exit 2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final, cast

import click

from pbkv.cli.etcd_options import etcd_options, etcd_settings, run_on_etcd
from pbkv.cli.params import DEAD_PINGS, PING_INTERVAL, SECONDS, FiniteFloat
from pbkv.core.kv_store import Limits
from pbkv.core.replica_base import ReplicaConfig
from pbkv.core.view_service import BACKUPS_MAX
from pbkv.core.view_service_state import FORGET_AFTER_DEAD_INTERVALS_MIN
from pbkv.runtime.busy_poll import BUSY_POLL_US_MAX
from pbkv.runtime.config import (
    BUFFERS_BYTES_MAX_DEFAULT,
    DEAD_PINGS_DEFAULT,
    FORGET_AFTER_S_DEFAULT,
    PING_INTERVAL_S_DEFAULT,
    VIEWSERVER_DEFAULT,
    VIEWSERVER_ENV,
    ConfigError,
    NetworkLimits,
    NodeOptions,
    Timing,
    parse_address,
)
from pbkv.runtime.logging import LOG_FORMATS
from pbkv.runtime.security import (
    HANDSHAKE_TIMEOUT_S_DEFAULT,
    RELOAD_TIMEOUT_S_DEFAULT,
    cli_tls,
    node_security,
)
from pbkv.runtime.tls import TlsOptions
from pbkv.wire import FRAME_BYTES_MAX_DEFAULT


class AddressType(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """``HOST:PORT``, checked at parse time."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            parse_address(text)
        except ConfigError as error:
            self.fail(str(error), param, ctx)
        return text


class AddressListType(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """``HOST:PORT[,HOST:PORT...]``: one view service, or the members of a replicated one."""

    name = "HOST:PORT[,...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from pbkv.runtime.group import split_members

        text = str(value)
        try:
            return ",".join(split_members(text))
        except ConfigError as error:
            self.fail(str(error), param, ctx)


ADDRESS = AddressType()
ADDRESS_LIST = AddressListType()
PORT = click.IntRange(0, 65535)


def tls_options(function: Any) -> Any:
    """``--tls-cert``, ``--tls-key``, ``--tls-ca`` (nodes and client commands alike)."""
    path = click.Path(dir_okay=False)
    decorators = [
        click.option("--tls-cert", type=path, default=None, metavar="PEM",
                     help="Certificate chain to serve TLS with (a client's for mutual TLS)."),
        click.option("--tls-key", type=path, default=None, metavar="PEM",
                     help="Private key of --tls-cert (default: inside --tls-cert)."),
        click.option("--tls-ca", type=path, default=None, metavar="PEM", callback=ca_file,
                     help="CA that signs the other side's certificate (verify servers; with "
                     "--tls-mutual, clients)."),
    ]  # fmt: skip
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def ca_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check a ``--tls-ca`` when it is given: a file that exists and holds PEM certificates
    (else a node would start and a client fail only when it connects)."""
    import ssl

    if value is None:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=value)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "reason", None) or error.strerror or str(error)
        raise click.BadParameter(f"cannot load the CA certificates {value}: {reason}") from None
    return value


def refuse_without_cert(cert: str | None, **given: object) -> None:
    """``ConfigError`` naming the first TLS flag given without ``--tls-cert``, which it needs
    (it would be ignored: the connections would go in plaintext)."""
    for name, value in given.items():
        if value and cert is None:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} needs --tls-cert (without it {flag} has no effect)")


def auth_token_option(function: Any) -> Any:
    return click.option(
        "--auth-token-file",
        type=click.Path(dir_okay=False),
        default=None,
        metavar="FILE",
        help="The cluster's peer secret (default: $PBKV_AUTH_TOKEN). Without one a process "
        "listens on loopback only.",
    )(function)


def security_options(function: Any) -> Any:
    """The security flags of node processes."""
    decorators: list[Callable[[Any], Any]] = [
        auth_token_option,
        click.option("--client-token-file", type=click.Path(dir_okay=False), default=None,
                     metavar="FILE",
                     help="The secret clients prove (default: the peer secret); a client-token "
                     "connection may send client operations only."),
        click.option("--auth-accept-token-file", type=click.Path(dir_okay=False),
                     default=None, metavar="FILE",
                     help="One more peer secret accepted, never presented: for rotating the "
                     "secret without stopping the cluster (guide §12b)."),
        click.option("--client-accept-token-file", type=click.Path(dir_okay=False),
                     default=None, metavar="FILE",
                     help="One more client secret accepted (with --client-token-file), for "
                     "rotating it."),
        tls_options,
        click.option("--tls-mutual", is_flag=True,
                     help="Require a client certificate signed by --tls-ca on every connection."),
        click.option("--handshake-timeout-s", type=SECONDS,
                     default=HANDSHAKE_TIMEOUT_S_DEFAULT, show_default=True, metavar="SECONDS",
                     help="Close a connection that has not passed TLS and authentication by "
                     "then."),
        click.option("--reload-timeout-s", type=SECONDS,
                     default=RELOAD_TIMEOUT_S_DEFAULT, show_default=True, metavar="SECONDS",
                     help="On SIGHUP the secret and TLS files are read again; give up (keeping "
                     "the credentials in force) when that takes longer."),
        click.option("--insecure", is_flag=True,
                     help="Allow listening beyond loopback without a secret (anyone who can "
                     "connect can read, write and impersonate)."),
        click.option("--admin-listen", type=ADDRESS, default=None,
                     help="Serve the admin port on HOST:PORT instead of 127.0.0.1 "
                     "(--admin-port)."),
    ]  # fmt: skip
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def node_security_options(flags: dict[str, Any]) -> dict[str, Any]:
    """``NodeOptions`` fields from the flags ``security_options`` adds (removed from
    ``flags``); ``ConfigError`` for unusable token or certificate files."""
    cert, key, ca = flags.pop("tls_cert"), flags.pop("tls_key"), flags.pop("tls_ca")
    mutual = flags.pop("tls_mutual")
    before = cli_tls()  # given before the command name: the same files, serving (re-review)
    if before is not None and cert is None and key is None and ca is None:
        cert, key, ca = before.cert, before.key, before.ca
    refuse_without_cert(cert, tls_key=key, tls_ca=ca, tls_mutual=mutual)
    tls = TlsOptions(cert, key, ca, mutual) if cert is not None else None
    security = node_security(
        flags.pop("auth_token_file"),
        flags.pop("client_token_file"),
        tls,
        flags.pop("handshake_timeout_s"),
        flags.pop("auth_accept_token_file"),
        flags.pop("client_accept_token_file"),
        flags.pop("reload_timeout_s"),
    )
    fields: dict[str, Any] = {"security": security, "insecure": flags.pop("insecure")}
    admin_listen = flags.pop("admin_listen")
    if admin_listen is not None:
        host, port = parse_address(admin_listen)
        fields |= {"admin_host": host, "admin_port": port}
    return fields


def node_options(function: Any) -> Any:
    """The options every node process takes besides its own."""
    function = security_options(function)
    decorators = [
        click.option(
            "--admin-port",
            type=PORT,
            default=None,
            metavar="PORT",
            help="Serve fault injection and status on 127.0.0.1:PORT (0: any free port).",
        ),
        click.option(
            "--metrics-port",
            type=PORT,
            default=None,
            metavar="PORT",
            help="Serve Prometheus metrics on 127.0.0.1:PORT (0: any free port).",
        ),
        click.option(
            "--metrics-listen",
            type=ADDRESS,
            default=None,
            help="Serve Prometheus metrics on HOST:PORT (another host than loopback).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            default="human",
            show_default=True,
            help="Event lines on stderr: human-readable or JSON.",
        ),
        click.option(
            "--ping-interval",
            type=PING_INTERVAL,
            default=PING_INTERVAL_S_DEFAULT,
            show_default=True,
            metavar="SECONDS",
            help="Seconds between a server's pings to the view service.",
        ),
        click.option(
            "--frame-bytes-max",
            type=click.IntRange(min=1024),
            default=FRAME_BYTES_MAX_DEFAULT,
            show_default=True,
            metavar="BYTES",
            help="Largest frame accepted on a connection; a bigger one closes it.",
        ),
        click.option(
            "--buffers-bytes-max",
            type=click.IntRange(min=4 * 1024),
            default=BUFFERS_BYTES_MAX_DEFAULT,
            show_default=True,
            metavar="BYTES",
            help="Bytes of partial frames (half) and unsent frames (half) held for all "
            "connections together; at least 4 x --frame-bytes-max.",
        ),
        click.option(
            "--connections-max",
            type=click.IntRange(min=1),
            default=NetworkLimits().inbound_connections_max,
            show_default=True,
            metavar="N",
            help="Inbound connections at most (and at most the open-files limit minus 128); "
            "when full, the least recently active one makes room.",
        ),
        click.option(
            "--idle-timeout-s",
            type=SECONDS,
            default=NetworkLimits().idle_timeout_s,
            show_default=True,
            metavar="SECONDS",
            help="Close an inbound connection that sent nothing for this long.",
        ),
        click.option(
            "--frame-timeout-s",
            type=SECONDS,
            default=NetworkLimits().frame_timeout_s,
            show_default=True,
            metavar="SECONDS",
            help="Close a connection whose frame is still incomplete after this long.",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def network_limits(flags: dict[str, Any]) -> NetworkLimits:
    """``NetworkLimits`` from the flags ``node_options`` adds (removed from ``flags``)."""
    return NetworkLimits.from_flags(
        frame_bytes_max=flags.pop("frame_bytes_max"),
        buffers_bytes_max=flags.pop("buffers_bytes_max"),
        connections_max=flags.pop("connections_max"),
        idle_timeout_s=flags.pop("idle_timeout_s"),
        frame_timeout_s=flags.pop("frame_timeout_s"),
    )


def _metrics(port: int | None, listen: str | None) -> dict[str, Any]:
    """``--metrics-listen HOST:PORT`` wins over ``--metrics-port PORT`` (loopback)."""
    if listen is None:
        return {"metrics_port": port}
    host, listen_port = parse_address(listen)
    return {"metrics_port": listen_port, "metrics_host": host}


def _exit(code: int) -> None:
    sys.stderr.flush()
    sys.exit(code)


FORGET_AFTER_OPTION: Final = click.option(
    "--forget-after-s",
    type=SECONDS,
    default=None,
    metavar="SECONDS",
    help=f"Drop a server silent this long that holds no role from the table (and from "
    f"status); at least {FORGET_AFTER_DEAD_INTERVALS_MIN} dead intervals [default: "
    f"{FORGET_AFTER_S_DEFAULT:g}, or {FORGET_AFTER_DEAD_INTERVALS_MIN} dead intervals if "
    "longer].",
)
"""``--forget-after-s`` of the view service, shared with ``pbkv cluster up`` (which passes it on;
not given: the view service's own default)."""


@click.command("viewserver")
@click.option("--listen", type=ADDRESS, required=True, help="Address to listen on (port 0: any).")
@click.option(
    "--dead-pings",
    type=DEAD_PINGS,
    default=DEAD_PINGS_DEFAULT,
    show_default=True,
    metavar="N",
    help="A server silent for N ping intervals is dead.",
)
@FORGET_AFTER_OPTION
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Keep the view here (atomically; locked) and resume it after a restart "
    "(default: ./pbkv-viewserver-HOST-PORT.data).",
)
@click.option(
    "--no-data-dir",
    is_flag=True,
    help="Keep no state on disk. UNSAFE to restart: a restarted service forgets the view.",
)
@click.option(
    "--backups",
    type=click.IntRange(1, BACKUPS_MAX),
    default=1,
    show_default=True,
    metavar="K",
    help=f"How many backups a view names (1..{BACKUPS_MAX}): the primary answers a write "
    "once every backup applied it, so the data survives K failed servers of a view.",
)
@click.option(
    "--force-new-cluster",
    is_flag=True,
    help="Start a new cluster over servers that hold views: number views above theirs.",
)
@etcd_options
@click.option(
    "--read-leases",
    is_flag=True,
    help="Let the primary answer reads alone while it holds a lease (one round trip). "
    "Assumes every clock's rate is within --clock-drift-max of real time.",
)
@click.option(
    "--clock-drift-max",
    type=FiniteFloat(0.0, 0.49),
    default=0.01,
    show_default=True,
    metavar="FRACTION",
    help="With --read-leases: the assumed bound on clock rate drift (0.01 = 1 %).",
)
@node_options
def viewserver(
    listen: str,
    dead_pings: int,
    forget_after_s: float | None,
    read_leases: bool,
    clock_drift_max: float,
    data_dir: str | None,
    no_data_dir: bool,
    backups: int,
    force_new_cluster: bool,
    etcd_endpoints: str | None,
    etcd_prefix: str,
    etcd_lease_ttl_s: int,
    etcd_request_timeout_s: float,
    etcd_ca: str | None,
    etcd_cert: str | None,
    etcd_key: str | None,
    etcd_user: str | None,
    etcd_password_file: str | None,
    ping_interval: float,
    admin_port: int | None,
    metrics_port: int | None,
    metrics_listen: str | None,
    log_format: str,
    **flags: Any,
) -> None:
    """Run the view service, which decides the primary and the backup from pings.

    Its state is kept on disk by default: without --data-dir, in the directory
    pbkv-viewserver-HOST-PORT.data of the current directory (port 0 included: then a second
    such service in the same directory is refused by the directory's lock).

    \b
    Example:
      pbkv viewserver --listen 127.0.0.1:7000 --data-dir /var/lib/pbkv
    """
    from pbkv.runtime.node import run_viewserver
    from pbkv.runtime.persist import default_data_dir

    if no_data_dir and data_dir is not None:
        raise click.UsageError("--data-dir and --no-data-dir exclude each other")
    if etcd_endpoints is not None and (data_dir is not None or force_new_cluster):
        raise click.UsageError("--etcd excludes --data-dir and --force-new-cluster")
    if not no_data_dir and data_dir is None:
        data_dir = default_data_dir(*parse_address(listen))
    timing = Timing(
        ping_interval_s=ping_interval,
        dead_pings=dead_pings,
        read_leases=read_leases,
        clock_drift_max=clock_drift_max,
        forget_after_s=forget_after_s,
    )
    options = NodeOptions(
        listen=listen,
        timing=timing,
        network=network_limits(flags),
        admin_port=admin_port,
        **_metrics(metrics_port, metrics_listen),
        log_format=log_format,
        **node_security_options(flags),
    )
    etcd_tls, etcd_login = (etcd_ca, etcd_cert, etcd_key), (etcd_user, etcd_password_file)
    if etcd_endpoints is not None:
        etcd_timing = (etcd_lease_ttl_s, etcd_request_timeout_s)
        etcd = etcd_settings(etcd_endpoints, etcd_prefix, etcd_timing, etcd_tls, etcd_login)
        _exit(run_on_etcd(options, etcd, backups))
    if any(value is not None for value in (*etcd_tls, *etcd_login)):
        raise click.UsageError("--etcd-ca/-cert/-key/-user/-password-file need --etcd")
    _exit(run_viewserver(options, data_dir, force_new_cluster, backups))


@click.command("server")
@click.option("--listen", type=ADDRESS, required=True, help="Address to listen on (port 0: any).")
@click.option(
    "--viewserver",
    type=ADDRESS_LIST,
    envvar=VIEWSERVER_ENV,
    default=VIEWSERVER_DEFAULT,
    help=f"The view service, or A,B,C: the members of one replicated on etcd "
    f"(default: ${VIEWSERVER_ENV}, then {VIEWSERVER_DEFAULT}).",
)
@click.option(
    "--advertise",
    type=ADDRESS,
    default=None,
    help="This server's name in views, where peers and clients reach it "
    "(default: the bound listen address).",
)
@click.option(
    "--key-bytes-max",
    type=click.IntRange(min=1),
    default=Limits().key_bytes_max,
    show_default=True,
    help="Longest key accepted (UTF-8 bytes); longer ones are refused as too large.",
)
@click.option(
    "--value-bytes-max",
    type=click.IntRange(min=1),
    default=Limits().value_bytes_max,
    show_default=True,
    help="Longest value a key may hold (UTF-8 bytes, after an append).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Keep this server's state on disk here (write-ahead log and snapshots; locked) and "
    "recover it after a restart. Without it the state lives in memory only.",
)
@click.option(
    "--fsync",
    type=click.Choice(["always", "everysec", "no"]),
    default="always",
    show_default=True,
    help="With --data-dir: when writes reach the disk. always: before they are acknowledged "
    "(group commit); everysec: within about a second; no: when the OS decides.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="With --data-dir: keep the valid prefix of a damaged log instead of refusing to start "
    "(what follows the damage is lost).",
)
@click.option(
    "--snapshot-after-bytes",
    type=click.IntRange(min=1),
    default=64 * 1024 * 1024,
    show_default=True,
    help="With --data-dir: compact the log into a snapshot once it grew by this many bytes "
    "(and by at least the last snapshot's size).",
)
@click.option(
    "--backlog-bytes",
    type=click.IntRange(min=0),
    default=ReplicaConfig().backlog_bytes_max,
    show_default=True,
    help="Recent writes kept in memory to catch a returning backup up with only what it "
    "missed instead of the whole store; 0 turns catch-up off.",
)
@click.option(
    "--busy-poll-us",
    type=click.IntRange(0, BUSY_POLL_US_MAX),
    default=0,
    show_default=True,
    metavar="US",
    help="After each input, keep polling this many microseconds instead of sleeping: lower "
    "latency where wake-ups are slow (VMs), for a busy core while traffic lasts. 0: off.",
)
@node_options
def server(
    listen: str,
    viewserver: str,
    advertise: str | None,
    key_bytes_max: int,
    value_bytes_max: int,
    data_dir: str | None,
    fsync: str,
    repair: bool,
    snapshot_after_bytes: int,
    backlog_bytes: int,
    busy_poll_us: int,
    ping_interval: float,
    admin_port: int | None,
    metrics_port: int | None,
    metrics_listen: str | None,
    log_format: str,
    **flags: Any,
) -> None:
    """Run a replica server; the view service makes it primary, backup or idle.

    \b
    Examples:
      pbkv server --listen 127.0.0.1:7001 --viewserver 127.0.0.1:7000
      pbkv server --listen 127.0.0.1:7001 --data-dir /var/lib/pbkv/s1 --fsync always
    """
    from pbkv.runtime.disk import StorageOptions
    from pbkv.runtime.node import run_server
    from pbkv.storage import FsyncPolicy

    if data_dir is None and (repair or fsync != "always"):
        raise click.UsageError("--fsync and --repair need --data-dir")
    storage = None
    if data_dir is not None:
        storage = StorageOptions(
            data_dir=data_dir,
            fsync=cast(FsyncPolicy, fsync),
            repair=repair,
            snapshot_after_bytes=snapshot_after_bytes,
        )

    options = NodeOptions(
        listen=listen,
        timing=Timing(ping_interval_s=ping_interval),
        network=network_limits(flags),
        advertise=advertise,
        admin_port=admin_port,
        **_metrics(metrics_port, metrics_listen),
        log_format=log_format,
        **node_security_options(flags),
        busy_poll_us=busy_poll_us,
    )
    limits = Limits(key_bytes_max=key_bytes_max, value_bytes_max=value_bytes_max)
    _exit(run_server(options, viewserver, limits, storage, backlog_bytes))


COMMANDS = [viewserver, server]
