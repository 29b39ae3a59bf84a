"""Client commands: ``put``, ``append``, ``get``, ``delete``, ``status``, ``dump``, ``shell``.

Exit status (``pbkv.cli.exits``): 0 on success; 1 when ``get`` finds no key; 2 for a bad
argument; 3 when the view service or a server is unreachable (reported at once after a short
connect check rather than after the whole ``--timeout``) or nothing completed in time; 4 when the
cluster refused the operation for good.
"""

from __future__ import annotations

import io
import json
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar

import click

from pbkv.client import AsyncClient, Client, refusal_error
from pbkv.cluster.state import state_path
from pbkv.core.messages import (
    Dump,
    DumpReply,
    ErrorReply,
    NotLeader,
    StatusRequest,
    View,
    ViewServiceStatus,
    cluster_label,
)
from pbkv.errors import AuthenticationFailed, PbkvError
from pbkv.runtime.config import (
    CLIENT_TIMEOUT_S_DEFAULT,
    TICK_INTERVAL_S,
    VIEWSERVER_DEFAULT,
    VIEWSERVER_ENV,
    parse_address,
)
from pbkv.runtime.group import call_view_service_blocking, split_members
from pbkv.runtime.loop import run
from pbkv.runtime.rpc import Channel
from pbkv.tables import render_table
from pbkv.wire import MESSAGES, ProtocolError

from .certificates import add_certificate_expiries, expiry_text, view_service_lines
from .exits import EXIT_NOT_FOUND, EXIT_UNAVAILABLE
from .names import NODE, cluster_dir, default_viewserver
from .params import KEY, SECONDS, VALUE, is_utf8
from .words import split_words

T = TypeVar("T")
CONNECT_CHECK_TIMEOUT_S: Final = 2.0
QUERY_TIMEOUT_S_DEFAULT: Final = 5.0
MEMBER_TIMEOUT_S: Final = 0.5
DUMP_PAGE_KEYS: Final = 1000


class Unreachable(PbkvError):
    """The view service or server did not accept a connection or did not answer (exit 3)."""

    exit_code = EXIT_UNAVAILABLE


def viewserver_option(function: Any) -> Any:
    return click.option(
        "--viewserver",
        type=NODE,
        envvar=VIEWSERVER_ENV,
        default=default_viewserver,
        show_default=f"${VIEWSERVER_ENV}, the cluster in ./.pbkv, {VIEWSERVER_DEFAULT}",
        help="The view service: HOST:PORT, or viewserver inside a cluster directory.",
    )(function)


def timeout_option(default: float) -> Callable[[Any], Any]:
    return click.option(
        "--timeout",
        type=SECONDS,
        default=default,
        show_default=True,
        metavar="SECONDS",
        help="Give up (exit 3) when nothing completes within this many seconds.",
    )


def check_reachable(address: str, what: str) -> None:
    """Fail fast with ``Unreachable`` when nothing accepts connections at ``address`` (at any
    member of a list ``A,B,C``)."""
    for member in split_members(address):
        try:
            socket.create_connection(parse_address(member), CONNECT_CHECK_TIMEOUT_S).close()
            return
        except OSError:
            continue
    hint = _where_hint(address) if what == "view service" else ""
    raise Unreachable(f"cannot reach the {what} at {address}{hint}") from None


def _where_hint(address: str) -> str:
    """Why a command may have gone to the built-in default address: no cluster in this
    directory (the usual cause: a shell in another directory than the cluster's)."""
    if address != VIEWSERVER_DEFAULT or state_path(cluster_dir()).exists():
        return ""
    return (
        f" (no cluster in {cluster_dir()} here: run pbkv in the cluster's directory, or give "
        f"--viewserver or ${VIEWSERVER_ENV})"
    )


def with_client(
    viewserver: str, timeout: float, action: Callable[[AsyncClient], Coroutine[Any, Any, T]]
) -> T:
    check_reachable(viewserver, "view service")

    async def main() -> T:
        async with AsyncClient(viewserver, timeout) as kv:
            return await action(kv)

    return run(main())


def query(address: str, what: str, message: Any, timeout: float) -> Any:
    """One request/reply with a view service (its leader, for a list) or a server, errors as
    one line."""
    check_reachable(address, what)
    if "," in address:
        try:
            reply = call_view_service_blocking(split_members(address), message, MESSAGES, timeout)
        except AuthenticationFailed:
            raise  # a refusal for good (exit 4), not an absence
        except (OSError, ProtocolError) as error:
            raise Unreachable(f"no answer from the {what} at {address}: {error}") from None
        return refusal_for_good(address, reply[1])
    try:
        with Channel(address, MESSAGES, timeout) as channel:
            return refusal_for_good(address, channel.call(message))
    except AuthenticationFailed:
        raise
    except (OSError, ProtocolError) as error:
        raise Unreachable(f"no answer from the {what} at {address}: {error}") from None


def refusal_for_good(address: str, reply: Any) -> Any:
    """``reply``, unless it says no retry can succeed (``pbkv.client.refusal_error``): no
    secret where one is required (exit 4), or the wrong kind of node at this address (exit 2)."""
    if isinstance(reply, ErrorReply) and (error := refusal_error(address, reply.reason)):
        raise error
    return reply


# --- data commands ---------------------------------------------------------------------------


@click.command("put")
@click.argument("key", type=KEY)
@click.argument("value", type=VALUE)
@viewserver_option
@timeout_option(CLIENT_TIMEOUT_S_DEFAULT)
def put(key: str, value: str, viewserver: str, timeout: float) -> None:
    """Set KEY to VALUE (`pbkv set` is the same command).

    \b
    Example:
      pbkv put greeting "hello, world"
      pbkv set greeting hello --viewserver 127.0.0.1:7000
    """
    with_client(viewserver, timeout, lambda kv: kv.put(key, value))


@click.command("append")
@click.argument("key", type=KEY)
@click.argument("value", type=VALUE)
@viewserver_option
@timeout_option(CLIENT_TIMEOUT_S_DEFAULT)
def append(key: str, value: str, viewserver: str, timeout: float) -> None:
    """Append VALUE to KEY (a missing key counts as empty).

    \b
    Example:
      pbkv append log "line 1;"
    """
    with_client(viewserver, timeout, lambda kv: kv.append(key, value))


@click.command("get")
@click.argument("key", type=KEY)
@viewserver_option
@timeout_option(CLIENT_TIMEOUT_S_DEFAULT)
def get(key: str, viewserver: str, timeout: float) -> None:
    """Print the value of KEY (missing: nothing on stdout, "not found" on stderr, exit 1).

    \b
    Example:
      pbkv get greeting
      pbkv get greeting || echo "missing (1) or unavailable (3): $?"
    """
    value = with_client(viewserver, timeout, lambda kv: kv.get(key))
    if value is None:
        sys.stderr.write("not found\n")
        sys.exit(EXIT_NOT_FOUND)
    click.echo(value)


@click.command("delete")
@click.argument("key", type=KEY)
@viewserver_option
@timeout_option(CLIENT_TIMEOUT_S_DEFAULT)
def delete(key: str, viewserver: str, timeout: float) -> None:
    """Remove KEY (no error when it does not exist).

    \b
    Example:
      pbkv delete greeting
    """
    with_client(viewserver, timeout, lambda kv: kv.delete(key))


# --- status ----------------------------------------------------------------------------------


def view_record(view: View) -> dict[str, Any]:
    return {
        "number": view.number,
        "primary": view.primary,
        "backup": view.backup,
        "backups": list(view.backups),
    }


def status_record(
    status: ViewServiceStatus, viewserver: str, restarts: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The view service's status as plain data (``status --json``).

    Args:
        status: the view service's answer.
        viewserver: the address it was asked at (its members', with etcd).
        restarts: how many times the local cluster manager restarted each server, by address
            (``local_restarts``); None when the view service is not a local cluster's.

    Returns:
        The record; each server's ``view_number`` stays an int (0: it has reported no view
        since it started) and ``view_note`` says that in words (``no view yet (restarting)``,
        as ``pbkv cluster status`` does; "" for a real view number). The view's ``number``
        stays an int too (0: the service has formed no view yet) and its ``note`` says that in
        words, those of ``pbkv cluster status`` ("" for a real view).
    """
    from pbkv.cluster.status import view_note, view_summary_note

    view = status.view
    servers = []
    for server in status.servers:
        role = "primary" if server.name == view.primary else "idle"
        role = "backup" if server.name in view.backups else role
        restarted = restarts.get(server.name) if restarts is not None and server.alive else None
        servers.append(
            {
                "name": server.name,
                "role": role,
                "alive": server.alive,
                "last_ping_age_s": round(server.last_ping_age_ticks * TICK_INTERVAL_S, 3),
                "view_number": server.view_number,
                "view_note": view_note(server.view_number, "server", restarted, server.health),
                "synced_view": server.synced_view,
                "holds_state": server.holds_state,
                "health": server.health,
            }
        )
    return {
        "view": view_record(view) | {"note": view_summary_note(view, viewserver, status)},
        "acknowledged": status.acknowledged,
        "backup_synced": status.backup_synced,
        "servers": servers,
        "views_created": status.views_created,
        "servers_declared_dead": status.servers_declared_dead,
        "waiting": status.waiting,
        "cluster": cluster_label(status.cluster_id),
        **lease_record(status),
    }


def local_restarts(viewserver: str) -> dict[str, int] | None:
    """Each server's restart count, by address, when ``viewserver`` is the view service of the
    local cluster in ``cluster_dir()`` (None otherwise: the counts are the manager's)."""
    from pbkv.cluster.state import load_state

    directory = cluster_dir()
    if not state_path(directory).exists():
        return None
    try:
        state = load_state(directory)
    except PbkvError:
        return None
    if not {r.address for r in state.viewservers()} & set(split_members(viewserver)):
        return None
    return {record.address: record.restarts for record in state.servers()}


def lease_record(status: ViewServiceStatus) -> dict[str, Any]:
    """With read leases on: the lease granted and the most the primary may have left, by the
    view service's clock (absent when off)."""
    if not status.lease_ticks:
        return {}
    return {
        "read_leases": {
            "lease_s": round(status.lease_ticks * TICK_INTERVAL_S, 3),
            "primary_lease_left_s_max": round(status.lease_clear_ticks * TICK_INTERVAL_S, 3),
        }
    }


def problem_lines(record: dict[str, Any]) -> list[str]:
    """Why the cluster cannot make progress, if it cannot: the service's reason, then each
    server's own (e.g. ``no stream progress``, ``refusing to serve``). Before view 1 the
    service's reason is already the view's note (the summary line), not repeated."""
    waiting = record.get("waiting") and not record["view"].get("note")
    lines = [f"waiting: {record['waiting']}"] if waiting else []
    lines += [f"{s['name']}: {s['health']}" for s in record["servers"] if s.get("health")]
    return lines


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


STATUS_COLOURS: Final = {"primary": "green", "backup": "cyan", "no": "red"}


def render_status(record: dict[str, Any], colour: bool = False) -> str:
    """Plain, stable text: a view line, then one line per server (``pbkv.tables``), then what
    blocks progress if anything does; ``colour`` for a terminal."""
    view = record["view"]
    lines = [
        view.get("note")
        or f"view {view['number']}  primary {view['primary'] or '-'}  "
        f"backup {view['backup'] or '-'}  acknowledged {_yes(record['acknowledged'])}  "
        f"cluster {record.get('cluster', '-')}",
    ]
    rows: list[tuple[str, ...]] = [
        (
            s["name"],
            s["role"],
            _yes(s["alive"]),
            f"{s['last_ping_age_s']:.2f}",
            s.get("view_note") or str(s["view_number"]),
        )
        for s in record["servers"]
    ]
    header: tuple[str, ...] = ("server", "role", "alive", "last_ping_s", "view")
    styles = dict(STATUS_COLOURS) if colour else None
    if "view_service_certificates" in record:  # with TLS: what each node presents
        header += ("certificate_expires",)
        texts = [expiry_text(s.get("certificate_expires")) for s in record["servers"]]
        rows = [(*row, text) for row, (text, _) in zip(rows, texts, strict=True)]
        if styles is not None:
            styles |= {text: "red" for text, soon in texts if soon}
    lines.append(render_table(header, rows, styles=styles))
    lines += view_service_lines(record)
    leases = record.get("read_leases")
    if leases:
        lines.append(
            f"read leases on: lease {leases['lease_s']:.2f}s, the primary's runs out within "
            f"{leases['primary_lease_left_s_max']:.2f}s (no new primary before)"
        )
    if record.get("view_service"):
        lines.append(render_members(record["view_service"]))
    problems = problem_lines(record)
    lines += [click.style(line, fg="red", bold=True) if colour else line for line in problems]
    return "\n".join(lines)


def print_status(record: dict[str, Any]) -> None:
    click.echo(render_status(record, colour=sys.stdout.isatty()))


@click.command("status")
@viewserver_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@timeout_option(QUERY_TIMEOUT_S_DEFAULT)
def status(viewserver: str, as_json: bool, timeout: float) -> None:
    """Show the view and every server the view service knows.

    \b
    Example:
      pbkv status
      pbkv status --json --viewserver 127.0.0.1:7000
    """
    members = member_records(viewserver, timeout) if "," in viewserver else []
    if members and not any(member["role"] == "leader" for member in members):
        click.echo(render_members(members))
        raise Unreachable("no view service leader: " + leaderless_reason(members))
    reply = query(viewserver, "view service", StatusRequest(), timeout)
    if isinstance(reply, ErrorReply):  # e.g. "status too large: N servers" (over a frame)
        raise PbkvError(f"the view service at {viewserver} refused the status: {reply.reason}")
    if not isinstance(reply, ViewServiceStatus):
        raise PbkvError(f"{viewserver} is not a view service (answered {type(reply).__name__})")
    record = status_record(reply, viewserver, local_restarts(viewserver))
    add_certificate_expiries(record, viewserver, timeout)
    if members:
        record["view_service"] = members
    if as_json:
        click.echo(json.dumps(record))
    else:
        print_status(record)


def member_records(viewserver: str, timeout: float) -> list[dict[str, Any]]:
    """Each member of a replicated view service: ``leader``, ``follower`` (with the leader it
    names and why there is none) or ``unreachable``."""
    records = []
    for member in split_members(viewserver):
        record: dict[str, Any] = {"address": member, "role": "unreachable", "leader": ""}
        try:
            with Channel(member, MESSAGES, min(timeout, MEMBER_TIMEOUT_S)) as channel:
                reply = channel.call(StatusRequest())
        except (OSError, ProtocolError) as error:
            record["reason"] = str(error) or type(error).__name__
            records.append(record)
            continue
        if isinstance(reply, NotLeader):
            record |= {"role": "follower", "leader": reply.leader, "reason": reply.reason}
        elif isinstance(reply, ViewServiceStatus):
            record |= {"role": "leader", "leader": member, "reason": ""}
        records.append(record)
    return records


def leaderless_reason(members: list[dict[str, Any]]) -> str:
    reasons = sorted({m["reason"] for m in members if m.get("reason")})
    return "; ".join(reasons) or "an election is under way"


def render_members(members: list[dict[str, Any]]) -> str:
    rows = [
        (m["address"], m["role"], m.get("leader") or "-", m.get("reason") or "") for m in members
    ]
    return render_table(("view service", "role", "leader", "why"), rows)


# --- dump ------------------------------------------------------------------------------------


def dump_server(address: str, timeout: float) -> dict[str, Any]:
    """Read a server's role, view and whole store from it, page by page."""
    check_reachable(address, "server")
    keys: dict[str, str] = {}
    page_keys = DUMP_PAGE_KEYS
    try:
        with Channel(address, MESSAGES, timeout) as channel:
            while True:
                reply = refusal_for_good(address, channel.call(Dump(len(keys), page_keys)))
                if isinstance(reply, ErrorReply) and page_keys > 1:
                    page_keys = max(1, page_keys // 4)  # a page over the frame limit
                    continue
                if not isinstance(reply, DumpReply):
                    raise PbkvError(f"{address} did not answer the dump: {reply!r}")
                keys.update(reply.items)
                if not reply.items or len(keys) >= reply.total_keys:
                    break
    except AuthenticationFailed:
        raise
    except (OSError, ProtocolError) as error:
        raise Unreachable(f"no answer from the server at {address}: {error}") from None
    return {
        "name": reply.name,
        "role": reply.role,
        "phase": reply.phase,
        "view": view_record(reply.view),
        "synced": reply.synced,
        "sessions": reply.sessions,
        "keys": keys,
    }


@click.command("dump")
@click.argument("server", type=NODE, required=False)
@click.option(
    "--server",
    "address",
    type=NODE,
    help="The server, as SERVER: HOST:PORT, or s1, primary, backup inside a cluster directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@timeout_option(QUERY_TIMEOUT_S_DEFAULT)
def dump(server: str | None, address: str | None, as_json: bool, timeout: float) -> None:
    """Show one server's own role, view and whole store, read directly from it.

    SERVER (or --server) is HOST:PORT, or s1, primary, backup inside a `pbkv cluster`
    directory.

    \b
    Example:
      pbkv dump 127.0.0.1:7002
      pbkv dump backup --json     # inside a `pbkv cluster` directory
    """
    if server is not None and address is not None and server != address:
        raise click.UsageError("give the server once: as SERVER or as --server")
    chosen = server or address
    if chosen is None:
        raise click.UsageError("which server? e.g. pbkv dump s1, or pbkv dump 127.0.0.1:7002")
    record = dump_server(chosen, timeout)
    if as_json:
        click.echo(json.dumps(record))
        return
    view = record["view"]
    click.echo(
        f"{record['name']}  role {record['role']}  phase {record['phase']}  view "
        f"{view['number']} (primary {view['primary'] or '-'}, backup {view['backup'] or '-'})  "
        f"synced {_yes(record['synced'])}  keys {len(record['keys'])}"
    )
    for key, value in record["keys"].items():
        click.echo(f"{key}\t{value}")


# --- shell -----------------------------------------------------------------------------------

SHELL_HELP: Final = """commands (any case):
  SET key value | PUT key value   set key
  GET key                         print the value ((nil) when missing)
  APPEND key value                append to the value
  DEL key                         remove key
  STATUS                          show the view and the servers
  HELP                            this text
  QUIT                            leave (also end of input)
values with spaces: quote them, or everything after the key is the value"""
SHELL_USAGE: Final = {
    "SET": "SET key value",
    "PUT": "PUT key value",
    "APPEND": "APPEND key value",
    "GET": "GET key",
    "DEL": "DEL key",
    "DELETE": "DELETE key",
    "STATUS": "STATUS (no arguments)",
}
"""What a known command takes, said when a line gives it the wrong number of words."""


def shell_line(kv: Client, viewserver: str, line: str) -> bool:
    """Run one shell line; False when the shell should end."""
    if not is_utf8(line):
        raise ValueError("the line is not valid UTF-8")
    words = split_words(line)
    if not words:
        return True
    command, args = words[0].upper(), words[1:]
    if command in ("SET", "PUT", "APPEND") and len(args) >= 2:
        key, value = args[0], " ".join(args[1:])
        (kv.append if command == "APPEND" else kv.put)(key, value)
        click.echo("OK")
    elif command == "GET" and len(args) == 1:
        found = kv.get(args[0])
        click.echo("(nil)" if found is None else found)
    elif command in ("DEL", "DELETE") and len(args) == 1:
        kv.delete(args[0])
        click.echo("OK")
    elif command == "STATUS" and not args:
        reply = query(viewserver, "view service", StatusRequest(), QUERY_TIMEOUT_S_DEFAULT)
        if isinstance(reply, ViewServiceStatus):
            record = status_record(reply, viewserver, local_restarts(viewserver))
            click.echo(render_status(record))
    elif command == "HELP":
        click.echo(SHELL_HELP)
    elif command in ("QUIT", "EXIT"):
        return False
    elif command in SHELL_USAGE:
        raise ValueError(f"usage: {SHELL_USAGE[command]} (HELP lists the commands)")
    else:
        raise ValueError(f"bad command {words[0]!r} (HELP lists the commands)")
    return True


@click.command("shell")
@viewserver_option
@timeout_option(CLIENT_TIMEOUT_S_DEFAULT)
def shell(viewserver: str, timeout: float) -> None:
    """Interactive prompt: SET/PUT, GET, APPEND, DEL, STATUS, HELP, QUIT.

    \b
    Example:
      pbkv shell
      echo "GET greeting" | pbkv shell
    """
    stdin = sys.stdin
    if stdin is None:
        raise click.UsageError("standard input is closed: the shell reads its commands there")
    if isinstance(stdin, io.TextIOWrapper):  # a line that is not UTF-8: one error, not a crash
        stdin.reconfigure(errors="surrogateescape")
    check_reachable(viewserver, "view service")
    interactive = stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing for input())
    with Client(viewserver, timeout) as kv:
        while True:
            try:
                line = input("pbkv> " if interactive else "")
            except EOFError:
                break
            try:
                if not shell_line(kv, viewserver, line):
                    break
            except (ValueError, PbkvError) as error:
                sys.stderr.write(f"error: {error}\n")
                sys.stderr.flush()


COMMANDS = [put, append, get, delete, status, dump, shell]
