"""``pbkv cluster restart`` reports success only when the new incarnation runs (review: a
durable server whose log was corrupted died at start-up, and ``restart`` printed ``restarted``
with exit 0, because the previous incarnation's pings still counted as alive)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.helpers import client, cluster, node, pbkv, quick_status, up

pytestmark = pytest.mark.integration


def corrupt_log(data_dir: Path) -> None:
    """Flip a byte inside the first record of the oldest write-ahead log segment."""
    segment = sorted(data_dir.glob("wal-*.log"))[0]
    content = bytearray(segment.read_bytes())
    assert len(content) > 60, len(content)  # a record follows: damage, not a torn tail
    content[30] ^= 0xFF
    segment.write_bytes(bytes(content))


def test_a_restart_that_dies_at_start_up_fails_with_its_error(cluster_dir: Path) -> None:
    up(cluster_dir, "--durable", "--dead-pings", "20")  # old pings count as alive for 1 s
    for index in range(5):
        client(cluster_dir, "put", f"k{index}", "v" * 20)
    assert cluster(cluster_dir, "restart", "s3").startswith("restarted s3")  # a healthy one
    corrupt_log(cluster_dir / "data" / "s2")

    result = pbkv("cluster", "restart", "s2", "--dir", str(cluster_dir))

    assert result.returncode == 5, result.stdout  # failed
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "s2 exited during start-up: corrupt log" in lines[0]
    assert "s2.log" in lines[0]
    assert node(quick_status(cluster_dir), "s2")["state"] == "dead"
    assert client(cluster_dir, "get", "k4").strip() == "v" * 20  # the others still serve
    # --repair for that one start (re-review: the cluster commands could not pass it)
    repaired = cluster(cluster_dir, "restart", "s2", "--repair")
    assert repaired.startswith("restarted s2")
    assert "storage_repaired" in (cluster_dir / "logs" / "s2.log").read_text()
    assert cluster(cluster_dir, "restart", "s2").startswith("restarted s2")  # no repair again
    assert client(cluster_dir, "get", "k4").strip() == "v" * 20


def test_repair_needs_a_server_with_a_disk(running: Path) -> None:
    result = pbkv("cluster", "restart", "s2", "--repair", "--dir", str(running))
    assert result.returncode == 4 and "keeps no data on disk" in result.stderr
    assert node(quick_status(running), "s2")["state"] == "alive"  # refused before stopping it


def test_repair_is_refused_for_the_view_service_of_a_durable_cluster(cluster_dir: Path) -> None:
    """Code review: the check read "--data-dir" in the command line, which the view service
    has too, so it was stopped and then failed on an option it does not take."""
    up(cluster_dir, "--durable")
    result = pbkv("cluster", "restart", "viewserver", "--repair", "--dir", str(cluster_dir))
    assert result.returncode == 4 and "keeps no data on disk" in result.stderr
    assert node(quick_status(cluster_dir), "viewserver")["state"] == "alive"
