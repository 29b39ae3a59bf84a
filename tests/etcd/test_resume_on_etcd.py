"""``pbkv cluster up --resume`` of a ``--durable --etcd`` cluster: the etcd members start again
on their data directories (``DIR/etcd``), the view service members find their view in etcd, the
servers recover their disks, and every key is there."""

from __future__ import annotations

from pathlib import Path

import pytest

import pbkv
from tests.cluster.helpers import cluster, state_file, up

pytestmark = pytest.mark.integration


def test_a_durable_cluster_on_etcd_resumes_with_every_key(etcd_cluster_dir: Path) -> None:
    up(etcd_cluster_dir, "--etcd", "--durable", "--servers", "2", "--timeout", "60")
    token = (etcd_cluster_dir / "auth-token").read_text().strip()
    viewserver = state_file(etcd_cluster_dir)["viewserver"]
    with pbkv.Client(viewserver, timeout=20, token=token) as kv:
        kv.put("a", "1")
        view = kv.view().number
    cluster(etcd_cluster_dir, "down")

    cluster(etcd_cluster_dir, "up", "--resume", "--timeout", "60")

    assert state_file(etcd_cluster_dir)["viewserver"] == viewserver
    with pbkv.Client(viewserver, timeout=20, token=token) as kv:
        assert kv.get("a") == "1"
        assert kv.view().number > view  # the view came back from etcd and moved on
        kv.put("b", "2")
        assert kv.get("b") == "2"
