"""Certificates of a ``--tls`` cluster that expire are issued again before a process starts.

Review: ``pbkv cluster up --tls`` issues certificates for a year and every later start reused
them as long as the files existed, so a cluster restarted or resumed after they expired came
up with processes that refused each other (and its tools refused by all). Before a process of
the cluster starts (``restart``, ``add``, ``up --resume``) each certificate that expires within
a day is issued again from the same CA; ``up --resume``, with every process stopped, replaces
an expiring CA and every certificate with it; a restart on an expired CA is refused with one
line and leaves the process running. Processes that keep running take their renewed
certificates by SIGHUP (``pbkv.runtime.reload``).
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import pytest
from cryptography import x509

from pbkv.cluster import credentials
from pbkv.cluster.manager import renew_certificates
from pbkv.cluster.state import ClusterState
from pbkv.cluster.targets import ClusterError
from pbkv.runtime.tls import TlsOptions
from tests.cluster.helpers import cluster, node, ok, state_file, status, up, wait_for
from tests.cluster.helpers import pbkv as run_pbkv
from tests.runtime.test_credential_reload import presented_serial, serial_of
from tests.runtime.test_tls_certificates import strict_handshake

HALF_A_DAY = 0.5


def days_left(pem: Path) -> float:
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left.total_seconds() / 86_400


def expiring_leaf(directory: Path, name: str, days: float = HALF_A_DAY) -> None:
    """``name``'s certificate replaced by one valid ``days`` more (negative: expired)."""
    folder = credentials.tls_dir(directory)
    ca, key = folder / credentials.CA_FILE, folder / "ca.key"
    credentials.issue_certificate(ca, key, folder / name, name, days)


def tls_client(directory: Path, *args: str) -> str:
    """``pbkv ARGS`` against the cluster in ``directory`` with its secret and TLS files."""
    folder = credentials.tls_dir(directory)
    security = ("--auth-token-file", str(directory / "auth-token"), "--tls-ca",
                str(folder / "ca.pem"), "--tls-cert", str(folder / "client.pem"),
                "--tls-key", str(folder / "client.key"))  # fmt: skip
    viewserver = state_file(directory)["viewserver"]
    return ok(run_pbkv(*security, *args, "--viewserver", viewserver, "--timeout", "20"))


def test_a_certificate_about_to_expire_is_issued_again_from_the_same_ca(tmp_path: Path) -> None:
    credentials.create_ca(tmp_path)
    credentials.ensure_certificate(tmp_path, "s2")
    expiring_leaf(tmp_path, "s1")
    folder = credentials.tls_dir(tmp_path)
    kept = {name: (folder / f"{name}.pem").read_bytes() for name in ("ca", "s2", "client")}
    assert credentials.renew_certificates(tmp_path, ca_too=True) == ["s1"]
    assert days_left(folder / "s1.pem") > 360
    assert kept == {name: (folder / f"{name}.pem").read_bytes() for name in kept}
    strict_handshake(folder, "s1", "client")


def test_an_expiring_ca_is_replaced_only_when_every_process_is_stopped(tmp_path: Path) -> None:
    credentials.create_ca(tmp_path, days=HALF_A_DAY)
    credentials.ensure_certificate(tmp_path, "s1")
    folder = credentials.tls_dir(tmp_path)
    old_ca = (folder / "ca.pem").read_bytes()
    assert credentials.renew_certificates(tmp_path, ca_too=False) == []  # processes run on it
    assert (folder / "ca.pem").read_bytes() == old_ca
    assert credentials.renew_certificates(tmp_path, ca_too=True) == ["ca", "client", "s1"]
    assert (folder / "ca.pem").read_bytes() != old_ca and days_left(folder / "ca.pem") > 360
    strict_handshake(folder, "s1", "client")  # both issued by the new CA


def test_a_start_on_an_expired_ca_is_refused_with_one_line(tmp_path: Path) -> None:
    credentials.create_ca(tmp_path, days=-1)
    state = ClusterState(tmp_path, "127.0.0.1:1", 0.1, 5, 0, time.time())
    with pytest.raises(ClusterError, match=r"has expired.*up --resume"):
        renew_certificates(state)
    renew_certificates(state, ca_too=True)
    assert days_left(credentials.tls_dir(tmp_path) / "ca.pem") > 360


@pytest.mark.integration
def test_a_restart_renews_the_certificate_and_the_server_rejoins(cluster_dir: Path) -> None:
    up(cluster_dir, "--tls", "--servers", "2")
    tls_client(cluster_dir, "put", "before", "1")
    expiring_leaf(cluster_dir, "s2", days=-1)  # as if a year had passed since `up`
    cluster(cluster_dir, "restart", "s2")
    assert days_left(credentials.tls_dir(cluster_dir) / "s2.pem") > 360
    assert "certificates_renewed" in (cluster_dir / "logs" / "cluster.log").read_text()
    wait_for(lambda: node(status(cluster_dir), "s2")["phase"] == "synced", 30, "s2 synced")
    cluster(cluster_dir, "kill", "s1")  # s2 must now serve: it holds the data, its TLS works
    assert tls_client(cluster_dir, "get", "before").strip() == "1"


@pytest.mark.integration
def test_a_restart_on_an_expired_ca_is_refused_and_the_process_keeps_running(
    cluster_dir: Path,
) -> None:
    up(cluster_dir, "--tls", "--servers", "2")
    folder = credentials.tls_dir(cluster_dir)
    pid = next(p["pid"] for p in state_file(cluster_dir)["processes"] if p["name"] == "s2")
    expired = cluster_dir.parent / "expired"
    credentials.create_ca(expired, days=-1)
    (folder / "ca.pem").write_bytes((credentials.tls_dir(expired) / "ca.pem").read_bytes())
    result = run_pbkv("cluster", "restart", "s2", "--dir", str(cluster_dir))
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "has expired" in line and "Traceback" not in line
    os.kill(pid, 0)  # still running: refused before it was stopped


@pytest.mark.integration
def test_a_resume_replaces_an_expiring_ca_and_keeps_the_data(cluster_dir: Path) -> None:
    up(cluster_dir, "--tls", "--durable", "--servers", "2")
    tls_client(cluster_dir, "put", "kept", "yes")
    cluster(cluster_dir, "down")
    names = ("client", "viewserver", "s1", "s2")
    credentials.create_ca(cluster_dir, days=HALF_A_DAY)  # stopped near the end of the CA's year
    for name in names:
        credentials.ensure_certificate(cluster_dir, name)
    folder = credentials.tls_dir(cluster_dir)
    old_ca = (folder / "ca.pem").read_bytes()
    cluster(cluster_dir, "up", "--resume")
    assert (folder / "ca.pem").read_bytes() != old_ca and days_left(folder / "ca.pem") > 360
    assert all(days_left(folder / f"{name}.pem") > 360 for name in names)
    assert tls_client(cluster_dir, "get", "kept").strip() == "yes"


@pytest.mark.integration
def test_running_processes_take_their_renewed_certificate_without_a_restart(
    cluster_dir: Path,
) -> None:
    """A restart renews every certificate about to expire, including those of processes that
    keep running: they are sent SIGHUP and present the new one at once (same pid), instead of
    expiring before their own next restart."""
    up(cluster_dir, "--tls", "--servers", "3")
    records = {r["name"]: r for r in state_file(cluster_dir)["processes"]}
    viewserver = next(name for name, r in records.items() if r["kind"] == "viewserver")
    for name in ("s2", viewserver):
        expiring_leaf(cluster_dir, name)
    folder = credentials.tls_dir(cluster_dir)
    client = TlsOptions(str(folder / "client.pem"), str(folder / "client.key"),
                        str(folder / "ca.pem"))  # fmt: skip
    before = presented_serial(records["s2"]["address"], client)
    cluster(cluster_dir, "restart", "s3")
    renewed = serial_of(folder / "s2.pem")
    assert renewed != before
    wait_for(
        lambda: presented_serial(records["s2"]["address"], client) == renewed, 10, "s2 reloaded"
    )
    log = (cluster_dir / "logs" / "cluster.log").read_text()
    assert f"certificates_reloaded names={viewserver},s2" in log or (
        f"certificates_reloaded names=s2,{viewserver}" in log
    ), log[-1000:]
    after = {r["name"]: r for r in state_file(cluster_dir)["processes"]}
    assert after["s2"]["pid"] == records["s2"]["pid"]
    assert f"serial={renewed}" in Path(records["s2"]["log_file"]).read_text()
    tls_client(cluster_dir, "put", "after", "renewal")


@pytest.mark.integration
def test_cluster_reload_reports_each_processs_verdict(cluster_dir: Path) -> None:
    """``pbkv cluster reload``: every server and the view service take their files again and
    say so; a damaged certificate file is that process's failure (exit 5) while it keeps
    serving with the one it had; a process that is not running is refused (exit 4)."""
    up(cluster_dir, "--tls", "--servers", "2")
    out = cluster(cluster_dir, "reload")
    records = state_file(cluster_dir)["processes"]
    names = [r["name"] for r in records if r["kind"] in ("server", "viewserver")]
    assert [line.split(":")[0] for line in out.splitlines()] == names
    assert all(": reloaded: rotating=-" in line for line in out.splitlines()), out
    pem = credentials.tls_dir(cluster_dir) / "s2.pem"
    kept = pem.read_bytes()
    pem.write_bytes(b"not a certificate")
    result = run_pbkv("cluster", "reload", "s2", "--dir", str(cluster_dir))
    assert result.returncode == 5, result
    assert result.stdout.startswith("s2: failed: reason=") and "kept=" in result.stdout
    pem.write_bytes(kept)
    tls_client(cluster_dir, "put", "still", "served")
    cluster(cluster_dir, "kill", "s1")
    result = run_pbkv("cluster", "reload", "s1", "--dir", str(cluster_dir))
    assert result.returncode == 4 and result.stdout.strip() == "s1: not running", result
    assert "s2: reloaded" in cluster(cluster_dir, "reload", "s2")
