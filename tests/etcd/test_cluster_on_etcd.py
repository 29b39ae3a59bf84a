"""``pbkv cluster up --etcd``: three etcd members and three view services as detached processes;
``kill viewserver`` kills whichever leads, and both status commands show who leads."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pbkv.cluster.credentials import tls_dir, token_path
from tests.cluster.helpers import cluster, node, ok, pbkv, quick_status, up

pytestmark = pytest.mark.integration


def leader_of(directory: Path) -> str:
    leaders = [n["name"] for n in quick_status(directory)["nodes"] if n["role"] == "vs-leader"]
    return leaders[0] if leaders else ""


def test_cluster_up_etcd_kill_viewserver_kills_the_leader_and_another_leads(
    etcd_cluster_dir: Path,
) -> None:
    up(etcd_cluster_dir, "--etcd", "--servers", "2", "--timeout", "60")
    data = quick_status(etcd_cluster_dir)
    roles = sorted(n["role"] for n in data["nodes"] if n["kind"] in ("etcd", "viewserver"))
    assert roles == ["etcd", "etcd", "etcd", "vs-follower", "vs-follower", "vs-leader"]
    first = leader_of(etcd_cluster_dir)
    view = data["view"]["number"]
    out = cluster(etcd_cluster_dir, "kill", "viewserver")
    assert "viewserver" in out and first in out
    deadline = time.monotonic() + 10.0
    while leader_of(etcd_cluster_dir) in ("", first):
        assert time.monotonic() < deadline, quick_status(etcd_cluster_dir)
        time.sleep(0.05)
    assert node(quick_status(etcd_cluster_dir), first)["state"] == "dead"
    members_list = json.loads((etcd_cluster_dir / "cluster.json").read_text())["viewserver"]
    token = str(token_path(etcd_cluster_dir))  # the cluster's secret
    shown = json.loads(
        ok(pbkv("--auth-token-file", token, "status", "--json", "--viewserver", members_list))
    )
    assert shown["view"]["number"] == view  # a new leader is no reason for a new view
    members = {m["role"] for m in shown["view_service"]}
    assert members == {"leader", "follower", "unreachable"}


def test_a_tls_cluster_on_etcd_runs_every_etcd_link_over_tls(etcd_cluster_dir: Path) -> None:
    """``up --etcd --tls``: the etcd members serve clients over TLS and demand a certificate of
    the cluster's CA, and the view services present theirs; a leader killed is still replaced
    and clients are served."""
    up(etcd_cluster_dir, "--etcd", "--tls", "--servers", "2", "--timeout", "60")
    records = json.loads((etcd_cluster_dir / "cluster.json").read_text())["processes"]
    for record in records:
        argv = record["argv"]
        if record["kind"] == "etcd":
            assert "--client-cert-auth" in argv and "--peer-client-cert-auth" in argv
            assert argv[argv.index("--listen-peer-urls") + 1].startswith("https://")
            assert_peer_port_demands_a_certificate(etcd_cluster_dir, record["admin_port"])
        elif record["kind"] == "viewserver":
            assert argv[argv.index("--etcd") + 1].startswith("https://")
            assert "--etcd-cert" in argv
    logs = etcd_cluster_dir / "logs"
    assert "tls=on client_certificate=yes" in (logs / "viewserver.log").read_text()
    env = {**os.environ, "PBKV_CLUSTER_DIR": str(etcd_cluster_dir)}  # its secret and TLS
    ok(pbkv_in(env, "put", "over", "tls"))
    data = json.loads(cluster(etcd_cluster_dir, "status", "--json"))
    first = next(n["name"] for n in data["nodes"] if n["role"] == "vs-leader")
    cluster(etcd_cluster_dir, "kill", "viewserver")
    deadline = time.monotonic() + 15.0
    while True:
        data = json.loads(cluster(etcd_cluster_dir, "status", "--json"))
        leaders = [n["name"] for n in data["nodes"] if n["role"] == "vs-leader"]
        if leaders and leaders[0] != first:
            break
        assert time.monotonic() < deadline, data
        time.sleep(0.2)
    assert ok(pbkv_in(env, "get", "over")).strip() == "tls"


def pbkv_in(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbkv", *args, "--timeout", "20"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def assert_peer_port_demands_a_certificate(directory: Path, peer_port: int) -> None:
    """The member's peer port answers its ``/members`` page only over TLS and only to a
    certificate of the cluster's CA (the request with one shows the page is there at all)."""
    pki = tls_dir(directory)
    trusting = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with_certificate = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with_certificate.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    for scheme, context in (("http", None), ("https", trusting)):
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            peer_members(f"{scheme}://127.0.0.1:{peer_port}/members", context)
    members = peer_members(f"https://127.0.0.1:{peer_port}/members", with_certificate)
    assert len(members) == 3 and all(m["peerURLs"][0].startswith("https://") for m in members)


def peer_members(url: str, context: ssl.SSLContext | None) -> list[dict[str, list[str]]]:
    with urllib.request.urlopen(url, timeout=5, context=context) as reply:
        members: list[dict[str, list[str]]] = json.loads(reply.read())
        return members
