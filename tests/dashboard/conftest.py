"""Fixtures: a local cluster started with ``pbkv cluster up --dashboard``, and its URL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cluster.conftest import cluster_dir
from tests.cluster.helpers import up

__all__ = ["cluster_dir", "dashboard_url"]


@pytest.fixture
def dashboard_url(cluster_dir: Path) -> str:
    """The URL ``cluster up --dashboard`` printed; ``cluster down`` at teardown stops the
    dashboard too (the ``cluster_dir`` fixture fails the test if any process is left)."""
    out = up(cluster_dir, "--dashboard", "--dashboard-listen", "127.0.0.1:0")
    found = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+/)$", out, re.MULTILINE)
    assert found, f"cluster up --dashboard printed no URL:\n{out}"
    return found.group(1)
