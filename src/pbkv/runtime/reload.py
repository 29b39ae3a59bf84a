"""Credentials reloaded without a restart: SIGHUP makes a process read its secret and TLS files
again.

Theory of operation. A server or view service started with any of ``--auth-token-file``,
``--client-token-file``, the two ``--*-accept-token-file`` flags or ``--tls-cert`` keeps how its
``Security`` was built (``Security.reload_from``: the same paths). On SIGHUP
(``CredentialReloader.request``) it builds it again from those paths, all or nothing: a file that
cannot be read, an empty or short secret, a certificate that does not match its key or a CA
file without a certificate is one line (``credentials_reload_failed``, with the reason) and the
process keeps what it had and keeps serving. Otherwise the new secrets and TLS contexts replace
the old in place (``Security.adopt``, on the node's ports and on its admin port) and one line
(``credentials_reloaded``) says what is now in force: the roles with a second secret accepted,
and the certificate's serial and expiry.

Where it runs: the signal handler only starts it (``request``); the files are read and the
contexts built on a daemon thread, bounded by ``--reload-timeout-s`` (a FIFO or a hung mount in
a file's place blocks that thread, never the loop, and never the process's exit), and what was
read is adopted on the loop. Signals during a reload make one more after it.

What a reload changes: every connection made after it, inbound or outbound, uses the new files.
Established connections keep the TLS session and the authentication they were made with (both
happen once per connection), so a renewal cuts nothing; a peer link that breaks later comes
back with the new files. A reload that revokes (a secret no longer accepted, a CA no longer
trusted: ``accepted`` shrinks) closes every inbound connection, admin port included, so none
proved under what was revoked survives; the other side reconnects with what it holds. The
flags themselves are fixed at start: a reload re-reads the same files and cannot add or drop
TLS or a secret (restart for that). So a rotation of the secret, of a certificate or of the
CA is the three steps of the guide (§12b) done by writing files and sending SIGHUP instead of
restarting. Write each file whole before the signal (a new file renamed over the old): a reload
reads what is there when the signal arrives.

A view service on etcd also reads its ``--etcd-ca/-cert/-key`` and ``--etcd-password-file``
again (a ``ReloadHook``, in the same all-or-nothing step): its next etcd client, made when the
current one fails, uses them (``Endpoints.renew``).

Without any such flag there is nothing to re-read and SIGHUP keeps its default (the process
ends), so a process run in a terminal still ends when the terminal does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pbkv.runtime.config import ConfigError, read_small_file
from pbkv.runtime.connection import Connection
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.security import RELOAD_TIMEOUT_S_DEFAULT, Security, rotating_roles
from pbkv.runtime.tls import TlsOptions

CERTIFICATE_FILE_BYTES_MAX: Final = 1024 * 1024

ReloadHook = Callable[[], Callable[[], dict[str, Any]]]
"""Reads more files (``ConfigError`` when it cannot) and returns what adopts them, which returns
the fields it adds to the ``credentials_reloaded`` line."""


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What an operator checks after a renewal: which certificate a process serves, until when."""

    subject: str
    serial: str
    expires: datetime.datetime

    @property
    def expires_text(self) -> str:
        return self.expires.strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate_facts(tls: TlsOptions | None) -> CertificateFacts | None:
    """The first certificate of ``tls.cert`` (the process's own; the chain follows it), or None
    without TLS, or when it cannot be read here although OpenSSL loaded it (a file over
    ``CERTIFICATE_FILE_BYTES_MAX``, a certificate ``cryptography`` parses more strictly): the
    facts are for the operator's eyes, never a reason to refuse a start or a reload."""
    if tls is None or tls.cert is None:
        return None
    from cryptography import x509  # only with TLS: most processes never pay for its import

    try:
        data = read_small_file(tls.cert, "--tls-cert", CERTIFICATE_FILE_BYTES_MAX)
        certificate = x509.load_pem_x509_certificates(data)[0]
    except (ConfigError, ValueError):
        return None
    return CertificateFacts(
        certificate.subject.rfc4514_string(),
        format(certificate.serial_number, "x"),
        certificate.not_valid_after_utc,
    )


def same_shape(current: Security, fresh: Security) -> Security:
    """``fresh``, if it secures what ``current`` secures: a reload never turns TLS or the
    secret off (or on), whatever the files now say. ``ConfigError`` otherwise."""
    for what, before, after in (
        ("a secret", current.secrets, fresh.secrets),
        ("TLS", current.server_tls, fresh.server_tls),
    ):
        if (before is None) != (after is None):
            state = "on" if before is None else "off"
            raise ConfigError(f"a reload cannot turn {what} {state}: restart the process")
    return fresh


REVOKED_REASON: Final = "a reload revoked the secret or CA it was authenticated with"


def accepted(security: Security) -> frozenset[bytes]:
    """What an inbound connection may have proved: every secret accepted, for either role,
    and every CA certificate a client certificate may chain to (DER)."""
    keys: set[bytes] = set()
    secrets = security.secrets
    if secrets is not None:
        held = (secrets.peer, secrets.peer_also, secrets.client, secrets.client_also)
        keys.update(key for key in held if key is not None)
    if security.server_tls is not None:
        keys.update(security.server_tls.get_ca_certs(binary_form=True))
    return frozenset(keys)


def close_all(connections: Iterable[Connection[Any]], reason: str) -> int:
    """Close ``connections`` (flushing what they queued) with ``reason``; how many."""
    closed = 0
    for connection in list(connections):
        if not connection.closed:
            connection.close(reason)
            closed += 1
    return closed


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a reload read, not yet adopted."""

    security: Security | None
    certificate: CertificateFacts | None
    adopters: list[Callable[[], dict[str, Any]]]


def _settle(
    result: asyncio.Future[Prepared], prepared: Prepared | None, error: BaseException | None
) -> None:
    if result.done():  # timed out and abandoned
        return
    if error is not None:
        result.set_exception(error)
    else:
        assert prepared is not None
        result.set_result(prepared)


class CredentialReloader:
    """Reloads ``security`` (the node's) and ``admin`` (its admin port's) on request."""

    def __init__(
        self,
        security: Security | None,
        admin: Security | None,
        logger: EventLogger,
        hooks: Sequence[ReloadHook] = (),
        close_inbound: Callable[[str], int] | None = None,
    ) -> None:
        self.security = security
        self.close_inbound = close_inbound  # closes every inbound connection; how many
        self.admin = admin
        self.logger = logger
        self.hooks = tuple(hooks)
        self.tls = security is not None and security.server_tls is not None
        self.timeout_s = security.reload_timeout_s if security else RELOAD_TIMEOUT_S_DEFAULT
        self.running: asyncio.Task[None] | None = None
        self.again = False
        self.stuck: asyncio.Future[Prepared] | None = None  # a reload whose thread never ended
        self.certificate = certificate_facts(security.tls_options) if security else None

    @property
    def reloadable(self) -> bool:
        """Whether the process was started with files to read again."""
        own = self.security is not None and self.security.reload_from is not None
        return own or bool(self.hooks)

    def describe(self) -> dict[str, Any]:
        """The fields of the line that says what is in force after a reload."""
        security = self.security
        secrets = security.secrets if security is not None else None
        fields: dict[str, Any] = {"rotating": rotating_roles(secrets) if secrets else "-"}
        return fields | self.certificate_fields()

    def certificate_fields(self) -> dict[str, Any]:
        """Which certificate the process presents (nothing without TLS)."""
        certificate = self.certificate
        if certificate is None:
            return {"certificate": "unknown"} if self.tls else {}
        return {
            "certificate": certificate.subject,
            "serial": certificate.serial,
            "expires": certificate.expires_text,
        }

    def reload(self) -> bool:
        """Read every file again and adopt the result, or keep everything (one line either
        way); True when reloaded. On the caller's thread: in-process hosts and tests (the
        signal goes through ``request``)."""
        if not self.reloadable:
            self.logger.event("credentials_reload_skipped", reason="no secret or TLS files")
            return False
        try:
            prepared = self.prepare()
        except ConfigError as error:
            self.failed(str(error))
            return False
        self.commit(prepared)
        return True

    def prepare(self) -> Prepared:
        """Everything that reads files (``ConfigError`` when one cannot be used): safe off the
        loop, it changes nothing."""
        security = self.security
        fresh = None
        if security is not None and security.reload_from is not None:
            fresh = same_shape(security, security.reload_from())
        certificate = certificate_facts(fresh.tls_options) if fresh else self.certificate
        return Prepared(fresh, certificate, [hook() for hook in self.hooks])

    def commit(self, prepared: Prepared) -> None:
        """Adopt what ``prepare`` read (on the loop) and say what is now in force. When the
        reload stopped accepting a secret or trusting a CA, every inbound connection is closed:
        none authenticated under what was revoked outlives the reload."""
        security, fresh = self.security, prepared.security
        revoked = False
        if security is not None and fresh is not None:
            revoked = bool(accepted(security) - accepted(fresh))
            security.adopt(fresh)
            if self.admin is not None:
                self.admin.adopt(fresh.admin())
        self.certificate = prepared.certificate
        fields = self.describe()
        for adopt in prepared.adopters:
            fields |= adopt()
        if revoked and self.close_inbound is not None:
            fields["closed"] = self.close_inbound(REVOKED_REASON)
        self.logger.event("credentials_reloaded", **fields)

    def failed(self, reason: str) -> None:
        self.logger.event(
            "credentials_reload_failed", reason=reason, kept="the credentials in force"
        )

    def request(self) -> None:
        """The SIGHUP handler: read the files on a thread of their own, so a slow file system
        or a FIFO never stalls the loop, within ``reload_timeout_s``; adopt on the loop. A
        signal during a reload runs one more after it (files written meanwhile are read)."""
        if not self.reloadable:
            self.reload()  # says there is nothing to reload
            return
        if self.running is not None and not self.running.done():
            self.again = True
            return
        if self.stuck is not None and not self.stuck.done():
            self.failed("the previous reload is still reading its files (a FIFO? a hung mount?)")
            return
        self.running = asyncio.get_running_loop().create_task(self._reload_off_loop())

    async def _reload_off_loop(self) -> None:
        loop = asyncio.get_running_loop()
        self.again = True
        while self.again:
            self.again = False
            result: asyncio.Future[Prepared] = loop.create_future()
            threading.Thread(
                target=self._prepare_into, args=(loop, result), name="pbkv-reload", daemon=True
            ).start()  # a daemon: one blocked for good never holds up the process's exit
            try:
                prepared = await asyncio.wait_for(asyncio.shield(result), self.timeout_s)
            except TimeoutError:
                self.stuck = result
                self.failed(
                    f"reading the files took over {self.timeout_s:g} s (--reload-timeout-s)"
                )
                return
            except ConfigError as error:
                self.failed(str(error))
                continue
            except Exception as error:  # a bug: the process keeps serving with what it had
                self.failed(f"{type(error).__name__}: {error}")
                continue
            self.commit(prepared)

    def _prepare_into(
        self, loop: asyncio.AbstractEventLoop, result: asyncio.Future[Prepared]
    ) -> None:
        """The reload thread: ``prepare``, then hand the outcome to the loop (unless the
        process stopped meanwhile and the loop is closed)."""
        prepared: Prepared | None = None
        failure: BaseException | None = None
        try:
            prepared = self.prepare()
        except Exception as error:  # ConfigError, or a bug: reported on the loop either way
            failure = error
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, result, prepared, failure)

    def expiry_timestamp_s(self) -> float:
        """The certificate's expiry as a Unix time, NaN when unknown (no alert compares true
        on it): the metrics gauge."""
        certificate = self.certificate
        return certificate.expires.timestamp() if certificate is not None else math.nan
