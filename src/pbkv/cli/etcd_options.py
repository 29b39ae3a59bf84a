"""The options of ``pbkv viewserver --etcd``: where the view lives in etcd, and TLS to etcd."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pbkv.cli.params import FiniteFloat
from pbkv.runtime.config import (
    ETCD_LEASE_TTL_S_DEFAULT,
    ETCD_PREFIX_DEFAULT,
    ETCD_REQUEST_TIMEOUT_S_DEFAULT,
    ConfigError,
    NodeOptions,
)

if TYPE_CHECKING:
    from pbkv.runtime.etcd import EtcdOptions

F = TypeVar("F", bound=Callable[..., Any])


def etcd_options(command: F) -> F:
    """``--etcd``, ``--etcd-prefix``, ``--etcd-lease-ttl-s``, ``--etcd-request-timeout-s``,
    ``--etcd-ca/-cert/-key``, ``--etcd-user``, ``--etcd-password-file``."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


_OPTIONS = [
    click.option(
        "--etcd",
        "etcd_endpoints",
        default=None,
        metavar="ENDPOINTS",
        help="Keep the view and the leadership in etcd (http://HOST:PORT,... or https://...): "
        "run several view services with the same --etcd and --etcd-prefix; one leads. No data "
        "directory then.",
    ),
    click.option(
        "--etcd-prefix",
        default=ETCD_PREFIX_DEFAULT,
        show_default=True,
        metavar="/NAME",
        help="The cluster's keys in etcd: PREFIX/leader and PREFIX/view.",
    ),
    click.option(
        "--etcd-lease-ttl-s",
        type=click.IntRange(min=1, max=60),
        default=ETCD_LEASE_TTL_S_DEFAULT,
        show_default=True,
        metavar="SECONDS",
        help="The leader's lease in etcd; a killed leader is replaced about this long after.",
    ),
    click.option(
        "--etcd-request-timeout-s",
        type=FiniteFloat(0.05, 60.0),
        default=ETCD_REQUEST_TIMEOUT_S_DEFAULT,
        show_default=True,
        metavar="SECONDS",
        help="One etcd request (a login with a password included); then the next endpoint. "
        "At most --etcd-lease-ttl-s. Raise it for a slow or distant etcd.",
    ),
    click.option(
        "--etcd-ca",
        metavar="PEM",
        default=None,
        help="With https:// --etcd endpoints: the CA that signed etcd's certificate (default: the "
        "system's CAs).",
    ),
    click.option(
        "--etcd-cert",
        metavar="PEM",
        default=None,
        help="With https:// endpoints: this process's certificate, for an etcd started with "
        "--client-cert-auth (with --etcd-key).",
    ),
    click.option("--etcd-key", metavar="PEM", default=None, help="The key of --etcd-cert."),
    click.option(
        "--etcd-user",
        metavar="NAME",
        default=None,
        help="The etcd user to log in as, for an etcd with authentication on (with "
        "--etcd-password-file; use https:// endpoints: the password crosses the network).",
    ),
    click.option(
        "--etcd-password-file",
        metavar="FILE",
        default=None,
        help="The file holding --etcd-user's password (read at start).",
    ),
]


def etcd_settings(
    endpoints: str,
    prefix: str,
    timing: tuple[int, float],
    tls_files: tuple[str | None, str | None, str | None],
    login: tuple[str | None, str | None],
) -> EtcdOptions:
    """``timing``: ``--etcd-lease-ttl-s``, ``--etcd-request-timeout-s``; ``tls_files``:
    ``--etcd-ca/-cert/-key``; ``login``: ``--etcd-user``, ``--etcd-password-file``.
    ``ConfigError`` (exit 2, one line) for what does not fit together or cannot be read."""
    # gRPC's own logging (to stderr, its own format, a line per failed handshake) stays off:
    # the view service logs what failed in its etcd_unreachable lines. Read when gRPC starts.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from pbkv.runtime.etcd import EtcdOptions, check_prefix, endpoints_use_tls, parse_endpoints
    from pbkv.runtime.etcd_tls import EtcdAuth, EtcdTls

    lease_ttl_s, request_timeout_s = timing
    if request_timeout_s > lease_ttl_s:
        raise ConfigError(
            f"--etcd-request-timeout-s ({request_timeout_s:g}) must not exceed "
            f"--etcd-lease-ttl-s ({lease_ttl_s}): the leader could not renew its lease in time"
        )
    parsed, secure = parse_endpoints(endpoints), endpoints_use_tls(endpoints)
    if not secure and tls_files != (None, None, None):
        raise ConfigError("--etcd-ca, --etcd-cert and --etcd-key need https:// --etcd endpoints")
    tls = EtcdTls.load(*tls_files) if secure else None  # read now: a bad file refuses the start
    user, password_file = login
    if (user is None) != (password_file is None):
        raise ConfigError("--etcd-user and --etcd-password-file go together")
    auth = (
        None if user is None or password_file is None else EtcdAuth.from_file(user, password_file)
    )
    again = (
        None
        if tls_files == (None, None, None) and auth is None
        else functools.partial(etcd_settings, endpoints, prefix, timing, tls_files, login)
    )
    return EtcdOptions(
        parsed,
        check_prefix(prefix),
        lease_ttl_s,
        request_timeout_s,
        tls=tls,
        auth=auth,
        reload_from=again,
    )


def run_on_etcd(options: NodeOptions, etcd: EtcdOptions, backups: int) -> int:
    from pbkv.runtime.leader import run_replicated_viewserver

    return run_replicated_viewserver(options, etcd, backups)
