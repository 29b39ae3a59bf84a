"""Certificates that strict verifiers accept, and a change of CA without stopping the cluster.

Review: the certificates of ``pbkv cluster up --tls`` and of the guide's openssl recipe had no
key usage on the CA and (pbkv's) no key identifiers, so a strict verifier refused them (OpenSSL's
``-x509_strict``; ``ssl.create_default_context`` sets ``VERIFY_X509_STRICT`` from Python 3.13):
a user handing pbkv such a context, or a proxy or scraper that verifies strictly, could not
connect. Both now carry what RFC 5280 asks; a strict handshake (client and server verifying,
as mutual TLS does) checks them, and is shown to refuse the former recipe.

The guide's CA change (a ``--tls-ca`` holding both CAs, then new certificates, then the new CA
alone) is run side by side, as during its rolling restarts: processes of adjacent steps
replicate and serve clients, and the last step refuses certificates of the old CA.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import pbkv
from pbkv.cluster import credentials
from pbkv.runtime import security
from pbkv.runtime.tls import TlsOptions
from tests.conftest import Cluster

from .test_auth import STEADY

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
HOST_ADDRESS = "10.0.0.10"  # host A of the guide's recipe; its certificate is made for loopback
FORMER_CA_RECIPE = (  # the guide's CA line before this review: no key usage
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 "
    "-subj /CN=pbkv-ca -keyout ca.key -out ca.pem"
)


@pytest.fixture(scope="module", autouse=True)
def openssl() -> None:
    assert shutil.which("openssl"), "the openssl command is missing (make test installs it)"


def strict_handshake(folder: Path, node: str, client: str) -> None:
    """A TLS 1.3 handshake in memory between ``node``'s certificate and ``client``'s, each
    verifying the other against ``folder/ca.pem`` with ``VERIFY_X509_STRICT``; raises
    ``ssl.SSLCertVerificationError`` when either side refuses."""
    ca = str(folder / "ca.pem")
    client_side = ssl.create_default_context(cafile=ca)
    client_side.verify_flags |= ssl.VERIFY_X509_STRICT
    client_side.load_cert_chain(folder / f"{client}.pem", folder / f"{client}.key")
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(folder / f"{node}.pem", folder / f"{node}.key")
    server_side.load_verify_locations(ca)
    server_side.verify_mode = ssl.CERT_REQUIRED
    server_side.verify_flags |= ssl.VERIFY_X509_STRICT
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    ends = [
        client_side.wrap_bio(to_client, to_server, server_hostname="127.0.0.1"),
        server_side.wrap_bio(to_server, to_client, server_side=True),
    ]
    done = [False, False]
    for _ in range(10):
        for index, end in enumerate(ends):
            if not done[index]:
                try:
                    end.do_handshake()
                    done[index] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done):
            return
    raise AssertionError("the handshake did not finish")


def guide_recipe() -> tuple[str, str]:
    """The guide's openssl lines: (the CA's, one host's), continuation lines joined."""
    text = GUIDE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("openssl req -x509"))
    end = next(i for i in range(start, len(lines)) if "chmod 600 a.key" in lines[i])
    ca, *host = lines[start : end + 1]
    return ca, "\n".join(host).replace(HOST_ADDRESS, "127.0.0.1")


def run_shell(script: str, folder: Path) -> None:
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=folder, check=True,
                   capture_output=True)  # fmt: skip


def host_lines(host: str, name: str) -> str:
    """The host lines for another certificate (``client``) than host A's."""
    return re.sub(r"\ba\.(key|csr|pem|ext)\b", rf"{name}.\1", host).replace(
        "/CN=a ", f"/CN={name} "
    )


def test_the_guides_openssl_recipe_makes_certificates_a_strict_verifier_accepts(
    tmp_path: Path,
) -> None:
    ca, host = guide_recipe()
    run_shell("\n".join((ca, host, host_lines(host, "client"))), tmp_path)
    strict_handshake(tmp_path, "a", "client")


def test_the_strict_handshake_refuses_the_former_recipes_ca(tmp_path: Path) -> None:
    _, host = guide_recipe()
    run_shell("\n".join((FORMER_CA_RECIPE, host, host_lines(host, "client"))), tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="key usage"):
        strict_handshake(tmp_path, "a", "client")


def test_the_certificates_pbkv_generates_pass_a_strict_verifier(tmp_path: Path) -> None:
    credentials.create_ca(tmp_path)
    credentials.ensure_certificate(tmp_path, "node")
    strict_handshake(credentials.tls_dir(tmp_path), "node", credentials.CLIENT_NAME)


# --- changing the CA -------------------------------------------------------------------------


class Authorities:
    """Two cluster CAs (old, new), each with a node and a client certificate, and the
    ``--tls-ca`` file of the rolling restarts holding both."""

    def __init__(self, root: Path) -> None:
        self.folders = {}
        for age in ("old", "new"):
            credentials.create_ca(root / age)
            credentials.ensure_certificate(root / age, "node")
            self.folders[age] = credentials.tls_dir(root / age)
        self.both = root / "both-cas.pem"
        self.both.write_bytes(b"".join(self.ca(age).read_bytes() for age in ("old", "new")))

    def ca(self, age: str) -> Path:
        return self.folders[age] / "ca.pem"

    def flags(self, certificate: str, trusted: Path) -> list[str]:
        folder = self.folders[certificate]
        return ["--tls-cert", str(folder / "node.pem"), "--tls-key", str(folder / "node.key"),
                "--tls-ca", str(trusted), "--tls-mutual"]  # fmt: skip

    def client(self, certificate: str, trusted: Path) -> TlsOptions:
        folder = self.folders[certificate]
        return TlsOptions(str(folder / "client.pem"), str(folder / "client.key"), str(trusted))


@pytest.fixture
def authorities(tmp_path: Path) -> Authorities:
    return Authorities(tmp_path / "pki")


@contextmanager
def mixed_cluster(
    directory: Path,
    viewserver: list[str],
    servers: list[list[str]],
    tools: TlsOptions,
    admin: bool = False,
) -> Iterator[Cluster]:
    """A cluster whose processes run the given TLS flags, as in the middle of a rolling
    restart; this test's own tools (the harness's status calls) use ``tools``; ``admin``: each
    process serves an admin port too. Stopped on the
    way out, also when it never formed a view."""
    security.set_cli_tls(tools)
    cluster = Cluster(directory, admin=admin, **STEADY)  # type: ignore[arg-type]
    cluster.viewserver.args += viewserver
    try:
        cluster.start(servers=0)
        for flags in servers:
            cluster.server_args = tuple(flags)
            cluster.add_server()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cli_tls_restored() -> Iterator[None]:
    saved = security.cli_tls()
    yield
    security.set_cli_tls(saved)


def write_and_compare(cluster: Cluster, clients: dict[str, TlsOptions]) -> None:
    """Each client writes and reads its key; both servers then hold every key."""
    for name, tls in clients.items():
        with pbkv.Client(cluster.address, timeout=15.0, tls=tls) as kv:
            kv.put(f"ca-{name}", name)
            assert kv.get(f"ca-{name}") == name
    dumps = [cluster.dump(server) for server in cluster.servers]
    assert {dump["role"] for dump in dumps} == {"primary", "backup"}
    assert dumps[0]["keys"] == dumps[1]["keys"] and len(dumps[0]["keys"]) == len(clients), dumps


@pytest.mark.usefixtures("cli_tls_restored")
def test_steps_one_and_two_of_a_ca_change_serve_side_by_side(
    tmp_path: Path, authorities: Authorities
) -> None:
    """Step 1 (old certificate, both CAs) and step 2 (new certificate, both CAs) together:
    every link passes whichever certificate each end presents, and clients holding either
    certificate, trusting both CAs, are served."""
    both = authorities.both
    step1, step2 = authorities.flags("old", both), authorities.flags("new", both)
    tools = authorities.client("old", both)
    with mixed_cluster(tmp_path / "cluster", step1, [step2, step1], tools) as cluster:
        clients = {age: authorities.client(age, both) for age in ("old", "new")}
        write_and_compare(cluster, clients)


@pytest.mark.usefixtures("cli_tls_restored")
def test_step_three_of_a_ca_change_refuses_the_old_cas_certificates(
    tmp_path: Path, authorities: Authorities
) -> None:
    """Step 2 and step 3 (new certificate, the new CA alone) together serve clients with the
    new certificate; the view service of step 3 refuses a client still holding the old one."""
    both, new_ca = authorities.both, authorities.ca("new")
    step2, step3 = authorities.flags("new", both), authorities.flags("new", new_ca)
    tools = authorities.client("new", new_ca)
    with mixed_cluster(tmp_path / "cluster", step3, [step2, step3], tools) as cluster:
        write_and_compare(cluster, {"new": tools})
        with (
            pbkv.Client(cluster.address, timeout=15.0, tls=authorities.client("old", both)) as kv,
            pytest.raises(pbkv.AuthenticationFailed),
        ):
            kv.get("ca-new")
