"""Fixtures: a unique cluster directory per test, always brought down, leftovers killed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import kill_leftovers, pbkv, up


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty directory for one cluster; at teardown ``pbkv cluster down`` runs and any
    process still holding a file in it is killed by pid (and the test fails)."""
    directory = tmp_path / "cluster"
    yield directory
    if (directory / "cluster.json").exists():
        pbkv("cluster", "down", "--dir", str(directory))
    leftovers = kill_leftovers(tmp_path)
    assert not leftovers, f"processes left running after the test: {leftovers}"


@pytest.fixture
def running(cluster_dir: Path) -> Path:
    """A started 3-server cluster with 0.05 s pings, in ``cluster_dir``."""
    up(cluster_dir)
    return cluster_dir
