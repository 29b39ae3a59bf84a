"""SIGHUP reloads a process's secret and TLS files (``pbkv.runtime.reload``), so the guide's
rotations (§12b) run without restarting anything.

Real processes throughout: the three steps of a CA change and of a secret rotation are done by
rewriting the files every process was started with and sending SIGHUP, the cluster serving and
replicating in between; what each process presents is read off a fresh TLS handshake, and a
failover at the end makes new peer links with the new files. A reload that cannot read its files
keeps the process serving with what it had; a process with no such files keeps SIGHUP's default.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

import pbkv
from pbkv.runtime import auth, security
from pbkv.runtime.tls import TlsOptions
from tests.conftest import TEST_TOKEN, Cluster, NodeProcess, free_port

from .test_auth import STEADY
from .test_tls_certificates import Authorities, cli_tls_restored, mixed_cluster

__all__ = ["cli_tls_restored"]  # the fixture, used by name below

RELOAD_TIMEOUT_S = 10.0
NEW_TOKEN = "pbkv-rotated-by-reload-0123456789abcdef"


@pytest.fixture
def authorities(tmp_path: Path) -> Authorities:
    return Authorities(tmp_path / "pki")


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` whole, then rename it over ``path`` (what the guide asks before SIGHUP)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_bytes(data)
    os.replace(fresh, path)


def reload_all(nodes: list[NodeProcess], event: str = "credentials_reloaded") -> None:
    """SIGHUP every node and wait until each logged ``event`` once more."""
    counts = [node.log_text().count(f" {event} ") for node in nodes]
    for node in nodes:
        node.signal(signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    for node, count in zip(nodes, counts, strict=True):
        while node.log_text().count(f" {event} ") <= count:
            assert time.monotonic() < deadline, f"no {event} in the log of {node.name}"
            time.sleep(0.05)


def presented_serial(address: str, client: TlsOptions) -> str:
    """The serial number of the certificate a fresh TLS handshake with ``address`` shows."""
    host, port = address.rsplit(":", 1)
    context = client.client_context()
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def serial_of(pem: Path) -> str:
    return format(x509.load_pem_x509_certificate(pem.read_bytes()).serial_number, "x")


class LiveFiles:
    """The files every process of the test was started with, rewritten step by step."""

    def __init__(self, directory: Path, authorities: Authorities) -> None:
        directory.mkdir()
        self.directory, self.authorities = directory, authorities
        self.cert, self.key, self.ca = (
            directory / name for name in ("node.pem", "node.key", "ca.pem")
        )

    def install(self, certificate: str, trusted: Path) -> None:
        folder = self.authorities.folders[certificate]
        replace_file(self.key, (folder / "node.key").read_bytes())
        replace_file(self.cert, (folder / "node.pem").read_bytes())
        replace_file(self.ca, trusted.read_bytes())

    def flags(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key), "--tls-ca",
                str(self.ca), "--tls-mutual"]  # fmt: skip


def served(cluster: Cluster, tls: TlsOptions, key: str) -> None:
    with pbkv.Client(cluster.address, timeout=15.0, tls=tls) as kv:
        kv.put(key, key)
        assert kv.get(key) == key


@pytest.mark.usefixtures("cli_tls_restored")
def test_a_ca_change_by_sighup_alone_serves_throughout_and_ends_refusing_the_old_ca(
    tmp_path: Path, authorities: Authorities
) -> None:
    """The guide's three steps (both CAs; new certificates; the new CA alone), each done by
    rewriting the files and SIGHUP. Each process then shows the new certificate on a fresh
    handshake (its admin port too), clients of both CAs are served until the last step, which
    refuses the old one, also to a client connected since before it (the reload closes its
    connections), and a failover at the end (new peer links, a state transfer) works on the
    new files."""
    live, both, new_ca = (
        LiveFiles(tmp_path / "live", authorities),
        authorities.both,
        authorities.ca("new"),
    )
    live.install("old", authorities.ca("old"))
    old_client, new_client = authorities.client("old", both), authorities.client("new", both)
    flags = live.flags()
    with mixed_cluster(tmp_path / "cluster", flags, [flags] * 3, old_client, True) as cluster:
        nodes = [cluster.viewserver, *cluster.servers]
        served(cluster, authorities.client("old", authorities.ca("old")), "step-0")
        live.install("old", both)
        reload_all(nodes)
        served(cluster, old_client, "step-1")
        live.install("new", both)
        reload_all(nodes)
        new_serial = serial_of(authorities.folders["new"] / "node.pem")
        addresses = [node.address for node in nodes] + [str(node.admin) for node in nodes]
        assert {presented_serial(address, old_client) for address in addresses} == {new_serial}
        assert f"serial={new_serial}" in cluster.servers[0].log_text()
        served(cluster, new_client, "step-2-new")
        with pbkv.Client(cluster.address, timeout=15.0, tls=old_client) as held:
            held.put("step-2-old", "step-2-old")  # its connections stay open over step 3
            live.install("new", new_ca)
            security.set_cli_tls(authorities.client("new", new_ca))
            reload_all(nodes)
            with pytest.raises(pbkv.AuthenticationFailed):  # closed, and refused anew
                held.get("step-0")
        assert "closed=" in cluster.primary().log_text()
        with (
            pbkv.Client(cluster.address, timeout=15.0, tls=old_client) as kv,
            pytest.raises(pbkv.AuthenticationFailed),
        ):
            kv.get("step-0")
        cluster.primary().kill()
        with pbkv.Client(cluster.address, timeout=20.0, tls=new_client) as kv:
            kv.put("after-failover", "yes")
            keys = ["step-0", "step-1", "step-2-old", "step-2-new", "after-failover"]
            assert [kv.get(key) for key in keys[:-1]] == keys[:-1]
        view = cluster.wait_stable()
        dumps = [cluster.dump(name) for name in view.members()]
        assert len(dumps) == 2 and dumps[0]["keys"] == dumps[1]["keys"], dumps
        assert sorted(dumps[0]["keys"]) == sorted(keys)


@pytest.mark.usefixtures("cli_tls_restored")
def test_a_running_client_whose_files_were_renewed_is_served_after_the_ca_change(
    tmp_path: Path, authorities: Authorities
) -> None:
    """A long-running ``pbkv.Client`` given ``TlsOptions`` outlives its certificate: its files
    are renewed under it (a client certificate of the new CA, a CA file with both), then the
    cluster takes the new CA alone, which closes every connection made under the old one. The
    client's next operation connects again with the renewed files and is served; without
    reading them again it would be refused as the old certificate is (the test above)."""
    live = LiveFiles(tmp_path / "live", authorities)
    live.install("old", authorities.both)
    mine = LiveFiles(tmp_path / "client", authorities)

    def install_client(age: str) -> None:
        folder = authorities.folders[age]
        replace_file(mine.key, (folder / "client.key").read_bytes())
        replace_file(mine.cert, (folder / "client.pem").read_bytes())
        replace_file(mine.ca, authorities.both.read_bytes())

    install_client("old")
    tls = TlsOptions(str(mine.cert), str(mine.key), str(mine.ca))
    flags = live.flags()
    tools = authorities.client("old", authorities.both)
    with mixed_cluster(tmp_path / "cluster", flags, [flags] * 2, tools) as cluster:
        with pbkv.Client(cluster.address, timeout=15.0, tls=tls) as kv:
            kv.put("before", "1")
            install_client("new")
            live.install("new", authorities.ca("new"))
            security.set_cli_tls(authorities.client("new", authorities.ca("new")))
            reload_all([cluster.viewserver, *cluster.servers])
            assert "closed=" in cluster.primary().log_text()
            assert kv.get("before") == "1"
            kv.put("after", "2")
        with (
            pbkv.Client(cluster.address, timeout=15.0, tls=tools) as old,
            pytest.raises(pbkv.AuthenticationFailed),
        ):
            old.get("before")


def test_a_secret_rotation_by_sighup_alone(tmp_path: Path) -> None:
    """Every process started with a token file (A) and an empty accept file: step 1 puts B in
    the accept file, step 2 swaps the two, step 3 empties the accept file, each followed by
    SIGHUP. Clients with A, then with either, then with B alone are served; at the end A is
    refused, also to a client whose connections were open since before the last step (the
    reload closes them), and a server started with B alone joins as backup after a
    failover."""
    token, accept = tmp_path / "auth-token", tmp_path / "auth-token.accept"
    token.write_text(TEST_TOKEN)
    accept.write_text("")
    flags = ["--auth-token-file", str(token), "--auth-accept-token-file", str(accept)]
    cluster = Cluster(tmp_path / "cluster", **STEADY)  # type: ignore[arg-type]
    cluster.viewserver.args += flags
    cluster.server_args = tuple(flags)
    try:
        auth.set_cli_token(None)  # the harness's own calls present A, then B from step 2
        cluster.start(servers=2)
        nodes = [cluster.viewserver, *cluster.servers]
        assert "rotating=-" in cluster.viewserver.log_text()
        replace_file(accept, NEW_TOKEN.encode())
        reload_all(nodes)
        assert "credentials_reloaded rotating=peer" in cluster.servers[1].log_text()
        for name, secret in (("a1", TEST_TOKEN), ("b1", NEW_TOKEN)):
            write_with(cluster, secret, name)
        replace_file(token, NEW_TOKEN.encode())
        replace_file(accept, TEST_TOKEN.encode())
        reload_all(nodes)
        auth.set_cli_token(NEW_TOKEN.encode())
        for name, secret in (("a2", TEST_TOKEN), ("b2", NEW_TOKEN)):
            write_with(cluster, secret, name)
        with pbkv.Client(cluster.address, timeout=15.0, token=TEST_TOKEN) as held:
            held.put("a3", "held")  # its connections stay open over step 3
            replace_file(accept, b"\n")
            reload_all(nodes)
            with pytest.raises(pbkv.AuthenticationFailed):  # closed, and refused anew
                held.get("a3")
        with pytest.raises(pbkv.AuthenticationFailed):
            write_with(cluster, TEST_TOKEN, "a4")
        cluster.server_args = ("--auth-token-file", str(token))
        cluster.add_server()
        cluster.primary().kill()
        write_with(cluster, NEW_TOKEN, "b3")
        view = cluster.wait_stable()
        dumps = [cluster.dump(name) for name in view.members()]
        assert sorted(dumps[0]["keys"]) == ["a1", "a2", "a3", "b1", "b2", "b3"]
        assert dumps[0]["keys"] == dumps[1]["keys"]
    finally:
        cluster.close()
        auth.set_cli_token(None)


def write_with(cluster: Cluster, secret: str, key: str) -> None:
    with pbkv.Client(cluster.address, timeout=15.0, token=secret) as kv:
        kv.put(key, secret[:4])
        assert kv.get(key) == secret[:4]


def expiry_gauge(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    [line] = [
        line for line in text.splitlines()
        if line.startswith("pbkv_tls_certificate_expiry_timestamp_seconds ")
    ]  # fmt: skip
    return float(line.split()[1])


def test_a_reload_that_cannot_read_its_files_keeps_the_process_serving_as_it_was(
    tmp_path: Path, authorities: Authorities
) -> None:
    """A certificate file holding garbage, then a key that is not the certificate's: each
    reload is one line saying why, and the process keeps presenting its certificate (the
    metrics gauge too). Fixed files reload; the gauge follows the new certificate."""
    live = LiveFiles(tmp_path / "live", authorities)
    live.install("old", authorities.both)
    metrics_port = free_port()
    node = NodeProcess(
        "viewserver",
        ["--listen", "127.0.0.1:{port}", "--no-data-dir", "--metrics-port", str(metrics_port),
         *live.flags()],
        free_port(),
        tmp_path / "viewserver.log",
    ).start()  # fmt: skip
    client = authorities.client("old", authorities.both)
    try:
        old_serial = serial_of(live.cert)
        expiry = expiry_gauge(metrics_port)
        certificate = x509.load_pem_x509_certificate(live.cert.read_bytes())
        assert expiry == certificate.not_valid_after_utc.timestamp()
        replace_file(live.cert, b"not a certificate")
        reload_all([node], "credentials_reload_failed")
        new_folder = authorities.folders["new"]
        replace_file(live.cert, (new_folder / "node.pem").read_bytes())  # the old key stays
        reload_all([node], "credentials_reload_failed")
        failures = [line for line in node.log_text().splitlines() if "reload_failed" in line]
        assert "no PEM certificate chain and key it can read" in failures[0], failures
        assert "KEY_VALUES_MISMATCH" in failures[1] and 'kept="the' in failures[1], failures
        assert node.alive and presented_serial(node.address, client) == old_serial
        assert expiry_gauge(metrics_port) == expiry
        replace_file(live.key, (new_folder / "node.key").read_bytes())
        reload_all([node])
        assert presented_serial(node.address, client) == serial_of(live.cert) != old_serial
        renewed = x509.load_pem_x509_certificate(live.cert.read_bytes())
        assert expiry_gauge(metrics_port) == renewed.not_valid_after_utc.timestamp()
    finally:
        node.kill()


def test_without_files_to_read_sighup_still_ends_the_process(tmp_path: Path) -> None:
    """No token file and no TLS (the secret from the environment): nothing to reload, so a
    terminal's hangup ends a process run in it, as before."""
    node = NodeProcess(
        "viewserver", ["--listen", "127.0.0.1:{port}", "--no-data-dir"], free_port(),
        tmp_path / "viewserver.log",
    ).start()  # fmt: skip
    try:
        node.signal(signal.SIGHUP)
        assert node.popen is not None
        assert node.popen.wait(10) == -signal.SIGHUP
    finally:
        node.kill()


def test_a_reload_stuck_on_a_fifo_is_given_up_while_the_process_serves_and_stops(
    tmp_path: Path,
) -> None:
    """The token file replaced by a FIFO nobody writes (or a hung mount): the reload's thread
    blocks in open(), the process answers throughout, the reload is given up after
    ``--reload-timeout-s`` with one line, a second signal says the first is still stuck, and
    SIGTERM still ends the process at once (the blocked thread does not hold up its exit)."""
    token = tmp_path / "auth-token"
    token.write_text(TEST_TOKEN)
    node = NodeProcess(
        "viewserver",
        ["--listen", "127.0.0.1:{port}", "--no-data-dir", "--auth-token-file", str(token),
         "--reload-timeout-s", "1"],
        free_port(),
        tmp_path / "viewserver.log",
    ).start()  # fmt: skip
    try:
        token.unlink()
        os.mkfifo(token)
        reload_all([node], "credentials_reload_failed")
        assert "took over 1 s (--reload-timeout-s)" in node.log_text()
        with pbkv.Client(node.address, timeout=5.0, token=TEST_TOKEN) as kv:
            assert kv.view().number == 0  # served while the reload's thread is blocked
        reload_all([node], "credentials_reload_failed")
        assert "the previous reload is still reading its files" in node.log_text()
        assert node.terminate(timeout=5.0) == 0
    finally:
        node.kill()
