"""``pbkv status`` with TLS says when the certificate each node presents expires
(``pbkv.cli.certificates``): read off a real handshake with every live server and the view
service, as a client sees it, in the table (``certificate_expires``) and in ``--json``; without
TLS nothing is probed and nothing is said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509

from pbkv.cli.certificates import expiry_text
from pbkv.cli.client_commands import render_status
from pbkv.cluster import credentials
from tests.cluster.helpers import cluster, ok, state_file, up
from tests.cluster.helpers import pbkv as run_pbkv
from tests.cluster.test_certificate_renewal import tls_client

NOW = 1_800_000_000.0


def not_after(pem: Path) -> float:
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    return certificate.not_valid_after_utc.timestamp()


def status_of(directory: Path, *args: str) -> str:
    """``pbkv status ARGS`` with the cluster's secret, and its TLS files when it has them."""
    if credentials.uses_tls(directory):
        return tls_client(directory, "status", *args)
    token = ("--auth-token-file", str(credentials.token_path(directory)))
    viewserver = state_file(directory)["viewserver"]
    return ok(run_pbkv(*token, "status", *args, "--viewserver", viewserver))


@pytest.mark.integration
def test_status_shows_each_nodes_certificate_expiry_read_off_its_handshake(
    cluster_dir: Path,
) -> None:
    up(cluster_dir, "--tls", "--servers", "2")
    records = {r["name"]: r for r in state_file(cluster_dir)["processes"]}
    folder = credentials.tls_dir(cluster_dir)
    record = json.loads(status_of(cluster_dir, "--json"))
    by_address = {s["name"]: s["certificate_expires"] for s in record["servers"]}
    for name in ("s1", "s2"):
        assert by_address[records[name]["address"]] == not_after(folder / f"{name}.pem")
    viewserver = next(r for r in records.values() if r["kind"] == "viewserver")
    expected = not_after(folder / f"{viewserver['name']}.pem")
    assert record["view_service_certificates"] == {viewserver["address"]: expected}
    text = status_of(cluster_dir)
    assert "certificate_expires" in text.splitlines()[1]
    assert f"view service {viewserver['address']}: certificate expires " in text
    assert text.count(expiry_text(expected)[0]) == 3  # two servers and the view service
    cluster(cluster_dir, "kill", "backup")
    record = json.loads(status_of(cluster_dir, "--json"))
    dead = [s for s in record["servers"] if not s["alive"]]
    assert dead and all(s["certificate_expires"] is None for s in dead)


@pytest.mark.integration
def test_without_tls_status_says_nothing_of_certificates(
    cluster_dir: Path,
) -> None:
    up(cluster_dir, "--servers", "2")
    record = json.loads(status_of(cluster_dir, "--json"))
    assert "view_service_certificates" not in record
    assert all("certificate_expires" not in server for server in record["servers"])
    assert "certificate" not in status_of(cluster_dir)


@pytest.mark.parametrize(
    ("expires", "said", "soon"),
    [
        (NOW + 364 * 86400 + 60, "2028-01-14 (364 d)", False),
        (NOW + 13 * 86400, "2027-01-28 (13 d, soon)", True),
        (NOW + 5 * 3600 + 60, "2027-01-15 (5 h, soon)", True),
        (NOW - 1, "expired 2027-01-15", True),
        (None, "-", False),
    ],
)
def test_expiry_text(expires: float | None, said: str, soon: bool) -> None:
    assert expiry_text(expires, NOW) == (said, soon)


def test_a_certificate_expiring_soon_is_red_on_a_terminal() -> None:
    server = {"name": "127.0.0.1:7001", "role": "primary", "alive": True,
              "last_ping_age_s": 0.01, "view_number": 2, "certificate_expires": 1.0}  # fmt: skip
    view = {"number": 2, "primary": "127.0.0.1:7001", "backup": None}
    record = {"view": view, "acknowledged": True, "servers": [server],
              "view_service_certificates": {}}  # fmt: skip
    plain = render_status(record)
    assert "expired 1970-01-01" in plain and "\x1b[" not in plain
    assert "\x1b[" in render_status(record, colour=True)


@pytest.mark.integration
def test_the_dashboard_of_any_view_service_shows_certificate_expiry_too(cluster_dir: Path) -> None:
    """``pbkv dashboard --viewserver`` knows no metrics port: the servers' expiry comes with
    the dump it asks each of them for, the view service's from a handshake once a minute."""
    from pbkv.cluster.state import load_state
    from pbkv.dashboard.source import ViewServerSource

    up(cluster_dir, "--tls", "--servers", "2")
    load_state(cluster_dir)  # this process's tools use the cluster's secret and TLS
    folder = credentials.tls_dir(cluster_dir)
    expected = {
        record["address"]: not_after(folder / f"{record['name']}.pem")
        for record in state_file(cluster_dir)["processes"]
    }
    source = ViewServerSource(state_file(cluster_dir)["viewserver"])
    nodes = source.snapshot()["nodes"]
    assert len(nodes) == 3
    assert {node["address"]: node["certificate_expires"] for node in nodes} == expected
    probed = source.viewserver_certificate
    assert probed is not None
    source.snapshot()
    assert source.viewserver_certificate == probed  # not read again within the minute
