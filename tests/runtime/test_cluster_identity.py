"""V16 and V17 with real processes. A server started on another cluster's data directory gets
no role in this cluster, says why, and leaves that directory as it was (review finding: it was
accepted, and could be made a backup, whose transfer overwrites its disk, or after a total outage
the primary, serving the other cluster's values). A server with other limits is never made the
backup."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pbkv.core.messages import ViewServiceStatus
from tests.conftest import Cluster, NodeProcess, free_port

pytestmark = pytest.mark.integration


def intruder(home: Cluster, host: Cluster) -> NodeProcess:
    """A server of ``host`` on the data directory of ``home``'s first server (stopped)."""
    port = free_port()
    args = ["--listen", "127.0.0.1:{port}", "--ping-interval", str(host.ping_interval)]
    args += ["--viewserver", host.address, "--data-dir", str(home.directory / "server1-data")]
    node = NodeProcess("server", args, port, host.directory / "intruder.log")
    host.servers.append(node)
    return node.start()


def test_a_server_on_another_clusters_data_directory_gets_no_role_and_keeps_it(
    cluster_factory: Callable[..., Cluster],
) -> None:
    home = cluster_factory(servers=1, data_dir=True, durable_servers=True)
    with home.client() as kv:
        kv.put("k", "of home")
    home.servers[0].kill()
    host = cluster_factory(servers=1, data_dir=True, durable_servers=True)
    with host.client() as kv:
        kv.put("k", "of host")
    stranger = intruder(home, host)

    def refused(status: ViewServiceStatus) -> bool:
        return any(s.name == stranger.name and "(V16)" in s.health for s in status.servers)

    status = host.wait_for(refused, "the stranger is refused")
    assert status.view.number == 1 and status.view.backups == ()  # not made a backup
    time.sleep(3 * host.dead_interval)
    assert host.view() == status.view
    assert "cluster_mismatch" in stranger.log_text()
    assert "server_of_another_cluster" in host.viewserver.log_text()
    with host.client() as kv:
        assert kv.get("k") == "of host"
    # Its directory is intact: back with its own cluster, it serves what it held.
    stranger.kill()
    home.servers[0].restart()
    with home.client() as kv:
        assert kv.get("k") == "of home"


def test_a_server_with_other_limits_is_never_made_the_backup(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """V17 with real processes: a smaller --value-bytes-max would refuse writes the primary
    stores, so the view service keeps it idle and says why; a matching server joins."""
    cluster = cluster_factory(servers=1)
    port = free_port()
    args = ["--listen", "127.0.0.1:{port}", "--ping-interval", str(cluster.ping_interval)]
    args += ["--viewserver", cluster.address, "--value-bytes-max", "64"]
    small = NodeProcess("server", args, port, cluster.directory / "small.log")
    cluster.servers.append(small)
    small.start()

    def refused(status: ViewServiceStatus) -> bool:
        return any(s.name == small.name and "(V17)" in s.health for s in status.servers)

    status = cluster.wait_for(refused, "the server with other limits is refused")
    assert status.view.backups == ()
    assert "server_limits_differ" in cluster.viewserver.log_text()
    joined = cluster.add_server()
    assert cluster.wait_stable().backups == (joined.name,)
