"""``CredentialReloader`` in one process: all or nothing, the shape kept, the admin port too.
(The real-process behaviour, SIGHUP included, is in ``test_credential_reload.py``.)"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import math
import os
import threading
from pathlib import Path

import pytest
from cryptography import x509

from pbkv.cluster import credentials
from pbkv.runtime.config import ConfigError
from pbkv.runtime.logging import EventLogger
from pbkv.runtime.reload import CredentialReloader
from pbkv.runtime.security import Security, node_security
from pbkv.runtime.tls import TlsOptions

PEER = b"peer-secret-0123456789abcdef"
NEW_PEER = b"new-peer-secret-0123456789abcdef"


def reloader_of(security: Security) -> tuple[CredentialReloader, Security, io.StringIO]:
    lines = io.StringIO()
    admin = security.admin()
    logger = EventLogger("server", "127.0.0.1:1", lambda: 0, stream=lines)
    return CredentialReloader(security, admin, logger), admin, lines


def test_a_reload_takes_the_new_secret_on_the_node_and_its_admin_port(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(PEER)
    security = node_security(str(token), None, None)
    reloader, admin, lines = reloader_of(security)
    token.write_bytes(NEW_PEER)
    assert reloader.reload()
    assert security.token == NEW_PEER and security.secrets is not None
    assert security.secrets.keys("peer") == (NEW_PEER,)
    assert admin.secrets is not None and admin.secrets.keys("peer") == (NEW_PEER,)
    assert not admin.secrets.clients  # still the peer role alone on the admin port
    assert "credentials_reloaded rotating=-" in lines.getvalue()


@pytest.mark.parametrize("damage", [b"", b"short"])
def test_a_bad_file_keeps_every_credential(tmp_path: Path, damage: bytes) -> None:
    token, accept = tmp_path / "token", tmp_path / "accept"
    token.write_bytes(PEER)
    accept.write_bytes(b"")
    security = node_security(str(token), None, None, accept_token_file=str(accept))
    reloader, _, lines = reloader_of(security)
    accept.write_bytes(NEW_PEER)  # would be taken...
    token.write_bytes(damage)  # ...but the token file is broken: nothing is
    assert not reloader.reload()
    assert security.secrets is not None and security.secrets.keys("peer") == (PEER,)
    assert 'credentials_reload_failed reason="token file' in lines.getvalue()


def test_a_reload_never_turns_tls_or_the_secret_off(tmp_path: Path) -> None:
    """The files are re-read with the flags of the start; should what they build secure less
    (or more) than before, the reload is refused: a process never opens up on a signal."""
    credentials.create_ca(tmp_path)
    credentials.ensure_certificate(tmp_path, "node")
    pki = credentials.tls_dir(tmp_path)
    tls = TlsOptions(str(pki / "node.pem"), str(pki / "node.key"), str(pki / "ca.pem"))
    token = tmp_path / "token"
    token.write_bytes(PEER)
    security = node_security(str(token), None, tls)
    reloader, _, lines = reloader_of(security)
    plain = Security(token=PEER, secrets=security.secrets)
    unauthenticated = dataclasses.replace(security, token=None, secrets=None, reload_from=None)
    for fresh, said in ((plain, "turn TLS off"), (unauthenticated, "turn a secret off")):
        security.reload_from = lambda fresh=fresh: fresh
        assert not reloader.reload()
        assert said in lines.getvalue()
    assert security.server_tls is not None and security.secrets is not None


def test_nothing_to_reload_is_said_and_changes_nothing() -> None:
    security = Security()
    reloader, _, lines = reloader_of(security)
    assert not reloader.reloadable and not reloader.reload()
    assert "credentials_reload_skipped" in lines.getvalue()


def test_a_hook_that_cannot_read_its_files_keeps_the_nodes_own_too(tmp_path: Path) -> None:
    """All or nothing across the node's files and a hook's (the etcd files of a view service):
    the node's new secret is not taken when the hook fails."""
    token = tmp_path / "token"
    token.write_bytes(PEER)
    security = node_security(str(token), None, None)
    lines = io.StringIO()
    logger = EventLogger("viewserver", "127.0.0.1:1", lambda: 0, stream=lines)

    def failing_hook() -> object:
        raise ConfigError("cannot read --etcd-password-file /x: No such file or directory")

    reloader = CredentialReloader(security, None, logger, [failing_hook])  # type: ignore[list-item]
    token.write_bytes(NEW_PEER)
    assert not reloader.reload()
    assert security.token == PEER
    assert "--etcd-password-file" in lines.getvalue()


def test_a_certificate_it_cannot_read_is_unknown_never_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate's facts are for the operator: when they cannot be read (here: a file
    over the size read for them; also a certificate ``cryptography`` parses more strictly than
    OpenSSL), the process starts and reloads anyway, says ``certificate=unknown``, and the
    expiry gauge reads NaN, which no alert compares true (0 would fire the expiry alert)."""
    from pbkv.runtime import reload

    credentials.create_ca(tmp_path)
    credentials.ensure_certificate(tmp_path, "node")
    pki = credentials.tls_dir(tmp_path)
    tls = TlsOptions(str(pki / "node.pem"), str(pki / "node.key"), str(pki / "ca.pem"))
    monkeypatch.setattr(reload, "CERTIFICATE_FILE_BYTES_MAX", 10)
    security = node_security(None, None, tls)
    reloader, _, lines = reloader_of(security)
    assert reloader.certificate_fields() == {"certificate": "unknown"}
    assert math.isnan(reloader.expiry_timestamp_s())
    assert reloader.reload() and "certificate=unknown" in lines.getvalue()


def test_signals_during_a_reload_run_one_more_after_it_and_a_stuck_one_is_given_up(
    tmp_path: Path,
) -> None:
    """``request`` (the SIGHUP handler) reads on a thread: while one reload reads, more
    signals make exactly one more run after it (files written meanwhile are read); a reload
    whose reading outlasts ``reload_timeout_s`` is given up with one line, and a signal while
    it is still stuck says so instead of starting another; the loop runs throughout."""
    token = tmp_path / "token"
    token.write_bytes(PEER)
    security = node_security(str(token), None, None, reload_timeout_s=0.5)
    reloader, _, lines = reloader_of(security)
    assert security.reload_from is not None
    build = security.reload_from
    gate, reads = threading.Event(), []

    def slow_build() -> Security:
        reads.append(1)
        gate.wait(10)
        return build()

    security.reload_from = slow_build

    async def scenario() -> None:
        reloader.request()
        await asyncio.sleep(0.1)  # the loop turns while the thread waits
        assert reads == [1]
        reloader.request()
        reloader.request()
        gate.set()
        assert reloader.running is not None
        await reloader.running
        assert len(reads) == 2 and lines.getvalue().count("credentials_reloaded") == 2
        gate.clear()
        reloader.request()
        await asyncio.sleep(0.8)  # over reload_timeout_s
        assert "took over 0.5 s" in lines.getvalue()
        reloader.request()
        assert "still reading its files" in lines.getvalue()
        gate.set()

    asyncio.run(scenario())


def test_only_a_reload_that_revokes_something_closes_the_inbound_connections(
    tmp_path: Path,
) -> None:
    """A new certificate of the same CA, or a second secret accepted, revokes nothing: the
    connections stay. A secret no longer accepted (the last step of a rotation), or a CA no
    longer trusted, closes every inbound connection: none proved under it survives."""
    credentials.create_ca(tmp_path / "a")
    credentials.ensure_certificate(tmp_path / "a", "node")
    credentials.create_ca(tmp_path / "b")
    live = tmp_path / "live"
    live.mkdir()
    pki_a, pki_b = credentials.tls_dir(tmp_path / "a"), credentials.tls_dir(tmp_path / "b")
    for name in ("node.pem", "node.key", "ca.pem"):
        (live / name).write_bytes((pki_a / name).read_bytes())
    tls = TlsOptions(str(live / "node.pem"), str(live / "node.key"), str(live / "ca.pem"), True)
    token, accept = tmp_path / "token", tmp_path / "accept"
    token.write_bytes(PEER)
    accept.write_bytes(b"")
    security = node_security(str(token), None, tls, accept_token_file=str(accept))
    closed: list[str] = []

    def close_inbound(reason: str) -> int:
        closed.append(reason)
        return 3

    logger = EventLogger("server", "x", lambda: 0, stream=io.StringIO())
    reloader = CredentialReloader(security, None, logger, close_inbound=close_inbound)
    accept.write_bytes(NEW_PEER)  # a second secret accepted
    (live / "ca.pem").write_bytes((pki_a / "ca.pem").read_bytes() + (pki_b / "ca.pem").read_bytes())
    assert reloader.reload() and closed == []
    accept.write_bytes(b"")  # NEW_PEER no longer accepted
    assert reloader.reload() and len(closed) == 1
    (live / "ca.pem").write_bytes((pki_a / "ca.pem").read_bytes())  # CA b no longer trusted
    assert reloader.reload() and len(closed) == 2
    assert reloader.reload() and len(closed) == 2  # the same files again: nothing revoked


def test_a_client_reads_its_tls_files_again_only_when_they_changed_and_keeps_a_working_context(
    tmp_path: Path,
) -> None:
    """``ClientTlsFiles``: before each new connection a client with ``TlsOptions`` looks at its
    files; unchanged, nothing is read; renewed, the next connection has a new context; half
    written (a key that does not match the certificate), the context in use stays and the files
    are read again once they change once more."""
    from pbkv.runtime.security import client_security

    for age in ("old", "new"):
        credentials.create_ca(tmp_path / age)
    live = tmp_path / "live"
    live.mkdir()
    cert, key, ca = live / "client.pem", live / "client.key", live / "ca.pem"

    def install(age: str, *names: str) -> None:
        for name in names:
            (live / name).write_bytes((credentials.tls_dir(tmp_path / age) / name).read_bytes())

    def trusted_serials() -> list[str]:
        assert security.client_tls is not None
        return [str(entry["serialNumber"]) for entry in security.client_tls.get_ca_certs()]

    def serial_of_ca(age: str) -> str:
        pem = (credentials.tls_dir(tmp_path / age) / "ca.pem").read_bytes()
        return format(x509.load_pem_x509_certificate(pem).serial_number, "X")

    install("old", "client.pem", "client.key", "ca.pem")
    security = client_security(None, TlsOptions(str(cert), str(key), str(ca)))
    files, first = security.client_tls_files, security.client_tls
    assert files is not None and first is not None
    assert [serial.lstrip("0") for serial in trusted_serials()] == [serial_of_ca("old")]
    security.refresh_client_tls()
    assert security.client_tls is first and files.reads == 0
    install("new", "client.pem")  # the certificate renewed, its key not yet
    security.refresh_client_tls()
    assert security.client_tls is first and files.reads == 0
    install("new", "client.key")
    ca.unlink()
    os.mkfifo(ca)  # in the CA file's place: never opened (it would block the loop)
    security.refresh_client_tls()
    assert security.client_tls is first and files.reads == 0
    ca.unlink()
    install("new", "ca.pem")
    security.refresh_client_tls()
    assert security.client_tls is not first and files.reads == 1
    assert [serial.lstrip("0") for serial in trusted_serials()] == [serial_of_ca("new")]
    security.refresh_client_tls()
    assert files.reads == 1


def test_a_client_given_a_ready_context_or_no_tls_reads_no_files() -> None:
    import ssl

    from pbkv.runtime.security import client_security

    context = ssl.create_default_context()
    assert client_security(None, context).client_tls_files is None
    assert client_security(None, context).client_tls is context
    plain = client_security(None, None)
    assert plain.client_tls is None and plain.client_tls_files is None
    plain.refresh_client_tls()
