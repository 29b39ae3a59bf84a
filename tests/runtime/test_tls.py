"""TLS against real processes: mutual TLS between every process, and what it refuses.

The cluster runs with ``--tls-cert/--tls-key/--tls-ca --tls-mutual`` and the secret, as
``pbkv cluster up --tls`` starts it; this test process uses the cluster CA's client certificate
for its own tools (``set_cli_tls``). Plaintext, an expired client certificate and a certificate
of a foreign CA are each refused while an honest TLS client keeps writing; nothing of theirs
is applied.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pbkv
from pbkv.cluster import credentials
from pbkv.core.messages import ErrorReply, GetView, Put, Request, ViewReply
from pbkv.runtime import rpc, security
from pbkv.runtime.config import parse_address
from pbkv.runtime.tls import TlsOptions
from pbkv.wire import MESSAGES
from tests.conftest import Cluster

from .test_auth import STEADY, Honest, first_frame, wait_for_log

Factory = Callable[..., Cluster]


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A cluster CA with a node certificate, a client one, an expired one, and a foreign CA."""
    credentials.create_ca(tmp_path)
    folder = credentials.tls_dir(tmp_path)
    credentials.ensure_certificate(tmp_path, "node")
    credentials.issue_certificate(folder / "ca.pem", folder / "ca.key", folder / "expired", "x", -1)
    foreign = tmp_path / "foreign"
    credentials.create_ca(foreign)
    credentials.ensure_certificate(foreign, "intruder")
    return folder


def options(folder: Path, name: str, ca: Path | None = None) -> TlsOptions:
    return TlsOptions(
        str(folder / f"{name}.pem"), str(folder / f"{name}.key"), str(ca or folder / "ca.pem")
    )


@pytest.fixture
def tls_cluster(
    cluster_factory: Factory, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    monkeypatch.setattr(security, "_cli_tls", options(pki, "client"))
    flags = ("--tls-cert", str(pki / "node.pem"), "--tls-key", str(pki / "node.key"),
             "--tls-ca", str(pki / "ca.pem"), "--tls-mutual")  # fmt: skip
    yield cluster_factory(admin=True, node_args=flags, **STEADY)


def test_a_tls_cluster_serves_honest_clients(tls_cluster: Cluster, pki: Path) -> None:
    with pbkv.Client(tls_cluster.address, timeout=10.0, tls=options(pki, "client")) as kv:
        kv.put("k", "v")
        assert kv.get("k") == "v"
    assert "tls=on" in tls_cluster.viewserver.log_text()


def test_plaintext_to_a_tls_port_gets_one_plaintext_error_frame(tls_cluster: Cluster) -> None:
    with Honest(tls_cluster):
        for node in [tls_cluster.viewserver, *tls_cluster.servers]:
            with socket.create_connection(parse_address(node.address), timeout=5.0) as sock:
                sock.sendall(MESSAGES.frame(Request("evil", 1, 0, Put("forged", "x"))))
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            reply = first_frame(data)
            assert isinstance(reply, ErrorReply) and "plaintext on a TLS port" in reply.reason
            wait_for_log(node, "plaintext on a TLS port")
    assert pbkv.Client(tls_cluster.address, timeout=10.0).get("forged") is None


@pytest.mark.parametrize("who", ["expired", "foreign", "none"])
def test_bad_client_certificates_are_refused(tls_cluster: Cluster, pki: Path, who: str) -> None:
    foreign = pki.parent / "foreign" / "tls"
    chosen = {
        "expired": options(pki, "expired"),
        "foreign": options(foreign, "intruder", ca=pki / "ca.pem"),
        "none": TlsOptions(ca=str(pki / "ca.pem")),
    }[who]
    bad = security.client_security(None, chosen, "peer")
    with Honest(tls_cluster):
        for address in (tls_cluster.address, tls_cluster.primary().address):
            with pytest.raises((ssl.SSLError, OSError)):
                reply = rpc.call(address, GetView(), MESSAGES, 5.0, bad)
                assert not isinstance(reply, ViewReply)
        reason = {
            "expired": "certificate has expired",
            "foreign": "unable to get local issuer certificate",
            "none": "TLS handshake failed",
        }[who]
        wait_for_log(tls_cluster.viewserver, reason)
    with pbkv.Client(tls_cluster.address, timeout=10.0) as kv:
        assert kv.get("forged") is None


def test_a_client_refuses_a_server_of_another_ca(tls_cluster: Cluster, pki: Path) -> None:
    foreign = pki.parent / "foreign" / "tls"
    distrustful = security.client_security(None, options(pki, "client", ca=foreign / "ca.pem"))
    started = time.monotonic()
    with pytest.raises(ssl.SSLCertVerificationError):
        rpc.call(tls_cluster.address, GetView(), MESSAGES, 5.0, distrustful)
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("who", ["plaintext", "no-certificate"])
def test_a_client_that_tls_refuses_fails_at_once_not_after_its_timeout(
    tls_cluster: Cluster, pki: Path, monkeypatch: pytest.MonkeyPatch, who: str
) -> None:
    """Review: a plaintext client, or one without the certificate mutual TLS wants, waited
    out its whole timeout and was told the operation 'may or may not have taken effect'. The
    refusal is for good, so the operation fails at once with AuthenticationFailed."""
    monkeypatch.setattr(security, "_cli_tls", None)
    tls = None if who == "plaintext" else TlsOptions(ca=str(pki / "ca.pem"))
    with (
        pbkv.Client(tls_cluster.address, timeout=60.0, tls=tls) as kv,
        pytest.raises(pbkv.AuthenticationFailed) as refused,
    ):
        kv.put("refused", "x")
    # the server's own words, not TLS's WRONG_VERSION_NUMBER for its plaintext error frame
    said = {"plaintext": "plaintext on a TLS port", "no-certificate": "presented no certificate"}
    assert said[who] in str(refused.value)
    assert "WRONG_VERSION_NUMBER" not in str(refused.value)
