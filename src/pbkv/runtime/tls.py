"""TLS for pbkv connections, with the standard ``ssl`` module over memory buffers.

Theory of operation. A listener started with ``--tls-cert/--tls-key`` accepts plain TCP and
runs TLS itself in the connection (``TlsLayer``: an ``ssl.SSLObject`` between two
``ssl.MemoryBIO``), rather than handing the socket to ``create_server(ssl=...)``. That keeps
every failure in our hands: the first byte of a TLS connection is a handshake record (0x16), so
plaintext on a TLS port is recognised at once, answered with one plaintext error frame and
closed with a one-line log; a failed TLS handshake (expired certificate, a certificate from
another CA, no certificate where one is required) is closed with its reason logged once; the
TLS handshake counts against the same ``handshake_timeout_s`` as authentication. Outbound
connections (servers to peers, clients) run the same layer on the client side.

``TlsOptions`` holds paths: ``cert``/``key`` (the listener's certificate chain and key, or the
client certificate for mutual TLS), ``ca`` (the CA that signs the other side's certificate;
default: the system's) and ``mutual`` (a listener then requires a client certificate signed by
``ca``). ``server_name`` is the name checked in the server's certificate (default: the host
part of the address dialled). A client may also pass a ready ``ssl.SSLContext``.

A client given ``TlsOptions`` reads its files again before a new connection when they changed
(``files_stamp``: inode, size and modification time of each), so a renewed client certificate or
CA file is used without a new client (``pbkv.runtime.security.ClientTlsFiles``).
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass
from typing import Final

from pbkv.runtime.config import ConfigError

TLS_HANDSHAKE_RECORD: Final = 0x16
TLS_RECORD_TYPES: Final = range(0x14, 0x18)
"""The first byte of every TLS record (change cipher spec, alert, handshake, application data)."""
NO_CLIENT_CERTIFICATE_REASON: Final = "PEER_DID_NOT_RETURN_A_CERTIFICATE"
NO_CLIENT_CERTIFICATE: Final = (
    "the client presented no certificate, which this node's --tls-mutual requires "
    "(give the client --tls-cert and --tls-key)"
)
READ_BYTES: Final = 64 * 1024


FileStamp = tuple[int, int, int] | None
"""A file's inode, size and modification time in ns (None: no such file, or not a regular
file: nothing that reading could not block on, such as a FIFO)."""


def file_stamp(path: str | None) -> FileStamp:
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)


class TlsError(Exception):
    """The TLS layer failed; the message is the one-line reason."""


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """Certificates for a TLS listener or client (paths to PEM files); see the module doc."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    mutual: bool = False
    server_name: str | None = None

    def server_context(self) -> ssl.SSLContext:
        """The listener's context; ``ConfigError`` (one line) for unusable files."""
        if self.cert is None:
            raise ConfigError("--tls-cert is required to serve TLS")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_chain(context)
        if self.mutual:
            if self.ca is None:
                raise ConfigError("--tls-mutual needs --tls-ca (the CA of client certificates)")
            self._load_ca(context)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def files_stamp(self) -> tuple[FileStamp, ...]:
        """What changes when any of the files is rewritten or replaced (renamed over)."""
        return (file_stamp(self.cert), file_stamp(self.key), file_stamp(self.ca))

    def files_present(self, stamp: tuple[FileStamp, ...]) -> bool:
        """Whether every file given is there, a regular file, in ``stamp``."""
        paths = (self.cert, self.key, self.ca)
        pairs = zip(paths, stamp, strict=True)
        return all(path is None or part is not None for path, part in pairs)

    def client_context(self) -> ssl.SSLContext:
        """The connecting side's context: verify the server against ``ca`` (or the system's
        CAs) and its name; present ``cert``/``key`` when given (mutual TLS)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca is not None:
            self._load_ca(context)
        else:
            context.load_default_certs()
        if self.cert is not None:
            self._load_chain(context)
        return context

    def _load_chain(self, context: ssl.SSLContext) -> None:
        assert self.cert is not None
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"cannot load TLS certificate {self.cert}: {_reason(error)}"
            ) from None

    def _load_ca(self, context: ssl.SSLContext) -> None:
        try:
            context.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"cannot load TLS CA {self.ca}: {_reason(error)}") from None


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and "PEM lib" in str(error):  # no reason of its own
        return "no PEM certificate chain and key it can read"
    if isinstance(error, ssl.SSLError) and error.reason:
        verify = getattr(error, "verify_message", None)
        return f"{error.reason} ({verify})" if verify else str(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def client_context(tls: TlsOptions | ssl.SSLContext | None) -> ssl.SSLContext | None:
    """A client's context from what a caller passed."""
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    return tls.client_context()


class TlsLayer:
    """One side of a TLS session over memory buffers: ``receive`` ciphertext, get plaintext;
    ``send`` plaintext, get ciphertext; ``outgoing()`` after each call holds what to write."""

    def __init__(
        self, context: ssl.SSLContext, server_side: bool, server_name: str | None = None
    ) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing_bio = ssl.MemoryBIO()
        self.server_side = server_side
        self.object = context.wrap_bio(
            self.incoming, self.outgoing_bio, server_side, server_hostname=server_name
        )
        self.established = False
        self.first = True

    def start(self) -> bytes:
        """The client's first flight (ClientHello)."""
        self._handshake()
        return self.outgoing()

    def outgoing(self) -> bytes:
        return self.outgoing_bio.read()

    def receive(self, data: bytes) -> bytes:
        """Feed ciphertext; the plaintext it completes (``TlsError`` on any TLS failure)."""
        if self.first and self.server_side and data and data[0] != TLS_HANDSHAKE_RECORD:
            raise TlsError("plaintext on a TLS port")
        self.first = False
        self.incoming.write(data)
        if not self.established and not self._handshake():
            return b""
        chunks = []
        try:
            while True:
                chunk = self.object.read(READ_BYTES)
                if not chunk:
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            pass
        except ssl.SSLError as error:
            raise TlsError(f"TLS error: {_reason(error)}") from None
        return b"".join(chunks)

    def _handshake(self) -> bool:
        try:
            self.object.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLCertVerificationError as error:
            raise TlsError(f"TLS certificate refused: {_reason(error)}") from None
        except ssl.SSLError as error:
            reason = _reason(error)
            if reason == NO_CLIENT_CERTIFICATE_REASON:
                reason = NO_CLIENT_CERTIFICATE
            raise TlsError(f"TLS handshake failed: {reason}") from None
        self.established = True
        return True

    def send(self, data: bytes) -> bytes:
        """Encrypt ``data`` (only once ``established``); the ciphertext to write."""
        try:
            self.object.write(data)
        except ssl.SSLError as error:
            raise TlsError(f"TLS error: {_reason(error)}") from None
        return self.outgoing()
