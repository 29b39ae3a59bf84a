"""The view service replicated on etcd, with real processes: three ``pbkv viewserver --etcd``
over a real 3-member etcd, servers and clients given the list of members."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pbkv.cluster.etcd import EtcdCluster
from tests.etcd.conftest import EtcdViewCluster
from tests.etcd.helpers import AppendLoad, audit_cluster

pytestmark = pytest.mark.integration

MakeCluster = Callable[..., EtcdViewCluster]


def test_one_member_leads_and_the_others_redirect(
    etcd: EtcdCluster, etcd_view_cluster: MakeCluster
) -> None:
    cluster = etcd_view_cluster(etcd.endpoints)
    leader = cluster.leader()
    with cluster.client() as kv:
        kv.put("k", "v")
        assert kv.get("k") == "v"
    follower = next(node for node in cluster.viewservers if node is not leader)
    with cluster.client() as kv:  # a list that starts with a follower finds the leader
        kv._async.members = (follower.address, leader.address)
        assert kv.view().primary == cluster.view().primary
    assert " leading " in leader.log_text()
    assert all(" leading " not in node.log_text() for node in cluster.viewservers if node != leader)
    audit_cluster(cluster)


def test_leader_killed_under_load_a_follower_takes_over_and_nothing_is_lost(
    etcd: EtcdCluster, etcd_view_cluster: MakeCluster
) -> None:
    cluster = etcd_view_cluster(etcd.endpoints, servers=3)
    load = AppendLoad(cluster.address).start()
    time.sleep(0.5)
    old = cluster.leader()
    old.kill()
    killed_at = time.monotonic()
    new = cluster.leader()
    assert new is not old
    took_s = time.monotonic() - killed_at
    primary = cluster.primary()
    before = cluster.view().number
    primary.kill()  # and the primary right after: the new leader must fail over
    cluster.wait_for(lambda s: s.view.number > before and s.acknowledged, "failover", 10)
    time.sleep(0.5)
    load.stop()
    assert load.check(cluster.address) > 0
    assert took_s < 5.0, f"a new leader answered {took_s:.2f} s after the kill"
    audit_cluster(cluster)
