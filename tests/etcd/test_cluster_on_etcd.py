"""``pbkv cluster up --etcd``: three etcd members and three view services as detached processes;
``kill viewserver`` kills whichever leads, and both status commands show who leads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pbkv.cluster.credentials import token_path
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
