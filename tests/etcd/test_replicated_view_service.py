"""The view service replicated on etcd, with real processes: three ``pbkv viewserver --etcd``
over a real 3-member etcd, servers and clients given the list of members."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

import pbkv
from pbkv.cli.client_commands import member_records
from pbkv.cluster.etcd import EtcdCluster
from tests.conftest import NodeProcess
from tests.etcd.conftest import ByteProxy, EtcdViewCluster
from tests.etcd.helpers import AppendLoad, audit_cluster, first_line, log_time

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
    wait_new_leader(cluster, old)
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


def test_leader_cut_off_from_etcd_stops_deciding_before_another_is_elected(
    etcd: EtcdCluster, etcd_view_cluster: MakeCluster, byte_proxies: Callable[[str], ByteProxy]
) -> None:
    # Each view service reaches etcd through proxies of its own, so whichever leads can be cut.
    proxies = [[byte_proxies(member.endpoint) for member in etcd.members] for _ in range(3)]
    through = {
        index: ",".join(f"http://{proxy.address}" for proxy in own)
        for index, own in enumerate(proxies)
    }
    cluster = etcd_view_cluster(etcd.endpoints, member_endpoints=through)
    old = cluster.leader()
    cut = proxies[cluster.viewservers.index(old)]
    for proxy in cut:
        proxy.cut()
    new = wait_new_leader(cluster, old)
    stepped = first_line(old.log_text(), "stepped_down")
    won = first_line(new.log_text(), "leading")
    assert stepped is not None and won is not None
    # The old leader stops deciding before etcd even expires its lease: strictly before the
    # new leader is elected, by at least the margin (0.25 s) less scheduling noise.
    assert log_time(stepped) < log_time(won) - 0.1, (stepped, won)
    with cluster.client() as kv:
        kv.put("after-partition", "1")
    for proxy in cut:
        proxy.heal()
    time.sleep(1.0)
    assert cluster.leader() is new
    cluster.primary().kill()
    cluster.wait_stable()
    audit_cluster(cluster)


def test_one_etcd_member_killed_changes_nothing(
    own_etcd: EtcdCluster, etcd_view_cluster: MakeCluster
) -> None:
    cluster = etcd_view_cluster(own_etcd.endpoints)
    leader = cluster.leader()
    raft_leader = own_etcd.leader_index()
    assert raft_leader is not None
    follower = (raft_leader + 1) % 3
    own_etcd.kill(follower)  # an etcd follower: not even a pause in leadership
    time.sleep(1.0)
    assert cluster.leader() is leader
    assert " stepped_down " not in leader.log_text()
    own_etcd.restart(follower)
    view = cluster.view()
    # etcd's own leader: etcd elects another within about a second, during which no keepalive
    # is acknowledged; the view service may pause deciding, but the same process leads on
    # (it reclaims its key, still on its live lease) and the view does not change.
    own_etcd.kill(raft_leader)
    time.sleep(2.0)
    assert cluster.leader() is leader
    assert cluster.view() == view
    others = [node for node in cluster.viewservers if node is not leader]
    assert all(" leading " not in node.log_text() for node in others)
    cluster.primary().kill()
    cluster.wait_for(lambda s: s.view.number > view.number and s.acknowledged, "failover", 10)
    own_etcd.restart(raft_leader)
    audit_cluster(cluster)


def test_two_etcd_members_killed_freeze_the_view_and_the_status_says_why(
    own_etcd: EtcdCluster, etcd_view_cluster: MakeCluster
) -> None:
    cluster = etcd_view_cluster(own_etcd.endpoints, servers=3)
    leader = cluster.leader()
    backup = cluster.backup()
    own_etcd.kill(1)
    own_etcd.kill(2)
    deadline = time.monotonic() + 5.0
    while " stepped_down " not in leader.log_text():
        assert time.monotonic() < deadline, "the leader kept deciding without etcd"
        time.sleep(0.05)
    deadline = time.monotonic() + 5.0
    while not all("etcd unreachable" in m["reason"] for m in members_of(cluster)):
        assert time.monotonic() < deadline, members_of(cluster)
        time.sleep(0.1)
    with pbkv.Client(cluster.address, timeout=5.0) as kv:  # the current view keeps serving,
        kv.put("frozen", "1")  # even for a new client (members tell the last view they know)
        assert kv.get("frozen") == "1"
        frozen = kv.view()
    backup.kill()  # no view may change now
    time.sleep(1.0)
    with pbkv.Client(cluster.address, timeout=5.0) as kv:
        assert kv.view() == frozen  # (the primary now waits for its dead backup: no writes)
    own_etcd.restart(1)
    own_etcd.restart(2)
    cluster.wait_for(lambda s: backup.name not in s.view.members(), "the view changes again", 20)
    cluster.wait_stable()
    with cluster.client() as kv:
        assert kv.get("frozen") == "1"
    audit_cluster(cluster)


def members_of(cluster: EtcdViewCluster) -> list[dict[str, Any]]:
    return member_records(cluster.address, 1.0)


def wait_new_leader(
    cluster: EtcdViewCluster, old: NodeProcess, timeout: float = 10.0
) -> NodeProcess:
    deadline = time.monotonic() + timeout
    while (leader := cluster.leader()) is old:
        assert time.monotonic() < deadline, "no other leader"
        time.sleep(0.01)
    return leader


def test_leader_paused_is_replaced_without_a_needless_view_change_and_resumes_as_follower(
    etcd: EtcdCluster, etcd_view_cluster: MakeCluster
) -> None:
    cluster = etcd_view_cluster(etcd.endpoints)
    view = cluster.view()
    old = cluster.leader()
    old.stop()  # SIGSTOP: its connections stay open, servers must notice the silence
    new = wait_new_leader(cluster, old)
    time.sleep(2.0)  # servers find the new leader before it judges them (clock at first ping)
    assert cluster.view() == view, "no server may be declared dead for finding the new leader"
    assert " server_declared_dead " not in new.log_text()
    old.cont()
    time.sleep(0.5)
    assert cluster.leader() is new
    with cluster.client() as kv:
        kv.put("after-pause", "1")
    audit_cluster(cluster)
