"""What a process or client needs to secure its connections: secrets, TLS contexts, timeout.

``Security`` is built once per process (from ``--auth-token-file``, ``--client-token-file``,
``$PBKV_AUTH_TOKEN`` and the ``--tls-*`` flags) or per client (``token=``, ``tls=``) and handed
to every ``Connection``, which runs the TLS layer (``pbkv.runtime.tls``) and then the
authentication handshake (``pbkv.runtime.auth``) before it reads a protocol frame.

Listeners: with a peer token, every inbound connection must authenticate (as ``peer`` with the
peer token, or as ``client`` with the client token, which defaults to the peer token); with TLS
options, every inbound connection must speak TLS. Outbound connections authenticate with
``token`` in ``role`` and, with a client TLS context, speak TLS.

Reload (SIGHUP, ``pbkv.runtime.reload``): a process's ``Security`` remembers how it was built
(``reload_from``: the same flags, so the same files) and ``adopt`` takes a rebuilt one in place.
``Connection`` reads the secrets and contexts when it is made, so connections made after a
reload use the new files and established ones keep what they authenticated with.

``LOOPBACK`` decides the rule "without a secret a process binds loopback only"
(``check_bind``): a non-loopback address without a secret needs ``insecure``.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from pbkv.runtime.auth import (
    Role,
    ServerSecrets,
    load_accept_token_file,
    load_token_file,
    resolve_token,
)
from pbkv.runtime.config import ConfigError
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.tls import FileStamp, TlsOptions

HANDSHAKE_TIMEOUT_S_DEFAULT = 5.0
RELOAD_TIMEOUT_S_DEFAULT = 5.0
"""How long a reload (SIGHUP) may take to read its files before it is given up."""


@dataclass(slots=True)
class Security:
    """Secrets and TLS of one process or client (all None: plain, unauthenticated)."""

    token: bytes | None = None  # presented on outbound connections (role ``role``)
    role: Role = "peer"
    secrets: ServerSecrets | None = None  # demanded on inbound connections
    server_tls: ssl.SSLContext | None = None
    client_tls: ssl.SSLContext | None = None
    server_name: str | None = None  # name checked in server certificates (default: host)
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S_DEFAULT
    tls_options: TlsOptions | None = field(default=None, repr=False)
    reload_from: Callable[[], Security] | None = field(default=None, repr=False)
    """Builds this process's ``Security`` again from the same flags (None: nothing to re-read)."""
    reload_timeout_s: float = RELOAD_TIMEOUT_S_DEFAULT
    """How long such a rebuild (SIGHUP) may take before it is given up."""
    client_tls_files: ClientTlsFiles | None = field(default=None, repr=False)
    """A client's TLS files, read again before a connection when they changed (None: a
    process, which reloads on SIGHUP, or a client with a ready ``SSLContext`` or no TLS)."""

    def refresh_client_tls(self) -> None:
        """Before a new outbound connection: take a client's renewed TLS files, if any."""
        if self.client_tls_files is not None:
            self.client_tls_files.refresh(self)

    @property
    def gated(self) -> bool:
        return self.secrets is not None or self.server_tls is not None

    def admin(self) -> Security:
        """The same, for the admin port: the peer secret only, never the client role."""
        secrets = self.secrets
        if secrets is not None:
            secrets = ServerSecrets(secrets.peer, None, False, secrets.peer_also)
        return Security(
            self.token,
            "peer",
            secrets,
            self.server_tls,
            self.client_tls,
            self.server_name,
            self.handshake_timeout_s,
            self.tls_options,
        )

    def adopt(self, fresh: Security) -> None:
        """Take ``fresh``'s secrets and TLS contexts in place (a reload): connections made from
        now on use them; established ones keep what they were made with."""
        self.token, self.secrets = fresh.token, fresh.secrets
        self.server_tls, self.client_tls = fresh.server_tls, fresh.client_tls
        self.tls_options = fresh.tls_options

    def check_bind(self, host: str, insecure: bool, flag: str = "--listen") -> None:
        """Refuse (``ConfigError``) a non-loopback ``host`` without a secret unless
        ``insecure``."""
        if self.secrets is None and not insecure and not is_loopback(host):
            raise ConfigError(
                f"{flag} {host}: without a secret (--auth-token-file or $PBKV_AUTH_TOKEN) "
                "a process listens on loopback only; give a secret or --insecure"
            )


class ClientTlsFiles:
    """The ``TlsOptions`` of a client and the stamp of their files when last read.

    A long-running client outlives its certificate: a renewal (certbot, cert-manager, the
    guide's §12b) rewrites the files, and every connection made after it should present the new
    certificate and trust the new CA file, as the servers do after SIGHUP. A client has no
    signal to wait for, so it looks before each new connection, which is rare (the first, and
    after a server closed it or failed over): when any file's stamp changed, it builds a context
    from them; when that fails (a renewal half written, a key that does not match yet), it keeps
    the one in use and tries again once the files change again. Established connections keep
    their session."""

    def __init__(self, options: TlsOptions, stamp: tuple[FileStamp, ...]) -> None:
        self.options = options
        self.stamp = stamp
        self.reads = 0
        """Contexts built from changed files (for tests and curiosity)."""

    def refresh(self, security: Security) -> None:
        stamp = self.options.files_stamp()
        if stamp == self.stamp:
            return
        self.stamp = stamp
        if not self.options.files_present(stamp):
            return  # one missing, or not a file to read (a FIFO would block the loop)
        try:
            context = self.options.client_context()
        except ConfigError:
            return  # keep the context in use until the files change again
        security.client_tls = context
        self.reads += 1


def log_security(logger: EventLogger, security: Security | None) -> None:
    """One line saying how connections are secured."""
    if security is None or security.secrets is None:
        logger.event("auth_disabled", warning="no secret: anyone who can connect is trusted")
        return
    secrets = security.secrets
    logger.event(
        "auth_enabled",
        client_token="separate" if secrets.client is not None else "peer secret",
        rotating=rotating_roles(secrets),
        tls="on" if security.server_tls is not None else "off",
        tls_mutual=bool(security.tls_options and security.tls_options.mutual),
    )


def rotating_roles(secrets: ServerSecrets) -> str:
    """The roles for which a second secret is accepted (``-``: none)."""
    roles = [
        role
        for role, own, also in (
            ("peer", secrets.peer, secrets.peer_also),
            ("client", secrets.client, secrets.client_also),
        )
        if also is not None and also != own
    ]
    return ",".join(roles) or "-"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def node_security(
    token_file: str | None,
    client_token_file: str | None,
    tls: TlsOptions | None,
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S_DEFAULT,
    accept_token_file: str | None = None,
    client_accept_token_file: str | None = None,
    reload_timeout_s: float = RELOAD_TIMEOUT_S_DEFAULT,
) -> Security:
    """A server's or view service's ``Security`` from its flags (``ConfigError``: one line).
    The ``accept`` files hold one more secret accepted (never presented) for the peer and the
    client role, for rotating a secret without stopping the cluster (``pbkv.runtime.auth``); an
    empty one accepts nothing more. ``reload_from`` of the result reads the same files again."""
    peer = load_token_file(token_file) if token_file is not None else resolve_token()
    client = None if client_token_file is None else load_token_file(client_token_file)
    peer_also, client_also = (
        None if path is None else load_accept_token_file(path)
        for path in (accept_token_file, client_accept_token_file)
    )
    if client is not None and peer is None:
        raise ConfigError("--client-token-file needs the peer secret (--auth-token-file)")
    if accept_token_file is not None and peer is None:
        raise ConfigError("--auth-accept-token-file needs the peer secret (--auth-token-file)")
    if client_accept_token_file is not None and client is None:
        raise ConfigError("--client-accept-token-file needs --client-token-file")
    secrets = ServerSecrets(peer, client, True, peer_also, client_also) if peer else None
    server_tls = client_tls = None
    if tls is not None:
        server_tls = tls.server_context()
        client_tls = tls.client_context()
    files = (token_file, client_token_file, accept_token_file, client_accept_token_file, tls)
    again = functools.partial(
        node_security, token_file, client_token_file, tls, handshake_timeout_s,
        accept_token_file, client_accept_token_file, reload_timeout_s,
    ) if any(path is not None for path in files) else None  # fmt: skip
    return Security(
        peer, "peer", secrets, server_tls, client_tls, tls.server_name if tls else None,
        handshake_timeout_s, tls, again, reload_timeout_s,
    )  # fmt: skip


def client_security(
    token: bytes | str | None,
    tls: TlsOptions | ssl.SSLContext | None,
    role: Role = "client",
) -> Security:
    """A client's or tool's ``Security``: ``token`` (else ``resolve_token``), ``tls``."""
    tls = resolve_tls(tls)
    if not isinstance(tls, TlsOptions):
        return Security(resolve_token(token), role, None, None, tls)
    # Stamped before reading, so that files changed in between are read again next time.
    files = ClientTlsFiles(tls, tls.files_stamp())
    context = tls.client_context()
    security = Security(resolve_token(token), role, None, None, context, tls.server_name)
    security.client_tls_files = files
    return security


_cli_tls: TlsOptions | None = None  # --tls-* of a CLI command
_cluster_tls: TlsOptions | None = None  # the TLS of the local cluster the CLI talks to


def set_cli_tls(options: TlsOptions | None) -> None:
    global _cli_tls
    _cli_tls = options


def cli_tls() -> TlsOptions | None:
    """The ``--tls-*`` given before a command's name (``pbkv --tls-cert C server ...``)."""
    return _cli_tls


def set_cluster_tls(options: TlsOptions | None) -> None:
    global _cluster_tls
    _cluster_tls = options


def resolve_tls(
    explicit: TlsOptions | ssl.SSLContext | None = None,
) -> TlsOptions | ssl.SSLContext | None:
    """TLS for a client or tool: ``explicit``, else the CLI's ``--tls-*``, else the local
    cluster's (``pbkv cluster up --tls``); None: plaintext."""
    if explicit is not None:
        return explicit
    return _cli_tls if _cli_tls is not None else _cluster_tls
