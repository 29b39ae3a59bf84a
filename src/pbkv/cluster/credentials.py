"""The secret (and, with ``--tls``, the certificates) of a local cluster, kept in its directory.

``pbkv cluster up`` writes ``auth-token`` (32 random bytes as hex, mode 0600) into the cluster
directory and starts every process with ``--auth-token-file`` pointing at it, and with
``--auth-accept-token-file auth-token.accept`` (empty: the slot ``pbkv cluster rotate-secret``
fills with the next secret and empties again, ``pbkv.cluster.rotation``); ``--tls`` adds
``tls/ca.pem`` (a self-signed CA, generated with the ``cryptography`` package) and one
certificate and key per process (``tls/NAME.pem``, ``tls/NAME.key``, valid for 127.0.0.1 and
localhost), passed as ``--tls-cert/--tls-key/--tls-ca``, with ``--tls-mutual`` so that peers
prove their certificate too. ``install`` makes every ``pbkv`` command that works on the
cluster's directory (client commands, ``cluster``, ``demo``, ``dashboard``, ``bench``) present
the secret and trust the CA, with a client certificate of its own (``tls/client.pem``).
Certificates are valid ``CERT_DAYS``; ``renew_certificates`` issues again the ones that expire
within ``RENEW_BEFORE`` before a process starts, and the CA when every process is stopped. The
certificates carry the key usages and identifiers strict verifiers demand (RFC 5280).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pbkv.runtime.auth import load_token_file, set_cluster_token
from pbkv.runtime.security import set_cluster_tls
from pbkv.runtime.tls import TlsOptions

if TYPE_CHECKING:
    from cryptography import x509

TOKEN_FILE: Final = "auth-token"
ACCEPT_FILE: Final = "auth-token.accept"
ACCEPT_FLAG: Final = "--auth-accept-token-file"
ROTATION_MARKER: Final = "auth-token.rotating"
"""The step a stopped ``pbkv cluster rotate-secret`` left (``pbkv.cluster.rotation``)."""
TLS_DIR: Final = "tls"
CA_FILE: Final = "ca.pem"
CLIENT_NAME: Final = "client"
CERT_DAYS: Final = 365
RENEW_BEFORE: Final = datetime.timedelta(days=1)
"""A certificate that expires sooner is issued again before a process of the cluster starts."""


def token_path(directory: Path) -> Path:
    return directory / TOKEN_FILE


def accept_path(directory: Path) -> Path:
    return directory / ACCEPT_FILE


def new_secret() -> str:
    return secrets.token_hex(32)


def ensure_token(directory: Path) -> Path:
    """The cluster's secret file, created (0600) when missing, and its empty accept file."""
    path = token_path(directory)
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(new_secret() + "\n")
    if not accept_path(directory).exists():
        write_secret(accept_path(directory), "")
    return path


def write_secret(path: Path, secret: str) -> None:
    """Replace ``path`` whole with ``secret`` (0600; "" empties an accept file): written
    beside it, then renamed over it, so a process reloading meanwhile reads the old file or
    the new one, never half of one."""
    fresh = path.with_name(path.name + ".new")
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n" if secret else "")
    os.replace(fresh, path)


def tls_dir(directory: Path) -> Path:
    return directory / TLS_DIR


def uses_tls(directory: Path) -> bool:
    return (tls_dir(directory) / CA_FILE).exists()


def node_args(directory: Path, name: str) -> tuple[str, ...]:
    """The security flags of cluster process ``name``."""
    ensure_token(directory)  # the accept file of a directory made before it existed
    args: tuple[str, ...] = ("--auth-token-file", str(token_path(directory)))
    args += (ACCEPT_FLAG, str(accept_path(directory)))
    if uses_tls(directory):
        folder = tls_dir(directory)
        ensure_certificate(directory, name)
        args += (
            "--tls-cert", str(folder / f"{name}.pem"), "--tls-key", str(folder / f"{name}.key"),
            "--tls-ca", str(folder / CA_FILE), "--tls-mutual",
        )  # fmt: skip
    return args


def with_accept_file(argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` of a process recorded before clusters had an accept file, with one beside its
    token file (``restart`` and ``up --resume`` start it so, and then it can rotate)."""
    if ACCEPT_FLAG in argv or "--auth-token-file" not in argv:
        return argv
    token = Path(argv[argv.index("--auth-token-file") + 1])
    ensure_token(token.parent)
    return (*argv, ACCEPT_FLAG, str(accept_path(token.parent)))


def install(directory: Path, chosen: bool = True) -> None:
    """Make this process's tools use the cluster's secret and TLS (when it has them);
    ``chosen``: the command works on this cluster (see ``resolve_token``)."""
    path = token_path(directory)
    if path.exists():
        set_cluster_token(load_token_file(path), chosen)
    if uses_tls(directory):
        folder = tls_dir(directory)
        cert, key = folder / f"{CLIENT_NAME}.pem", folder / f"{CLIENT_NAME}.key"
        set_cluster_tls(TlsOptions(str(cert), str(key), str(folder / CA_FILE)))
    else:  # not the TLS of a directory installed before (a --tls cluster's, deleted by `up`)
        set_cluster_tls(None)


# --- certificates ----------------------------------------------------------------------------


def create_ca(directory: Path, days: float = CERT_DAYS) -> None:
    """A new self-signed CA in ``tls/`` (and the tools' client certificate), valid ``days``
    (negative: one that has expired, for tests)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tls_dir(directory)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    label = f"pbkv cluster CA {secrets.token_hex(4)}"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)])
    now = datetime.datetime.now(datetime.UTC)
    end = now + datetime.timedelta(days=days)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(
            min(now - datetime.timedelta(minutes=5), end - datetime.timedelta(days=1))
        )
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_pair(folder / "ca", certificate, key)
    for old in folder.glob("*.pem"):
        if old.name != CA_FILE:
            old.unlink()
    ensure_certificate(directory, CLIENT_NAME)


def ensure_certificate(directory: Path, name: str, days: float = CERT_DAYS) -> None:
    """``tls/NAME.pem`` and ``tls/NAME.key`` signed by the cluster's CA, when missing."""
    folder = tls_dir(directory)
    if not (folder / f"{name}.pem").exists():
        issue_certificate(folder / CA_FILE, folder / "ca.key", folder / name, name, days)


def issue_certificate(
    ca_cert: Path, ca_key: Path, stem: Path, name: str, days: float = CERT_DAYS
) -> None:
    """``STEM.pem``/``STEM.key``: a certificate for 127.0.0.1 and localhost signed by the CA
    (``days`` may be negative: an expired certificate, for tests)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    authority = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    authority_key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    assert isinstance(authority_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start, end = sorted((now - datetime.timedelta(days=1), now + datetime.timedelta(days=days)))
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(days=1) if days < 0 else start)
        .not_valid_after(end if days >= 0 else now - datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()),
            critical=False,
        )
        .sign(authority_key, hashes.SHA256())
    )
    _write_pair(stem, certificate, key)


def expiring(pem: Path, within: datetime.timedelta = RENEW_BEFORE) -> bool:
    """Whether the certificate in ``pem`` is missing or unreadable, or expires ``within``."""
    from cryptography import x509

    try:
        certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    except (OSError, ValueError):
        return True
    return certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < within


def renew_certificates(directory: Path, ca_too: bool) -> list[str]:
    """Before processes of a ``--tls`` cluster start: issue again, from the same CA, each
    certificate of ``tls/`` that expires within ``RENEW_BEFORE``; with ``ca_too`` (every process
    stopped: ``up --resume``), a CA that expires is replaced and every certificate issued from
    the new one. Returns the names renewed (``ca`` first when it was); the cluster manager
    sends the running ones SIGHUP (``reloads.reload_running``)."""
    folder = tls_dir(directory)
    if not uses_tls(directory):
        return []
    names = sorted(pem.stem for pem in folder.glob("*.pem") if pem.name != CA_FILE)
    if ca_too and expiring(folder / CA_FILE):
        create_ca(directory)  # removes every other certificate
        for name in names:
            ensure_certificate(directory, name)
        return ["ca", *names]
    renewed = [name for name in names if expiring(folder / f"{name}.pem")]
    for name in renewed:
        issue_certificate(folder / CA_FILE, folder / "ca.key", folder / name, name)
    return renewed


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs); a node's or client's key only signs handshakes.
    With the key identifiers, what RFC 5280 asks and strict verifiers check (OpenSSL's
    ``-x509_strict``, the default of Python 3.13's ``ssl.create_default_context``)."""
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _write_pair(stem: Path, certificate: object, key: object) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(certificate, x509.Certificate)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    stem.with_suffix(".pem").write_bytes(pem)
    key_path = stem.with_suffix(".key")
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
