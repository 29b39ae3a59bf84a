"""Failure scenarios against real processes: crashes, restarts, lossy links, partitions, pauses.

Every scenario ends with the safety checks that matter: each acknowledged write is present
exactly once, the backup's dump equals the primary's, and a replaced primary serves nothing.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

import pbkv
from pbkv.core.messages import Append, Get, Put, Reply, Request, ViewServiceStatus
from pbkv.runtime.admin import Heal, Partition, send_admin
from pbkv.runtime.rpc import Channel
from pbkv.wire import FRAME_HEADER, MESSAGES
from tests import authed
from tests.conftest import Cluster, NodeProcess, raw_request

pytestmark = pytest.mark.integration
MakeCluster = Callable[..., Cluster]


class Appender(threading.Thread):
    """Appends unique tokens ``<name>.<i>;`` to ``key`` until stopped; remembers which were
    acknowledged and which timed out (those may or may not have taken effect)."""

    def __init__(self, cluster: Cluster, name: str, key: str, count: int | None = None) -> None:
        super().__init__(daemon=True)
        self.client = cluster.client(timeout=20.0)
        self.name, self.key, self.count = name, key, count
        self.acknowledged: list[str] = []
        self.uncertain: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set() and (self.count is None or i < self.count):
            token = f"{self.name}.{i};"
            try:
                self.client.append(self.key, token)
                self.acknowledged.append(token)
            except pbkv.Unavailable:
                self.uncertain.append(token)
            i += 1

    def finish(self) -> None:
        """Stop (an endless appender) or wait for the last of ``count`` appends."""
        if self.count is None:
            self.stopping.set()
        self.join(60)
        assert not self.is_alive()


def check_appends(value: str | None, appenders: list[Appender]) -> None:
    """Every acknowledged token exactly once, in each appender's order; nothing invented."""
    tokens = [token + ";" for token in (value or "").split(";") if token]
    assert len(tokens) == len(set(tokens)), "a token was applied twice"
    for appender in appenders:
        mine = [t for t in tokens if t.startswith(appender.name + ".")]
        acknowledged = set(appender.acknowledged)
        assert acknowledged <= set(mine), "an acknowledged append was lost"
        assert set(mine) <= acknowledged | set(appender.uncertain), "an append was invented"
        assert mine == sorted(mine, key=lambda t: int(t.split(".")[1][:-1]))


def check_replicas_equal(cluster: Cluster) -> dict[str, str]:
    view = cluster.wait_stable()
    primary = cluster.dump(cluster.node(view.primary))
    if view.backup is not None:
        backup = cluster.dump(cluster.node(view.backup))
        assert backup["keys"] == primary["keys"]
        assert (primary["role"], backup["role"]) == ("primary", "backup")
    keys: dict[str, str] = primary["keys"]
    return keys


def test_operations_replicate_to_the_backup(cluster: Cluster) -> None:
    kv = cluster.client()
    kv.put("a", "1")
    kv.append("a", "2")
    kv.append("fresh", "x")
    kv.put("gone", "soon")
    kv.delete("gone")
    assert (kv.get("a"), kv.get("fresh"), kv.get("gone")) == ("12", "x", None)
    assert check_replicas_equal(cluster) == {"a": "12", "fresh": "x"}


def test_backup_crash_and_return_with_state_transfer(cluster: Cluster) -> None:
    kv = cluster.client()
    for i in range(30):
        kv.put(f"before{i}", str(i))
    backup = cluster.backup()
    backup.kill()
    cluster.wait_for(lambda s: s.view.backup is None and s.acknowledged, "backup removed")
    for i in range(30):
        kv.put(f"alone{i}", str(i))
    backup.start()
    cluster.wait_for(lambda s: s.view.backup == backup.name and s.acknowledged, "backup back")
    keys = check_replicas_equal(cluster)
    assert len(keys) == 60
    assert "state_transfer_received keys=60" in backup.log_text()


def test_primary_crash_promotes_the_backup_within_two_dead_intervals(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(ping_interval=0.1, dead_pings=5)
    kv = cluster.client()
    kv.put("k", "v")
    primary, backup = cluster.primary(), cluster.backup()
    started = time.monotonic()
    primary.kill()
    cluster.wait_for(lambda s: s.view.primary == backup.name, "promotion", timeout=10.0)
    promoted_after = time.monotonic() - started
    kv.put("k2", "v2")
    written_after = time.monotonic() - started
    assert promoted_after < 2 * cluster.dead_interval, promoted_after
    assert written_after < 2 * cluster.dead_interval + 1.0, written_after
    assert kv.get("k") == "v"


def test_sequential_failures_across_three_servers(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(servers=3)
    kv = cluster.client()
    first, second, third = cluster.servers
    kv.put("one", "1")
    first.kill()
    cluster.wait_for(
        lambda s: (s.view.primary, s.view.backup) == (second.name, third.name) and s.acknowledged,
        "second primary, third backup",
    )
    kv.put("two", "2")
    second.kill()
    cluster.wait_for_primary(third.name)
    kv.put("three", "3")
    assert (kv.get("one"), kv.get("two"), kv.get("three")) == ("1", "2", "3")
    assert cluster.dump(third)["keys"] == {"one": "1", "two": "2", "three": "3"}


def test_a_restarted_server_rejoins_as_a_fresh_backup(cluster: Cluster) -> None:
    kv = cluster.client()
    for i in range(20):
        kv.append("log", f"{i},")
    primary, backup = cluster.primary(), cluster.backup()
    primary.restart()  # same name, new incarnation, empty store: it must not stay primary
    cluster.wait_for(
        lambda s: (s.view.primary, s.view.backup) == (backup.name, primary.name) and s.acknowledged,
        "old backup primary, restarted server backup",
    )
    assert cluster.dump(primary)["role"] == "backup"
    assert check_replicas_equal(cluster)["log"] == "".join(f"{i}," for i in range(20))


def test_exactly_once_appends_through_lossy_links(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(proxied=True)
    for proxy in cluster.proxies:
        proxy.set_drop(requests=0.2, replies=0.2)
    appenders = [Appender(cluster, f"c{i}", "k", count=12) for i in range(3)]
    for appender in appenders:
        appender.start()
    for appender in appenders:
        appender.finish()
    assert sum(proxy.dropped for proxy in cluster.proxies) > 5
    for proxy in cluster.proxies:
        proxy.set_drop(0.0, 0.0)
    assert all(not appender.uncertain for appender in appenders)
    check_appends(cluster.client().get("k"), appenders)
    assert check_replicas_equal(cluster)["k"] == cluster.client().get("k")


def test_concurrent_clients_on_the_same_keys_then_failover(cluster: Cluster) -> None:
    def writer(seed: int) -> None:
        rng = random.Random(seed)
        kv = cluster.client()
        for _ in range(40):
            kv.put(str(rng.randrange(3)), str(rng.randrange(10**6)))

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    appenders = [Appender(cluster, f"a{i}", "log", count=20) for i in range(2)]
    for thread in [*threads, *appenders]:
        thread.start()
    for thread in threads:
        thread.join(60)
    for appender in appenders:
        appender.finish()
    kv = cluster.client()
    before = {key: kv.get(key) for key in ("0", "1", "2", "log")}
    assert check_replicas_equal(cluster) == {k: v for k, v in before.items() if v is not None}
    primary, backup = cluster.primary(), cluster.backup()
    primary.kill()
    cluster.wait_for_primary(backup.name)
    assert {key: kv.get(key) for key in before} == before
    check_appends(before["log"], appenders)


def out_of_view(name: str) -> Callable[[ViewServiceStatus], bool]:
    return lambda status: name not in status.view.members() and status.acknowledged


def test_repeated_crashes_under_load(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(servers=3)
    appenders = [Appender(cluster, f"w{i}", f"key{i}") for i in range(3)]
    for appender in appenders:
        appender.start()
    rng = random.Random(7)
    for _ in range(3):
        time.sleep(0.4)
        victim = rng.choice(cluster.servers)
        victim.kill()
        cluster.wait_for(out_of_view(victim.name), f"{victim.name} out of the view")
        victim.start()
        cluster.wait_stable()
    time.sleep(0.4)
    for appender in appenders:
        appender.finish()
    kv = cluster.client()
    for appender in appenders:
        assert len(appender.acknowledged) > 5
        check_appends(kv.get(appender.key), [appender])
    check_replicas_equal(cluster)


def assert_serves_nothing(node: NodeProcess, key: str) -> None:
    """A replaced primary answers neither a read (no stale value) nor a write."""
    read = raw_request(node.address, Get(key), seq=0)
    assert read is None or read.status != "ok", read
    write = raw_request(node.address, Put(key, "written-to-the-old-primary"), seq=1)
    assert write is None or write.status != "ok", write
    append = raw_request(node.address, Append(key, "!"), seq=2)
    assert append is None or append.status != "ok", append


def test_primary_cut_off_from_the_view_service(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(servers=0, admin=True)
    old = cluster.add_server(viewserver_proxied=True)
    new = cluster.add_server()
    kv = cluster.client()
    kv.put("k", "old")
    assert old.viewserver_proxy is not None and cluster.viewserver.admin is not None
    old.viewserver_proxy.cut()  # its pings (and their replies) are lost
    send_admin(cluster.viewserver.admin, Partition((old.name,), "out"))  # and view pushes
    cluster.wait_for_primary(new.name)
    kv.put("k", "new")
    assert_serves_nothing(old, "k")
    assert kv.get("k") == "new"
    old.viewserver_proxy.heal()
    send_admin(cluster.viewserver.admin, Heal())
    cluster.wait_for(lambda s: s.view.backup == old.name and s.acknowledged, "old one backup")
    assert check_replicas_equal(cluster)["k"] == "new"


def test_paused_primary_serves_nothing_after_it_resumes(cluster: Cluster) -> None:
    kv = cluster.client()
    kv.put("k", "old")
    old, new = cluster.primary(), cluster.backup()
    with Channel(old.address, MESSAGES, timeout_s=3.0) as channel:
        old.stop()
        try:
            channel.send(Request("paused-client", 0, 0, Put("k", "stale")))  # waits in the kernel
            cluster.wait_for_primary(new.name)
            time.sleep(2 * cluster.dead_interval)
            kv.put("k", "new")
        finally:
            old.cont()
        try:
            reply = channel.receive()
            assert isinstance(reply, Reply) and reply.status != "ok", reply
        except TimeoutError:
            pass  # it could not reach its backup: it answered nothing
    assert_serves_nothing(old, "k")
    assert kv.get("k") == "new"
    cluster.wait_for(lambda s: s.view.backup == old.name and s.acknowledged, "old one backup")
    assert check_replicas_equal(cluster)["k"] == "new"


def test_view_service_restart_with_data_dir_keeps_view_and_data(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(data_dir=True)
    kv = cluster.client()
    for i in range(20):
        kv.put(f"k{i}", str(i))
    view = cluster.view()
    cluster.viewserver.kill()
    kv.put("during-outage", "yes")  # the primary needs no view service to serve
    cluster.viewserver.start()
    assert "view_restored" in cluster.viewserver.log_text()
    assert cluster.view() == view
    kv.put("after", "yes")
    assert cluster.view().number == view.number
    keys = check_replicas_equal(cluster)
    assert len(keys) == 22 and keys["during-outage"] == "yes"


def test_view_service_without_data_dir_warns(cluster: Cluster) -> None:
    assert "view_not_persisted" in cluster.viewserver.log_text()


def test_garbage_and_oversized_frames_to_every_port(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(admin=True)
    nodes = [cluster.viewserver, *cluster.servers]
    ports = [node.address for node in nodes] + [node.admin or "" for node in nodes]
    payloads = [
        b"\x00\x00\x00\x08garbage!",
        FRAME_HEADER.pack(1 << 30) + b"x" * 100,
        FRAME_HEADER.pack(3) + b"\xc1\xc1\xc1",  # never-used msgpack bytes
    ]
    for address in ports:
        for payload in payloads:
            with authed.connect(address) as sock:
                sock.sendall(payload)
                assert sock.recv(1024) == b"", f"{address} kept a bad connection open"
    kv = cluster.client()
    kv.put("still", "serving")
    assert kv.get("still") == "serving"
    assert all(node.alive for node in nodes)
    assert all("connection_closed" in node.log_text() for node in nodes)
