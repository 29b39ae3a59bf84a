"""``pbkv cluster up`` never deletes a durable cluster's data unasked (review: ``up`` after
``down`` of a ``--durable`` cluster silently removed DIR/data, so every key was gone); it refuses
(exit 4) and ``--fresh`` deletes it on purpose. ``pbkv demo`` always starts anew."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.helpers import PING_INTERVAL, client, cluster, ok, pbkv, state_file, up

pytestmark = pytest.mark.integration


def data_files(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in (directory / "data").rglob("*") if p.is_file()}


def refused_up(directory: Path, *extra: str) -> str:
    result = pbkv("cluster", "up", "--dir", str(directory), "--base-port", "0", *extra)
    assert result.returncode == 4, result.stdout  # refused
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--fresh" in lines[0], result.stderr
    assert "--resume" in lines[0], result.stderr  # down kept the durable cluster's record
    assert not (directory / "cluster.json").exists()
    return lines[0]


def test_up_refuses_a_durable_clusters_data_until_fresh(cluster_dir: Path) -> None:
    up(cluster_dir, "--servers", "2")  # what a cluster in memory leaves does not block
    cluster(cluster_dir, "down")
    up(cluster_dir, "--servers", "2", "--durable")
    client(cluster_dir, "put", "a", "1")
    cluster(cluster_dir, "down")
    kept = data_files(cluster_dir)
    assert kept

    line = refused_up(cluster_dir, "--servers", "2", "--durable")

    assert f"{cluster_dir / 'data'} holds the data of a previous durable cluster (s1, s2)" in line
    assert data_files(cluster_dir) == kept
    assert (cluster_dir / "logs" / "s1.log").stat().st_size > 0  # the logs are kept too
    assert (cluster_dir / "cluster.stopped.json").exists()  # `up --resume` would start it
    up(cluster_dir, "--servers", "2", "--durable", "--fresh")
    assert not (cluster_dir / "cluster.stopped.json").exists()
    missing = pbkv(
        "--auth-token-file", str(cluster_dir / "auth-token"), "get", "a",
        "--viewserver", state_file(cluster_dir)["viewserver"],
    )  # fmt: skip
    assert missing.returncode == 1, missing.stderr  # --fresh started empty


def test_the_demo_starts_anew_in_the_same_directory(cluster_dir: Path) -> None:
    def demo() -> None:
        ok(pbkv("demo", "basic", "--dir", str(cluster_dir), "--pace", "0", "--ping-interval",
                PING_INTERVAL))  # fmt: skip

    demo()
    refused_up(cluster_dir)  # the demo's cluster was durable
    demo()


@pytest.mark.parametrize("fresh", [False, True])
def test_up_never_deletes_files_pbkv_did_not_write(cluster_dir: Path, fresh: bool) -> None:
    """Re-review: a --dir whose data/ held someone's photos: up named them a durable cluster's
    server and --fresh deleted them. Only pbkv's own files are ever deleted."""
    photo = cluster_dir / "data" / "photos" / "a.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_text("not pbkv's")
    result = pbkv("cluster", "up", "--dir", str(cluster_dir), *(("--fresh",) if fresh else ()))
    assert result.returncode == 4, result.stderr
    assert "holds files pbkv did not write" in result.stderr
    assert "data/photos/a.jpg" in result.stderr
    assert photo.read_text() == "not pbkv's"


def test_files_pbkv_sets_aside_or_is_writing_are_its_own() -> None:
    """Code review: the names were a regex of the cluster manager's own, which missed a damaged
    snapshot set aside (``snap-N.snap.corrupt``) and the mark being written (``REPAIRED.tmp``),
    so ``up --fresh`` refused a directory pbkv wrote itself."""
    from pbkv.cluster.data_dirs import is_pbkv_file

    for name in ("LOCK", "wal-0000000001.log", "snap-0000000002.snap.corrupt", "REPAIRED.tmp"):
        assert is_pbkv_file(name), name
    assert is_pbkv_file("view.json") and is_pbkv_file("view.tmp")
    assert not is_pbkv_file("a.jpg") and not is_pbkv_file("wal-1.log.bak")
